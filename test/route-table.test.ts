import { Ajv, type ValidateFunction } from "ajv";
import { Ajv2020 } from "ajv/dist/2020.js";
import ajvFormats from "ajv-formats";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { Gateway } from "../src/gateway.js";
import { routeFor } from "../src/http/routes.js";
import { BROKER_URL_SCHEMES, startInput } from "../src/manager/model.js";
import { type ApiRoute, jsonSchemaOf, MANAGER_API } from "../src/manager/routes.js";
import { IiotDeviceSimulator } from "../src/simulator/index.js";
import type { JsonObject } from "../src/wot/rdf.js";
import { type FakeDockerEngine, startFakeDockerEngine } from "./fake-docker-engine.js";
import { waitFor } from "./helpers.js";
import { call, FAST, startTestGateway } from "./manager-client.js";

/**
 * The manager's route table (src/manager/routes.ts) against what the gateway does: the routes it
 * mounts under /api, its TD's actions, its OpenAPI operations and its access table are the table's
 * entries; and every answer of a journey through the API (each route at least once) is what the
 * TD action's output schema says, checked with Ajv as a node-wot consumer checks it (and with every
 * member declared), and what the OpenAPI document says. Then the drifts of the hand-written TD.
 */

type Json = Record<string, unknown>;
const TABLE = MANAGER_API as readonly ApiRoute[];
const byName = (name: string) => TABLE.find((r) => r.name === name) as ApiRoute;

// As node-wot's InteractionOutput does (ajv draft-07, formats, not strict).
const addFormats = ajvFormats.default;
const ajv = new Ajv({ strict: false, addUsedSchema: false });
addFormats(ajv);
const ajv2020 = new Ajv2020({ strict: false, addUsedSchema: false });
addFormats(ajv2020);

const isObject = (v: unknown): v is Json => typeof v === "object" && v !== null && !Array.isArray(v);

/**
 * The schema with every object that lists its members closed (additionalProperties: false): an
 * answer it accepts has no member the schema does not declare. Maps (no `properties`) stay open.
 */
function closed(schema: unknown): unknown {
  if (Array.isArray(schema)) return schema.map(closed);
  if (!isObject(schema)) return schema;
  const out = Object.fromEntries(Object.entries(schema).map(([k, v]) => [k, closed(v)]));
  const open = isObject(out.additionalProperties) && Object.keys(out.additionalProperties).length === 0;
  if (isObject(out.properties) && open) out.additionalProperties = false;
  return out;
}

const errorsOf = (validate: ValidateFunction, value: unknown) =>
  validate(value) ? [] : (validate.errors ?? []).map((e) => `${e.instancePath} ${e.message}`);

/** An RFC 6570 href of the TD (`api/nodes/{id}`, `api/nodes{?tier,gpu}`) expanded as node-wot does. */
function expand(href: string, variables: Record<string, string | boolean>): string {
  return href.replace(/\{(\??)([^}]+)\}/g, (_, query: string, names: string) => {
    const list = names.split(",");
    if (query === "") return encodeURIComponent(String(variables[list[0] as string]));
    const pairs = list
      .filter((n) => variables[n] !== undefined)
      .map((n) => `${n}=${encodeURIComponent(String(variables[n]))}`);
    return pairs.length > 0 ? `?${pairs.join("&")}` : "";
  });
}

/** Calls the manager's routes by name and checks each answer against the TD and OpenAPI document. */
class Consumer {
  readonly answered = new Set<string>();
  readonly statuses = new Map<string, Set<number>>();
  #validators = new Map<string, { td: ValidateFunction; complete: ValidateFunction }>();

  constructor(
    readonly base: string,
    readonly td: JsonObject,
    readonly openapi: JsonObject,
  ) {}

  action(name: string): JsonObject {
    return (this.td.actions as Record<string, JsonObject>)[name] as JsonObject;
  }

