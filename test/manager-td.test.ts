import type { AddressInfo } from "node:net";
import { type ServerType, serve } from "@hono/node-server";
import { HttpClientFactory } from "@node-wot/binding-http";
import { Servient } from "@node-wot/core";
import { Hono } from "hono";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { MANAGER_ROUTES, MANAGER_TD_ID, managerThingDescription } from "../src/manager/manager-td.js";
import type { JsonObject } from "../src/wot/rdf.js";
import { validateThingDescription } from "../src/wot/validation.js";

const BASE = "http://dtc.example:8080";

/** The functions of the seed paper's Table I. */
const TABLE_I = [
  "registerNode",
  "registerSchema",
  "registerPackage",
  "discoverSchemas",
  "discoverPackages",
  "discoverNodes",
  "startInstance",
  "stopInstance",
  "restartInstance",
  "removeInstance",
  "runningInstances",
  "snapshotInstance",
  "restoreSnapshot",
  "moveInstance",
  "cloneInstance",
];

const actionsOf = (td: JsonObject) => td.actions as Record<string, JsonObject>;
const formsOf = (action: JsonObject) => action.forms as JsonObject[];

/** The variable names of an RFC 6570 template: {id}, {?a,b}. */
function templateVariables(href: string): string[] {
  return [...href.matchAll(/\{([?&]?)([^}]*)\}/g)].flatMap((m) => (m[2] ?? "").split(","));
}

describe("the manager's Thing Description", () => {
  const td = managerThingDescription(BASE);

  it("is a valid TD 1.1 of a dtc:Manager with nosec security", () => {
    expect(validateThingDescription(td)).toEqual({ valid: true });
    expect(td["@context"]).toEqual(["https://www.w3.org/2022/wot/td/v1.1", { dtc: "https://w3id.org/dtc#" }]);
    expect(td["@type"]).toEqual(["Thing", "dtc:Manager"]);
    expect(td.id).toBe(MANAGER_TD_ID);
    expect(td.title).toBe("DTC Manager");
    expect(td.base).toBe(`${BASE}/`);
    expect(td.securityDefinitions).toEqual({ nosec_sc: { scheme: "nosec" } });
  });

  it("has an action for every function of Table I, and one per route", () => {
    const names = Object.keys(actionsOf(td));
    for (const name of TABLE_I) expect(names).toContain(name);
    expect(names).toEqual(MANAGER_ROUTES.map((r) => r.name));
    expect(names).toHaveLength(29);
    expect(names).toEqual(expect.arrayContaining(["applyManifest", "getManifest"]));
  });

  it("says truthfully which actions are safe and idempotent", () => {
    for (const route of MANAGER_ROUTES) {
      const action = actionsOf(td)[route.name] as JsonObject;
      for (const form of formsOf(action)) expect(form["htv:methodName"]).toBe(route.method);
      expect(action.safe, route.name).toBe(route.method === "GET");
      if (route.method !== "POST") expect(action.idempotent, route.name).toBe(true);
    }
    const idempotent = (name: string) => actionsOf(td)[name]?.idempotent;
    expect(idempotent("startInstance")).toBe(false);
    expect(idempotent("restartInstance")).toBe(false);
    expect(idempotent("stopInstance")).toBe(true);
  });

  it("resolves every href against base to a URL under /api/, also for a base with a path", () => {
    for (const base of [BASE, "https://gw.example/dtc/"]) {
      const described = managerThingDescription(base);
      const api = `${base.replace(/\/+$/, "")}/api/`;
      for (const action of Object.values(actionsOf(described))) {
        for (const form of formsOf(action)) {
          expect(form.href).not.toMatch(/^(\/|[a-z]+:)/);
          expect(new URL(String(form.href), String(described.base)).href.startsWith(api)).toBe(true);
        }
      }
    }
  });

  it("declares every template variable of an href in uriVariables, and no other", () => {
    for (const [name, action] of Object.entries(actionsOf(td))) {
      const declared = Object.keys((action.uriVariables as JsonObject | undefined) ?? {}).sort();
      for (const form of formsOf(action)) {
        expect([...new Set(templateVariables(String(form.href)))].sort(), name).toEqual(declared);
      }
      for (const schema of Object.values((action.uriVariables as Record<string, JsonObject>) ?? {})) {
        expect(["string", "boolean", "number", "integer"], name).toContain(schema.type);
      }
    }
  });

  it("gives bodies and their media types where the API takes and answers them", () => {
    const action = (name: string) => actionsOf(td)[name] as JsonObject;
    expect(action("startInstance").input).toMatchObject({ type: "object", required: ["package", "node"] });
    expect(action("registerNode").input).toMatchObject({
      required: ["id", "platform", "tier", "capabilities"],
      properties: {
        platform: { enum: ["in-process", "docker", "kubernetes"] },
        tier: { enum: ["edge", "mec", "cloud"] },
      },
    });
    // node-wot has no codec for application/tm+json (it would send "[object Object]"): JSON first.
    expect(formsOf(action("registerSchema")).map((f) => f.contentType)).toEqual([
      "application/json",
      "application/tm+json",
    ]);
    expect(formsOf(action("getSchema"))[0]?.response).toMatchObject({ contentType: "application/tm+json" });
    expect(formsOf(action("startInstance"))[0]?.response).toEqual({
      contentType: "application/json",
      "htv:statusCodeValue": 201,
    });
    const removal = formsOf(action("removeNode"))[0] as JsonObject;
    expect(removal.response).toBeUndefined();
    expect(removal.additionalResponses).toContainEqual(
      expect.objectContaining({ success: true, "htv:statusCodeValue": 204 }),
    );
    expect(removal.additionalResponses).toContainEqual(
      expect.objectContaining({ contentType: "application/problem+json", "htv:statusCodeValue": 409 }),
    );
  });

  it("refuses a base URL that is not absolute http(s)", () => {
    expect(() => managerThingDescription("/api")).toThrow(/not an absolute http\(s\) URL/);
    expect(() => managerThingDescription("mqtt://broker")).toThrow(/not an absolute http\(s\) URL/);
  });
});

