import { randomUUID } from "node:crypto";
import DigestClient from "digest-fetch";
import oxigraph from "oxigraph";
import sparqljs from "sparqljs";
import { toNQuads } from "../wot/rdf.js";
import {
  assertGatewayGraph,
  DIRECTORY_RECORDS_PREFIX,
  type DirectoryStore,
  QueryError,
  type QueryOptions,
  type QueryResult,
  type Registration,
  type StoredThing,
  StoreError,
} from "./store.js";

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
 */

/**
 * The directory's own IRIs (record graph, records, predicates, skolem IRIs): a TD with an id under
 * it would have its graph collide with them, so put() refuses such ids (the API should reserve the
 * prefix like urn:dtc:status:).
 */
export const DIRECTORY_NAMESPACE = DIRECTORY_RECORDS_PREFIX;
const NS = DIRECTORY_NAMESPACE;
/** The graph holding the directory's records (one per TD) and its revision. */
export const RECORDS_GRAPH = `${NS}records`;
const P = {
  id: `${NS}id`,
  td: `${NS}td`,
  created: `${NS}created`,
  modified: `${NS}modified`,
  expires: `${NS}expires`,
  ttl: `${NS}ttl`,
  revision: `${NS}revision`,
};
const recordIri = (id: string): string => `${NS}record:${encodeURIComponent(id)}`;
/** IRIs that replace the blank nodes of a structure too big for one operation (RDF 1.1 skolemisation). */
const GENID = `${NS}genid:`;
const XSD_INTEGER = "http://www.w3.org/2001/XMLSchema#integer";
const XSD_STRING = "http://www.w3.org/2001/XMLSchema#string";

// Virtuoso compiles one operation to at most 10000 lines of SQL (~1200 triples), and compile time
// grows faster than linearly: 100 triples take ~10 ms, 1000 take ~300 ms.
const OPERATION_TRIPLES = 100;
/** A blank-node structure bigger than this is skolemised so that it can be split. */
const STRUCTURE_TRIPLES = 400;
const REQUEST_TRIPLES = 500;
const DEFAULT_TIMEOUT_MS = 30_000;
/** Virtuoso's ResultSetMaxRows: SELECT and CONSTRUCT results are cut there without an error. */
const DEFAULT_MAX_ROWS = 10_000;
const WRITE_ATTEMPTS = 3;
/**
 * How much longer than a query's time limit the client waits for Virtuoso's own timeout answer.
 * Virtuoso checks its limit on 2 s ticks (300 ms stops at 2 s, 3 s at 4 s), so the client often
 * gives up first; the answer is the same 400 Query Timeout, and Virtuoso stops at its next tick.
 */
const QUERY_GRACE_MS = 1000;

const SELECT_FORMATS = [
  "application/sparql-results+json",
  "application/sparql-results+xml",
  "text/csv",
  "text/tab-separated-values",
] as const;
const GRAPH_FORMATS = ["application/ld+json", "text/turtle", "application/n-triples"] as const;

