import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from "vitest";
import type { DirectoryStore } from "../src/directory/store.js";
import { mountThingsApi } from "../src/directory/things-api.js";
import { createApp } from "../src/http/app.js";
import { createLogger } from "../src/logger.js";
import type { JsonObject } from "../src/wot/rdf.js";
import { storeAdapters } from "./directory-stores.js";

/**
 * Lost updates in the Things API: GET gives the stored TD's ETag, PUT, PATCH and DELETE take
 * If-Match (412 on a TD that changed or is gone). Without If-Match everything works as before:
 * WoT Discovery does not ask clients for it.
 */

const td = (id: string, title = "Lamp"): JsonObject => ({
  "@context": "https://www.w3.org/2022/wot/td/v1.1",
  id,
  title,
  securityDefinitions: { nosec_sc: { scheme: "nosec" } },
  security: "nosec_sc",
  properties: { on: { type: "boolean", forms: [{ href: "http://lamp.example/on" }] } },
});

describe.each(storeAdapters())("ETag and If-Match on the %s store", (_name, adapter) => {
  const skip = adapter.unavailable();
  let store: DirectoryStore;
  let app: ReturnType<typeof createApp>;
  let clock = Date.UTC(2026, 0, 1);
  const id = "urn:ex:lamp";
  const path = `/things/${id}`;

  const request = (method: string, headers: Record<string, string> = {}, body?: unknown, type?: string) =>
    app.request(path, {
      method,
      headers: {
        ...headers,
        ...(body === undefined
          ? {}
          : {
              "Content-Type":
                type ?? (method === "PATCH" ? "application/merge-patch+json" : "application/td+json"),
            }),
      },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  const etag = async () => {
    const res = await request("GET");
    expect(res.status).toBe(200);
    const tag = res.headers.get("etag");
    if (tag === null) throw new Error("no ETag");
    return tag;
  };

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
    mountThingsApi(app, { store, now: () => clock });
    expect((await request("PUT", {}, td(id))).status).toBe(201);
  });
  afterEach(async () => {
    await store?.close();
  });

  it("gives a strong ETag that stays while the TD does (whenever it is read) and changes with each write", async () => {
    const first = await etag();
    expect(first).toMatch(/^"[A-Za-z0-9_-]+"$/);
    clock += 5000; // `retrieved` moves; the tag does not
    expect(await etag()).toBe(first);
    expect((await app.request(path, { method: "HEAD" })).headers.get("etag")).toBe(first);
    clock += 1000;
    expect((await request("PUT", {}, td(id))).status).toBe(204);
    const second = await etag();
    expect(second).not.toBe(first);
    clock += 1000;
    expect((await request("PATCH", {}, { title: "Desk lamp" })).status).toBe(204);
    expect(await etag()).not.toBe(second);
  });

  it("refuses a PATCH, PUT or DELETE whose If-Match names an older version (412) and applies one that names the current", async () => {
    const old = await etag();
    clock += 1000;
    expect((await request("PATCH", { "If-Match": old }, { title: "One" })).status).toBe(204);
    clock += 1000;
    for (const [method, body] of [
      ["PATCH", { title: "Two" }],
      ["PUT", td(id, "Two")],
      ["DELETE", undefined],
    ] as const) {
      const refused = await request(method, { "If-Match": old }, body);
      expect(refused.status, method).toBe(412);
      expect(refused.headers.get("content-type"), method).toBe("application/problem+json");
      expect(((await refused.json()) as { detail: string }).detail, method).toContain("GET it again");
    }
    expect(((await (await request("GET")).json()) as JsonObject).title).toBe("One");
    const current = await etag();
    // A list naming it, `*`, and no If-Match at all are all accepted; a weak tag never matches.
    expect((await request("PATCH", { "If-Match": `"nope", ${current}` }, { title: "Two" })).status).toBe(204);
    clock += 1000;
    expect((await request("PATCH", { "If-Match": `W/${await etag()}` }, { title: "Three" })).status).toBe(
      412,
    );
    expect((await request("PATCH", { "If-Match": "*" }, { title: "Three" })).status).toBe(204);
    clock += 1000;
    expect((await request("PATCH", {}, { title: "Four" })).status).toBe(204);
    expect((await request("DELETE", { "If-Match": await etag() })).status).toBe(204);
    // Gone: no version matches, not even `*`.
    expect((await request("PUT", { "If-Match": "*" }, td(id))).status).toBe(412);
    expect((await request("GET")).status).toBe(404);
  });

  it("lets exactly one of two concurrent PATCHes with the same If-Match through", async () => {
    const tag = await etag();
    const answers = await Promise.all(
      ["A", "B"].map((title) => request("PATCH", { "If-Match": tag }, { title })),
    );
    expect(answers.map((a) => a.status).sort()).toEqual([204, 412]);
  });
});