  #validator(route: ApiRoute) {
    let v = this.#validators.get(route.name);
    if (v === undefined) {
      // The API's own descriptions are not TD actions: their schemas come from the table.
      const schema = route.document
        ? jsonSchemaOf(route.output as NonNullable<ApiRoute["output"]>, "output", "draft-7")
        : (this.action(route.name).output as JsonObject);
      v = { td: ajv.compile(schema), complete: ajv.compile(closed(schema) as JsonObject) };
      this.#validators.set(route.name, v);
    }
    return v;
  }

  /** The route's answer: status declared, media type, body valid against the TD and the OpenAPI document. */
  async call(
    name: string,
    options: { variables?: Record<string, string | boolean>; body?: unknown } = {},
  ): Promise<{ status: number; body: Json & Json[] }> {
    const route = byName(name);
    const variables = options.variables ?? {};
    const form = route.document ? undefined : ((this.action(name).forms as JsonObject[])[0] as JsonObject);
    const href = form ? expand(String(form.href), variables) : `api${route.path}`;
    const method = form ? String(form["htv:methodName"]) : route.method;
    // A route answering another type first (the manifest: YAML) is asked for JSON, which it also produces.
    const produces = route.producesAlso?.[0] ?? route.produces ?? "application/json";
    const res = await fetch(new URL(href, `${this.base}/`), {
      method,
      headers: {
        Accept: produces,
        ...(options.body === undefined ? {} : { "Content-Type": String(form?.contentType) }),
      },
      ...(options.body === undefined ? {} : { body: JSON.stringify(options.body) }),
    });
    const text = await res.text();
    expect(route.statuses as readonly number[], `${name} answered ${res.status}: ${text}`).toContain(
      res.status,
    );
    const seen = this.statuses.get(name) ?? new Set();
    this.statuses.set(name, seen.add(res.status));
    this.answered.add(name);
    if (res.status === 204) {
      expect(text).toBe("");
      return { status: 204, body: {} as Json & Json[] };
    }
    expect(res.headers.get("content-type"), name).toMatch(new RegExp(`^${produces.replace("+", "\\+")}`));
    const body = JSON.parse(text) as Json & Json[];
    const { td, complete } = this.#validator(route);
    expect(errorsOf(td, body), `${name}: the TD's output schema`).toEqual([]);
    expect(errorsOf(complete, body), `${name}: members the TD does not declare`).toEqual([]);
    const operation = (this.openapi.paths as Record<string, Record<string, JsonObject>>)[
      `/api${route.path.replace(/:([a-z]+)/gi, "{$1}")}`
    ]?.[method.toLowerCase()];
    const responses = (operation?.responses ?? {}) as Record<string, JsonObject>;
    const response = responses[res.status] as JsonObject;
    const schema = (response.content as Record<string, { schema: JsonObject }>)[produces]?.schema;
    expect(errorsOf(ajv2020.compile(schema as JsonObject), body), `${name}: the OpenAPI response`).toEqual(
      [],
    );
    return { status: res.status, body };
  }
}

async function describedBy(gateway: Gateway): Promise<Consumer> {
  const td = (await (await fetch(`${gateway.url}/api/td`)).json()) as JsonObject;
  const openapi = (await (await fetch(`${gateway.url}/api/openapi.json`)).json()) as JsonObject;
  return new Consumer(gateway.url, td, openapi);
}

