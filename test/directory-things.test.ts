import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from "vitest";
import type { DirectoryStore } from "../src/directory/store.js";
import { mergePatch, mountThingsApi } from "../src/directory/things-api.js";
import { createApp } from "../src/http/app.js";
import { createLogger } from "../src/logger.js";
import { instantiate } from "../src/wot/instantiate.js";
import { DISCOVERY_CONTEXT_URL } from "../src/wot/jsonld-loader.js";
import type { JsonObject } from "../src/wot/rdf.js";
import { storeAdapters } from "./directory-stores.js";
import { sample, sampleRegistry } from "./helpers.js";

let deviceTd: JsonObject;

beforeAll(async () => {
  const registry = await sampleRegistry();
  deviceTd = await instantiate(registry, sample("iiot-device.tm.jsonld"), {
    placeholders: { DEVICE_ID: "d1" },
    id: "urn:dtc:twin:d1",
    base: "http://127.0.0.1:8080/twins/d1/",
  });
});

const td = (id: string | undefined, title = "Thing"): JsonObject => {
  const copy = structuredClone(deviceTd);
  if (id === undefined) delete copy.id;
  else copy.id = id;
  copy.title = title;
  return copy;
};

describe.each(storeAdapters())("the Things API on the %s store", (_name, adapter) => {
  const skip = adapter.unavailable();
  let store: DirectoryStore;
  let app: ReturnType<typeof createApp>;
  let clock = Date.UTC(2026, 0, 1);

  const request = (method: string, path: string, body?: unknown, type = "application/td+json") =>
    app.request(path, {
      method,
      headers: body === undefined ? {} : { "Content-Type": type },
      body: body === undefined ? undefined : typeof body === "string" ? body : JSON.stringify(body),
    });

  beforeAll(async () => {
    if (!skip) await adapter.start();
  });
  afterAll(async () => {
    if (!skip) await adapter.stop();
  });

  beforeEach(async (ctx) => {
    if (skip) ctx.skip(skip);
    store = await adapter.fresh();
    app = createApp({ version: "test", startedAt: 0, logger: createLogger("silent") });
    mountThingsApi(app, { store, now: () => clock, maxLimit: 3 });
  });
  afterEach(async () => {
    await store?.close();
  });

  it("creates with PUT (201), replaces (204), and serves the TD enriched with registration information", async () => {
    const id = "urn:ex:d1";
    expect((await request("PUT", `/things/${id}`, td(id))).status).toBe(201);
    clock += 1000;
    expect((await request("PUT", `/things/${id}`, td(id, "Renamed"))).status).toBe(204);
    const res = await request("GET", `/things/${id}`);
    expect(res.status).toBe(200);
    expect(res.headers.get("content-type")).toBe("application/td+json");
    const body = (await res.json()) as JsonObject;
    expect(body.title).toBe("Renamed");
    expect(body["@context"]).toContain(DISCOVERY_CONTEXT_URL);
    expect(body.registration).toEqual({
      created: new Date(Date.UTC(2026, 0, 1)).toISOString(),
      modified: new Date(Date.UTC(2026, 0, 1, 0, 0, 1)).toISOString(),
      retrieved: new Date(clock).toISOString(),
    });
  });

  it("registers anonymous TDs with POST under a urn:uuid id", async () => {
    const res = await request("POST", "/things", td(undefined));
    expect(res.status).toBe(201);
    const location = res.headers.get("location") as string;
    expect(decodeURIComponent(location)).toMatch(/^\/things\/urn:uuid:[0-9a-f-]{36}$/);
    expect((await request("GET", decodeURIComponent(location))).status).toBe(200);
    expect((await request("POST", "/things", td("urn:x:has-id"))).status).toBe(400);
  });

  it("merge-patches a TD (RFC 7396) and validates the result", async () => {
    const id = "urn:ex:p1";
    await request("PUT", `/things/${id}`, td(id));
    const patch = { title: "Patched", description: null, properties: { energy: null } };
    expect((await request("PATCH", `/things/${id}`, patch, "application/merge-patch+json")).status).toBe(204);
    const body = (await (await request("GET", `/things/${id}`)).json()) as JsonObject;
    expect(body.title).toBe("Patched");
    expect(body.description).toBeUndefined();
    expect(Object.keys(body.properties as JsonObject)).not.toContain("energy");
    const bad = await request("PATCH", `/things/${id}`, { security: 42 }, "application/merge-patch+json");
    expect(bad.status).toBe(400);
    expect(((await bad.json()) as { validationErrors: unknown[] }).validationErrors.length).toBeGreaterThan(
      0,
    );
    expect((await request("PATCH", `/things/${id}`, { title: "x" }, "application/json")).status).toBe(415);
    expect(mergePatch({ a: { b: 1, c: 2 } }, { a: { b: null, d: 3 } })).toEqual({ a: { c: 2, d: 3 } });
  });

  it("deletes (204, then 404) and answers unknown ids with problem details", async () => {
    const id = "urn:ex:gone";
    await request("PUT", `/things/${id}`, td(id));
    expect((await request("DELETE", `/things/${id}`)).status).toBe(204);
    const res = await request("GET", `/things/${id}`);
    expect(res.status).toBe(404);
    expect(res.headers.get("content-type")).toBe("application/problem+json");
    expect((await request("DELETE", `/things/${id}`)).status).toBe(404);
  });

  it("lists by id in pages with next and canonical links, as an array or a collection", async () => {
    for (const n of [5, 1, 4, 2, 3]) await request("PUT", `/things/urn:t:${n}`, td(`urn:t:${n}`));
    const first = await request("GET", "/things");
    expect(first.headers.get("content-type")).toBe("application/ld+json");
    expect(((await first.json()) as JsonObject[]).map((t) => t.id)).toEqual([
      "urn:t:1",
      "urn:t:2",
      "urn:t:3",
    ]);
    const link = first.headers.get("link") as string;
    expect(link).toContain('</things?offset=3&limit=3>; rel="next"');
    expect(link).toContain('rel="canonical"');
    const second = await request("GET", "/things?offset=3&limit=3");
    expect(((await second.json()) as JsonObject[]).map((t) => t.id)).toEqual(["urn:t:4", "urn:t:5"]);
    expect(second.headers.get("link")).not.toContain('rel="next"');
    const collection = (await (
      await request("GET", "/things?format=collection&limit=2")
    ).json()) as JsonObject;
    expect(collection).toMatchObject({ "@type": "ThingCollection", total: 5 });
    expect((collection.members as JsonObject[]).length).toBe(2);
    expect((await request("GET", "/things?limit=0")).status).toBe(400);
    expect((await request("GET", "/things?format=xml")).status).toBe(400);
  });

  it("refuses bad input with a 4xx, never a 5xx", async () => {
    const cases: [string, string, unknown, string?][] = [
      ["PUT", "/things/urn:x:1", "{not json"],
      ["PUT", "/things/urn:x:1", [1, 2]],
      ["PUT", "/things/urn:x:1", { hello: "world" }],
      ["PUT", "/things/not-an-iri", td("not-an-iri")],
      ["PUT", "/things/urn:x:1", td("urn:x:other")],
      ["PUT", "/things/urn:x:1", td("urn:x:1"), "text/plain"],
      ["PUT", "/things/urn:dtc:status:x", td("urn:dtc:status:x")],
      ["PUT", "/things/urn:dtc:directory:records", td("urn:dtc:directory:records")],
      ["PUT", "/things/urn:x:%25zz", td("urn:x:%zz")],
      ["PUT", "/things/urn:x:a%5Bb%5D", td("urn:x:a[b]")],
    ];
    let deep: unknown = {};
    for (let i = 0; i < 200; i++) deep = { a: deep };
    cases.push(["PUT", "/things/urn:x:1", deep]);
    for (const [method, path, body, type] of cases) {
      const res = await request(method, path, body, type);
      expect([path, res.status >= 400 && res.status < 500]).toEqual([path, true]);
    }
    const huge = JSON.stringify({ ...td("urn:x:big"), description: "x".repeat(2 * 1024 * 1024) });
    expect((await request("PUT", "/things/urn:x:big", huge)).status).toBe(413);
    const invalid = await request("PUT", "/things/urn:x:1", { ...td("urn:x:1"), title: 42 });
    expect(invalid.status).toBe(400);
    expect(await invalid.json()).toMatchObject({ validationErrors: [{ field: "title" }] });
  });

  it("keeps text beyond ASCII, quotes, backslashes and controls exactly as registered, and searchable", async () => {
    const texts = [
      "Gerät — Température",
      "温度 𝔸 😀 👩‍👩‍👧",
      "e\u0301 a\u030a \ufeff\uffff",
      `say "hi" \\ back\\slash ''' """ \\u0041 \\n`,
      "tab\tnewline\ncr\r end",
    ];
    for (const [i, text] of texts.entries()) {
      const id = `urn:x:text:${i}`;
      const extension = { [`x-${i}`]: { [text]: text } };
      expect((await request("PUT", `/things/${id}`, { ...td(id, text), ...extension })).status).toBe(201);
      const res = await request("GET", `/things/${id}`);
      const body = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(await res.arrayBuffer()));
      expect(body).toMatchObject({ title: text, ...extension });
      const titles = await store.query(
        `SELECT ?title WHERE { GRAPH <${id}> { <${id}> <https://www.w3.org/2019/wot/td#title> ?title } }`,
        "application/sparql-results+json",
      );
      expect(
        JSON.parse(titles.body).results.bindings.map((b: { title: { value: string } }) => b.title.value),
      ).toEqual([text]);
    }
  });

  it("expires TDs registered with a ttl", async () => {
    await request("PUT", "/things/urn:x:ttl", { ...td("urn:x:ttl"), registration: { ttl: 60 } });
    const body = (await (await request("GET", "/things/urn:x:ttl")).json()) as { registration: JsonObject };
    expect(body.registration).toMatchObject({ ttl: 60, expires: new Date(clock + 60_000).toISOString() });
    expect(await store.expired(clock + 59_000)).toEqual([]);
    expect(await store.expired(clock + 60_000)).toEqual(["urn:x:ttl"]);
  });

  it("keeps every acknowledged write across a restart, and its SPARQL index with it", async () => {
    for (let i = 0; i < 20; i++) await request("PUT", `/things/urn:r:${i}`, td(`urn:r:${i}`, `T${i}`));
    await request("DELETE", "/things/urn:r:7");
    // Read your writes: the query waits for the index.
    const ask = (id: string) =>
      store.query(`ASK { GRAPH <${id}> { ?s ?p ?o } }`, "application/sparql-results+json");
    expect(JSON.parse((await ask("urn:r:19")).body)).toEqual({ head: {}, boolean: true });
    await store.close();
    const reopened = await adapter.reopen();
    expect(await reopened.count()).toBe(19);
    const titles = await reopened.query(
      "SELECT (COUNT(DISTINCT ?t) AS ?n) WHERE { ?t a <https://www.w3.org/2019/wot/td#Thing> }",
      "application/sparql-results+json",
    );
    expect(JSON.parse(titles.body).results.bindings[0].n.value).toBe("19");
    expect(
      JSON.parse(
        (await reopened.query("ASK { GRAPH <urn:r:7> { ?s ?p ?o } }", "application/sparql-results+json"))
          .body,
      ).boolean,
    ).toBe(false);
    await reopened.close();
    store = await adapter.reopen();
  });
});