export interface SparqlStoreOptions {
  /** SPARQL 1.1 Query endpoint (queries are sent as form POSTs). */
  queryUrl: string;
  /** SPARQL 1.1 Update endpoint (POST application/sparql-update). */
  updateUrl: string;
  /** Sent with HTTP Basic or Digest, whichever the store's 401 challenge asks for. */
  auth?: { user: string; password: string };
  /**
   * Where users' searches (query()) go: a read-only endpoint, and a read-only user or none. The
   * store's own reads and writes keep queryUrl and updateUrl with `auth`. Default: queryUrl without
   * credentials (never the writer's: a search that got past the query guard would run with its rights).
   */
  search?: { url: string; auth?: { user: string; password: string } | undefined };
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

type Binding = { type: string; value: unknown; datatype?: string; "xml:lang"?: string };
type Row = Record<string, Binding | undefined>;
interface SparqlJson {
  head?: { vars?: string[] };
  boolean?: boolean;
  results?: { bindings: Row[] };
}

/** An answer of the endpoint other than 2xx; `sqlState` is Virtuoso's SQLSTATE when it gave one. */
class EndpointError extends StoreError {
  readonly status: number;
  readonly sqlState: string | undefined;
  readonly text: string;
  constructor(what: string, status: number, text: string) {
    const brief = errorText(text);
    super(`${what}: the SPARQL store answered ${status}${brief ? `: ${brief}` : ""}`);
    this.name = "StoreError";
    this.status = status;
    this.text = brief;
    this.sqlState = /^Virtuoso (\w{5}) Error/.exec(text)?.[1];
  }
}

class RequestTimeout extends StoreError {}

/** The store's error message without Virtuoso's echo of the query. */
function errorText(text: string): string {
  return (
    text
      .split(/\n\s*\nSPARQL query:/)[0]
      ?.trim()
      .slice(0, 2000) ?? ""
  );
}

const str = (b: Binding | undefined): string | undefined => (b === undefined ? undefined : String(b.value));

/** Serialises IRIs and literals for SPARQL text (N-Triples syntax); throws StoreError for a bad IRI. */
function iri(value: string): string {
  try {
    return oxigraph.namedNode(value).toString();
  } catch (err) {
    throw new StoreError(`${JSON.stringify(value)} is not an IRI: ${(err as Error).message}`, { cause: err });
  }
}
const isIri = (value: string): boolean => {
  try {
    oxigraph.namedNode(value);
    return true;
  } catch {
    return false;
  }
};
const literal = (value: string): string => oxigraph.literal(value).toString();
/**
 * A string literal with its datatype written out (Oxigraph omits xsd:string): Virtuoso 7.2 may store
 * a plain literal as an IRI when the same text is an IRI elsewhere in the request, as a TD's id is.
 */
const typedString = (value: string): string => `${literal(value)}^^<${XSD_STRING}>`;

/**
 * Listing order: Virtuoso compares strings as UTF-8 bytes, which is code point order (WoT Discovery's).
 * STR() on both sides: Virtuoso 7.2 answers `FILTER (?id > "x")` on its index wrongly (it lets
 * "urn:t:Q" pass and drops "urn:t:b" after "urn:t:a-b"), `STR(?id) > "x"` compares as it sorts.
 */
const BY_ID = "STR(?id)";
const idsAfter = (after: string): string => `FILTER (STR(?id) > ${literal(after)})`;

/** Serialises the dialect-free N-Triples form of a quad's triple. */
const triple = (q: oxigraph.Quad): string => `${q.subject} ${q.predicate} ${q.object} .`;

/**
 * Splits `quads` into operations of at most OPERATION_TRIPLES triples (bigger only for one blank-node
 * structure), keeping all the triples of a blank-node structure together: a blank node label is fresh
 * in each INSERT template, so a structure split across two would fall apart. Structures bigger than
 * STRUCTURE_TRIPLES get IRIs instead of blank nodes, then split like the rest.
 */
export function operations(quads: oxigraph.Quad[]): oxigraph.Quad[][] {
  const parent = new Map<string, string>();
  const find = (b: string): string => {
    let root = b;
    while (parent.get(root) !== root) root = parent.get(root) ?? root;
    parent.set(b, root);
    return root;
  };
  const blanks = (q: oxigraph.Quad): string[] =>
    [q.subject, q.object].filter((t) => t.termType === "BlankNode").map((t) => t.value);
  for (const q of quads) {
    const [first, ...rest] = blanks(q);
    if (first === undefined) continue;
    if (!parent.has(first)) parent.set(first, first);
    for (const b of rest) {
      if (!parent.has(b)) parent.set(b, b);
      parent.set(find(b), find(first));
    }
  }
  // Units: single triples, and whole structures in the order they first appear.
  const units: oxigraph.Quad[][] = [];
  const structures = new Map<string, oxigraph.Quad[]>();
  for (const q of quads) {
    const [first] = blanks(q);
    if (first === undefined) {
      units.push([q]);
      continue;
    }
    const root = find(first);
    let unit = structures.get(root);
    if (!unit) {
      unit = [];
      structures.set(root, unit);
      units.push(unit);
    }
    unit.push(q);
  }
  const ops: oxigraph.Quad[][] = [];
  let current: oxigraph.Quad[] = [];
  const add = (unit: oxigraph.Quad[]) => {
    if (current.length > 0 && current.length + unit.length > OPERATION_TRIPLES) {
      ops.push(current);
      current = [];
    }
    current.push(...unit);
  };
  for (const unit of units) {
    if (unit.length <= STRUCTURE_TRIPLES) add(unit);
    else for (const q of skolemise(unit)) add([q]);
  }
  if (current.length > 0) ops.push(current);
  return ops;
}

function skolemise(quads: oxigraph.Quad[]): oxigraph.Quad[] {
  const names = new Map<string, oxigraph.NamedNode>();
  const named = <T extends oxigraph.Term>(t: T): T | oxigraph.NamedNode => {
    if (t.termType !== "BlankNode") return t;
    let node = names.get(t.value);
    if (!node) {
      node = oxigraph.namedNode(`${GENID}${randomUUID()}`);
      names.set(t.value, node);
    }
    return node;
  };
  return quads.map((q) =>
    oxigraph.quad(
      named(q.subject) as oxigraph.Quad_Subject,
      q.predicate,
      named(q.object) as oxigraph.Quad_Object,
      q.graph,
    ),
  );
}

/**
 * The update requests that replace graph `graph` with `quads`: the first drops the graph, `last`
 * (more operations) ends the last one.
 */
function replaceGraph(graph: string, quads: oxigraph.Quad[], last: string[] = []): string[] {
  const g = iri(graph);
  const requests: string[][] = [[`DROP SILENT GRAPH ${g}`]];
  let size = 0;
  for (const op of operations(quads)) {
    if (size > 0 && size + op.length > REQUEST_TRIPLES) {
      requests.push([]);
      size = 0;
    }
    size += op.length;
    requests.at(-1)?.push(`INSERT { GRAPH ${g} {\n${op.map(triple).join("\n")}\n} } WHERE {}`);
  }
  requests.at(-1)?.push(...last);
  return requests.map((ops) => ops.join(" ;\n"));
}

function parseQuads(text: string, format: string, what: string): oxigraph.Quad[] {
  try {
    return oxigraph.parse(text, { format });
  } catch (err) {
    throw new StoreError(`${what}: not valid ${format}: ${(err as Error).message}`, { cause: err });
  }
}

/**
 * Virtuoso's JSON results as SPARQL 1.1 has them, written as the embedded store (Oxigraph) writes
 * them: SPARQL 1.0 "typed-literal" becomes "literal" with its datatype (none for xsd:string, as
 * RDF 1.1 has it), blank nodes get labels of their own (Virtuoso's are "nodeID://b123"), and
 * Virtuoso's extra members ("link", "distinct", "ordered") go.
 */
function normalised(json: SparqlJson): SparqlJson {
  if (typeof json.boolean === "boolean") return { head: {}, boolean: json.boolean };
  const labels = new Map<string, string>();
  const bindings = (json.results?.bindings ?? []).map((row) => {
    const out: Row = {};
    for (const [name, b] of Object.entries(row)) {
      if (!b) continue;
      const value = String(b.value);
      if (b.type === "uri") out[name] = { type: "uri", value };
      else if (b.type === "bnode") {
        let label = labels.get(value);
        if (label === undefined) {
          label = `b${labels.size}`;
          labels.set(value, label);
        }
        out[name] = { type: "bnode", value: label };
      } else {
        const lang = b["xml:lang"];
        const term: Binding = { type: "literal", value };
        if (lang) term["xml:lang"] = lang;
        else if (b.datatype && b.datatype !== XSD_STRING) term.datatype = b.datatype;
        out[name] = term;
      }
    }
    return out;
  });
  return { head: { vars: json.head?.vars ?? [] }, results: { bindings } };
}

/** A term of normalised JSON results in N-Triples syntax. */
function ntriple(b: Binding): string {
  const value = String(b.value);
  if (b.type === "uri") return `<${value}>`;
  if (b.type === "bnode") return `_:${value}`;
  // JSON.stringify writes a valid N-Triples string: its escapes are all N-Triples ECHARs or UCHARs.
  const quoted = JSON.stringify(value);
  const lang = b["xml:lang"];
  return lang ? `${quoted}@${lang}` : b.datatype ? `${quoted}^^<${b.datatype}>` : quoted;
}

/** The form and LIMIT of `sparql`, parsed. Throws QueryError for an update or a syntax error. */
function formOf(sparql: string): NonNullable<QueryOptions["form"]> {
  let parsed: sparqljs.SparqlQuery;
  try {
    parsed = new sparqljs.Parser().parse(sparql);
  } catch (err) {
    throw new QueryError("rejected", (err as Error).message, { cause: err });
  }
  if (parsed.type !== "query") throw new QueryError("rejected", "only queries are accepted, not updates");
  // sparqljs sets `limit` on every query form; its types only declare it for SELECT.
  return { queryType: parsed.queryType, limit: (parsed as { limit?: number }).limit };
}

/**
 * Writes normalised JSON results in `format` with Oxigraph's result writers, the embedded store's
 * (Virtuoso's own CSV and TSV are not the SPARQL 1.1 formats): the solutions are loaded into a
 * scratch store as triples, and a query projects them back in order.
 */
function writeSolutions(json: SparqlJson, format: string): string {
  if (format === "application/sparql-results+json") return JSON.stringify(json);
  const scratch = new oxigraph.Store();
  if (typeof json.boolean === "boolean") {
    return String(
      scratch.query(json.boolean ? "ASK {}" : "ASK { FILTER(false) }", { results_format: format }),
    );
  }
  const vars = json.head?.vars ?? [];
  const rows = json.results?.bindings ?? [];
  if (vars.length === 0) {
    return String(
      scratch.query(`SELECT * WHERE { VALUES () { ${"() ".repeat(rows.length)}} }`, {
        results_format: format,
      }),
    );
  }
  let row = "row";
  while (vars.includes(row) || vars.includes(`${row}_i`)) row = `${row}_`;
  const triples: string[] = [];
  rows.forEach((solution, i) => {
    const subject = `<${NS}solution:${i}>`;
    triples.push(`${subject} <${NS}solution> "${i}"^^<${XSD_INTEGER}> .`);
    vars.forEach((v, k) => {
      const b = solution[v];
      if (b) triples.push(`${subject} <${NS}var:${k}> ${ntriple(b)} .`);
    });
  });
  try {
    scratch.load(triples.join("\n"), { format: "application/n-triples" });
  } catch (err) {
    throw new StoreError(`query: a term of the SPARQL store's answer is not RDF: ${(err as Error).message}`, {
      cause: err,
    });
  }
  const optionals = vars.map((v, k) => `OPTIONAL { ?${row} <${NS}var:${k}> ?${v} }`).join(" ");
  const text = `SELECT ${vars.map((v) => `?${v}`).join(" ")} WHERE { ?${row} <${NS}solution> ?${row}_i ${optionals} } ORDER BY ?${row}_i`;
  return String(scratch.query(text, { results_format: format }));
}

/**
 * Runs writes one after another per key: directory writes share one key (they all rewrite the
 * revision), status writes have one per status graph, so twins' status never waits for a put.
 */
class WriteQueues {
  readonly #tails = new Map<string, Promise<unknown>>();
  run<T>(key: string, write: () => Promise<T>): Promise<T> {
    const result = (this.#tails.get(key) ?? Promise.resolve()).then(write);
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

/** The Digest challenge of a WWW-Authenticate header (RFC 7235: it may offer several), if any. */
function digestChallenge(header: string | null): string | undefined {
  const at = header?.search(/\bDigest\s/i) ?? -1;
  return at >= 0 ? header?.slice(at) : undefined;
}

/**
 * digest-fetch, given only the Digest challenge of a header: it takes the first challenge's scheme for
 * its own, and would answer `Basic realm=..., Digest ...` with a Digest response labelled Basic.
 */
class DigestAuth extends DigestClient {
  override parseAuth(header: string | null): void {
    super.parseAuth(digestChallenge(header) ?? null);
  }
}

/**
 * The client answering a 401's challenge with `auth`: Digest when offered (it never sends the
 * password), else Basic; undefined when neither is offered. digest-fetch does both schemes; which one
 * is ours to say (its Basic client sends the credentials with every request, so it is only made once
 * the store asked for them).
 */
function authClient(
  auth: { user: string; password: string },
  header: string | null,
): DigestClient | undefined {
  const challenge = digestChallenge(header);
  if (challenge !== undefined) {
    // The algorithm the store offers (digest-fetch takes MD5 when none is given, or one it lacks).
    const client = new DigestAuth(auth.user, auth.password, {
      algorithm: DigestClient.parse(challenge, "algorithm"),
    });
    // Takes in this challenge, so that the client's first request already answers it.
    client.parseAuth(challenge);
    return client;
  }
  if (!header || !/\bBasic\b/i.test(header)) return undefined;
  // digest-fetch's base64 encoder takes Latin-1 text only: given the UTF-8 bytes as Latin-1 characters,
  // it sends base64 of the UTF-8 credentials (RFC 7617's charset="UTF-8"), and any character at all.
  const utf8 = (text: string) => Buffer.from(text, "utf8").toString("latin1");
  return new DigestClient(utf8(auth.user), utf8(auth.password), { basic: true });
}

/** Credentials for some endpoints, and the client answering their challenge once one came. */
interface Credentials {
  readonly auth: { user: string; password: string } | undefined;
  /** Made at the endpoint's first 401: credentials are only ever sent in the scheme it asked for. */
  client: DigestClient | undefined;
}

export class SparqlStore implements DirectoryStore {
  readonly #queryUrl: string;
  readonly #updateUrl: string;
  /** The gateway's own: queryUrl and updateUrl. */
  readonly #writer: Credentials;
  readonly #searchUrl: string;
  /** Users' searches: never the writer's. */
  readonly #searcher: Credentials;
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
    this.#writer = { auth: options.auth, client: undefined };
    this.#searchUrl = options.search?.url ?? options.queryUrl;
    this.#searcher = { auth: options.search?.auth, client: undefined };
    this.#timeoutMs = options.timeoutMs ?? DEFAULT_TIMEOUT_MS;
    this.#maxRows = options.maxRows ?? DEFAULT_MAX_ROWS;
    this.#dialect = options.dialect;
  }

  /**
   * Checks that the endpoints answer (and that updates are allowed) before the gateway relies on
   * them: a search endpoint that wants credentials it was not given fails here, not at the first search.
   */
  async open(): Promise<void> {
    const ask = {
      body: new URLSearchParams({ query: "ASK {}" }).toString(),
      contentType: "application/x-www-form-urlencoded",
      accept: "application/sparql-results+json",
    };
    const { headers } = await this.#post(this.#queryUrl, this.#writer, "checking the query endpoint", ask);
    await this.#post(this.#searchUrl, this.#searcher, "checking the search endpoint", ask);
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
      failure = `not indexed: ${(err as Error).message}`;
    }
    const record = iri(recordIri(thing.id));
    const recordOps = this.#replaceRecord(record, this.#recordTriples(thing));
    const requests = named ? replaceGraph(thing.id, quads, recordOps) : [recordOps.join(" ;\n")];
    return this.#writes.run(RECORDS_GRAPH, () =>
      this.#retrying(async () => {
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
      [P.id, typedString(thing.id)],
      [P.td, literal(JSON.stringify(thing.td))],
      [P.created, literal(created)],
      [P.modified, literal(modified)],
    ];
    if (expires !== undefined) {
      const ms = Date.parse(expires);
      if (Number.isNaN(ms)) throw new StoreError(`expires ${JSON.stringify(expires)} is not a date`);
      triples.push([P.expires, oxigraph.literal(String(ms), oxigraph.namedNode(XSD_INTEGER)).toString()]);
    }
    if (ttl !== undefined) triples.push([P.ttl, literal(String(ttl))]);
    return triples.map(([p, o]) => `${iri(p)} ${o}`).join(" ;\n  ");
  }