describe("the manager's route table", () => {
  let gateway: Gateway;
  let consumer: Consumer;
  const sims: IiotDeviceSimulator[] = [];

  beforeAll(async () => {
    gateway = await startTestGateway();
    consumer = await describedBy(gateway);
  });

  afterAll(async () => {
    await Promise.all(sims.map((s) => s.stop()));
    await gateway?.close();
  });

  it("is what the gateway mounts under /api, the TD's actions and the OpenAPI operations, one for one", () => {
    const key = (method: string, path: string) => `${method} ${path}`;
    const table = TABLE.map((r) => key(r.method, `/api${r.path}`)).sort();
    // Middleware is listed as ALL; tokens and whoami are the security API's (src/security/tokens-api.ts).
    const mounted = gateway.routes
      .filter((r) => r.method !== "ALL" && r.path.startsWith("/api/"))
      .filter((r) => !r.path.startsWith("/api/tokens") && r.path !== "/api/whoami")
      .map((r) => key(r.method, r.path));
    expect([...new Set(mounted)].sort()).toEqual(table);

    const actions = consumer.td.actions as Record<string, JsonObject>;
    expect(Object.keys(actions)).toEqual(TABLE.filter((r) => !r.document).map((r) => r.name));
    for (const route of TABLE.filter((r) => !r.document)) {
      for (const form of (actions[route.name] as JsonObject).forms as JsonObject[]) {
        expect(form["htv:methodName"], route.name).toBe(route.method);
        const path = String(form.href)
          .replace(/\{\?[^}]*\}$/, "")
          .replace(/\{([a-z]+)\}/gi, ":$1");
        expect(`/${path}`, route.name).toBe(`/api${route.path}`);
      }
    }

    const operations = Object.entries(consumer.openapi.paths as Record<string, Record<string, JsonObject>>)
      .flatMap(([path, ops]) =>
        Object.entries(ops).map(([method, op]) => ({
          key: key(method.toUpperCase(), path.replace(/\{([a-z]+)\}/gi, ":$1")),
          name: op.operationId,
        })),
      )
      .sort((a, b) => a.key.localeCompare(b.key));
    expect(operations.map((o) => o.key)).toEqual(table);
    expect(operations.map((o) => o.name).sort()).toEqual(TABLE.map((r) => r.name).sort());
    expect(consumer.openapi.openapi).toBe("3.1.0");
  });

  it("gives the access table each route's role", () => {
    for (const route of TABLE) {
      const entry = routeFor(route.method, `/api${route.path.replace(/:[a-z]+/gi, "x")}`);
      expect(entry, route.name).toMatchObject({ method: route.method, access: route.access });
      expect(entry?.write === true, route.name).toBe(route.method !== "GET");
    }
  });

  it("answers every route as its TD action and OpenAPI operation say: a journey", {
    timeout: 60_000,
  }, async () => {
    const api = consumer.call.bind(consumer);
    await api("getThingDescription");
    await api("getOpenApiDocument");

    // Inventory.
    const node = {
      id: "edge-r",
      platform: "in-process",
      tier: "edge",
      capabilities: { cpu: 2, memory: 1024 },
    };
    const registered = await api("registerNode", { body: { ...node, labels: { site: "a" }, latencyMs: 1 } });
    expect(registered).toMatchObject({ status: 201, body: { id: "edge-r", ready: true, instances: 0 } });
    expect(
      (await api("discoverNodes", { variables: { tier: "edge", gpu: false } })).body.map((n) => n.id),
    ).toContain("edge-r");
    await api("discoverNodes");
    await api("getNode", { variables: { id: "local" } });
    const model = (await api("getSchema", { variables: { id: "iiot-device" } })).body;
    expect((await api("registerSchema", { variables: { id: "rt-device" }, body: model })).status).toBe(201);
    expect((await api("discoverSchemas", { variables: { q: "rt-device" } })).body.map((s) => s.id)).toEqual([
      "rt-device",
    ]);
    await api("discoverSchemas", { variables: { affordance: "setRate" } });
    await api("registerPackage", { body: { id: "rt-pkg", schema: "rt-device", platform: "in-process" } });
    await api("getPackage", { variables: { id: "rt-pkg" } });
    expect((await api("discoverPackages", { variables: { schema: "rt-device" } })).body).toHaveLength(1);
    await api("discoverPackages");
    const candidates = await api("discoverCandidateNodes", { variables: { id: "rt-pkg", all: true } });
    expect(candidates.body.map((c) => (c.node as Json).id)).toContain("edge-r");

    // Instances, entangled with a simulated PT.
    const sim = new IiotDeviceSimulator({ id: "rt-1", brokerUrl: gateway.brokerUrl, rate: 10 });
    sims.push(sim);
    await sim.start();
    const start = { package: "rt-pkg", node: "local", id: "rt-1", configuration: { DEVICE_ID: "rt-1" } };
    const started = await api("startInstance", { body: { ...start, fidelity: FAST } });
    expect(started.body.links).toEqual({
      self: `${gateway.url}/api/instances/rt-1`,
      twin: `${gateway.url}/twins/rt-1`,
      description: `${gateway.url}/things/urn%3Adtc%3Atwin%3Art-1`,
    });
    await waitFor(
      "rt-1 entangled",
      async () => (await call(gateway.url, "GET", "/api/instances/rt-1")).body.lifecycle === "Entangled",
      20_000,
    );
    const entangled = await api("runningInstances", { variables: { state: "Entangled" } });
    expect(entangled.body.map((i) => i.id)).toContain("rt-1");
    expect(entangled.body[0]?.links).toBeDefined();
    await api("getInstance", { variables: { id: "rt-1" } });
    await api("runningInstances", { variables: { package: "rt-pkg" } });

    // Snapshots and the operations on an instance.
    const snapshot = (await api("snapshotInstance", { variables: { id: "rt-1" } })).body;
    await api("listSnapshots", { variables: { instance: "rt-1" } });
    await api("getSnapshot", { variables: { id: String(snapshot.id) } });
    expect(
      (await api("moveInstance", { variables: { id: "rt-1" }, body: { node: "edge-r" } })).body.node,
    ).toBe("edge-r");
    await api("cloneInstance", { variables: { id: "rt-1" }, body: { node: "local", id: "rt-2" } });
    expect((await api("stopInstance", { variables: { id: "rt-1" } })).body.lifecycle).toBe("Done");
    await api("resumeInstance", { variables: { id: "rt-1" } });
    await api("restartInstance", { variables: { id: "rt-1" } });
    const rolledBack = await api("restoreSnapshot", {
      variables: { id: String(snapshot.id) },
      body: { node: "local" },
    });
    expect(rolledBack).toMatchObject({ status: 200, body: { id: "rt-1", node: "local" } });
    const restored = await api("restoreSnapshot", {
      variables: { id: String(snapshot.id) },
      body: { node: "local", id: "rt-3" },
    });
    expect(restored).toMatchObject({
      status: 201,
      body: { id: "rt-3", origin: { restoredFrom: snapshot.id } },
    });

    // Declarative apply (a dry run: the plan, nothing changed) and the objects as a manifest.
    const plan = await api("applyManifest", {
      variables: { dryRun: true },
      body: [
        {
          apiVersion: "dtc/v1",
          kind: "Node",
          metadata: { name: "rt-node" },
          spec: { platform: "in-process", tier: "edge", capabilities: { cpu: 1, memory: 256 } },
        },
      ],
    });
    expect(plan.body).toMatchObject({
      dryRun: true,
      results: [{ kind: "Node", name: "rt-node", action: "created" }],
    });
    const manifest = await api("getManifest", { variables: { kind: "Node" } });
    expect(
      (manifest.body as unknown as { items: { metadata: { name: string } }[] }).items.map(
        (i) => i.metadata.name,
      ),
    ).toContain("edge-r");

    // Removals.
    await api("removeSnapshot", { variables: { id: String(snapshot.id) } });
    for (const id of ["rt-1", "rt-2", "rt-3"]) await api("removeInstance", { variables: { id } });
    await api("removePackage", { variables: { id: "rt-pkg" } });
    await api("removeSchema", { variables: { id: "rt-device" } });
    await api("removeNode", { variables: { id: "edge-r" } });

    expect([...consumer.answered].sort()).toEqual(TABLE.map((r) => r.name).sort());
    // Every success status a route declares was answered at least once.
    for (const route of TABLE) {
      expect([...(consumer.statuses.get(route.name) ?? [])].sort(), route.name).toEqual(
        [...route.statuses].sort(),
      );
    }
  });

  describe("where the hand-written TD had drifted from the API", () => {
    const uriVariable = (action: string, name: string) =>
      (consumer.action(action).uriVariables as Record<string, JsonObject>)[name] as JsonObject;

    it("documents the instance states the API filters by: its lifecycle states and NotRunning", async () => {
      const states = uriVariable("runningInstances", "state").enum as string[];
      expect(states).toContain("NotRunning");
      expect(states).toContain("Entangled");
      for (const state of states) {
        expect((await call(gateway.url, "GET", `/api/instances?state=${state}`)).status, state).toBe(200);
      }
      for (const state of ["running", "stopped"]) {
        expect(states).not.toContain(state);
        expect((await call(gateway.url, "GET", `/api/instances?state=${state}`)).status, state).toBe(400);
      }
      const lifecycle = (
        (consumer.action("getInstance").output as JsonObject).properties as Record<string, JsonObject>
      ).lifecycle as JsonObject;
      expect(lifecycle.enum).toEqual(states);
    });

    it("lets a label be name=value or a bare name, as the API takes it", async () => {
      const label = ajv.compile(uriVariable("discoverNodes", "label"));
      expect(label("site=a")).toBe(true);
      expect(label("site")).toBe(true);
      expect(label("=a")).toBe(false);
      const ids = async (query: string) =>
        (await call(gateway.url, "GET", `/api/nodes?${query}`)).body.map((n) => n.id as string);
      expect(await ids("label=gateway")).toEqual(["local"]);
      expect(await ids("label=gateway=true")).toEqual(["local"]);
      expect(await ids("label=gateway&label=gateway=false")).toEqual([]);
      expect((await call(gateway.url, "GET", "/api/nodes?label==a")).status).toBe(400);
    });

    it("declares that a restore answers 200 as well as 201", () => {
      const form = (consumer.action("restoreSnapshot").forms as JsonObject[])[0] as JsonObject;
      expect(form.response).toMatchObject({ "htv:statusCodeValue": 201 });
      expect(form.additionalResponses).toContainEqual(
        expect.objectContaining({
          success: true,
          "htv:statusCodeValue": 200,
          contentType: "application/json",
        }),
      );
      const responses = (consumer.openapi.paths as Record<string, Record<string, JsonObject>>)[
        "/api/snapshots/{id}/restore"
      ]?.post?.responses as Json;
      expect(Object.keys(responses)).toEqual(expect.arrayContaining(["200", "201"]));
    });

    it("allows the broker URL schemes the API allows", () => {
      const brokerUrl = (
        (consumer.action("startInstance").input as JsonObject).properties as Record<string, JsonObject>
      ).brokerUrl as JsonObject;
      const described = ajv.compile(brokerUrl);
      const checked = startInput.shape.brokerUrl;
      const schemes = ["mqtt", "mqtts", "ws", "wss", "tcp", "ssl", "http", "https", "ftp", "file", "mqttx"];
      const byTd = schemes.filter((s) => described(`${s}://broker.example:1883`));
      const byZod = schemes.filter((s) => checked.safeParse(`${s}://broker.example:1883`).success);
      expect(byTd).toEqual(byZod);
      expect(byZod).toEqual([...BROKER_URL_SCHEMES]);
    });

    it("refuses undeclared members of a body in the TD as the API does", async () => {
      const openMembers: string[] = [];
      const visit = (schema: unknown, at: string) => {
        if (Array.isArray(schema)) {
          for (const [i, s] of schema.entries()) visit(s, `${at}/${i}`);
        }
        if (!isObject(schema)) return;
        if (isObject(schema.properties) && schema.additionalProperties !== false) openMembers.push(at);
        for (const [k, v] of Object.entries(schema)) visit(v, `${at}/${k}`);
      };
      for (const route of TABLE.filter((r) => r.input !== undefined)) {
        visit(consumer.action(route.name).input, route.name);
      }
      expect(openMembers).toEqual([]);
      const extra = await call(gateway.url, "POST", "/api/nodes", {
        id: "extra",
        platform: "in-process",
        tier: "edge",
        capabilities: { cpu: 1, memory: 1 },
        colour: "red",
      });
      expect(extra.status).toBe(400);
      expect(consumer.action("registerNode").input).toMatchObject({ additionalProperties: false });
    });
  });
});

