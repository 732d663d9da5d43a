import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { Directory } from "../src/directory/directory.js";
import { DirectoryEvents } from "../src/directory/events.js";
import { mountJsonPathSearch } from "../src/directory/jsonpath-search.js";
import { loadNamedQueries, type NamedQueries } from "../src/directory/named-queries.js";
import { mountNotificationsApi } from "../src/directory/notifications-api.js";
import { mountSearchApi } from "../src/directory/search-api.js";
import type { DirectoryStore } from "../src/directory/store.js";
import { mountThingsApi } from "../src/directory/things-api.js";
import { mountWellKnown } from "../src/directory/well-known.js";
import { createApp } from "../src/http/app.js";
import { createLogger } from "../src/logger.js";
import { DISCOVERY_CONTEXT_URL, TD_CONTEXT_1_1 } from "../src/wot/jsonld-loader.js";
import type { JsonObject } from "../src/wot/rdf.js";
import { storeAdapters } from "./directory-stores.js";

/**
 * W3C WoT Discovery assertions (../shared/w3c/wot-discovery-assertions.tsv) for an HTTP Thing
 * Description Directory that no other test file covers; each test is named with its assertion id.
 * The directory is assembled as the gateway assembles it (src/gateway.ts), on each store adapter.
 */

const BASE = "http://dir.example";
/** Server page size of the listing: small, so that a handful of TDs spans pages. */
const PAGE = 3;
const START = Date.UTC(2026, 0, 1);
const TD_TITLE = "https://www.w3.org/2019/wot/td#title";
/** RFC 3339 date-time (section 5.6): full-date "T" full-time, with a time offset. */
const RFC3339 = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$/;
const UUID_V4_URN = /^urn:uuid:[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;

/** A small valid TD 1.1; no id when `id` is undefined (an Anonymous TD). */
const td = (id: string | undefined, extra: JsonObject = {}): JsonObject => ({
  "@context": TD_CONTEXT_1_1,
  ...(id === undefined ? {} : { id }),
  title: "Lamp",
  securityDefinitions: { nosec_sc: { scheme: "nosec" } },
  security: "nosec_sc",
  properties: { on: { type: "boolean", forms: [{ href: "http://lamp.example/on" }] } },
  ...extra,
});

/** The links of a Link header (RFC 8288), by relation type. */
function linksOf(header: string | null): Map<string, { href: string; params: Record<string, string> }> {
  const links = new Map<string, { href: string; params: Record<string, string> }>();
  for (const link of (header ?? "").matchAll(
    /<([^>]*)>((?:\s*;\s*[^;,=\s]+\s*=\s*(?:"[^"]*"|[^;,\s]*))*)/g,
  )) {
    const params: Record<string, string> = {};
    for (const param of (link[2] ?? "").matchAll(/;\s*([^;,=\s]+)\s*=\s*(?:"([^"]*)"|([^;,\s]*))/g)) {
      params[(param[1] ?? "").toLowerCase()] = param[2] ?? param[3] ?? "";
    }
    links.set(params.rel ?? "", { href: link[1] ?? "", params });
  }
  return links;
}

/** Decodes a body as UTF-8, failing on any byte sequence that is not UTF-8. */
const utf8 = async (res: Response): Promise<string> =>
  new TextDecoder("utf-8", { fatal: true }).decode(await res.arrayBuffer());

describe.each(storeAdapters())(
  "WoT Discovery conformance of the directory on the %s store",
  (_name, adapter) => {
    const skip = adapter.unavailable();
    let named: NamedQueries;
    let store: DirectoryStore;
    let events: DirectoryEvents;
    let app: ReturnType<typeof createApp>;
    let clock = START;

    const request = (method: string, path: string, body?: unknown, type = "application/td+json") =>
      app.request(path, {
        method,
        headers: body === undefined ? {} : { "Content-Type": type },
        body: body === undefined ? undefined : typeof body === "string" ? body : JSON.stringify(body),
      });
    const put = async (id: string, extra: JsonObject = {}) => {
      const res = await request("PUT", `/things/${encodeURIComponent(id)}`, td(id, extra));
      expect([id, res.status === 201 || res.status === 204]).toEqual([id, true]);
    };
    const getTd = async (id: string) =>
      (await (await request("GET", `/things/${encodeURIComponent(id)}`)).json()) as JsonObject;
    const sparql = (query: string, accept?: string) =>
      app.request(`/search/sparql?query=${encodeURIComponent(query)}`, {
        headers: accept === undefined ? {} : { Accept: accept },
      });
    /** Follows the `next` links from `path`; every page and its Link header. */
    const pages = async (path: string) => {
      const seen: { path: string; body: unknown; links: ReturnType<typeof linksOf> }[] = [];
      for (let next: string | undefined = path; next !== undefined; ) {
        expect(seen.length).toBeLessThan(20);
        const res = await request("GET", next);
        expect(res.status).toBe(200);
        const links = linksOf(res.headers.get("link"));
        seen.push({ path: next, body: await res.json(), links });
        const href = links.get("next")?.href;
        if (href === undefined) break;
        // Absolute or relative to the directory's base URL (tdd-things-list-pagination-header-nextlink-base).
        const target = new URL(href, `${BASE}/`);
        expect(target.origin).toBe(BASE);
        next = `${target.pathname}${target.search}`;
      }
      return seen;
    };

    beforeAll(async () => {
      if (skip) return;
      await adapter.start();
      named = await loadNamedQueries();
    });
    afterAll(async () => {
      if (!skip) await adapter.stop();
    });

    beforeEach(async (ctx) => {
      if (skip) ctx.skip(skip);
      clock = START;
      store = await adapter.fresh();
      const directory = new Directory(store, { now: () => clock });
      events = new DirectoryEvents();
      directory.onChange((change) => events.publish(change));
      app = createApp({ version: "test", startedAt: 0, logger: createLogger("silent") });
      mountWellKnown(app, { baseUrl: () => BASE });
      mountThingsApi(app, { directory, maxLimit: PAGE });
      mountSearchApi(app, { store, named });
      mountJsonPathSearch(app, { store, now: () => clock });
      mountNotificationsApi(app, { events });
    });
    afterEach(async () => {
      events?.close();
      await store?.close();
    });

    it("tdd-http-head: every GET endpoint answers HEAD with the status and headers of GET and no body", async () => {
      await put("urn:lamp:1");
      await put("urn:lamp:2");
      const paths = [
        "/things",
        `/things?limit=1&format=collection`,
        "/things/urn:lamp:1",
        `/search/sparql?query=${encodeURIComponent("SELECT ?t WHERE { ?t ?p ?o } LIMIT 1")}`,
        `/search/sparql?query=${encodeURIComponent("ASK { ?s ?p ?o }")}`,
        `/search/sparql?query=${encodeURIComponent("DESCRIBE <urn:lamp:1>")}`,
        "/search/named",
        "/search/named/twins-by-lifecycle?state=Entangled",
        `/search/jsonpath?query=${encodeURIComponent("$[*].id")}`,
        "/.well-known/wot",
        // Errors too: the same problem headers, no body.
        "/things/urn:lamp:none",
        "/things?limit=0",
        "/search/sparql",
        "/search/named/no-such-query",
        `/search/jsonpath?query=${encodeURIComponent("$[")}`,
      ];
      for (const path of paths) {
        const get = await request("GET", path);
        const head = await request("HEAD", path);
        expect([path, head.status]).toEqual([path, get.status]);
        expect([path, [...head.headers]]).toEqual([path, [...get.headers]]);
        expect([path, await head.text()]).toEqual([path, ""]);
        expect((await get.text()).length).toBeGreaterThan(0);
      }
    });

    it("tdd-http-error-response: client and server errors of every API are RFC 7807 problem details", async () => {
      await put("urn:lamp:1");
      const cases: [number, string, string, unknown?, string?][] = [
        [404, "GET", "/no/such/resource"],
        [404, "GET", "/things/urn:lamp:none"],
        [404, "DELETE", "/things/urn:lamp:none"],
        [404, "PATCH", "/things/urn:lamp:none", { title: "x" }, "application/merge-patch+json"],
        [400, "PUT", "/things/urn:lamp:1", "{not json"],
        [400, "PUT", "/things/urn:lamp:1", td("urn:lamp:1", { title: 42 })],
        [400, "POST", "/things", td("urn:lamp:2")],
        [415, "PUT", "/things/urn:lamp:1", td("urn:lamp:1"), "text/plain"],
        [
          413,
          "PUT",
          "/things/urn:lamp:1",
          JSON.stringify(td("urn:lamp:1", { description: "x".repeat(2 << 20) })),
        ],
        [400, "GET", "/things?offset=-1"],
        [400, "GET", "/search/sparql"],
        [400, "GET", `/search/sparql?query=${encodeURIComponent("SELECT ?x WHERE { ?x ?y }")}`],
        [415, "POST", "/search/sparql", "ASK {}", "text/plain"],
        [404, "GET", "/search/named/no-such-query"],
        [400, "GET", "/search/named/twins-by-lifecycle?state=Melted"],
        [400, "GET", `/search/jsonpath?query=${encodeURIComponent("$[")}`],
        [400, "GET", "/events/thing_renamed"],
      ];
      const check = async (res: Response, status: number, what: string) => {
        expect([what, res.status]).toEqual([what, status]);
        expect([what, res.headers.get("content-type")]).toEqual([what, "application/problem+json"]);
        const body = (await res.json()) as JsonObject;
        expect([what, body]).toEqual([
          what,
          expect.objectContaining({ type: expect.any(String), title: expect.any(String), status }),
        ]);
      };
      for (const [status, method, path, body, type] of cases) {
        await check(await request(method, path, body, type), status, `${method} ${path}`);
      }
      const accept = await sparql("ASK {}", "text/html");
      await check(accept, 406, "SPARQL with Accept: text/html");
      // A server error: the store is gone.
      await store.close();
      await check(await request("GET", "/things/urn:lamp:1"), 500, "GET with the store closed");
    });

    it("tdd-http-error-response-utf-8: problem details carrying non-ASCII text are UTF-8", async () => {
      const cases: [string, string][] = [
        [`/things/${encodeURIComponent("urn:lamp:gerät-温度-𝔸")}`, "urn:lamp:gerät-温度-𝔸"],
        [`/search/named/${encodeURIComponent("température")}`, "température"],
        [`/search/named/twins-by-lifecycle?state=${encodeURIComponent("Verschränkt")}`, "Verschränkt"],
      ];
      for (const [path, text] of cases) {
        const res = await request("GET", path);
        expect(res.status).toBeGreaterThanOrEqual(400);
        // application/problem+json has no charset parameter: JSON exchanged between systems is UTF-8 (RFC 8259).
        expect(res.headers.get("content-type")).toBe("application/problem+json");
        const body = JSON.parse(await utf8(res)) as { detail: string };
        expect(body.detail).toContain(text);
      }
    });

    it("tdd-validation-response-utf-8: validation problems about non-ASCII members are UTF-8, with field and description", async () => {
      const property = "température-温度";
      const bad = td("urn:lamp:1", { properties: { [property]: { type: "number", forms: "nowhere" } } });
      const created = await request("PUT", "/things/urn:lamp:1", bad);
      await put("urn:lamp:2");
      const patched = await request(
        "PATCH",
        "/things/urn:lamp:2",
        { properties: { [property]: { type: "number", forms: "nowhere" } } },
        "application/merge-patch+json",
      );
      for (const res of [created, patched]) {
        expect(res.status).toBe(400);
        expect(res.headers.get("content-type")).toBe("application/problem+json");
        const body = JSON.parse(await utf8(res)) as {
          validationErrors: { field: string; description: string }[];
        };
        expect(body.validationErrors).toContainEqual({
          field: `properties.${property}.forms`,
          description: expect.any(String),
        });
        for (const issue of body.validationErrors) {
          expect(issue).toEqual({ field: expect.any(String), description: expect.any(String) });
        }
      }
    });

    it("tdd-registrationinfo-vocab-expires: with a ttl, the client's expires is ignored and computed from the ttl", async () => {
      await put("urn:lamp:ttl", { registration: { ttl: 60, expires: "2099-01-01T00:00:00Z" } });
      expect((await getTd("urn:lamp:ttl")).registration).toMatchObject({
        ttl: 60,
        expires: new Date(START + 60_000).toISOString(),
      });
      // Renewed on update: from the time of the update.
      clock += 30_000;
      await put("urn:lamp:ttl", { registration: { ttl: 60, expires: "2000-01-01T00:00:00Z" } });
      expect((await getTd("urn:lamp:ttl")).registration).toMatchObject({
        expires: new Date(START + 90_000).toISOString(),
      });
      expect(await store.expired(START + 89_999)).toEqual([]);
      expect(await store.expired(START + 90_000)).toEqual(["urn:lamp:ttl"]);
      // Without a ttl, the client's expires is the expiry.
      await put("urn:lamp:until", { registration: { expires: "2026-01-01T00:05:00Z" } });
      const until = (await getTd("urn:lamp:until")).registration as JsonObject;
      expect(until.expires).toBe("2026-01-01T00:05:00.000Z");
      expect(until.ttl).toBeUndefined();
    });

    it("tdd-anonymous-td-identifier: an Anonymous TD is served with its local id in retrieval, listing and searches", async () => {
      const res = await request("POST", "/things", td(undefined, { title: "Anonymous lamp" }));
      expect(res.status).toBe(201);
      const location = decodeURIComponent(res.headers.get("location") ?? "");
      const id = location.replace(/^\/things\//, "");
      expect(id).toMatch(UUID_V4_URN); // tdd-anonymous-td-local-uuid
      expect(await getTd(id)).toMatchObject({ id, title: "Anonymous lamp" });
      const listed = (await (await request("GET", "/things")).json()) as JsonObject[];
      expect(listed.map((t) => [t.id, t.title])).toEqual([[id, "Anonymous lamp"]]);
      const found = await sparql(
        `SELECT ?t WHERE { GRAPH ?t { ?t <${TD_TITLE}> ?title FILTER (STR(?title) = "Anonymous lamp") } }`,
      );
      const rows = ((await found.json()) as { results: { bindings: { t: { value: string } }[] } }).results
        .bindings;
      expect(rows.map((b) => b.t.value)).toEqual([id]);
      const jsonpath = await request("GET", `/search/jsonpath?query=${encodeURIComponent("$[*].id")}`);
      expect(await jsonpath.json()).toEqual([id]);
    });

    it("tdd-things-list-pagination-header-nextlink-attr: next links keep the client's limit and format, with the offset of the next page", async () => {
      const ids = Array.from({ length: 7 }, (_, i) => `urn:lamp:${i}`);
      for (const id of [...ids].reverse()) await put(id);
      const idsOf = (body: unknown) => (body as JsonObject[]).map((t) => t.id);

      // A limit under the server's page: pages of that limit.
      const small = await pages("/things?limit=2");
      expect(small.map((p) => p.path)).toEqual([
        "/things?limit=2",
        "/things?offset=2&limit=2",
        "/things?offset=4&limit=2",
        "/things?offset=6&limit=2",
      ]);
      expect(small.flatMap((p) => idsOf(p.body))).toEqual(ids);

      // A limit over it: the server's pages, and the client's limit carried on.
      const large = await pages("/things?limit=10");
      expect(large.map((p) => p.path)).toEqual([
        "/things?limit=10",
        "/things?offset=3&limit=10",
        "/things?offset=6&limit=10",
      ]);
      expect(large.flatMap((p) => idsOf(p.body))).toEqual(ids);

      // The collection format stays the collection format, in the Link header and in the body.
      const collection = await pages("/things?format=collection&limit=2");
      expect(collection.map((p) => new URL(p.path, BASE).searchParams.get("format"))).toEqual(
        Array(4).fill("collection"),
      );
      for (const page of collection) {
        expect((page.body as JsonObject).next).toBe(page.links.get("next")?.href);
      }
      expect(collection.flatMap((p) => idsOf((p.body as JsonObject).members))).toEqual(ids);
    });

    it("tdd-things-list-pagination-header-canonicallink: every page links the collection with an etag that changes with it", async () => {
      for (const n of [1, 2, 3, 4, 5]) await put(`urn:lamp:${n}`);
      const etags = new Set<string>();
      /** The etag of the collection, the same on every page (and the canonical target). */
      const etag = async () => {
        const [first, ...rest] = await pages("/things?limit=2");
        const canonical = first?.links.get("canonical");
        expect(canonical?.href).toBe("/things");
        for (const page of rest) expect(page.links.get("canonical")).toEqual(canonical);
        const value = canonical?.params.etag ?? "";
        expect(value).not.toBe("");
        const [collection] = await pages("/things?format=collection&limit=2");
        expect(collection?.links.get("canonical")).toEqual({
          href: "/things?format=collection",
          params: { rel: "canonical", etag: value },
        });
        return value;
      };
      const initial = await etag();
      etags.add(initial);
      // Reads do not change it.
      await getTd("urn:lamp:1");
      await sparql("ASK { ?s ?p ?o }");
      expect(await etag()).toBe(initial);
      // Each kind of write does.
      const writes: [string, () => Response | Promise<Response>][] = [
        ["create", () => request("PUT", "/things/urn:lamp:6", td("urn:lamp:6"))],
        ["replace", () => request("PUT", "/things/urn:lamp:6", td("urn:lamp:6", { title: "B" }))],
        [
          "patch",
          () => request("PATCH", "/things/urn:lamp:6", { title: "C" }, "application/merge-patch+json"),
        ],
        ["delete", () => request("DELETE", "/things/urn:lamp:6")],
      ];
      for (const [what, write] of writes) {
        expect([what, (await write()).status < 300]).toEqual([what, true]);
        const next = await etag();
        expect([what, etags.has(next)]).toEqual([what, false]);
        etags.add(next);
      }
    });

    it("tdd-things-list-pagination-order-default: the listing is in Unicode code point order of ids, across pages", async () => {
      // Code point order differs from case-insensitive, locale and numeric orders on these.
      const expected = [
        "urn:t:%C3%A9",
        "urn:t:10",
        "urn:t:9",
        "urn:t:B",
        "urn:t:Q",
        "urn:t:Z",
        "urn:t:_",
        "urn:t:a",
        "urn:t:a-b",
        "urn:t:a.b",
        "urn:t:aa",
        "urn:t:b",
        "urn:t:~",
      ];
      const byCodePoint = (a: string, b: string) => {
        const [x, y] = [[...a].map((c) => c.codePointAt(0) ?? 0), [...b].map((c) => c.codePointAt(0) ?? 0)];
        for (let i = 0; i < Math.min(x.length, y.length); i++)
          if (x[i] !== y[i]) return (x[i] ?? 0) - (y[i] ?? 0);
        return x.length - y.length;
      };
      expect([...expected].sort(byCodePoint)).toEqual(expected);
      for (const id of ["urn:t:b", "urn:t:Q", "urn:t:a.b", "urn:t:9", "urn:t:_", "urn:t:a-b", "urn:t:~"])
        await put(id);
      for (const id of ["urn:t:aa", "urn:t:Z", "urn:t:10", "urn:t:%C3%A9", "urn:t:a", "urn:t:B"])
        await put(id);
      const listed = (await pages("/things")).flatMap((p) => (p.body as JsonObject[]).map((t) => t.id));
      expect(listed).toEqual(expected);
      const collection = await pages("/things?format=collection&offset=4&limit=4");
      expect(
        collection.flatMap((p) => ((p.body as JsonObject).members as JsonObject[]).map((t) => t.id)),
      ).toEqual(expected.slice(4));
    });

    it("tdd-absolute-time: registration times are RFC 3339 date-times, and a client's is read as one", async () => {
      await put("urn:lamp:1", { registration: { ttl: 3600 } });
      // An offset is honoured: 01:00+01:00 is midnight UTC.
      await put("urn:lamp:2", { registration: { expires: "2030-01-01T01:00:00+01:00" } });
      const times = (registration: unknown) => {
        const { ttl: _ttl, ...rest } = registration as JsonObject;
        return Object.values(rest) as string[];
      };
      const one = (await getTd("urn:lamp:1")).registration;
      expect(Object.keys(one as JsonObject).sort()).toEqual([
        "created",
        "expires",
        "modified",
        "retrieved",
        "ttl",
      ]);
      const listed = (await (await request("GET", "/things")).json()) as JsonObject[];
      const all = [one, ...listed.map((t) => t.registration)].flatMap(times);
      expect(all.length).toBeGreaterThanOrEqual(12);
      for (const time of all) {
        expect(time).toMatch(RFC3339);
        expect(new Date(time).toISOString()).toBe(time);
      }
      expect((await getTd("urn:lamp:2")).registration).toMatchObject({ expires: "2030-01-01T00:00:00.000Z" });
      // A leap second is RFC 3339 too: read as the instant after 23:59:59, not dropped.
      await put("urn:lamp:4", { registration: { expires: "2016-12-31T23:59:60Z" } });
      expect((await getTd("urn:lamp:4")).registration).toMatchObject({ expires: "2017-01-01T00:00:00.000Z" });
      // Times that are not RFC 3339 (no offset: a local time of unknown zone; another syntax) are refused.
      for (const expires of ["2030-01-01T00:00:00", "Jan 1 2030", "2030-01-01"]) {
        const res = await request(
          "PUT",
          "/things/urn:lamp:3",
          td("urn:lamp:3", { registration: { expires } }),
        );
        expect([expires, res.status]).toEqual([expires, 400]);
        expect(
          ((await res.json()) as { validationErrors: { field: string }[] }).validationErrors,
        ).toContainEqual(expect.objectContaining({ field: "registration.expires" }));
      }
    });

    it("tdd-context-injection: TDs in listings carry the discovery context too, added once", async () => {
      await put("urn:lamp:1");
      await put("urn:lamp:2", { "@context": [TD_CONTEXT_1_1, { ex: "http://example.org/" }] });
      await put("urn:lamp:3", { "@context": [TD_CONTEXT_1_1, DISCOVERY_CONTEXT_URL] });
      const array = (await (await request("GET", "/things")).json()) as JsonObject[];
      const collection = (await (await request("GET", "/things?format=collection")).json()) as JsonObject;
      for (const listed of [array, collection.members as JsonObject[]]) {
        expect(listed.map((t) => t["@context"])).toEqual([
          [TD_CONTEXT_1_1, DISCOVERY_CONTEXT_URL],
          [TD_CONTEXT_1_1, { ex: "http://example.org/" }, DISCOVERY_CONTEXT_URL],
          [TD_CONTEXT_1_1, DISCOVERY_CONTEXT_URL],
        ]);
      }
    });

    it("tdd-search-sparql-resp-select-ask: SELECT and ASK answer 200 with application/sparql-results+json by default, application/json on Accept", async () => {
      await put("urn:lamp:1");
      for (const query of [`SELECT ?title WHERE { ?t <${TD_TITLE}> ?title }`, "ASK { <urn:lamp:1> ?p ?o }"]) {
        const byDefault = await sparql(query);
        const anything = await sparql(query, "*/*");
        const json = await sparql(query, "application/json");
        for (const res of [byDefault, anything]) {
          expect([query, res.status, res.headers.get("content-type")]).toEqual([
            query,
            200,
            "application/sparql-results+json",
          ]);
        }
        expect([query, json.status, json.headers.get("content-type")]).toEqual([
          query,
          200,
          "application/json",
        ]);
        const bodies = await Promise.all([byDefault, anything, json].map((res) => res.json()));
        expect(bodies[1]).toEqual(bodies[0]);
        expect(bodies[2]).toEqual(bodies[0]);
        expect(bodies[0]).toEqual(
          query.startsWith("ASK")
            ? { head: {}, boolean: true }
            : {
                head: { vars: ["title"] },
                results: { bindings: [{ title: { type: "literal", value: "Lamp", "xml:lang": "en" } }] },
              },
        );
      }
    });

    it("tdd-search-sparql-resp-describe-construct: CONSTRUCT and DESCRIBE answer 200 with application/ld+json by default", async () => {
      // Untyped: Virtuoso's own DESCRIBE would only read graphs where it has an rdf:type; the remote
      // store asks it for the concise bounded description, as the embedded store gives.
      await put("urn:lamp:1");
      const queries = [
        `CONSTRUCT { ?t <urn:x:title> ?title } WHERE { ?t <${TD_TITLE}> ?title }`,
        "DESCRIBE <urn:lamp:1>",
      ];
      for (const query of queries) {
        for (const accept of [undefined, "*/*"]) {
          const res = await sparql(query, accept);
          expect([query, accept, res.status, res.headers.get("content-type")]).toEqual([
            query,
            accept,
            200,
            "application/ld+json",
          ]);
          const graph = (await res.json()) as JsonObject[];
          expect(graph.map((node) => node["@id"])).toContain("urn:lamp:1");
        }
      }
    });

    it("tdd-search-sparql-error: any operation other than SELECT, ASK, CONSTRUCT or DESCRIBE is a 400, and changes nothing", async () => {
      await put("urn:lamp:1");
      const operations = [
        "INSERT DATA { <urn:a> <urn:b> <urn:c> }",
        'DELETE DATA { <urn:lamp:1> <https://www.w3.org/2019/wot/td#title> "Lamp" }',
        "DELETE WHERE { ?s ?p ?o }",
        "WITH <urn:lamp:1> DELETE { ?s ?p ?o } INSERT { ?s ?p 1 } WHERE { ?s ?p ?o }",
        "LOAD <http://example.org/td.ttl>",
        "CLEAR ALL",
        "DROP GRAPH <urn:lamp:1>",
        "CREATE GRAPH <urn:g>",
        "COPY <urn:lamp:1> TO <urn:g>",
        "MOVE <urn:lamp:1> TO <urn:g>",
        "ADD <urn:lamp:1> TO <urn:g>",
      ];
      const form = (field: string, text: string) =>
        request(
          "POST",
          "/search/sparql",
          new URLSearchParams({ [field]: text }).toString(),
          "application/x-www-form-urlencoded",
        );
      for (const operation of operations) {
        const answers = [
          await sparql(operation),
          await request("POST", "/search/sparql", operation, "application/sparql-query"),
          await form("query", operation),
          await form("update", operation),
          await request("POST", "/search/sparql", operation, "application/sparql-update"),
        ];
        for (const res of answers) {
          expect([operation, res.status, res.headers.get("content-type")]).toEqual([
            operation,
            400,
            "application/problem+json",
          ]);
        }
      }
      // Nothing happened: the TD and its graph are as they were, and there is no other graph.
      expect(await getTd("urn:lamp:1")).toMatchObject({ id: "urn:lamp:1", title: "Lamp" });
      const graphs = await sparql(
        `SELECT DISTINCT ?g WHERE { GRAPH ?g { ?s ?p ?o } FILTER (STRSTARTS(STR(?g), "urn:")) }`,
      );
      const names = (
        (await graphs.json()) as { results: { bindings: { g: { value: string } }[] } }
      ).results.bindings
        .map((b) => b.g.value)
        // The remote store's own record graph is visible to queries (see src/directory/sparql-store.ts).
        .filter((g) => !g.startsWith("urn:dtc:directory:"));
      expect(names).toEqual(["urn:lamp:1"]);
      const title = await sparql(`ASK { GRAPH <urn:lamp:1> { <urn:lamp:1> <${TD_TITLE}> "Lamp"@en } }`);
      expect(await title.json()).toEqual({ head: {}, boolean: true });
    });
  },
);
