import { afterAll, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { loadNamedQueries } from "../src/directory/named-queries.js";
import { mountSearchApi } from "../src/directory/search-api.js";
import { type DirectoryStore, statusGraph } from "../src/directory/store.js";
import { mountThingsApi } from "../src/directory/things-api.js";
import { statusTriples } from "../src/directory/twin-status.js";
import { createApp } from "../src/http/app.js";
import { createLogger } from "../src/logger.js";
import { instantiate } from "../src/wot/instantiate.js";
import { storeAdapters } from "./directory-stores.js";
import { sample, sampleRegistry } from "./helpers.js";

const TD_CLASS = "https://www.w3.org/2019/wot/td#Thing";
const TD_TITLE = "https://www.w3.org/2019/wot/td#title";
const TITLES = `SELECT ?title WHERE { ?t a <${TD_CLASS}> ; <${TD_TITLE}> ?title } ORDER BY ?title`;
const IIOT = sample("iiot-device.tm.jsonld");
/** A title beyond ASCII: Latin-1, a dash, a symbol, CJK, and a character outside the BMP (4 UTF-8 bytes). */
const UNICODE_TITLE = "Gerät 6 — Température ✓ 温度 𝔸";

describe.each(storeAdapters())("SPARQL search and named queries on the %s store", (_name, adapter) => {
  const skip = adapter.unavailable();
  let store: DirectoryStore | undefined;
  let app: ReturnType<typeof createApp>;

  const get = (path: string, accept?: string) =>
    app.request(path, { headers: accept === undefined ? {} : { Accept: accept } });
  const sparql = (query: string, accept?: string) =>
    get(`/search/sparql?query=${encodeURIComponent(query)}`, accept);
  const problemOf = async (res: Response) => {
    expect(res.headers.get("content-type")).toBe("application/problem+json");
    return (await res.json()) as { status: number; title: string; detail: string };
  };
  type Bindings = { results: { bindings: Record<string, { value: string }>[] } };

  beforeAll(async () => {
    if (skip) return;
    await adapter.start();
    const opened = await adapter.fresh();
    store = opened;
    app = createApp({ version: "test", startedAt: 0, logger: createLogger("silent") });
    const directory = mountThingsApi(app, { store: opened });
    mountSearchApi(app, {
      store: opened,
      named: await loadNamedQueries(),
      maxResults: 4,
      timeoutMs: adapter.queryTimeoutMs,
    });
    const registry = await sampleRegistry();
    for (const n of [1, 2, 3, 4, 5, 6]) {
      const td = await instantiate(registry, IIOT, {
        placeholders: { DEVICE_ID: `d${n}` },
        id: `urn:dtc:twin:d${n}`,
      });
      td.title = n === 6 ? UNICODE_TITLE : `Device ${n}`;
      // Twins' TDs are the gateway's to write (the Things API refuses them): as the manager does.
      expect((await directory.put(`urn:dtc:twin:d${n}`, td)).created).toBe(true);
    }
    // Twins d1 and d2 report a status; only d1 is Entangled with a good ODTE.
    const figures = (odte: number) => ({
      odte,
      timeliness: 1,
      reliability: odte,
      availability: 1,
      updates: 10,
      windowSeconds: 10,
      desiredTimeliness: 50,
      expectedUpdateRate: 1,
      threshold: 0.9,
      evaluatedAt: new Date(0).toISOString(),
      entangled: odte >= 0.9,
      windowFilled: true,
    });
    await opened.putGraph(
      statusGraph("urn:dtc:twin:d1"),
      statusTriples("urn:dtc:twin:d1", {
        state: "Entangled",
        entanglement: figures(0.97),
        platform: "InProcess",
      }),
    );
    await opened.putGraph(
      statusGraph("urn:dtc:twin:d2"),
      statusTriples("urn:dtc:twin:d2", { state: "Disentangled", entanglement: figures(0.4) }),
    );
  });
  afterAll(async () => {
    await store?.close();
    if (!skip) await adapter.stop();
  });
  beforeEach((ctx) => {
    if (skip) ctx.skip(skip);
  });

  it("answers SELECT with SPARQL JSON results by default, and XML, CSV, TSV or plain JSON on Accept", async () => {
    const json = await sparql(TITLES);
    expect(json.status).toBe(200);
    expect(json.headers.get("content-type")).toBe("application/sparql-results+json");
    const body = (await json.json()) as Bindings;
    expect(body.results.bindings.map((b) => b.title?.value)).toEqual([
      "Device 1",
      "Device 2",
      "Device 3",
      "Device 4",
    ]);
    const plain = await sparql(TITLES, "application/json");
    expect(plain.headers.get("content-type")).toBe("application/json");
    expect(await plain.json()).toEqual(body);
    const xml = await sparql(TITLES, "application/sparql-results+xml");
    expect(await xml.text()).toContain('<literal xml:lang="en">Device 1</literal>');
    const csv = await sparql(TITLES, "text/csv");
    expect(csv.headers.get("content-type")).toBe("text/csv");
    expect((await csv.text()).split(/\r?\n/).slice(0, 2)).toEqual(["title", "Device 1"]);
    const tsv = await sparql(TITLES, "text/tab-separated-values;q=0.9, text/html;q=0.1");
    expect((await tsv.text()).split("\n")[1]).toBe('"Device 1"@en');
    expect((await sparql(TITLES, "text/html")).status).toBe(406);
  });

  it("answers ASK with a boolean, CONSTRUCT with JSON-LD by default and Turtle or N-Triples on Accept", async () => {
    const ask = await sparql(`ASK { ?t a <${TD_CLASS}> }`);
    expect(await ask.json()).toMatchObject({ boolean: true });
    // Ordered: the result cap (4) applies to CONSTRUCT too, and which solutions an unordered query
    // keeps is the store's choice.
    const construct = `CONSTRUCT { ?t <urn:x:named> ?title } WHERE { ?t a <${TD_CLASS}> ; <${TD_TITLE}> ?title } ORDER BY ?t`;
    const ld = await sparql(construct);
    expect(ld.headers.get("content-type")).toBe("application/ld+json");
    const nodes = (await ld.json()) as { "@id": string }[];
    expect(nodes.map((node) => node["@id"]).sort()).toEqual([1, 2, 3, 4].map((n) => `urn:dtc:twin:d${n}`));
    const nt = await sparql(construct, "application/n-triples");
    expect(await nt.text()).toMatch(/^<urn:dtc:twin:d\d> <urn:x:named> "Device \d"@en \.$/m);
    const ttl = await sparql(`DESCRIBE <urn:dtc:twin:d1>`, "text/turtle");
    expect(ttl.headers.get("content-type")).toBe("text/turtle");
    expect(await ttl.text()).toContain("urn:dtc:twin:d1");
  });

  it("takes queries by POST as application/sparql-query or as a form", async () => {
    const direct = await app.request("/search/sparql", {
      method: "POST",
      headers: { "Content-Type": "application/sparql-query" },
      body: `ASK { <urn:dtc:twin:d5> ?p ?o }`,
    });
    expect(await direct.json()).toMatchObject({ boolean: true });
    const form = await app.request("/search/sparql", {
      method: "POST",
      headers: { "Content-Type": "application/x-www-form-urlencoded" },
      body: new URLSearchParams({ query: `ASK { <urn:dtc:twin:nobody> ?p ?o }` }).toString(),
    });
    expect(await form.json()).toMatchObject({ boolean: false });
    const other = await app.request("/search/sparql", {
      method: "POST",
      headers: { "Content-Type": "text/plain" },
      body: "ASK {}",
    });
    expect(other.status).toBe(415);
  });

  it("matches and answers text beyond ASCII as UTF-8, whichever way the query comes", async () => {
    const query = `SELECT ?t ?title WHERE { ?t <${TD_TITLE}> ?title FILTER (CONTAINS(STR(?title), "温度 𝔸")) }`;
    const requests = [
      sparql(query),
      app.request("/search/sparql", {
        method: "POST",
        headers: { "Content-Type": "application/sparql-query; charset=utf-8" },
        body: query,
      }),
      app.request("/search/sparql", {
        method: "POST",
        headers: { "Content-Type": "application/x-www-form-urlencoded" },
        body: new URLSearchParams({ query }).toString(),
      }),
    ];
    for (const res of await Promise.all(requests)) {
      expect(res.status).toBe(200);
      const text = new TextDecoder("utf-8", { fatal: true }).decode(await res.arrayBuffer());
      const rows = (JSON.parse(text) as Bindings).results.bindings;
      expect(rows.map((b) => [b.t?.value, b.title?.value])).toEqual([["urn:dtc:twin:d6", UNICODE_TITLE]]);
    }
    const csv = await sparql(`SELECT ?title WHERE { <urn:dtc:twin:d6> <${TD_TITLE}> ?title }`, "text/csv");
    expect(new TextDecoder("utf-8", { fatal: true }).decode(await csv.arrayBuffer())).toContain(
      UNICODE_TITLE,
    );
  });

  it("caps the number of results", async () => {
    const all = await sparql(`SELECT ?t WHERE { ?t a <${TD_CLASS}> }`);
    expect(((await all.json()) as Bindings).results.bindings).toHaveLength(4);
    const fewer = await sparql(`SELECT ?t WHERE { ?t a <${TD_CLASS}> } LIMIT 2`);
    expect(((await fewer.json()) as Bindings).results.bindings).toHaveLength(2);
  });

  it("refuses updates, syntax errors, federation, dataset parameters and missing queries with a 400", async () => {
    const update = await problemOf(await sparql(`INSERT DATA { <urn:a> <urn:b> <urn:c> }`));
    expect(update).toMatchObject({ status: 400 });
    expect(update.detail).toContain("updates are not accepted");
    const formUpdate = await app.request("/search/sparql", {
      method: "POST",
      headers: { "Content-Type": "application/x-www-form-urlencoded" },
      body: new URLSearchParams({ update: `DROP ALL` }).toString(),
    });
    expect(formUpdate.status).toBe(400);
    const syntax = await problemOf(await sparql(`SELECT ?x WHERE { ?x ?y }`));
    expect(syntax.status).toBe(400);
    expect(syntax.detail).toMatch(/not valid SPARQL 1\.1: Parse error on line 1/);
    const service = await problemOf(
      await sparql(`SELECT * WHERE { SERVICE <http://example.org/sparql> { ?s ?p ?o } }`),
    );
    expect(service.detail).toContain("SERVICE");
    expect((await get(`/search/sparql?query=ASK%7B%7D&default-graph-uri=urn:g`)).status).toBe(400);
    expect((await get("/search/sparql")).status).toBe(400);
    // Still answering after all that, with every TD there.
    expect((await sparql(`ASK {}`)).status).toBe(200);
    const count = await sparql(`SELECT (COUNT(DISTINCT ?t) AS ?n) WHERE { ?t a <${TD_CLASS}> }`);
    expect(((await count.json()) as Bindings).results.bindings[0]?.n?.value).toBe("6");
  });

  it("stops a query that runs past the time limit with a 400 and keeps serving", async () => {
    const started = performance.now();
    const body = await problemOf(await sparql(adapter.slowQuery));
    const elapsed = performance.now() - started;
    expect(body).toMatchObject({ status: 400, title: "Query Timeout" });
    expect(body.detail).toContain(`${adapter.queryTimeoutMs} ms`);
    // Stopped at the limit: it ran until then (it was not refused up front), and not much longer.
    expect(elapsed).toBeGreaterThanOrEqual(adapter.queryTimeoutMs);
    expect(elapsed).toBeLessThan(adapter.queryTimeoutMs + 5_000);
    const titles = (await (await sparql(TITLES)).json()) as Bindings;
    expect(titles.results.bindings).toHaveLength(4);
  });

  it("serves the named queries, with parameters bound as RDF terms", async () => {
    const list = (await (await get("/search/named")).json()) as { name: string }[];
    expect(list.map((q) => q.name)).toEqual(
      expect.arrayContaining(["twins-by-schema", "twins-by-entanglement", "twins-by-lifecycle"]),
    );
    const entangled = await get("/search/named/twins-by-entanglement?minOdte=0.9&state=Entangled");
    expect(entangled.status).toBe(200);
    const rows = (await entangled.json()) as Bindings;
    expect(rows.results.bindings.map((b) => b.thing?.value)).toEqual(["urn:dtc:twin:d1"]);
    const any = (await (await get("/search/named/twins-by-entanglement?minOdte=0")).json()) as Bindings;
    expect(any.results.bindings.map((b) => b.thing?.value)).toEqual(["urn:dtc:twin:d1", "urn:dtc:twin:d2"]);
    const byPlatform = (
      await (await get("/search/named/twins-by-node?platform=in-process", "text/csv")).text()
    )
      .trim()
      .split(/\r?\n/);
    expect(byPlatform.slice(1).map((line) => line.split(",")[0])).toEqual(["urn:dtc:twin:d1"]);
    // An injection attempt is a value like any other: refused by its type, never spliced in.
    const injected = await problemOf(
      await get(`/search/named/twins-by-lifecycle?state=${encodeURIComponent("Entangled } . ?s ?p ?o {")}`),
    );
    expect(injected.detail).toContain('parameter "state" must be a lifecycle state');
    expect((await get("/search/named/twins-by-entanglement")).status).toBe(400);
    expect((await get("/search/named/twins-by-entanglement?minOdte=0.9&colour=red")).status).toBe(400);
    expect((await get("/search/named/no-such-query")).status).toBe(404);
  });
});
