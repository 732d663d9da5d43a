/**
 * The remote store: any SPARQL 1.1 store over the Query and Update protocols (tested against
 * Virtuoso 7.2). The store is the only state: a second gateway on the same store, or this one after
 * a restart, sees every acknowledged write.
 *
 * Layout:
 * - each TD's RDF (toNQuads) in the named graph whose IRI is the TD id, as in the embedded store;
 * - the record of each TD (the JSON as registered and its registration information) in the graph
 *   RECORDS_GRAPH, on a subject of its own, `urn:dtc:directory:record:` + encoded id:
 *
 *       <urn:dtc:directory:record:urn%3Aex%3A1>
 *           <urn:dtc:directory:id> "urn:ex:1"^^xsd:string ;  # the sort key of listings
 *           <urn:dtc:directory:td> "{\"id\":...}" ;      # JSON.stringify of the TD
 *           <urn:dtc:directory:created> "2026-01-01T00:00:00.000Z" ;
 *           <urn:dtc:directory:modified> "2026-01-01T00:00:00.000Z" ;
 *           <urn:dtc:directory:expires> 1767225660000 ;  # epoch ms, when the TD expires
 *           <urn:dtc:directory:ttl> "60" .                # as given; a string, so it round-trips exactly
 *       <urn:dtc:directory:records> <urn:dtc:directory:revision> "<uuid, new on every write>" .
 *
 *   Dates and ttl are strings so that they come back exactly as given (Virtuoso prints doubles with
 *   6 significant digits); `expires` is an integer so that expired() can compare it.
 *
 * What consumers see: the default graph of a query is the union of all graphs, so
 * `SELECT * { ?s ?p ?o }` and `GRAPH ?g { ... }` also match the record triples (and, on Virtuoso,
 * its own system graphs). Records never share a subject with a TD (the record has its own IRI, the
 * TD id is only a literal there), nor a predicate or class with a TD vocabulary, so queries about TDs
 * are unaffected. Hiding the record graph would need a store extension: Virtuoso's
 * `define input:default-graph-exclude` / `named-graph-exclude` would do it, but 7.2 answers wrongly
 * with them (`COUNT(*)` of an empty graph is 1, `FILTER EXISTS` on it true, `ASK` true).
 *
 * Writes: a put is one update request (`DROP SILENT GRAPH <id>`, the TD triples as `INSERT {...}
 * WHERE {}`, then the record and the revision) and is acknowledged once the store answered 2xx.
 * A TD of more than REQUEST_TRIPLES triples takes several requests, the record last, so that a
 * reader never sees a record whose TD graph is still being written; until the last one returns, a
 * query may see part of the new graph. (Virtuoso commits each operation of a request on its own,
 * so one request is not atomic either; a failed put is not acknowledged, and its retry rewrites
 * everything.) Every term put into SPARQL text is serialised by Oxigraph (N-Triples syntax, which
 * SPARQL shares): IRIs are validated, literals escaped.
 *
 * Endpoints: the store's own reads and its writes go to queryUrl and updateUrl with `auth` (the
 * writer); users' searches (query()) go to `search.url` with `search.auth`, meant to be a read-only
 * endpoint and user. Searches are checked by the query guard (query-guard.ts) first; the search
 * endpoint's rights bound what one that slipped past could do (Virtuoso's anonymous /sparql without
 * SPARQL_UPDATE cannot write, read files or call SQL procedures; it still runs bif:http_get, which
 * only the guard stops).
 *
 * Reads: queries go as form POSTs (`query=`). Results come back as SPARQL JSON or N-Triples and are
 * written in the format asked for with Oxigraph's writers, so both adapters answer alike. Virtuoso's
 * result cap (10,000 rows, cut silently) makes a result that reaches it an error unless the query's own
 * LIMIT is within it; listings past it walk the ids instead of using OFFSET.
 * The Virtuoso 7.2 quirks this lives with are listed in test/virtuoso.ts.
 *
 * Parts, under sparql/: terms.ts (the record vocabulary, terms in SPARQL text), update-chunks.ts
 * (the update requests of a write), results.ts (result formats), http-client.ts (the protocol
 * client: auth, time limits, the store's errors, retries).
 */

