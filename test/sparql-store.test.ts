import { mkdtempSync, rmSync } from "node:fs";
import http from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import oxigraph from "oxigraph";
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it, vi } from "vitest";
import { EmbeddedStore } from "../src/directory/embedded-store.js";
import { loadNamedQueries } from "../src/directory/named-queries.js";
import { mountSearchApi } from "../src/directory/search-api.js";
import { RECORDS_GRAPH, SparqlStore, type SparqlStoreOptions } from "../src/directory/sparql-store.js";
import { QueryError, type StoredThing, StoreError, statusGraph } from "../src/directory/store.js";
import { mountThingsApi } from "../src/directory/things-api.js";
import { createApp } from "../src/http/app.js";
import { createLogger } from "../src/logger.js";
import { TD_CONTEXT_1_1 } from "../src/wot/jsonld-loader.js";
import { type JsonObject, toNQuads } from "../src/wot/rdf.js";
import { freePort } from "./brokers.js";
import {
  dropGraphs,
  startVirtuoso,
  type TestVirtuoso,
  virtuosoUnavailable,
  writerFetch,
} from "./virtuoso.js";

const TD = "https://www.w3.org/2019/wot/td#";
const HCTL = "https://www.w3.org/2019/wot/hypermedia#";
const JSON_RESULTS = "application/sparql-results+json";
const PREFIXES = `PREFIX td: <${TD}> PREFIX hctl: <${HCTL}> `;

const td = (id: string, extra: JsonObject = {}): JsonObject => ({
  "@context": TD_CONTEXT_1_1,
  "@type": "Thing",
  id,
  title: "Thing",
  securityDefinitions: { nosec_sc: { scheme: "nosec" } },
  security: "nosec_sc",
  ...extra,
});

const property = (name: string, extra: JsonObject = {}): JsonObject => ({
  type: "number",
  title: name,
  forms: [{ href: `http://example.org/things/${name}`, op: ["readproperty"] }],
  ...extra,
});

const at = Date.UTC(2026, 0, 1);
const thing = (
  id: string,
  extra: JsonObject = {},
  registration: Partial<StoredThing["registration"]> = {},
) => ({
  id,
  td: td(id, extra),
  registration: {
    created: new Date(at).toISOString(),
    modified: new Date(at).toISOString(),
    ...registration,
  },
});

/** Code point order, as WoT Discovery orders listings (UTF-8 byte order is the same). */
const byCodePoint = (a: string, b: string) => Buffer.compare(Buffer.from(a), Buffer.from(b));

interface Results {
  head: { vars?: string[] };
  boolean?: boolean;
  results?: { bindings: Record<string, { type: string; value: string; datatype?: string }>[] };
}