describe("an instance that is not running, as the API answers it", () => {
  let gateway: Gateway;
  let engine: FakeDockerEngine;

  beforeAll(async () => {
    engine = await startFakeDockerEngine("ping-only");
    gateway = await startTestGateway({ DTC_OPERATION_TIMEOUT_MS: "500", DTC_PLATFORM_TIMEOUT_MS: "20000" });
  });

  afterAll(async () => {
    await gateway?.close();
    await engine?.close();
  });

  it("validates against the TD's output schema (lifecycle NotRunning, with why)", async () => {
    const consumer = await describedBy(gateway);
    const node = { id: "stuck", platform: "docker", tier: "edge", capabilities: { cpu: 2, memory: 1024 } };
    await consumer.call("registerNode", { body: { ...node, endpoint: engine.endpoint } });
    const pkg = {
      id: "rt-docker",
      schema: "iiot-device",
      platform: "docker",
      artefact: { image: "dtc-twin:fake" },
    };
    await consumer.call("registerPackage", { body: pkg });
    // The engine answers the fit check's ping, then never its container list: the start times out.
    const start = { package: "rt-docker", node: "stuck", id: "d1", configuration: { DEVICE_ID: "d1" } };
    expect((await call(gateway.url, "POST", "/api/instances", start)).status).toBe(504);
    const view = await consumer.call("getInstance", { variables: { id: "d1" } });
    expect(view.body).toMatchObject({ lifecycle: "NotRunning", desired: "running" });
    expect(view.body.failed).toMatch(/did not finish within 500 ms/);
    const listed = await consumer.call("runningInstances", { variables: { state: "NotRunning" } });
    expect(listed.body.map((i) => i.id)).toEqual(["d1"]);
    await consumer.call("removeInstance", { variables: { id: "d1" } });
  });
});