import { randomUUID } from "node:crypto";
import oxigraph from "oxigraph";
import sparqljs from "sparqljs";
import { errorMessage } from "../domain/errors.js";
import { toNQuads } from "../wot/rdf.js";
import { asQueryError, retrying, type SparqlAuth, SparqlHttpClient } from "./sparql/http-client.js";
import {
  GRAPH_FORMATS,
  normalised,
  parseSparqlJson,
  parseTriples,
  type Row,
  SELECT_FORMATS,
  type SparqlJson,
  str,
  writeSolutions,
  writeTriples,
} from "./sparql/results.js";
import {
  DIRECTORY_NAMESPACE,
  integerLiteral,
  iri,
  isIri,
  literal,
  RECORD,
  RECORDS_GRAPH,
  recordIri,
  typedString,
} from "./sparql/terms.js";
import { replaceGraph } from "./sparql/update-chunks.js";
import {
  assertGatewayGraph,
  type DirectoryStore,
  QueryError,
  type QueryOptions,
  type QueryResult,
  type Registration,
  type StoredThing,
  StoreError,
} from "./store.js";

export { DIRECTORY_NAMESPACE, RECORDS_GRAPH } from "./sparql/terms.js";
export { operations } from "./sparql/update-chunks.js";

const NS = DIRECTORY_NAMESPACE;
const DEFAULT_TIMEOUT_MS = 30_000;
/** Virtuoso's ResultSetMaxRows: SELECT and CONSTRUCT results are cut there without an error. */
const DEFAULT_MAX_ROWS = 10_000;
/**
 * How much longer than a query's time limit the client waits for Virtuoso's own timeout answer.
 * Virtuoso checks its limit on 2 s ticks (300 ms stops at 2 s, 3 s at 4 s), so the client often
 * gives up first; the answer is the same 400 Query Timeout, and Virtuoso stops at its next tick.
 */
const QUERY_GRACE_MS = 1000;
const JSON_RESULTS = "application/sparql-results+json";

export interface SparqlStoreOptions {
  /** SPARQL 1.1 Query endpoint (queries are sent as form POSTs). */
  queryUrl: string;
  /** SPARQL 1.1 Update endpoint (POST application/sparql-update). */
  updateUrl: string;
  /** Sent with HTTP Basic or Digest, whichever the store's 401 challenge asks for. */
  auth?: SparqlAuth;
  /**
   * Where users' searches (query()) go: a read-only endpoint, and a read-only user or none. The
   * store's own reads and writes keep queryUrl and updateUrl with `auth`. Default: queryUrl without
   * credentials (never the writer's: a search that got past the query guard would run with its rights).
   */
  search?: { url: string; auth?: SparqlAuth | undefined };
  /** Longest a request may take, ms (default 30000); query() takes its own timeoutMs. */
  timeoutMs?: number;
  /** Most rows the store returns for one query (Virtuoso's ResultSetMaxRows, default 10000). */
  maxRows?: number;
  /**
   * `virtuoso` sends queries Virtuoso's `timeout` parameter (ms), so that the server stops a query
   * at the time limit too; other stores read `timeout` differently (seconds, for Fuseki and
   * GraphDB). Default: detected from the `Server` header at open().
   */
  dialect?: "virtuoso" | "sparql11";
  /**
   * Told when a TD stored could not be converted to RDF (e.g. a context not available offline): it
   * is kept and served, like every other, but not searchable. Default: a process warning (as the
   * embedded store).
   */
  onIndexFailure?: (id: string, message: string) => void;
}

/**
 * Listing order: Virtuoso compares strings as UTF-8 bytes, which is code point order (WoT Discovery's).
 * STR() on both sides: Virtuoso 7.2 answers `FILTER (?id > "x")` on its index wrongly (it lets
 * "urn:t:Q" pass and drops "urn:t:b" after "urn:t:a-b"), `STR(?id) > "x"` compares as it sorts.
 */
const BY_ID = "STR(?id)";
const idsAfter = (after: string): string => `FILTER (STR(?id) > ${literal(after)})`;

function parseQuads(text: string, format: string, what: string): oxigraph.Quad[] {
  try {
    return oxigraph.parse(text, { format });
  } catch (err) {
    throw new StoreError(`${what}: not valid ${format}: ${errorMessage(err)}`, { cause: err });
  }
}