/** An HTTP server on loopback for one test: answers with `handle`, records each request's headers. */
async function localServer(
  handle: (req: http.IncomingMessage, body: string, res: http.ServerResponse) => void | Promise<void>,
): Promise<{ url: string; seen: http.IncomingHttpHeaders[]; close(): Promise<void> }> {
  const seen: http.IncomingHttpHeaders[] = [];
  const server = http.createServer(async (req, res) => {
    seen.push(req.headers);
    const chunks: Buffer[] = [];
    for await (const chunk of req) chunks.push(chunk as Buffer);
    await handle(req, Buffer.concat(chunks).toString("utf8"), res);
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}/sparql`,
    seen,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

describe("the remote SPARQL store on Virtuoso", () => {
  const skip = virtuosoUnavailable();
  let server: TestVirtuoso;
  let store: SparqlStore;
  const opened: { close(): Promise<void> }[] = [];

  async function open(options: Partial<SparqlStoreOptions> = {}): Promise<SparqlStore> {
    const s = new SparqlStore({ queryUrl: server.queryUrl, updateUrl: server.updateUrl, ...options });
    await s.open();
    opened.push(s);
    return s;
  }

  /** Writes straight to Virtuoso (test data that is not TDs). */
  async function update(text: string): Promise<void> {
    const res = await fetch(server.updateUrl, {
      method: "POST",
      headers: { "content-type": "application/sparql-update; charset=UTF-8" },
      body: text,
    });
    expect(res.status, await res.clone().text()).toBe(200);
  }

  /** Loads `n` triples `<urn:test:s{i}> <urn:test:id> "id{i}"` into `graph`, 100 per request. */
  async function load(graph: string, n: number): Promise<void> {
    for (let k = 0; k < n; k += 100) {
      const triples = Array.from(
        { length: Math.min(100, n - k) },
        (_, i) => `<urn:test:s${k + i}> <urn:test:id> "id${String(k + i).padStart(6, "0")}" .`,
      );
      await update(`INSERT DATA { GRAPH <${graph}> { ${triples.join("\n")} } }`);
    }
  }

  const select = async (s: SparqlStore, query: string): Promise<Results> =>
    JSON.parse((await s.query(query, JSON_RESULTS)).body) as Results;
  const values = async (s: SparqlStore, query: string, variable: string): Promise<string[]> =>
    ((await select(s, query)).results?.bindings ?? []).map((b) => b[variable]?.value ?? "");

  beforeAll(async () => {
    if (!skip) server = await startVirtuoso();
  });
  afterAll(async () => {
    if (!skip) await server?.stop();
  });
  beforeEach(async (ctx) => {
    if (skip) ctx.skip(skip);
    await dropGraphs(server);
    store = await open();
  });
  afterEach(async () => {
    await Promise.all(opened.splice(0).map((s) => s.close()));
  });

  it("round-trips quotes, backslashes, line breaks and non-ASCII exactly, in the record and in the TD graph", async () => {
    const tricky = [
      `double "quotes", 'single', """triple""" and '''triple'''`,
      "back\\slash, \\u0022 and \\n as text, and a trailing backslash \\",
      "line\nbreak, carriage\rreturn, tab\t, form\ffeed, nul\u0000, bell\u0007",
      "é 中文 😀 e\u0301 \uFFFD \u2028 \u2029 \u0085 \uFEFF",
      'SPARQL-ish: } . > < # ; INSERT DATA { <urn:x> <urn:y> "z" }',
    ];
    const id = "urn:dtc:test:é中😀";
    const properties = Object.fromEntries(
      tricky.map((text, i) => [`p${i}`, property(`p${i}`, { title: text })]),
    );
    const stored = thing(
      id,
      { title: tricky.join(" | "), description: "lone surrogate \ud800 stays in the record", properties },
      { ttl: 1 / 3, expires: new Date(at + 333).toISOString() },
    );
    expect(await store.put(stored)).toEqual({ created: true });
    expect(await store.get(id)).toEqual(stored);
    expect(await store.list(0, 10)).toEqual([stored]);

    const titles = await values(
      store,
      `${PREFIXES} SELECT ?title WHERE { GRAPH <${id}> { ?x td:title ?title } }`,
      "title",
    );
    expect(titles.sort()).toEqual([...tricky, tricky.join(" | ")].sort());
  });

  it("stores a TD of more than 1,200 triples across several requests, its blank-node structures intact", async () => {
    const id = "urn:dtc:test:big";
    const properties = Object.fromEntries(
      Array.from({ length: 300 }, (_, i) => [`p${i}`, property(`p${i}`)]),
    );
    const big = thing(id, { properties });
    const triples = (await toNQuads(big.td, { graph: id })).trim().split("\n").length;
    expect(triples).toBeGreaterThan(1200);

    expect(await store.put(big)).toEqual({ created: true });
    expect(await store.get(id)).toEqual(big);
    const [count] = await values(store, `SELECT (COUNT(*) AS ?n) WHERE { GRAPH <${id}> { ?s ?p ?o } }`, "n");
    expect(Number(count)).toBe(triples);
    // Each affordance reaches its form's target: no structure was torn between two requests.
    const [joined] = await values(
      store,
      `${PREFIXES} SELECT (COUNT(*) AS ?n) WHERE { GRAPH <${id}> {
         <${id}> td:hasPropertyAffordance ?a . ?a td:hasForm ?f . ?f hctl:hasTarget ?href } }`,
      "n",
    );
    expect(Number(joined)).toBe(300);

    // Replacing it leaves only the new triples.
    expect(await store.put(thing(id, { properties: { one: property("one") } }))).toEqual({ created: false });
    const [after] = await values(store, `SELECT (COUNT(*) AS ?n) WHERE { GRAPH <${id}> { ?s ?p ?o } }`, "n");
    expect(Number(after)).toBeLessThan(30);
  });

  it("gives IRIs to the blank nodes of a structure too big for one update operation", async () => {
    const id = "urn:dtc:test:deep";
    const nested = Object.fromEntries(
      Array.from({ length: 200 }, (_, i) => [`k${i}`, { type: "string", title: `K${i}`, readOnly: true }]),
    );
    const deep = thing(id, {
      properties: { config: property("config", { type: "object", properties: nested }) },
    });
    expect(await store.put(deep)).toEqual({ created: true });
    expect(await store.get(id)).toEqual(deep);
    const schemas = await values(
      store,
      `PREFIX js: <https://www.w3.org/2019/wot/json-schema#> SELECT ?schema WHERE { GRAPH <${id}> { ?o js:properties ?schema } }`,
      "schema",
    );
    expect(schemas).toHaveLength(200);
    expect(schemas.every((s) => s.startsWith("urn:dtc:directory:genid:"))).toBe(true);
  });

  it("stores a TD it cannot make RDF of, unsearchable, and says so", async () => {
    const failures: string[] = [];
    const s = await open({ onIndexFailure: (id, message) => failures.push(`${id}: ${message}`) });
    const unknown = thing("urn:t:ctx", {
      "@context": [TD_CONTEXT_1_1, "https://example.org/unknown-context"],
    });
    await s.put(thing("urn:t:ctx"));
    expect(await s.put(unknown)).toEqual({ created: false });
    expect(await s.get("urn:t:ctx")).toEqual(unknown);
    expect(failures).toEqual([
      expect.stringMatching(/^urn:t:ctx: not indexed: .*example\.org\/unknown-context/),
    ]);
    // The graph of the previous version is gone with it: a search must not find what is no longer there.
    expect(await values(s, "SELECT ?s WHERE { GRAPH <urn:t:ctx> { ?s ?p ?o } }", "s")).toEqual([]);
    // An id the API takes for an IRI that is none (bad percent-encoding) cannot name a graph either.
    const odd = thing("urn:t:100%zz");
    expect(await s.put(odd)).toEqual({ created: true });
    expect((await s.list(0, 10)).map((t) => t.id)).toEqual(["urn:t:100%zz", "urn:t:ctx"]);
    expect(failures[1]).toMatch(/^urn:t:100%zz: not indexed: its id is not an IRI/);
    expect(await s.delete("urn:t:100%zz")).toBe(true);
  });

  it("lists in code point order, and pages past the store's row limit by id", async () => {
    // U+FF5E sorts before U+1F600 by code point, after it in UTF-16 (JavaScript's default sort).
    const ids = ["b", "a", "B", "a-b", "a_b", "é", "z", "中", "😀", "\uFF5E", "aa", "a~", "Z"].map(
      (s) => `urn:t:${s}`,
    );
    for (const id of ids) await store.put(thing(id));
    const sorted = [...ids].sort(byCodePoint);
    expect(sorted.indexOf("urn:t:\uFF5E")).toBeLessThan(sorted.indexOf("urn:t:😀"));
    expect((await store.list(0, 100)).map((t) => t.id)).toEqual(sorted);
    // Each record's id stays a literal (Virtuoso may turn a plain one into the TD's IRI).
    expect(
      await values(
        store,
        "SELECT ?id WHERE { GRAPH <urn:dtc:directory:records> { ?r <urn:dtc:directory:id> ?id } FILTER (!isLiteral(?id)) }",
        "id",
      ),
    ).toEqual([]);

    // With a limit of 4 rows per query, every window takes the keyset path.
    const small = await open({ maxRows: 4 });
    for (let offset = 0; offset <= ids.length; offset++) {
      for (const limit of [1, 3, 4, 5, 9]) {
        const page = (await small.list(offset, limit)).map((t) => t.id);
        expect([offset, limit, page]).toEqual([offset, limit, sorted.slice(offset, offset + limit)]);
      }
    }
    // Virtuoso refuses ORDER BY windows reaching past 10,000 rows (SR353); the store walks instead.
    expect(await store.list(9_998, 5)).toEqual([]);
    expect((await store.list(2, 10_000)).map((t) => t.id)).toEqual(sorted.slice(2));
    expect(await store.count()).toBe(ids.length);

    for (const [i, id] of sorted.slice(0, 6).entries()) {
      await store.put(thing(id, {}, { expires: new Date(at + i * 1000).toISOString() }));
    }
    expect(await small.expired(at + 5000)).toEqual(sorted.slice(0, 6));
    expect(await small.expired(at + 2500)).toEqual(sorted.slice(0, 3));
  });

  it("refuses results Virtuoso would cut at 10,000 rows, unless the query's own LIMIT is within it", async () => {
    await load("urn:test:many", 10_010);
    const all = "SELECT ?s WHERE { GRAPH <urn:test:many> { ?s ?p ?o } }";
    const err = await store.query(all, JSON_RESULTS).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(QueryError);
    expect(err).toMatchObject({ kind: "rejected", message: expect.stringMatching(/limit of 10000 rows/) });
    const limited = await select(store, `${all} LIMIT 10000`);
    expect(limited.results?.bindings).toHaveLength(10_000);
    const graph = "CONSTRUCT WHERE { GRAPH <urn:test:many> { ?s ?p ?o } }";
    await expect(store.query(graph, "application/n-triples")).rejects.toMatchObject({ kind: "rejected" });
  });

  it("maps the store's errors: queries it refuses are rejected, slow ones time out", async () => {
    const rejected = async (query: string, accept = JSON_RESULTS) => {
      const err = await store.query(query, accept).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(QueryError);
      expect((err as QueryError).kind).toBe("rejected");
      return (err as QueryError).message;
    };
    // Valid SPARQL for sparqljs; Virtuoso's compiler refuses it (400).
    expect(await rejected("SELECT ?x WHERE { BIND (1 AS ?x) BIND (2 AS ?x) }")).toMatch(
      /Virtuoso 37000 Error SP031.*defined twice/,
    );
    // Found only when running: Virtuoso answers 500 with SQLSTATE 42001.
    expect(await rejected("SELECT (<urn:no:such:function>(1) AS ?x) WHERE {}")).toMatch(
      /Undefined procedure/,
    );
    expect(await rejected("SELECT ?s WHERE { ?s ")).toMatch(/Parse error/);
    expect(await rejected("DROP ALL")).toMatch(/not updates/);
    expect(await rejected("SELECT * WHERE { ?s ?p ?o }", "text/turtle")).toMatch(
      /SELECT query is answered in/,
    );

    await load("urn:test:slow", 3000);
    const slow = `SELECT (COUNT(*) AS ?n) WHERE { GRAPH <urn:test:slow> { ?a <urn:test:id> ?x . ?b <urn:test:id> ?y }
      FILTER (REGEX(CONCAT(?x, ?y), "1.*2.*3.*4")) }`;
    const started = Date.now();
    // Virtuoso stops at the next whole 2 s past the limit, before the client's 1 s of grace runs out.
    const err = await store.query(slow, JSON_RESULTS, { timeoutMs: 1800 }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(QueryError);
    expect((err as QueryError).kind).toBe("timeout");
    // Virtuoso stopped the query itself before the client gave up: with a partial answer
    // (X-SQL-State: S1TAT) or, depending on where its 2 s tick falls, a server error.
    expect(((err as QueryError).cause as Error).message).toMatch(
      /stopped the query at its time limit|the SPARQL store answered 5\d\d/,
    );
    expect(Date.now() - started).toBeLessThan(5000);
  });

  it("answers in every result format as the embedded store does", async () => {
    const dir = mkdtempSync(join(tmpdir(), "dtc-dir-"));
    const embedded = new EmbeddedStore(dir);
    await embedded.open();
    opened.push({
      close: async () => {
        await embedded.close();
        rmSync(dir, { recursive: true, force: true });
      },
    });
    const things = [
      thing("urn:t:1", {
        title: 'One "1"',
        description: "première\nligne",
        properties: { a: property("a") },
      }),
      thing("urn:t:2", { title: "Two", descriptions: { en: "Two", de: "Zwei" } }),
    ];
    for (const t of things) {
      await embedded.put(t);
      await store.put(t);
    }
    const same = async (query: string, formats: string[]) => {
      for (const format of formats) {
        const [mine, theirs] = await Promise.all([store.query(query, format), embedded.query(query, format)]);
        expect([format, mine]).toEqual([format, theirs]);
      }
    };
    const solutions = [
      JSON_RESULTS,
      "application/sparql-results+xml",
      "text/csv",
      "text/tab-separated-values",
    ];
    await same(
      `${PREFIXES} SELECT ?t ?title ?description WHERE { ?t td:title ?title OPTIONAL { ?t td:description ?description } FILTER (isIRI(?t)) } ORDER BY ?t ?description`,
      solutions,
    );
    // Virtuoso's SPARQL 1.0 "typed-literal" comes out as a literal with a datatype.
    await same(`${PREFIXES} SELECT (COUNT(*) AS ?n) (1.5 AS ?d) WHERE { ?t a td:Thing }`, solutions);
    await same(`${PREFIXES} ASK { <urn:t:1> td:title ?t }`, solutions);
    await same(`${PREFIXES} ASK { <urn:t:3> td:title ?t }`, solutions);

    // Graphs: the same triples (the writers' triple order is the store's).
    const construct = `${PREFIXES} CONSTRUCT { ?t td:title ?title ; td:description ?d } WHERE { ?t td:title ?title OPTIONAL { ?t td:description ?d } FILTER (isIRI(?t)) }`;
    for (const format of ["application/n-triples", "text/turtle", "application/ld+json"]) {
      const [mine, theirs] = await Promise.all([
        store.query(construct, format),
        embedded.query(construct, format),
      ]);
      expect(mine.contentType).toBe(format);
      const canonical = (body: string) =>
        oxigraph
          .parse(body, { format })
          .map((q) => q.toString())
          .sort();
      expect(canonical(mine.body)).toEqual(canonical(theirs.body));
      expect(canonical(mine.body)).toHaveLength(3);
    }
    // Blank nodes: Virtuoso's nodeID:// labels become blank node labels.
    const bnodes = await select(store, `${PREFIXES} SELECT ?a WHERE { ?t td:hasPropertyAffordance ?a }`);
    expect(bnodes.results?.bindings.map((b) => b.a?.type)).toEqual(["bnode"]);
  });

  it("is the whole state: a second store on the same endpoint sees every write, and the revision changes on each", async () => {
    const other = await open();
    const revisions = [await other.revision()];
    const first = thing("urn:t:shared");
    await store.put(first);
    expect(await other.get("urn:t:shared")).toEqual(first);
    expect(await other.count()).toBe(1);
    revisions.push(await other.revision());
    // The same content written again in the same millisecond is still a write.
    expect(await other.put(first)).toEqual({ created: false });
    revisions.push(await store.revision());
    expect(await other.delete("urn:t:shared")).toBe(true);
    expect(await store.delete("urn:t:shared")).toBe(false);
    revisions.push(await store.revision());
    expect(new Set(revisions).size).toBe(4);
    expect(await store.get("urn:t:shared")).toBeUndefined();
    expect(await values(store, "SELECT ?s WHERE { GRAPH <urn:t:shared> { ?s ?p ?o } }", "s")).toEqual([]);
  });

  it("keeps its records in one graph of their own, apart from the TDs' subjects", async () => {
    await store.put(thing("urn:t:r"));
    const graphs = await values(
      store,
      `SELECT DISTINCT ?g WHERE { GRAPH ?g { ?s ?p ?o } FILTER (STRSTARTS(STR(?g), "urn:")) } ORDER BY ?g`,
      "g",
    );
    expect(graphs).toEqual(["urn:dtc:directory:records", "urn:t:r"]);
    expect(await values(store, "SELECT ?p WHERE { <urn:t:r> ?p ?o }", "p")).not.toContain(
      "urn:dtc:directory:td",
    );
    // The directory's own graphs are not a TD's to take.
    await expect(store.put(thing(RECORDS_GRAPH))).rejects.toThrow(/reserved/);
    expect(await store.count()).toBe(1);
  });

  it("replaces and drops a twin's status graph", async () => {
    const tdId = "urn:t:twin";
    const graph = statusGraph(tdId);
    const status = (state: string) =>
      `<${tdId}> <https://w3id.org/dtc#lifecycleState> <https://w3id.org/dtc#${state}> .\n` +
      `<${tdId}> <https://w3id.org/dtc#entanglement> _:e .\n_:e <https://w3id.org/dtc#odte> "0.99"^^<http://www.w3.org/2001/XMLSchema#double> .\n`;
    await store.putGraph(statusGraph(tdId), status("Entangled"));
    await store.putGraph(statusGraph(tdId), status("Disentangled"));
    const query = `SELECT ?state ?odte WHERE { GRAPH <${graph}> { ?t <https://w3id.org/dtc#lifecycleState> ?state ; <https://w3id.org/dtc#entanglement> ?e . ?e <https://w3id.org/dtc#odte> ?odte } }`;
    expect((await select(store, query)).results?.bindings).toEqual([
      {
        state: { type: "uri", value: "https://w3id.org/dtc#Disentangled" },
        odte: { type: "literal", value: "0.99", datatype: "http://www.w3.org/2001/XMLSchema#double" },
      },
    ]);
    await expect(store.putGraph(statusGraph(tdId), "<not n-triples")).rejects.toBeInstanceOf(StoreError);
    await store.deleteGraph(statusGraph(tdId));
    expect((await select(store, query)).results?.bindings).toEqual([]);
  });

  it("sends credentials in the scheme the store asks for: Basic to a proxy, Digest to Virtuoso's /sparql-auth", async () => {
    // UTF-8 (RFC 7617's charset="UTF-8"), also beyond Latin-1.
    const password = "s3cret:é€";
    const expected = `Basic ${Buffer.from(`dtc:${password}`, "utf8").toString("base64")}`;
    const proxy = await localServer(async (req, body, res) => {
      if (req.headers.authorization !== expected) {
        res.writeHead(401, { "www-authenticate": 'Basic realm="dtc-test"' }).end();
        return;
      }
      const upstream = await fetch(server.queryUrl, {
        method: "POST",
        headers: { "content-type": String(req.headers["content-type"]), accept: String(req.headers.accept) },
        body,
      });
      res
        .writeHead(upstream.status, { "content-type": upstream.headers.get("content-type") ?? "text/plain" })
        .end(Buffer.from(await upstream.arrayBuffer()));
    });
    try {
      const viaProxy = { queryUrl: proxy.url, updateUrl: proxy.url };
      // Searches go elsewhere (the anonymous endpoint): the proxy sees the writer's requests only.
      const basic = await open({
        ...viaProxy,
        auth: { user: "dtc", password },
        search: { url: server.queryUrl },
      });
      await basic.put(thing("urn:t:auth"));
      expect((await basic.get("urn:t:auth"))?.id).toBe("urn:t:auth");
      // Nothing is sent before the store asks; then every request carries the credentials.
      const sent = proxy.seen.map((h) => h.authorization);
      expect(sent[0]).toBeUndefined();
      expect(sent.slice(1).every((a) => a === expected)).toBe(true);
      expect(sent.length).toBeGreaterThan(4);

      const wrong = new SparqlStore({ ...viaProxy, auth: { user: "dtc", password: "wrong" } });
      await expect(wrong.open()).rejects.toThrow(/the credentials were refused/);
      await expect(new SparqlStore(viaProxy).open()).rejects.toThrow(/asks for credentials/);
    } finally {
      await proxy.close();
    }

    const authUrl = server.queryUrl.replace(/\/sparql$/, "/sparql-auth");
    // Virtuoso's /sparql-auth through a relay (at the same path, as the Digest response covers it)
    // that records what is sent, and what Virtuoso answers.
    const answered: number[] = [];
    const relay = await localServer(async (req, body, res) => {
      const headers: Record<string, string> = {
        "content-type": String(req.headers["content-type"]),
        accept: String(req.headers.accept),
      };
      if (req.headers.authorization) headers.authorization = req.headers.authorization;
      const upstream = await fetch(authUrl, { method: "POST", headers, body });
      answered.push(upstream.status);
      const answer: Record<string, string> = {
        "content-type": upstream.headers.get("content-type") ?? "text/plain",
      };
      const offered = upstream.headers.get("www-authenticate");
      if (offered) answer["www-authenticate"] = offered;
      res.writeHead(upstream.status, answer).end(Buffer.from(await upstream.arrayBuffer()));
    });
    try {
      const relayed = relay.url.replace(/\/sparql$/, "/sparql-auth");
      const digest = await open({
        queryUrl: relayed,
        updateUrl: relayed,
        auth: { user: "dba", password: "dba" },
        search: { url: server.queryUrl },
      });
      await digest.put(thing("urn:t:digest"));
      expect((await digest.get("urn:t:digest"))?.id).toBe("urn:t:digest");
      expect(await values(digest, `${PREFIXES} SELECT ?t WHERE { ?t a td:Thing } ORDER BY ?t`, "t")).toEqual([
        "urn:t:auth",
        "urn:t:digest",
      ]);
      // More than 16 requests (nc past 0x10), several at once on the same nonce.
      for (let i = 0; i < 12; i++) expect(await digest.count()).toBe(2);
      expect(await Promise.all(Array.from({ length: 12 }, () => digest.count()))).toEqual(Array(12).fill(2));
      // One request without credentials, answered 401 with Virtuoso's Digest challenge; every other
      // carries Digest (MD5, qop=auth) up front, and the password never goes out.
      const sent = relay.seen.map((h) => h.authorization);
      expect(sent[0]).toBeUndefined();
      expect(answered[0]).toBe(401);
      expect(sent.length).toBeGreaterThan(24);
      for (const authorization of sent.slice(1)) {
        expect(authorization).toMatch(/^Digest username="dba",.*qop=auth,.*algorithm=MD5,/);
        expect(authorization).not.toContain("dba:dba");
      }
      expect(answered.slice(1).every((status) => status === 200)).toBe(true);
    } finally {
      await relay.close();
    }

    // Straight to Virtuoso, too.
    const direct = await open({
      queryUrl: authUrl,
      updateUrl: authUrl,
      auth: { user: "dba", password: "dba" },
      search: { url: authUrl, auth: { user: "dba", password: "dba" } },
    });
    expect(await direct.count()).toBe(2);
    const refused = new SparqlStore({
      queryUrl: authUrl,
      updateUrl: authUrl,
      auth: { user: "dba", password: "x" },
    });
    await expect(refused.open()).rejects.toThrow(/the credentials were refused/);

    // Offered both, the store answers Digest: the password is never sent.
    const both = await localServer((_req, _body, res) => {
      res
        .writeHead(401, {
          "www-authenticate": 'Basic realm="dtc-test", Digest realm="dtc-test", nonce="abc123", qop="auth"',
        })
        .end();
    });
    try {
      const s = new SparqlStore({ queryUrl: both.url, updateUrl: both.url, auth: { user: "dtc", password } });
      await expect(s.open()).rejects.toThrow(/the credentials were refused/);
      const sent = both.seen.map((h) => h.authorization);
      expect(sent[0]).toBeUndefined();
      expect(sent.length).toBeGreaterThan(1);
      for (const authorization of sent.slice(1)) {
        expect(authorization).toMatch(/^Digest username="dtc",realm="dtc-test",nonce="abc123",/);
      }
    } finally {
      await both.close();
    }
  });

  it("fails with a clear StoreError when the store is unreachable or does not answer in time", async () => {
    const port = await freePort();
    const nowhere = `http://127.0.0.1:${port}/sparql`;
    await expect(new SparqlStore({ queryUrl: nowhere, updateUrl: nowhere }).open()).rejects.toThrow(
      new RegExp(`cannot reach the SPARQL store at http://127.0.0.1:${port}`),
    );

    // Answers open()'s checks, then never again.
    const silent = await localServer((_req, body, res) => {
      if (body === "query=ASK+%7B%7D")
        res.writeHead(200, { "content-type": JSON_RESULTS }).end('{"boolean":true}');
      else if (body.startsWith("DELETE WHERE")) res.writeHead(200).end();
    });
    try {
      const slow = await open({ queryUrl: silent.url, updateUrl: silent.url, timeoutMs: 300 });
      await expect(slow.get("urn:t:x")).rejects.toThrow(/did not answer within 300 ms/);
      await expect(slow.put(thing("urn:t:x"))).rejects.toBeInstanceOf(StoreError);
      await expect(slow.query("ASK { ?s ?p ?o }", JSON_RESULTS, { timeoutMs: 200 })).rejects.toMatchObject({
        kind: "timeout",
      });
    } finally {
      await silent.close();
    }

    // The same through the credentials' client, in either scheme (this server checks no more than the scheme).
    for (const offered of ['Digest realm="dtc-test", nonce="abc123", qop="auth"', 'Basic realm="dtc-test"']) {
      const scheme = offered.split(" ")[0] ?? "";
      const guarded = await localServer((req, body, res) => {
        if (!req.headers.authorization?.startsWith(`${scheme} `)) {
          res.writeHead(401, { "www-authenticate": offered }).end();
        } else if (body === "query=ASK+%7B%7D") {
          res.writeHead(200, { "content-type": JSON_RESULTS }).end('{"boolean":true}');
        } else if (body.startsWith("DELETE WHERE")) res.writeHead(200).end();
      });
      try {
        const slow = await open({
          queryUrl: guarded.url,
          updateUrl: guarded.url,
          auth: { user: "dtc", password: "x" },
          search: { url: guarded.url, auth: { user: "dtc-search", password: "y" } },
          timeoutMs: 300,
        });
        await expect(slow.get("urn:t:x")).rejects.toThrow(/did not answer within 300 ms/);
        await expect(slow.query("ASK { ?s ?p ?o }", JSON_RESULTS, { timeoutMs: 200 })).rejects.toMatchObject({
          kind: "timeout",
        });
        // Writer and searcher each sent one request without credentials (answered 401), then theirs.
        const sent = guarded.seen.map((h) => h.authorization);
        expect(sent.filter((a) => a === undefined)).toHaveLength(2);
        expect(sent.filter((a) => a !== undefined).every((a) => a?.startsWith(`${scheme} `))).toBe(true);
      } finally {
        await guarded.close();
      }
    }
  });
});

