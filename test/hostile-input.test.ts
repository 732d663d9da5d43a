import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { Gateway } from "../src/gateway.js";
import { call, startTestGateway } from "./manager-client.js";

/**
 * Reproductions from the reliability issue that are fixed: each used to crash the gateway or answer
 * 500; each must be a 4xx, with the gateway still serving after it.
 */
describe("hostile input: client errors are 4xx and kill nothing", () => {
  let gateway: Gateway;
  beforeAll(async () => {
    gateway = await startTestGateway();
    const started = await call(gateway.url, "POST", "/api/instances", {
      package: "iiot-device",
      node: "local",
      id: "h1",
      configuration: { DEVICE_ID: "h1" },
    });
    expect(started.status).toBe(201);
  });
  afterAll(() => gateway?.close());

  const alive = async () => expect((await fetch(`${gateway.url}/healthz`)).status).toBe(200);

  it("answers a bad percent-escape in a twin's query or path with 400 (node-wot's server threw on it, outside any handler)", async () => {
    for (const [method, path] of [
      ["GET", "/twins/h1/properties/temperature?x=%zz"],
      ["GET", "/twins/h1/properties/temperature/observable?%zz=1"],
      ["GET", "/twins/h1/events/lifecycleChanged?a=%E0%A4%A"],
      ["POST", "/twins/h1/actions/setRate?x=%"],
      ["GET", "/twins/%"],
      ["GET", "/twins/h1/properties/%zz"],
    ] as const) {
      const res = await fetch(`${gateway.url}${path}`, {
        method,
        ...(method === "POST" ? { headers: { "Content-Type": "application/json" }, body: "5" } : {}),
      });
      expect(res.status, `${method} ${path}`).toBe(400);
      expect(res.headers.get("content-type")).toBe("application/problem+json");
      await alive();
    }
    // The twin still answers well-formed requests.
    expect((await fetch(`${gateway.url}/twins/h1/properties/lifecycleState`)).status).toBe(200);
  });

  it("answers an offset beyond a safe integer with 400, not a SQLite error", async () => {
    const res = await call(gateway.url, "GET", "/things?offset=99999999999999999999");
    expect(res.status).toBe(400);
    expect(res.body.detail).toContain("offset");
    expect((await call(gateway.url, "GET", "/things?limit=1e400")).status).toBe(400);
  });

  it("answers a registration ttl past any date with 400 naming registration.ttl", async () => {
    const td = {
      "@context": "https://www.w3.org/2022/wot/td/v1.1",
      id: "urn:test:ttl",
      title: "t",
      securityDefinitions: { nosec_sc: { scheme: "nosec" } },
      security: "nosec_sc",
      registration: { ttl: 1e13 },
    };
    const res = await call(gateway.url, "PUT", `/things/${encodeURIComponent(td.id)}`, td);
    expect(res.status).toBe(400);
    expect(res.body.validationErrors).toEqual([expect.objectContaining({ field: "registration.ttl" })]);
    const ok = await call(gateway.url, "PUT", `/things/${encodeURIComponent(td.id)}`, {
      ...td,
      registration: { ttl: 3600 },
    });
    expect(ok.status).toBe(201);
    await alive();
  });
});