/** The form and LIMIT of `sparql`, parsed. Throws QueryError for an update or a syntax error. */
function formOf(sparql: string): NonNullable<QueryOptions["form"]> {
  let parsed: sparqljs.SparqlQuery;
  try {
    parsed = new sparqljs.Parser().parse(sparql);
  } catch (err) {
    throw new QueryError("rejected", errorMessage(err), { cause: err });
  }
  if (parsed.type !== "query") throw new QueryError("rejected", "only queries are accepted, not updates");
  // sparqljs sets `limit` on every query form; its types only declare it for SELECT.
  return { queryType: parsed.queryType, limit: (parsed as { limit?: number }).limit };
}

/**
 * Runs writes one after another per key: directory writes share one key (they all rewrite the
 * revision), status writes have one per status graph, so twins' status never waits for a put.
 */
class WriteQueues {
  readonly #tails = new Map<string, Promise<unknown>>();
  run<T>(key: string, write: () => Promise<T>): Promise<T> {
    const result = (this.#tails.get(key) ?? Promise.resolve()).then(write);
    // The caller gets the write's error from `result`; the queue only waits for it to settle.
    const tail = result.catch(() => undefined);
    this.#tails.set(key, tail);
    // Forget the key once nothing is queued on it (twins come and go).
    void tail.then(() => {
      if (this.#tails.get(key) === tail) this.#tails.delete(key);
    });
    return result;
  }
  async idle(): Promise<void> {
    await Promise.all(this.#tails.values());
  }
}

export class SparqlStore implements DirectoryStore {
  readonly #queryUrl: string;
  readonly #updateUrl: string;
  /** The gateway's own: queryUrl and updateUrl. */
  readonly #writer: SparqlHttpClient;
  readonly #searchUrl: string;
  /** Users' searches: never the writer's credentials. */
  readonly #searcher: SparqlHttpClient;
  readonly #timeoutMs: number;
  readonly #maxRows: number;
  #dialect: "virtuoso" | "sparql11" | undefined;
  #open = false;
  readonly #writes = new WriteQueues();
  readonly #onIndexFailure: (id: string, message: string) => void;

  constructor(options: SparqlStoreOptions) {
    this.#onIndexFailure =
      options.onIndexFailure ??
      ((id, message) => process.emitWarning(`${id}: ${message}`, { type: "DirectoryIndexWarning" }));
    this.#queryUrl = options.queryUrl;
    this.#updateUrl = options.updateUrl;
    this.#timeoutMs = options.timeoutMs ?? DEFAULT_TIMEOUT_MS;
    this.#writer = new SparqlHttpClient(options.auth, this.#timeoutMs);
    this.#searchUrl = options.search?.url ?? options.queryUrl;
    this.#searcher = new SparqlHttpClient(options.search?.auth, this.#timeoutMs);
    this.#maxRows = options.maxRows ?? DEFAULT_MAX_ROWS;
    this.#dialect = options.dialect;
  }

  /**
   * Checks that the endpoints answer (and that updates are allowed) before the gateway relies on
   * them: a search endpoint that wants credentials it was not given fails here, not at the first search.
   */
  async open(): Promise<void> {
    const ask = { query: "ASK {}" };
    const { headers } = await this.#writer.query(
      this.#queryUrl,
      "checking the query endpoint",
      ask,
      JSON_RESULTS,
    );
    await this.#searcher.query(this.#searchUrl, "checking the search endpoint", ask, JSON_RESULTS);
    this.#dialect ??= /virtuoso/i.test(headers.get("server") ?? "") ? "virtuoso" : "sparql11";
    // An update that matches nothing: fails now, not at the first PUT, when updates are not allowed.
    await this.#update(
      `DELETE WHERE { GRAPH ${iri(RECORDS_GRAPH)} { ${iri(`${NS}probe`)} ${iri(`${NS}probe`)} ?o } }`,
      "checking the update endpoint",
    );
    this.#open = true;
  }

  #assertOpen(): void {
    if (!this.#open) throw new StoreError("the SPARQL store is not open");
  }

  async put(thing: StoredThing): Promise<{ created: boolean }> {
    this.#assertOpen();
    if (thing.id.startsWith(NS))
      throw new StoreError(`ids under ${NS} are reserved for the directory's records`);
    // A TD that cannot be converted (or whose id cannot name a graph) is stored all the same,
    // without a graph, and reported: as in the embedded store.
    let quads: oxigraph.Quad[] = [];
    let failure: string | undefined;
    const named = isIri(thing.id);
    try {
      if (!named) throw new Error(`its id is not an IRI (RFC 3987), so it cannot name a graph`);
      quads = oxigraph.parse(await toNQuads(thing.td, { graph: thing.id }), {
        format: "application/n-quads",
      });
    } catch (err) {
      failure = `not indexed: ${errorMessage(err)}`;
    }
    const record = iri(recordIri(thing.id));
    const recordOps = this.#replaceRecord(record, this.#recordTriples(thing));
    const requests = named ? replaceGraph(thing.id, quads, recordOps) : [recordOps.join(" ;\n")];
    return this.#writes.run(RECORDS_GRAPH, () =>
      retrying(async () => {
        const existed = await this.#ask(`ASK { GRAPH ${iri(RECORDS_GRAPH)} { ${record} ?p ?o } }`);
        for (const request of requests) await this.#update(request, `storing ${thing.id}`);
        if (failure !== undefined) this.#onIndexFailure(thing.id, failure);
        return { created: !existed };
      }),
    );
  }