  /** Operations that replace the record on `record` (`triples` as a predicate-object list, or none) and the revision. */
  #replaceRecord(record: string, triples: string | undefined): string[] {
    const g = iri(RECORDS_GRAPH);
    const revision = `${g} ${iri(P.revision)} ${literal(randomUUID())}`;
    return [
      `DELETE WHERE { GRAPH ${g} { ${record} ?p ?o } }`,
      `DELETE WHERE { GRAPH ${g} { ${g} ${iri(P.revision)} ?r } }`,
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
      this.#retrying(async () => {
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
      `SELECT (COUNT(DISTINCT ?r) AS ?n) WHERE { GRAPH ${iri(RECORDS_GRAPH)} { ?r ${iri(P.id)} ?id } }`,
    );
    return Number(str(row?.n) ?? 0);
  }

  async revision(): Promise<string> {
    this.#assertOpen();
    const g = iri(RECORDS_GRAPH);
    const rows = await this.#select(`SELECT ?r WHERE { GRAPH ${g} { ${g} ${iri(P.revision)} ?r } }`);
    // Two gateways writing at once may each leave a value until the next write: all of them, sorted.
    const values = rows.map((r) => str(r.r) ?? "").sort();
    return values.length === 0 ? "0" : values.join("+");
  }

  async expired(now: number): Promise<string[]> {
    this.#assertOpen();
    const bound = oxigraph.literal(String(Math.floor(now)), oxigraph.namedNode(XSD_INTEGER)).toString();
    const where = `?r ${iri(P.expires)} ?expires . FILTER (?expires <= ${bound})`;
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
      `SELECT ?id WHERE { GRAPH ${iri(RECORDS_GRAPH)} { ?r ${iri(P.id)} ?id . ${where} } ${filter} } ORDER BY ${BY_ID} LIMIT ${limit}`,
    );
    return rows.map((r) => str(r.id) ?? "");
  }

  async #records(pattern: string, modifiers: string): Promise<StoredThing[]> {
    const rows = await this.#select(
      `SELECT ?id ?td ?created ?modified ?expires ?ttl WHERE {
        ${pattern}
        GRAPH ${iri(RECORDS_GRAPH)} {
          ?r ${iri(P.id)} ?id ; ${iri(P.td)} ?td ; ${iri(P.created)} ?created ; ${iri(P.modified)} ?modified .
          OPTIONAL { ?r ${iri(P.expires)} ?expires }
          OPTIONAL { ?r ${iri(P.ttl)} ?ttl }
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
        throw new StoreError(`the record of ${id} holds no JSON: ${(err as Error).message}`, { cause: err });
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
      ({ body } = await this.#post(
        this.#searchUrl,
        this.#searcher,
        "query",
        {
          body: new URLSearchParams(params).toString(),
          contentType: "application/x-www-form-urlencoded",
          accept: graph ? "application/n-triples" : "application/sparql-results+json",
        },
        clientTimeoutMs,
      ));
    } catch (err) {
      throw this.#queryError(err, timeoutMs, performance.now() - sent);
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
      const scratch = new oxigraph.Store();
      try {
        scratch.load(body, { format: "application/n-triples" });
      } catch (err) {
        throw new StoreError(`query: the SPARQL store's answer is not N-Triples: ${(err as Error).message}`, {
          cause: err,
        });
      }
      if (capped && scratch.size >= this.#maxRows) throw tooMany();
      const text = scratch.query("CONSTRUCT WHERE { ?s ?p ?o }", { results_format: format });
      return { body: String(text), contentType: accept };
    }
    let json: SparqlJson;
    try {
      json = JSON.parse(body) as SparqlJson;
    } catch (err) {
      throw new StoreError(`query: the SPARQL store's answer is not JSON: ${body.slice(0, 200)}`, {
        cause: err,
      });
    }
    if (capped && (json.results?.bindings.length ?? 0) >= this.#maxRows) throw tooMany();
    return { body: writeSolutions(normalised(json), format), contentType: accept };
  }

  #queryError(err: unknown, timeoutMs: number, elapsedMs: number): unknown {
    if (err instanceof RequestTimeout) {
      return new QueryError("timeout", `the query ran longer than ${timeoutMs} ms`, { cause: err });
    }
    if (!(err instanceof EndpointError)) return err;
    // Virtuoso: S1T00 transaction timeout (MaxQueryExecutionTime), 42000 refused on its cost estimate.
    if (
      err.status === 408 ||
      err.status === 504 ||
      err.sqlState === "S1T00" ||
      err.sqlState === "S1TAT" ||
      /estimated execution time/i.test(err.text) ||
      // A server error once the limit has passed: the store gave up on the query (Virtuoso answers
      // some of its own timeouts so, depending on where in the query its 2 s tick falls).
      (err.status >= 500 && elapsedMs >= timeoutMs)
    ) {
      return new QueryError("timeout", err.text || `the query ran longer than ${timeoutMs} ms`, {
        cause: err,
      });
    }
    // Virtuoso reports some faults of the query only when running it, as 500: data exceptions
    // (22xxx: arithmetic on strings...), compiler errors (37xxx), unknown functions (42001).
    const clientFault = err.sqlState !== undefined && /^(22|37)|^42001$/.test(err.sqlState);
    if ([400, 413, 414, 422].includes(err.status) || clientFault) {
      return new QueryError("rejected", err.text || `the SPARQL store refused the query (${err.status})`, {
        cause: err,
      });
    }
    return err;
  }

  async putGraph(graph: string, ntriples: string): Promise<void> {
    this.#assertOpen();
    assertGatewayGraph(graph);
    const requests = replaceGraph(graph, parseQuads(ntriples, "application/n-triples", `graph ${graph}`));
    await this.#writes.run(graph, () =>
      this.#retrying(async () => {
        for (const request of requests) await this.#update(request, `writing graph ${graph}`);
      }),
    );
  }

  async deleteGraph(graph: string): Promise<void> {
    this.#assertOpen();
    assertGatewayGraph(graph);
    await this.#writes.run(graph, () =>
      this.#retrying(() => this.#update(`DROP SILENT GRAPH ${iri(graph)}`, `deleting graph ${graph}`)),
    );
  }

  async close(): Promise<void> {
    await this.#writes.idle();
    this.#open = false;
  }

  /** Runs a write again when Virtuoso chose it as a deadlock victim (SQLSTATE 40001); writes are idempotent. */
  async #retrying<T>(write: () => Promise<T>): Promise<T> {
    for (let attempt = 1; ; attempt++) {
      try {
        return await write();
      } catch (err) {
        if (!(err instanceof EndpointError && err.sqlState === "40001") || attempt >= WRITE_ATTEMPTS)
          throw err;
      }
    }
  }

  async #update(text: string, what: string): Promise<void> {
    await this.#post(this.#updateUrl, this.#writer, what, {
      body: text,
      contentType: "application/sparql-update; charset=UTF-8",
      accept: "application/sparql-results+json, */*;q=0.1",
    });
  }

  async #read(text: string): Promise<SparqlJson> {
    const { body } = await this.#post(this.#queryUrl, this.#writer, "reading the directory", {
      body: new URLSearchParams({ query: text }).toString(),
      contentType: "application/x-www-form-urlencoded",
      accept: "application/sparql-results+json",
    });
    try {
      return JSON.parse(body) as SparqlJson;
    } catch (err) {
      throw new StoreError(`reading the directory: the answer is not SPARQL JSON: ${body.slice(0, 200)}`, {
        cause: err,
      });
    }
  }

  async #select(text: string): Promise<Row[]> {
    return (await this.#read(text)).results?.bindings ?? [];
  }

  async #ask(text: string): Promise<boolean> {
    return (await this.#read(text)).boolean === true;
  }

  /**
   * POSTs to the store and reads its 2xx answer, all within `timeoutMs`. Throws RequestTimeout,
   * EndpointError (another status), or StoreError (unreachable).
   */
  async #post(
    url: string,
    credentials: Credentials,
    what: string,
    request: { body: string; contentType: string; accept: string },
    timeoutMs = this.#timeoutMs,
  ): Promise<{ headers: Headers; body: string }> {
    const signal = AbortSignal.timeout(timeoutMs);
    // A new init for each request: digest-fetch sets the Authorization header in the one it is given.
    const init = (): RequestInit => ({
      method: "POST",
      headers: { "content-type": request.contentType, accept: request.accept },
      body: request.body,
      signal,
    });
    // digest-fetch calls the global fetch (Node's), so its answers are the global Response.
    const send = (client: DigestClient | undefined): Promise<Response> =>
      client ? (client.fetch(url, init()) as Promise<Response>) : fetch(url, init());
    let res: Response;
    let body: string;
    try {
      const { client, auth } = credentials;
      res = await send(client);
      // The first 401: answer it in the scheme asked for, and from then on send the credentials up front
      // (a Digest client answers later challenges itself, e.g. for a new nonce).
      if (res.status === 401 && auth && !client) {
        const next = authClient(auth, res.headers.get("www-authenticate"));
        if (next) {
          await res.arrayBuffer();
          credentials.client = next;
          res = await send(next);
        }
      }
      body = await res.text();
    } catch (err) {
      if (err instanceof StoreError) throw err;
      if (signal.aborted) {
        throw new RequestTimeout(`${what}: the SPARQL store did not answer within ${timeoutMs} ms`, {
          cause: err,
        });
      }
      const cause = (err as { cause?: { message?: string } }).cause?.message ?? (err as Error).message;
      throw new StoreError(`${what}: cannot reach the SPARQL store at ${new URL(url).origin}: ${cause}`, {
        cause: err,
      });
    }
    if (res.status === 401 || res.status === 403) {
      const why = credentials.auth
        ? "the credentials were refused"
        : "the store asks for credentials, none are set";
      throw new EndpointError(`${what}: ${why}`, res.status, "");
    }
    if (!res.ok) throw new EndpointError(what, res.status, body);
    // Virtuoso's anytime queries: past the `timeout` parameter it answers 200 with partial results.
    if (res.headers.get("x-sql-state") === "S1TAT") {
      throw new RequestTimeout(`${what}: the SPARQL store stopped the query at its time limit`);
    }
    return { headers: res.headers, body };
  }
}
