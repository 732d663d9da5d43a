import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { EmbeddedStore } from "../src/directory/embedded-store.js";
import { type JsonPathSearchOptions, mountJsonPathSearch } from "../src/directory/jsonpath-search.js";
import { enriched } from "../src/directory/things-api.js";
import { createApp } from "../src/http/app.js";
import { createLogger } from "../src/logger.js";
import type { JsonObject } from "../src/wot/rdf.js";

const CLOCK = Date.UTC(2026, 0, 1);

const td = (n: number, extra: JsonObject = {}): JsonObject => ({
  "@context": "https://www.w3.org/2022/wot/td/v1.1",
  id: `urn:lamp:${String(n).padStart(4, "0")}`,
  title: `Lamp ${n}`,
  securityDefinitions: { nosec_sc: { scheme: "nosec" } },
  security: "nosec_sc",
  properties: {
    on: { type: "boolean", forms: [{ href: `http://lamp${n}.example/on` }] },
    level: { type: "integer", forms: [{ href: `http://lamp${n}.example/level` }] },
  },
  ...extra,
});

const registration = { created: new Date(CLOCK).toISOString(), modified: new Date(CLOCK).toISOString() };

describe("JSONPath search (RFC 9535) over the directory", () => {
  let store: EmbeddedStore;

  const appWith = (options: Partial<JsonPathSearchOptions> = {}) => {
    const app = createApp({ version: "test", startedAt: 0, logger: createLogger("silent") });
    mountJsonPathSearch(app, { store, now: () => CLOCK, ...options });
    return app;
  };
  const search = (query: string, options?: Partial<JsonPathSearchOptions>, method = "GET") =>
    appWith(options).request(`/search/jsonpath?query=${encodeURIComponent(query)}`, { method });
  const put = async (n: number, extra?: JsonObject) => {
    const doc = td(n, extra);
    await store.put({ id: doc.id as string, td: doc, registration });
  };
  const expectProblem = async (res: Response, title: string, detail: RegExp) => {
    expect(res.status).toBe(400);
    expect(res.headers.get("content-type")).toBe("application/problem+json");
    const body = (await res.json()) as { title: string; detail: string };
    expect(body.title).toBe(title);
    expect(body.detail).toMatch(detail);
  };

  let dir: string;
  beforeEach(async () => {
    dir = mkdtempSync(join(tmpdir(), "dtc-jsonpath-"));
    store = new EmbeddedStore(dir);
    await store.open();
  });
  afterEach(async () => {
    await store.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it("filters the array of enriched TDs and answers the matches as a JSON array", async () => {
    for (const n of [3, 1, 2]) await put(n, n === 2 ? { tag: "kitchen" } : {});
    const res = await search("$[?@.title == 'Lamp 2']");
    expect(res.status).toBe(200);
    expect(res.headers.get("content-type")).toBe("application/json");
    const [match, ...rest] = (await res.json()) as JsonObject[];
    expect(rest).toEqual([]);
    const stored = await store.get("urn:lamp:0002");
    expect(match).toEqual(enriched(stored as NonNullable<typeof stored>, CLOCK));
    // The form the W3C directory test suite sends (parenthesised filter, single quotes).
    expect(await (await search("$[?(@.tag=='kitchen')].id")).json()).toEqual(["urn:lamp:0002"]);
  });

  it("selects values across TDs in id order: wildcards, descendants, functions", async () => {
    for (const n of [3, 1, 2]) await put(n);
    const values = async (query: string) => (await search(query)).json();
    expect(await values("$[*].id")).toEqual(["urn:lamp:0001", "urn:lamp:0002", "urn:lamp:0003"]);
    expect(await values("$.*.title")).toEqual(["Lamp 1", "Lamp 2", "Lamp 3"]);
    expect(await values("$..href")).toEqual(
      [1, 2, 3].flatMap((n) => [`http://lamp${n}.example/on`, `http://lamp${n}.example/level`]),
    );
    expect(await values("$[?match(@.title, 'Lamp [23]')].id")).toEqual(["urn:lamp:0002", "urn:lamp:0003"]);
    expect(await values("$[?search(@.properties.on.forms[0].href, 'lamp1')].title")).toEqual(["Lamp 1"]);
    expect(await values("$[?count(@.properties.*) == 2 && !(@.title == 'Lamp 2')].id")).toEqual([
      "urn:lamp:0001",
      "urn:lamp:0003",
    ]);
    expect(await values("$[?length(@.title) > 6].id")).toEqual([]);
    expect(await values("$[*].registration.retrieved")).toEqual(Array(3).fill(new Date(CLOCK).toISOString()));
    expect(await values("$.title")).toEqual([]); // the root is an array: it has no members
  });

  it("gives the same answer whatever the page size", async () => {
    for (let n = 1; n <= 7; n++) await put(n, { level: n % 3 });
    const query = "$[?@.level == 1]..href";
    const whole = await (await search(query, { pageSize: 500 })).json();
    expect(whole).toHaveLength(2 * 3);
    expect(await (await search(query, { pageSize: 2 })).json()).toEqual(whole);
    expect(await (await search(query, { pageSize: 7 })).json()).toEqual(whole);
  });

  it("refuses a missing query and invalid JSONPath with the parser's message", async () => {
    const app = appWith();
    await expectProblem(await app.request("/search/jsonpath"), "Bad Request", /missing query/);
    await expectProblem(await search(" "), "Bad Request", /missing query/);
    for (const query of ["$[?@.title ==]", "title", "$.properties~", "$[?(@.title=~/Lamp/)]", "$[?foo(@)]"]) {
      await expectProblem(await search(query), "Bad Request", /not valid JSONPath \(RFC 9535\): .+/);
    }
  });

  it("refuses queries whose answer depends on positions in the whole collection", async () => {
    await put(1);
    for (const query of ["$", "$[0]", "$[1:3]", "$[*, *]", "$..*", "$..[0]", "$[?@.title == $[0].title]"]) {
      await expectProblem(await search(query), "Unsupported Query", /not supported here/);
    }
  });

  it("stops a query at the time limit, even inside one TD (a backtracking regular expression)", async () => {
    await put(1, { title: `${"a".repeat(40)}!` });
    const started = performance.now();
    const res = await search("$[?match(@.title, '(a+)+b')]", { timeoutMs: 200 });
    await expectProblem(res, "Query Timeout", /200 ms/);
    // Unbounded, this expression backtracks 2^40 times: hours.
    expect(performance.now() - started).toBeLessThan(5_000);
    // The next query runs normally.
    expect(await (await search("$[*].id")).json()).toEqual(["urn:lamp:0001"]);
  });

  it("refuses a result larger than the limit", async () => {
    for (let n = 1; n <= 3; n++) await put(n);
    await expectProblem(
      await search("$[*]", { maxResultChars: 1_000 }),
      "Result Too Large",
      /1000 characters/,
    );
  });

  it("answers HEAD with the headers of GET and no body", async () => {
    await put(1);
    const get = await search("$[*].id");
    const head = await search("$[*].id", {}, "HEAD");
    expect(head.status).toBe(200);
    expect([...head.headers]).toEqual([...get.headers]);
    expect(await head.text()).toBe("");
    expect((await search("$[", {}, "HEAD")).status).toBe(400);
  });

  it("answers a simple query over 1,000 TDs quickly (p50 logged)", async () => {
    for (let n = 0; n < 1_000; n++) await put(n);
    const app = appWith();
    const url = `/search/jsonpath?query=${encodeURIComponent("$[?@.title == 'Lamp 500'].id")}`;
    const times: number[] = [];
    for (let i = 0; i < 30; i++) {
      const started = performance.now();
      const res = await app.request(url);
      expect(await res.json()).toEqual(["urn:lamp:0500"]);
      times.push(performance.now() - started);
    }
    times.sort((a, b) => a - b);
    const p50 = times[Math.floor(times.length / 2)] as number;
    console.log(`JSONPath over 1,000 TDs: p50 ${p50.toFixed(1)} ms, max ${times.at(-1)?.toFixed(1)} ms`);
    expect(p50).toBeLessThan(2_000);
  });
});
