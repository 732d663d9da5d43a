import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { monitorEventLoopDelay } from "node:perf_hooks";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { EmbeddedStore } from "../src/directory/embedded-store.js";
import { mountJsonPathSearch } from "../src/directory/jsonpath-search.js";
import { loadNamedQueries } from "../src/directory/named-queries.js";
import { guardQuery } from "../src/directory/query-guard.js";
import {
  jsonPathShape,
  MAX_JSONPATH_NOTS,
  MAX_SPARQL_NESTING,
  sparqlNesting,
} from "../src/directory/query-limits.js";
import { QueryPool } from "../src/directory/query-pool.js";
import { mountSearchApi } from "../src/directory/search-api.js";
import type { Gateway } from "../src/gateway.js";
import { createApp } from "../src/http/app.js";
import { createLogger } from "../src/logger.js";
import type { JsonObject } from "../src/wot/rdf.js";
import { waitFor } from "./helpers.js";
import { call, startTestGateway } from "./manager-client.js";

/**
 * Reproductions of the "stalls" part of the reliability issue: untrusted queries that held the
 * gateway's main thread (sparqljs on deep nesting, a backtracking regular expression in JSONPath),
 * overflowed a stack (500), faulted Oxigraph's WebAssembly (the index reloaded), or made every
 * search wait behind one running to its time limit.
 */

const TIMEOUT_MS = 1_500;
/** Backtracks ~2^40 times against `(a|aa)+`: hours, unbounded. */
const BACKTRACKING_TITLE = `${"a".repeat(40)}b`;

const td = (id: string, title: string): JsonObject => ({
  "@context": "https://www.w3.org/2022/wot/td/v1.1",
  id,
  title,
  securityDefinitions: { nosec_sc: { scheme: "nosec" } },
  security: "nosec_sc",
});

const nested = (open: string, inner: string, close: string, n: number) =>
  `${open.repeat(n)}${inner}${close.repeat(n)}`;

const accepted = (text: string) => {
  try {
    guardQuery(text, { maxResults: 10 });
    return true;
  } catch {
    return false;
  }
};

/** The largest n for which the guard accepts `make(n)` (it refuses make(n + 1)). */
function largestAccepted(make: (n: number) => string): number {
  let low = 1;
  let high = 2;
  while (accepted(make(high))) [low, high] = [high, high * 2];
  while (high - low > 1) {
    const mid = Math.floor((low + high) / 2);
    if (accepted(make(mid))) low = mid;
    else high = mid;
  }
  return low;
}

/** Queries that used to answer 500, fault the index or take seconds to parse: each must be a 400. */
const HOSTILE_SPARQL: Record<string, string> = {
  "groups nested 6,000 deep": `SELECT * WHERE ${nested("{ ", "?s ?p ?o", " }", 6_000)}`,
  "20,000 nested parentheses": `ASK { FILTER(${nested("(", "1", ")", 20_000)}) }`,
  "FILTER nested 1,600 deep": `ASK { FILTER(${nested("(", "1", ")", 1_600)}) }`,
  "FILTER nested 3,000 deep": `ASK { FILTER(${nested("(", "1", ")", 3_000)}) }`,
  "FILTER nested 10,000 deep": `ASK { FILTER(${nested("(", "1", ")", 10_000)}) }`,
  "OPTIONAL nested 1,000 deep": `SELECT * WHERE { ${nested("?s ?p ?o OPTIONAL { ", "?s ?p ?o", " }", 1_000)} }`,
  "UNION nested 1,000 deep": `SELECT * WHERE { ${nested("{ ?s ?p ?o } UNION { ", "?s ?p ?o", " }", 1_000)} }`,
  "EXISTS nested 256 deep": `ASK { ${nested("FILTER EXISTS { ", "?s ?p ?o", " }", 256)} }`,
  "function calls nested 400 deep": `ASK { FILTER(${nested("STR(", "1", ")", 400)}) }`,
  "a property path nested 6,000 deep": `SELECT * WHERE { ?s ${nested("(", "<urn:p>", ")", 6_000)} ?o }`,
  "a 1,000-step property path": `SELECT * WHERE { ?s <urn:p>${"/<urn:p>".repeat(1_000)} ?o }`,
  "a chain of 5,000 minus signs": `ASK { FILTER(1 ${"- 1 ".repeat(5_000)}) }`,
  "a chain of 3,000 ||": `ASK { FILTER(true ${"|| true ".repeat(3_000)}) }`,
  "1,000 triple patterns": `SELECT * WHERE { ${Array.from({ length: 1_000 }, (_, i) => `?s <urn:p${i}> ?o .`).join(" ")} }`,
  "1,000 BINDs": `SELECT * WHERE { ${Array.from({ length: 1_000 }, (_, i) => `BIND(1 AS ?v${i})`).join(" ")} }`,
  "2,000 UNION branches": `SELECT * WHERE { ${"{ ?s ?p ?o } UNION ".repeat(2_000)}{ ?s ?p ?o } }`,
  "a 500-item collection": `SELECT * WHERE { ?s ?p (${" 1".repeat(500)} ) }`,
  "subqueries nested 1,000 deep": `SELECT * WHERE ${nested("{ SELECT * WHERE ", "{ ?s ?p ?o }", " }", 1_000)}`,
};