describe("users' searches on Virtuoso: guarded, and sent to the read-only endpoint", () => {
  const skip = virtuosoUnavailable();
  let server: TestVirtuoso;
  /** In front of the search endpoint (the anonymous /sparql): records what searches send. */
  let relay: Awaited<ReturnType<typeof localServer>>;
  const relayed: string[] = [];
  let store: SparqlStore;
  let app: ReturnType<typeof createApp>;

  const sparql = (query: string) => app.request(`/search/sparql?query=${encodeURIComponent(query)}`);
  const things = async (res: Response): Promise<string[]> =>
    ((await res.json()) as Results).results?.bindings.map((b) => b.t?.value ?? "") ?? [];

  beforeAll(async () => {
    if (skip) return;
    server = await startVirtuoso({ access: "writer" });
    relay = await localServer(async (req, body, res) => {
      relayed.push(new URLSearchParams(body).get("query") ?? body);
      const upstream = await fetch(server.searchUrl, {
        method: "POST",
        headers: { "content-type": String(req.headers["content-type"]), accept: String(req.headers.accept) },
        body,
      });
      res
        .writeHead(upstream.status, { "content-type": upstream.headers.get("content-type") ?? "text/plain" })
        .end(Buffer.from(await upstream.arrayBuffer()));
    });
    store = new SparqlStore({
      queryUrl: server.queryUrl,
      updateUrl: server.updateUrl,
      auth: server.auth,
      search: { url: relay.url },
    });
    await store.open();
    app = createApp({ version: "test", startedAt: 0, logger: createLogger("silent") });
    mountThingsApi(app, { store });
    mountSearchApi(app, { store, named: await loadNamedQueries() });
    const res = await app.request("/things/urn:t:search", {
      method: "PUT",
      headers: { "Content-Type": "application/td+json" },
      body: JSON.stringify(td("urn:t:search", { title: "Searchable" })),
    });
    expect(res.status).toBe(201);
  });
  afterAll(async () => {
    if (skip) return;
    await store?.close();
    await relay?.close();
    await server?.stop();
  });
  beforeEach((ctx) => {
    if (skip) ctx.skip(skip);
    relayed.length = 0;
  });

  it("runs a legitimate search on the read-only endpoint, without the writer's credentials, as regenerated text", async () => {
    expect(server.searchUrl).not.toBe(server.queryUrl);
    const res = await sparql(
      `# note for the store\n${PREFIXES}SELECT ?t WHERE { ?t a td:Thing ; td:title ?x FILTER(REGEX(STR(?x), "^Search")) }`,
    );
    expect(res.status).toBe(200);
    expect(await things(res)).toEqual(["urn:t:search"]);
    const named = await app.request("/search/named/twins-by-lifecycle?state=Entangled");
    expect(named.status).toBe(200);
    // Both reached Virtuoso through the search endpoint, as sparqljs's text: no comment, no prefixes.
    expect(relayed).toHaveLength(2);
    expect(relayed[0]).toContain("<https://www.w3.org/2019/wot/td#Thing>");
    expect(relayed[0]).not.toMatch(/note for the store|PREFIX/);
    expect(relay.seen.every((headers) => headers.authorization === undefined)).toBe(true);
  });

  it("refuses bif: and sql: functions with a 400 before the store runs them", async () => {
    // bif:http_get would make Virtuoso's anonymous endpoint fetch this: it must never be asked.
    const target = await localServer((_req, _body, res) => {
      res.writeHead(200, { "content-type": "text/plain" }).end("fetched");
    });
    const query = vi.spyOn(store, "query");
    try {
      const attacks: [string, string][] = [
        ["SELECT (bif:file_to_string('/etc/passwd') AS ?x) {}", "Unknown prefix: bif"],
        ["PREFIX bif: <bif:> SELECT (bif:file_to_string('/etc/passwd') AS ?x) {}", "<bif:file_to_string>"],
        [`SELECT (<bif:http_get>("${target.url}") AS ?x) {}`, "<bif:http_get>"],
        [
          `PREFIX bif: <bif:> SELECT ?x WHERE { BIND(bif:http_get("${target.url}") AS ?x) }`,
          "<bif:http_get>",
        ],
        [`SELECT (<sql:RDF_GRAPH_GROUP_CREATE>("urn:g", 1) AS ?x) {}`, "<sql:RDF_GRAPH_GROUP_CREATE>"],
        [`DEFINE get:soft "replace" SELECT * FROM <${target.url}> { ?s ?p ?o }`, "DEFINE pragmas"],
      ];
      for (const [text, named] of attacks) {
        const res = await sparql(text);
        expect([text, res.status]).toEqual([text, 400]);
        expect(((await res.json()) as { detail: string }).detail).toContain(named);
      }
      expect(query).not.toHaveBeenCalled();
      expect(relayed).toEqual([]);
      expect(target.seen).toEqual([]);
      // The guard is what stops it: sent straight to the search endpoint, Virtuoso does fetch.
      await fetch(server.searchUrl, {
        method: "POST",
        headers: { accept: JSON_RESULTS },
        body: new URLSearchParams({ query: `SELECT (bif:http_get("${target.url}") AS ?x) {}` }),
      });
      expect(target.seen).toHaveLength(1);
    } finally {
      query.mockRestore();
      await target.close();
    }
  });

  it("searches on an endpoint that cannot write: updates sent to it straight are refused", async () => {
    const count = await store.count();
    for (const request of [
      { "content-type": "application/sparql-update", body: "DROP SILENT GRAPH <urn:t:search>" },
      {
        "content-type": "application/x-www-form-urlencoded",
        body: new URLSearchParams({
          update: `INSERT DATA { GRAPH <urn:t:x> { <urn:t:a> <urn:t:b> "c" } }`,
        }).toString(),
      },
      {
        "content-type": "application/x-www-form-urlencoded",
        body: new URLSearchParams({ query: "CLEAR GRAPH <urn:t:search>" }).toString(),
      },
    ]) {
      const res = await fetch(server.searchUrl, {
        method: "POST",
        headers: { "content-type": request["content-type"], accept: JSON_RESULTS },
        body: request.body,
      });
      expect(res.ok).toBe(false);
      // Virtuoso refuses when running it: 500, SQLSTATE 42000 (no permission), not 401/403.
      expect(await res.text()).toMatch(/42000 Error SR186:SECURITY: No permission/);
    }
    expect(await store.count()).toBe(count);
    const searched = await sparql(`ASK { GRAPH <urn:t:search> { ?s ?p ?o } }`);
    expect(await searched.json()).toMatchObject({ boolean: true });
    expect(await (await sparql(`ASK { GRAPH <urn:t:x> { ?s ?p ?o } }`)).json()).toMatchObject({
      boolean: false,
    });
    // The writer can, through /sparql-auth.
    const written = await writerFetch(server)(server.updateUrl, {
      method: "POST",
      headers: { "content-type": "application/sparql-update" },
      body: "DROP SILENT GRAPH <urn:t:nothing>",
    });
    expect(written.status).toBe(200);
  });

  it("sends searches without the writer's credentials by default, and says so at open() when they are needed", async () => {
    // queryUrl is /sparql-auth: a search endpoint that defaults to it, without credentials, fails at once.
    const defaulted = new SparqlStore({
      queryUrl: server.queryUrl,
      updateUrl: server.updateUrl,
      auth: server.auth,
    });
    await expect(defaulted.open()).rejects.toThrow(
      /checking the search endpoint: the store asks for credentials/,
    );
  });
});