describe("a node-wot consumer of the manager's TD", () => {
  const requests: { method: string; url: string; body: string }[] = [];
  let server: ServerType;
  let servient: Servient;
  let wot: typeof WoT;
  let origin: string;

  const consume = async (baseUrl: string) =>
    wot.consume(managerThingDescription(baseUrl) as unknown as WoT.ThingDescription);
  const read = async (output: WoT.InteractionOutput | undefined) => {
    expect(output).toBeDefined();
    return output?.value();
  };

  beforeAll(async () => {
    // Answers as the API gives them (the TD's output schemas say so: node-wot's value() checks).
    const view = {
      labels: {},
      latencyMs: 1,
      registeredAt: "2025-01-01T00:00:00.000Z",
      ready: true,
      instances: 0,
    };
    const nodes = [
      { id: "e1", platform: "in-process", tier: "edge", capabilities: { cpu: 2, memory: 1024, gpu: 0 } },
      { id: "c1", platform: "docker", tier: "cloud", capabilities: { cpu: 16, memory: 65536, gpu: 1 } },
    ].map((n) => ({ ...n, ...view, free: n.capabilities }));
    const api = new Hono();
    api.get("/api/nodes", (c) => {
      const tier = c.req.query("tier");
      return c.json(nodes.filter((n) => tier === undefined || n.tier === tier));
    });
    api.post("/api/instances/:id/stop", (c) =>
      c.json({
        id: c.req.param("id"),
        package: "p1",
        schema: "https://example.org/schema",
        node: "e1",
        platform: "in-process",
        desired: "stopped",
        lifecycle: "Done",
        configuration: {},
        createdAt: "2025-01-01T00:00:00.000Z",
        updatedAt: "2025-01-01T00:00:00.000Z",
        links: {
          self: `${origin}/api/instances/t1`,
          twin: `${origin}/twins/t1`,
          description: `${origin}/things/urn%3Adtc%3Atwin%3At1`,
        },
      }),
    );
    const app = new Hono();
    app.use(async (c, next) => {
      requests.push({ method: c.req.method, url: c.req.url, body: await c.req.raw.clone().text() });
      await next();
    });
    app.route("/", api);
    app.route("/dtc", api); // as behind a proxy that adds a path
    server = serve({ fetch: app.fetch, port: 0, hostname: "127.0.0.1" });
    await new Promise<void>((resolve, reject) => {
      server.once("listening", resolve);
      server.once("error", reject);
    });
    origin = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    servient = new Servient();
    servient.addClientFactory(new HttpClientFactory());
    wot = (await servient.start()) as unknown as typeof WoT;
  });

  afterAll(async () => {
    await servient?.shutdown();
    await new Promise<void>((resolve) => (server ? server.close(() => resolve()) : resolve()));
  });

  it("discovers nodes with a GET and the query from uriVariables", async () => {
    const thing = await consume(origin);
    requests.length = 0;
    const edge = await thing.invokeAction("discoverNodes", undefined, { uriVariables: { tier: "edge" } });
    expect(await read(edge)).toEqual([expect.objectContaining({ id: "e1", tier: "edge" })]);
    expect(requests).toEqual([{ method: "GET", url: `${origin}/api/nodes?tier=edge`, body: "" }]);

    requests.length = 0;
    expect(await read(await thing.invokeAction("discoverNodes"))).toHaveLength(2);
    expect(requests.map((r) => r.url)).toEqual([`${origin}/api/nodes`]);
  });

  it("stops an instance with a POST to the path from uriVariables", async () => {
    const thing = await consume(origin);
    requests.length = 0;
    const output = await thing.invokeAction("stopInstance", undefined, { uriVariables: { id: "t1" } });
    expect(await read(output)).toMatchObject({ id: "t1", desired: "stopped", lifecycle: "Done" });
    expect(requests).toEqual([{ method: "POST", url: `${origin}/api/instances/t1/stop`, body: "" }]);
  });

  it("keeps the path of a base URL behind a proxy", async () => {
    const thing = await consume(`${origin}/dtc`);
    requests.length = 0;
    await thing.invokeAction("discoverNodes", undefined, { uriVariables: { tier: "cloud", gpu: true } });
    await thing.invokeAction("stopInstance", undefined, { uriVariables: { id: "t2" } });
    expect(requests.map((r) => `${r.method} ${r.url}`)).toEqual([
      `GET ${origin}/dtc/api/nodes?tier=cloud&gpu=true`,
      `POST ${origin}/dtc/api/instances/t2/stop`,
    ]);
  });
});