describe("the nesting of a query's text", () => {
  it("counts brackets, braces and parentheses, but none in strings, IRIs, comments or escapes", () => {
    expect(sparqlNesting("SELECT * WHERE { ?s ?p ?o FILTER((1)) }")).toBe(3);
    // Neither hides a level nor fakes one.
    expect(sparqlNesting(`ASK { ?s ?p "))))" , '((((' , """}}}\n)))""" , <urn:a)))> }`)).toBe(1);
    expect(sparqlNesting("ASK { ?s ?p ?o # )))) {{{{\n FILTER(1) }")).toBe(2);
    expect(sparqlNesting("ASK { ( ex:a\\) ( ex:b\\) ( 1 ) ) ) }")).toBe(4);
    // A less-than is no IRI: what follows it still counts.
    expect(sparqlNesting("ASK { FILTER(1 < (2)) FILTER(2 > 1) }")).toBe(3);
    expect(sparqlNesting('ASK { FILTER("a\\"((" = ?x) }')).toBe(2);
  });

  it("counts JSONPath brackets outside strings, and runs of ! but not !=", () => {
    expect(jsonPathShape(`$[?@.a == ']]]((' && (@.b)]`)).toEqual({ nesting: 2, nots: 0 });
    expect(jsonPathShape("$[?! ! !@.a && @.b != 1]")).toEqual({ nesting: 1, nots: 3 });
  });
});