  #recordTriples(thing: StoredThing): string {
    const { created, modified, expires, ttl } = thing.registration;
    const triples: [string, string][] = [
      [RECORD.id, typedString(thing.id)],
      [RECORD.td, literal(JSON.stringify(thing.td))],
      [RECORD.created, literal(created)],
      [RECORD.modified, literal(modified)],
    ];
    if (expires !== undefined) {
      const ms = Date.parse(expires);
      if (Number.isNaN(ms)) throw new StoreError(`expires ${JSON.stringify(expires)} is not a date`);
      triples.push([RECORD.expires, integerLiteral(ms)]);
    }
    if (ttl !== undefined) triples.push([RECORD.ttl, literal(String(ttl))]);
    return triples.map(([p, o]) => `${iri(p)} ${o}`).join(" ;\n  ");
  }

  /** Operations that replace the record on `record` (`triples` as a predicate-object list, or none) and the revision. */
  #replaceRecord(record: string, triples: string | undefined): string[] {
    const g = iri(RECORDS_GRAPH);
    const revision = `${g} ${iri(RECORD.revision)} ${literal(randomUUID())}`;
    return [
      `DELETE WHERE { GRAPH ${g} { ${record} ?p ?o } }`,
      `DELETE WHERE { GRAPH ${g} { ${g} ${iri(RECORD.revision)} ?r } }`,
      `INSERT DATA { GRAPH ${g} {\n${triples ? `${record} ${triples} .\n` : ""}${revision} .\n} }`,
    ];
  }

  async get(id: string): Promise<StoredThing | undefined> {
    this.#assertOpen();
    const [thing] = await this.#records(`VALUES ?r { ${iri(recordIri(id))} }`, "");
    return thing;
  }

  async delete(id: string): Promise<boolean> {
    this.#assertOpen();
    const record = iri(recordIri(id));
    return this.#writes.run(RECORDS_GRAPH, () =>
      retrying(async () => {
        if (!(await this.#ask(`ASK { GRAPH ${iri(RECORDS_GRAPH)} { ${record} ?p ?o } }`))) return false;
        const request = [
          ...(isIri(id) ? [`DROP SILENT GRAPH ${iri(id)}`] : []),
          ...this.#replaceRecord(record, undefined),
        ];
        await this.#update(request.join(" ;\n"), `deleting ${id}`);
        return true;
      }),
    );
  }

  async list(offset: number, limit: number): Promise<StoredThing[]> {
    this.#assertOpen();
    if (limit <= 0) return [];
    if (offset + limit <= this.#maxRows) {
      return this.#records("", `ORDER BY ${BY_ID} LIMIT ${limit} OFFSET ${offset}`);
    }
    // Virtuoso refuses ORDER BY windows reaching past ResultSetMaxRows ("SR353: Sorted TOP clause"):
    // walk the ids in pages after the last one seen instead (keyset pagination).
    let after: string | undefined;
    for (let skipped = 0; skipped < offset; ) {
      const page = Math.min(this.#maxRows, offset - skipped);
      const ids = await this.#ids("", after, page);
      skipped += ids.length;
      after = ids.at(-1) ?? after;
      if (ids.length < page) return [];
    }
    const things: StoredThing[] = [];
    while (things.length < limit) {
      const page = Math.min(this.#maxRows, limit - things.length);
      const rows = await this.#records(
        after === undefined ? "" : idsAfter(after),
        `ORDER BY ${BY_ID} LIMIT ${page}`,
      );
      things.push(...rows);
      if (rows.length < page) break;
      after = rows.at(-1)?.id;
    }
    return things;
  }

  async count(): Promise<number> {
    this.#assertOpen();
    const [row] = await this.#select(
      `SELECT (COUNT(DISTINCT ?r) AS ?n) WHERE { GRAPH ${iri(RECORDS_GRAPH)} { ?r ${iri(RECORD.id)} ?id } }`,
    );
    return Number(str(row?.n) ?? 0);
  }

  async revision(): Promise<string> {
    this.#assertOpen();
    const g = iri(RECORDS_GRAPH);
    const rows = await this.#select(`SELECT ?r WHERE { GRAPH ${g} { ${g} ${iri(RECORD.revision)} ?r } }`);
    // Two gateways writing at once may each leave a value until the next write: all of them, sorted.
    const values = rows.map((r) => str(r.r) ?? "").sort();
    return values.length === 0 ? "0" : values.join("+");
  }

  async expired(now: number): Promise<string[]> {
    this.#assertOpen();
    const bound = integerLiteral(Math.floor(now));
    const where = `?r ${iri(RECORD.expires)} ?expires . FILTER (?expires <= ${bound})`;
    const ids: string[] = [];
    for (let after: string | undefined; ; ) {
      const page = await this.#ids(where, after, this.#maxRows);
      ids.push(...page);
      if (page.length < this.#maxRows) return ids;
      after = page.at(-1);
    }
  }

  /** Ids after `after`, in code point order. */
  async #ids(where: string, after: string | undefined, limit: number): Promise<string[]> {
    const filter = after === undefined ? "" : idsAfter(after);
    const rows = await this.#select(
      `SELECT ?id WHERE { GRAPH ${iri(RECORDS_GRAPH)} { ?r ${iri(RECORD.id)} ?id . ${where} } ${filter} } ORDER BY ${BY_ID} LIMIT ${limit}`,
    );
    return rows.map((r) => str(r.id) ?? "");
  }

  async #records(pattern: string, modifiers: string): Promise<StoredThing[]> {
    const rows = await this.#select(
      `SELECT ?id ?td ?created ?modified ?expires ?ttl WHERE {
        ${pattern}
        GRAPH ${iri(RECORDS_GRAPH)} {
          ?r ${iri(RECORD.id)} ?id ; ${iri(RECORD.td)} ?td ; ${iri(RECORD.created)} ?created ; ${iri(RECORD.modified)} ?modified .
          OPTIONAL { ?r ${iri(RECORD.expires)} ?expires }
          OPTIONAL { ?r ${iri(RECORD.ttl)} ?ttl }
        }
      } ${modifiers}`,
    );
    const things: StoredThing[] = [];
    for (const row of rows) {
      const id = str(row.id) ?? "";
      // Two gateways replacing one TD at once can leave two records until the next write: keep one.
      if (things.at(-1)?.id === id) continue;
      const registration: Registration = {
        created: str(row.created) ?? "",
        modified: str(row.modified) ?? "",
      };
      const expires = str(row.expires);
      if (expires !== undefined) registration.expires = new Date(Number(expires)).toISOString();
      const ttl = str(row.ttl);
      if (ttl !== undefined) registration.ttl = Number(ttl);
      let td: StoredThing["td"];
      try {
        td = JSON.parse(str(row.td) ?? "");
      } catch (err) {
        throw new StoreError(`the record of ${id} holds no JSON: ${errorMessage(err)}`, { cause: err });
      }
      things.push({ id, td, registration });
    }
    return things;
  }

  async query(sparql: string, accept: string, options: QueryOptions = {}): Promise<QueryResult> {
    this.#assertOpen();
    const format = accept.split(";")[0]?.trim().toLowerCase() ?? "";
    // Parsed here only when the caller did not (the guard did, off the main thread): ~10 ms a KiB.
    const form = options.form ?? formOf(sparql);
    const graph = form.queryType === "CONSTRUCT" || form.queryType === "DESCRIBE";
    const formats: readonly string[] = graph ? GRAPH_FORMATS : SELECT_FORMATS;
    if (!formats.includes(format)) {
      throw new QueryError(
        "rejected",
        `a ${form.queryType} query is answered in ${formats.join(", ")}, not ${accept}`,
      );
    }
    const timeoutMs = options.timeoutMs ?? this.#timeoutMs;
    // The client waits a little longer than the store's own limit, whose answer stops the query there.
    const clientTimeoutMs = this.#dialect === "virtuoso" ? timeoutMs + QUERY_GRACE_MS : timeoutMs;
    // Virtuoso's default DESCRIBE only reads graphs where the resource has an rdf:type; CBD describes
    // it from every graph, as other stores do. (A pragma sparqljs cannot parse: added after checks.)
    const text =
      this.#dialect === "virtuoso" && form.queryType === "DESCRIBE"
        ? `define sql:describe-mode "CBD"\n${sparql}`
        : sparql;
    const params: Record<string, string> = { query: text };
    // The server stops too: it answers what it has so far with X-SQL-State: S1TAT (a timeout, below).
    if (this.#dialect === "virtuoso") params.timeout = String(timeoutMs);
    let body: string;
    const sent = performance.now();
    try {
      const answer = graph ? "application/n-triples" : JSON_RESULTS;
      ({ body } = await this.#searcher.query(this.#searchUrl, "query", params, answer, clientTimeoutMs));
    } catch (err) {
      throw asQueryError(err, timeoutMs, performance.now() - sent);
    }
    // Truncated results are an error, not an answer: a LIMIT within the cap is the client's own cut.
    const { limit } = form;
    const capped = limit === undefined || limit > this.#maxRows;
    const tooMany = () =>
      new QueryError(
        "rejected",
        `the result has more than the SPARQL store's limit of ${this.#maxRows} ${graph ? "triples" : "rows"}; narrow the query or page it with LIMIT and OFFSET`,
      );
    if (graph) {
      const scratch = parseTriples(body);
      if (capped && scratch.size >= this.#maxRows) throw tooMany();
      return { body: writeTriples(scratch, format), contentType: accept };
    }
    const json = parseSparqlJson(body, "query: the SPARQL store's answer is not JSON");
    if (capped && (json.results?.bindings.length ?? 0) >= this.#maxRows) throw tooMany();
    return { body: writeSolutions(normalised(json), format), contentType: accept };
  }

  async putGraph(graph: string, ntriples: string): Promise<void> {
    this.#assertOpen();
    assertGatewayGraph(graph);
    const requests = replaceGraph(graph, parseQuads(ntriples, "application/n-triples", `graph ${graph}`));
    await this.#writes.run(graph, () =>
      retrying(async () => {
        for (const request of requests) await this.#update(request, `writing graph ${graph}`);
      }),
    );
  }

  async deleteGraph(graph: string): Promise<void> {
    this.#assertOpen();
    assertGatewayGraph(graph);
    await this.#writes.run(graph, () =>
      retrying(() => this.#update(`DROP SILENT GRAPH ${iri(graph)}`, `deleting graph ${graph}`)),
    );
  }

  async close(): Promise<void> {
    await this.#writes.idle();
    this.#open = false;
  }

  #update(text: string, what: string): Promise<void> {
    return this.#writer.update(this.#updateUrl, text, what);
  }

  async #read(text: string): Promise<SparqlJson> {
    const what = "reading the directory";
    const { body } = await this.#writer.query(this.#queryUrl, what, { query: text }, JSON_RESULTS);
    return parseSparqlJson(body, `${what}: the answer is not SPARQL JSON`);
  }

  async #select(text: string): Promise<Row[]> {
    return (await this.#read(text)).results?.bindings ?? [];
  }

  async #ask(text: string): Promise<boolean> {
    return (await this.#read(text)).boolean === true;
  }
}