describe("untrusted queries on a gateway: refused or bounded, never stalling it", () => {
  let gateway: Gateway;
  beforeAll(async () => {
    gateway = await startTestGateway({ DTC_SEARCH_TIMEOUT_MS: String(TIMEOUT_MS) });
    for (const [id, title] of [
      ["urn:test:backtracking", BACKTRACKING_TITLE],
      ["urn:test:lamp", "Lamp"],
    ] as const) {
      expect(
        (await call(gateway.url, "PUT", `/things/${encodeURIComponent(id)}`, td(id, title))).status,
      ).toBe(201);
    }
  });
  afterAll(() => gateway?.close());

  const sparql = (query: string) =>
    fetch(`${gateway.url}/search/sparql`, {
      method: "POST",
      headers: { "Content-Type": "application/sparql-query", Accept: "application/sparql-results+json" },
      body: query,
    });
  const jsonPath = (query: string) =>
    fetch(`${gateway.url}/search/jsonpath?query=${encodeURIComponent(query)}`);
  const problemOf = async (res: Response) => {
    expect(res.headers.get("content-type")).toBe("application/problem+json");
    return (await res.json()) as { status: number; title: string; detail: string };
  };

  /**
   * Polls /healthz until `request` settles: the slowest answer, and how many there were. A main
   * thread held by the request's query answers none of them until it is done.
   */
  async function healthWhile<T>(
    request: Promise<T>,
  ): Promise<{ result: T; slowestMs: number; polls: number }> {
    let settled = false;
    const tracked = request.finally(() => {
      settled = true;
    });
    let slowestMs = 0;
    let polls = 0;
    while (!settled) {
      const started = performance.now();
      const res = await fetch(`${gateway.url}/healthz`);
      expect(res.status).toBe(200);
      await res.arrayBuffer();
      slowestMs = Math.max(slowestMs, performance.now() - started);
      polls++;
    }
    return { result: await tracked, slowestMs, polls };
  }

  it("refuses SPARQL nested 6,000 deep with a 400 naming the limit, in a few milliseconds", async () => {
    const text = HOSTILE_SPARQL["groups nested 6,000 deep"] as string;
    expect(text.length).toBeLessThan(64 * 1024);
    const started = performance.now();
    const body = await problemOf(await sparql(text));
    const elapsed = performance.now() - started;
    expect(body.status).toBe(400);
    expect(body.detail).toContain(`6000 deep; the limit is ${MAX_SPARQL_NESTING}`);
    // Refused before parsing (sparqljs took 19-29 s on it, the event loop blocked all along).
    expect(elapsed).toBeLessThan(250);
  });

  it("answers every deep or oversized SPARQL construct with a 400, and serves normal queries after", async () => {
    for (const [what, text] of Object.entries(HOSTILE_SPARQL)) {
      const res = await sparql(text);
      expect(res.status, what).toBe(400);
      const body = await problemOf(res);
      expect(body.detail, what).toMatch(/limit|deep|more than/);
    }
    const ask = await sparql("ASK { ?s ?p ?o }");
    expect(ask.status).toBe(200);
    expect(await ask.json()).toMatchObject({ boolean: true });
  });

  it("keeps /healthz answering while a large query is parsed (off the main thread)", async () => {
    // Within every limit, and ~0.3 s of sparqljs: it used to hold the event loop all that time.
    const values = `SELECT (COUNT(*) AS ?n) WHERE { VALUES ?x { ${"1 ".repeat(10_000)}} }`;
    const { result, slowestMs, polls } = await healthWhile(sparql(values));
    expect(result.status).toBe(200);
    expect(await result.json()).toMatchObject({ results: { bindings: [{ n: { value: "10000" } }] } });
    expect(polls).toBeGreaterThan(0);
    expect(slowestMs).toBeLessThan(1_000);
  });

  it("refuses a JSONPath filter of 5,000 ! or nested 1,000 deep with a 400 (they overflowed the stack)", async () => {
    const nots = await problemOf(await jsonPath(`$[?${"!".repeat(5_000)}@.title]`));
    expect(nots.status).toBe(400);
    expect(nots.detail).toContain(`5000 ! in a row; the limit is ${MAX_JSONPATH_NOTS}`);
    const deep = await problemOf(await jsonPath(`$[?${nested("(", "@.title", ")", 1_000)}]`));
    expect(deep.status).toBe(400);
    expect(deep.detail).toContain("deep; the limit is");
    // Double negation within the limit still works.
    expect(await (await jsonPath("$[?!!@.title].id")).json()).toContain("urn:test:lamp");
  });

  it("stops a backtracking JSONPath regular expression at the time limit, /healthz answering all along", async () => {
    const started = performance.now();
    const { result, slowestMs, polls } = await healthWhile(jsonPath(`$[?match(@.title, "(a|aa)+")].id`));
    const body = await problemOf(result);
    expect(body).toMatchObject({ status: 400, title: "Query Timeout" });
    expect(body.detail).toContain(`${TIMEOUT_MS} ms`);
    expect(performance.now() - started).toBeLessThan(TIMEOUT_MS + 3_000);
    // The regular expression ran on another thread: the gateway answered throughout.
    expect(polls).toBeGreaterThan(3);
    expect(slowestMs).toBeLessThan(1_000);
    // The same function on a short title answers normally.
    expect(await (await jsonPath(`$[?match(@.title, "(La|mp)+")].id`)).json()).toEqual(["urn:test:lamp"]);
  });

  it("answers a LIMIT 3 query while a slow SPARQL query and a slow JSONPath query run to their limit", async () => {
    const finished: string[] = [];
    const track = <T>(name: string, request: Promise<T>) =>
      request.then((value) => {
        finished.push(name);
        return value;
      });
    // Every triple with every other, three times over: runs to the limit.
    // Both query workers started (one was replaced after the last test's time limit).
    await Promise.all([jsonPath("$[*].id"), jsonPath("$[*].id")]);
    const slowSparql = track(
      "slow SPARQL",
      sparql("SELECT (COUNT(*) AS ?n) WHERE { ?a ?b ?c . ?d ?e ?f . ?g ?h ?i }"),
    );
    const slowJsonPath = track("slow JSONPath", jsonPath(`$[?match(@.title, "(a|aa)+")].id`));
    const started = performance.now();
    const quick = await track("LIMIT 3", sparql("SELECT ?s WHERE { ?s ?p ?o } LIMIT 3"));
    const quickMs = performance.now() - started;
    expect(quick.status).toBe(200);
    expect(((await quick.json()) as { results: { bindings: unknown[] } }).results.bindings).toHaveLength(3);
    expect((await slowSparql).status).toBe(400);
    expect((await slowJsonPath).status).toBe(400);
    // It waited for neither (before: 5.2 s behind one query running to its 5 s limit).
    expect(finished[0]).toBe("LIMIT 3");
    expect(quickMs).toBeLessThan(1_000);
  });
});

describe("the query limits against the embedded index", () => {
  let dir: string;
  let store: EmbeddedStore;
  let app: ReturnType<typeof createApp>;
  let pool: QueryPool;

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), "dtc-limits-"));
    store = new EmbeddedStore(dir, { indexReplicas: 2 });
    await store.open();
    for (let n = 0; n < 3; n++) {
      const id = `urn:test:t${n}`;
      await store.put({
        id,
        td: td(id, `Thing ${n}`),
        registration: { created: new Date(0).toISOString(), modified: new Date(0).toISOString() },
      });
    }
    await store.indexed();
    pool = new QueryPool();
    app = createApp({ version: "test", startedAt: 0, logger: createLogger("silent") });
    mountSearchApi(app, { store, named: await loadNamedQueries(), pool, timeoutMs: 3_000 });
  });
  afterAll(async () => {
    await pool?.close();
    await store?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  const sparql = (query: string) =>
    app.request("/search/sparql", {
      method: "POST",
      headers: { "Content-Type": "application/sparql-query" },
      body: query,
    });

  it("stops the queries that faulted Oxigraph before they reach it: no index worker is restarted", async () => {
    const starts = store.indexStarts();
    expect(starts).toBe(2);
    for (const [what, text] of Object.entries(HOSTILE_SPARQL)) {
      expect((await sparql(text)).status, what).toBe(400);
    }
    expect(store.indexStarts()).toBe(starts);
    const titles = await sparql(
      `SELECT ?t WHERE { ?s <https://www.w3.org/2019/wot/td#title> ?t } ORDER BY ?t`,
    );
    expect(titles.status).toBe(200);
    expect(((await titles.json()) as { results: { bindings: unknown[] } }).results.bindings).toHaveLength(3);
  });

  it("lets the deepest and largest queries within the limits through, and the index survives them", async () => {
    const starts = store.indexStarts();
    const atTheLimit: Record<string, (n: number) => string> = {
      "nested groups": (n) => `SELECT * WHERE ${nested("{ ", "?s ?p ?o", " }", n)}`,
      "nested function calls": (n) => `ASK { FILTER(${nested("STR(", "1", ")", n)}) }`,
      "nested EXISTS": (n) => `ASK { ${nested("FILTER EXISTS { ", "?s ?p ?o", " }", n)} }`,
      "nested OPTIONAL": (n) => `SELECT * WHERE { ${nested("?s ?p ?o OPTIONAL { ", "?s ?p ?o", " }", n)} }`,
      "nested subqueries": (n) => `SELECT * WHERE ${nested("{ SELECT * WHERE ", "{ ?s ?p ?o }", " }", n)}`,
      "a minus chain": (n) => `ASK { FILTER(1 ${"- 1 ".repeat(n)}) }`,
      "UNION branches": (n) => `SELECT * WHERE { ${"{ ?s ?p ?o } UNION ".repeat(n)}{ ?s ?p ?o } }`,
      "path alternatives": (n) => `SELECT * WHERE { ?s <urn:p>${"|<urn:p>".repeat(n)} ?o }`,
      BINDs: (n) =>
        `SELECT * WHERE { ${Array.from({ length: n }, (_, i) => `BIND(1 AS ?v${i})`).join(" ")} }`,
      // (Hundreds of triple patterns or sequence steps are valid too, but Oxigraph plans them for seconds.)
      FILTERs: (n) => `SELECT * WHERE { ?s ?p ?o ${"FILTER(true) ".repeat(n)}}`,
    };
    for (const [what, make] of Object.entries(atTheLimit)) {
      const n = largestAccepted(make);
      const res = await sparql(make(n));
      expect(res.status, `${what} (${n}): ${res.status === 200 ? "" : await res.text()}`).toBe(200);
      expect((await sparql(make(n + 1))).status, `${what} (${n + 1})`).toBe(400);
    }
    expect(store.indexStarts()).toBe(starts);
  });

  it("answers 503 with Retry-After when every query worker is taken and none may wait", async () => {
    const busyPool = new QueryPool({ size: 1, maxQueued: 0 });
    const busyApp = createApp({ version: "test", startedAt: 0, logger: createLogger("silent") });
    mountJsonPathSearch(busyApp, { store, pool: busyPool, timeoutMs: 2_000 });
    try {
      await store.put({
        id: "urn:test:backtracking",
        td: td("urn:test:backtracking", BACKTRACKING_TITLE),
        registration: { created: new Date(0).toISOString(), modified: new Date(0).toISOString() },
      });
      const search = (query: string) =>
        busyApp.request(`/search/jsonpath?query=${encodeURIComponent(query)}`);
      const slow = search(`$[?match(@.title, "(a|aa)+")].id`);
      await waitFor("the slow query to hold the worker", () => busyPool.running === 1);
      const refused = await search("$[*].id");
      expect(refused.status).toBe(503);
      expect(refused.headers.get("retry-after")).toBe("1");
      expect(((await refused.json()) as { detail: string }).detail).toContain("every query worker is taken");
      expect((await slow).status).toBe(400);
      // The worker that ran past the limit was replaced: the next query runs.
      expect((await search("$[*].id")).status).toBe(200);
    } finally {
      await busyPool.close();
      await store.delete("urn:test:backtracking");
    }
  });

  it("evaluates JSONPath over 2,000 TDs without holding the main thread", async () => {
    const registration = { created: new Date(0).toISOString(), modified: new Date(0).toISOString() };
    for (let batch = 0; batch < 2_000; batch += 100) {
      await Promise.all(
        Array.from({ length: 100 }, (_, i) => {
          const n = batch + i;
          const id = `urn:test:many:${n}`;
          return store.put({
            id,
            td: td(id, n % 500 === 0 ? `${"a".repeat(22)}b` : `Lamp ${n}`),
            registration,
          });
        }),
      );
    }
    const jsonApp = createApp({ version: "test", startedAt: 0, logger: createLogger("silent") });
    mountJsonPathSearch(jsonApp, { store, pool, timeoutMs: 10_000 });
    const delay = monitorEventLoopDelay({ resolution: 10 });
    delay.enable();
    // A regular expression that backtracks on four titles, a cheap comparison on the others.
    const res = await jsonApp.request(
      `/search/jsonpath?query=${encodeURIComponent(`$[?match(@.title, "(a|aa)+") || @.title == "Lamp 7"].id`)}`,
    );
    delay.disable();
    expect(res.status).toBe(200);
    expect(await res.json()).toEqual(["urn:test:many:7"]);
    // Reading and serialising pages of 500 TDs is all the main thread does.
    expect(delay.max / 1e6).toBeLessThan(300);
  });
});
