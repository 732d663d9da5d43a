import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { Gateway } from "../src/gateway.js";
import { IiotDeviceSimulator } from "../src/simulator/index.js";
import { waitFor } from "./helpers.js";
import { type Answer, call, startTestGateway } from "./manager-client.js";

/** The manager's API refuses what it cannot do with the right status and says why. */

type Json = Record<string, unknown>;

const NODE = {
  id: "edge-a",
  platform: "in-process",
  tier: "edge",
  capabilities: { cpu: 1, memory: 512, gpu: 0 },
  labels: { site: "a" },
  latencyMs: 2,
};

describe("DTC Manager API: errors and rules", () => {
  let gateway: Gateway;
  const sims: IiotDeviceSimulator[] = [];
  const api = (method: string, path: string, body?: unknown) => call(gateway.url, method, path, body);
  const fields = (a: Answer) => ((a.body.validationErrors ?? []) as { field: string }[]).map((e) => e.field);

  beforeAll(async () => {
    gateway = await startTestGateway({ DTC_MAX_BODY_BYTES: "65536" });
    expect((await api("POST", "/api/nodes", NODE)).status).toBe(201);
  });

  afterAll(async () => {
    await Promise.all(sims.map((s) => s.stop()));
    await gateway?.close();
  });

  it("registers node local at start, measured, and refuses to remove it", async () => {
    const local = await api("GET", "/api/nodes/local");
    expect(local.body).toMatchObject({ id: "local", platform: "in-process", builtIn: true, ready: true });
    expect(local.body.latencyMs as number).toBeGreaterThanOrEqual(0);
    expect((local.body.capabilities as Json).cpu as number).toBeGreaterThan(0);
    const removal = await api("DELETE", "/api/nodes/local");
    expect(removal.status).toBe(409);
    expect(removal.type).toBe("application/problem+json");
  });

  it("answers unknown ids with 404 problem details", async () => {
    for (const path of [
      "/api/nodes/nope",
      "/api/schemas/nope",
      "/api/packages/nope",
      "/api/instances/nope",
      "/api/snapshots/nope",
    ]) {
      const answer = await api("GET", path);
      expect(answer.status, path).toBe(404);
      expect(answer.type, path).toBe("application/problem+json");
      expect(answer.body.detail, path).toContain('"nope"');
    }
    for (const path of [
      "/api/instances/nope/stop",
      "/api/instances/nope/snapshots",
      "/api/snapshots/nope/restore",
    ]) {
      expect((await api("POST", path, { node: "local" })).status, path).toBe(404);
    }
    expect((await api("DELETE", "/api/instances/nope")).status).toBe(404);
  });

  it("refuses bad nodes with 400 naming each field, and duplicates with 409", async () => {
    const bad = await api("POST", "/api/nodes", {
      id: "Bad Id",
      platform: "vm",
      tier: "edge",
      capabilities: { cpu: -1, memory: 1 },
    });
    expect(bad.status).toBe(400);
    expect(fields(bad).sort()).toEqual(["capabilities.cpu", "id", "platform"]);
    expect((await api("POST", "/api/nodes", NODE)).status).toBe(409);
    expect((await api("POST", "/api/nodes", "{not json")).status).toBe(400);
    expect((await api("GET", "/api/nodes?tier=space")).status).toBe(400);
    expect((await api("GET", "/api/nodes?gpu=maybe")).status).toBe(400);
  });

  it("discovers nodes by platform, tier, label and GPU", async () => {
    const ids = async (query: string) =>
      (await api("GET", `/api/nodes?${query}`)).body.map((n) => n.id).sort();
    expect(await ids("platform=in-process")).toEqual(["edge-a", "local"]);
    expect(await ids("label=site=a")).toEqual(["edge-a"]);
    expect(await ids("label=site")).toEqual(["edge-a"]);
    expect(await ids("label=site=b")).toEqual([]);
    expect(await ids("gpu=true")).toEqual([]);
    expect(await ids("platform=docker")).toEqual([]);
  });

  it("validates schemas: not a Thing Model, or one whose tm:extends is not registered, is a 400", async () => {
    const notTm = await api("POST", "/api/schemas", { title: "x", "@type": "Thing" });
    expect(notTm.status).toBe(400);
    expect(notTm.body.validationErrors).toBeDefined();
    const dangling = await api("POST", "/api/schemas?id=dangling", {
      "@context": ["https://www.w3.org/2022/wot/td/v1.1"],
      "@type": "tm:ThingModel",
      title: "Dangling",
      links: [
        { rel: "tm:extends", href: "https://example.org/missing.tm.jsonld", type: "application/tm+json" },
      ],
    });
    expect(dangling.status).toBe(400);
    expect((await api("GET", "/api/schemas/dangling")).status).toBe(404);
  });

  it("finds schemas by text, type and affordance, and serves each as a Thing Model", async () => {
    const ids = async (query: string) =>
      (await api("GET", `/api/schemas?${query}`)).body.map((s) => s.id).sort();
    expect(await ids("q=camera")).toContain("masa-camera");
    expect(await ids("type=saref:Device")).toContain("iiot-device");
    expect(await ids("affordance=setRate")).toContain("iiot-device");
    expect(await ids("affordance=noSuchThing")).toEqual([]);
    const res = await fetch(`${gateway.url}/api/schemas/iiot-device`);
    expect(res.headers.get("content-type")).toBe("application/tm+json");
    expect(((await res.json()) as Json)["@type"]).toContain("tm:ThingModel");
    expect((await api("DELETE", "/api/schemas/iiot-device")).status).toBe(409);
  });

  it("validates packages and refuses to remove what is in use", async () => {
    const docker = await api("POST", "/api/packages", {
      id: "d1",
      schema: "iiot-device",
      platform: "docker",
    });
    expect(docker.status).toBe(400);
    expect(fields(docker)).toEqual(["artefact.image"]);
    expect(
      (await api("POST", "/api/packages", { id: "x1", schema: "nope", platform: "in-process" })).status,
    ).toBe(404);
    const missing = await api("POST", "/api/packages", {
      id: "x2",
      schema: "iiot-device",
      platform: "in-process",
      parameters: { RATE: { type: "integer", default: 1.5 } },
    });
    expect(missing.status).toBe(400);
    expect(fields(missing).sort()).toEqual(["parameters.RATE.default"]);
    const noPlaceholder = await api("POST", "/api/packages", {
      id: "x3",
      schema: "iiot-device",
      platform: "in-process",
      parameters: { OTHER: { type: "string", default: "a" } },
    });
    expect(fields(noPlaceholder)).toEqual(["parameters.DEVICE_ID"]);

    const model = (await (await fetch(`${gateway.url}/api/schemas/iiot-device`)).json()) as Json;
    expect((await api("POST", "/api/schemas?id=used", model)).status).toBe(201);
    expect(
      (await api("POST", "/api/packages", { id: "uses", schema: "used", platform: "in-process" })).status,
    ).toBe(201);
    const refused = await api("DELETE", "/api/schemas/used");
    expect(refused.status).toBe(409);
    expect(refused.body.detail).toContain("uses");
    expect((await api("DELETE", "/api/packages/uses")).status).toBe(204);
    expect((await api("DELETE", "/api/schemas/used")).status).toBe(204);
    expect((await api("GET", "/api/packages?schema=used")).body).toEqual([]);
  });

  it("checks a start request: configuration (400 naming the parameter), package/node fit (409 with the reason)", async () => {
    expect(
      (
        await api("POST", "/api/packages", {
          id: "heavy",
          schema: "iiot-device",
          platform: "in-process",
          parameters: { DEVICE_ID: { type: "string" }, SPEED: { type: "integer", minimum: 1, default: 2 } },
          requirements: { cpu: 4 },
        })
      ).status,
    ).toBe(201);
    const start = (body: Json) => api("POST", "/api/instances", body);
    expect((await start({ package: "nope", node: "local" })).status).toBe(404);
    expect((await start({ package: "iiot-device", node: "nope" })).status).toBe(404);
    const unconfigured = await start({ package: "iiot-device", node: "local" });
    expect(unconfigured.status).toBe(400);
    expect(fields(unconfigured)).toEqual(["configuration.DEVICE_ID"]);
    const typed = await start({
      package: "heavy",
      node: "local",
      configuration: { DEVICE_ID: "h", SPEED: 0, COLOUR: "red" },
    });
    expect(typed.status).toBe(400);
    expect(fields(typed).sort()).toEqual(["configuration.COLOUR", "configuration.SPEED"]);
    const tooBig = await start({ package: "heavy", node: "edge-a", configuration: { DEVICE_ID: "h" } });
    expect(tooBig.status).toBe(409);
    expect(tooBig.body.detail).toContain("needs 4 CPU");

    // A node of another platform, and one this gateway has no driver for.
    const cloud = { ...NODE, id: "cloud-k8s", platform: "kubernetes", tier: "cloud", latencyMs: 40 };
    expect((await api("POST", "/api/nodes", cloud)).status).toBe(201);
    const wrongPlatform = await start({
      package: "iiot-device",
      node: "cloud-k8s",
      configuration: { DEVICE_ID: "k" },
    });
    expect(wrongPlatform.status).toBe(409);
    expect(wrongPlatform.body.detail).toContain("is for in-process");
    const node = await api("GET", "/api/nodes/cloud-k8s");
    expect(node.body).toMatchObject({ ready: false, reason: "this gateway has no kubernetes driver" });

    // Candidates: why each node does not fit, when asked for all of them.
    const all = await api("GET", "/api/packages/heavy/nodes?all=true");
    const byId = Object.fromEntries(all.body.map((c) => [(c.node as Json).id, c]));
    expect(byId["edge-a"]).toMatchObject({ fits: false });
    expect(String((byId["edge-a"] as Json).reasons)).toContain("needs 4 CPU");
    expect(String((byId["cloud-k8s"] as Json).reasons)).toContain(
      "more than the schema's desired timeliness (10 ms)",
    );
    const fitting = await api("GET", "/api/packages/iiot-device/nodes");
    expect(fitting.body.map((c) => (c.node as Json).id).sort()).toEqual(["edge-a", "local"]);
    expect((await api("DELETE", "/api/nodes/cloud-k8s")).status).toBe(204);
  });

  it("serialises concurrent operations on one instance: never half-moved, one copy running", async () => {
    const sim = new IiotDeviceSimulator({ id: "busy", brokerUrl: gateway.brokerUrl, rate: 10 });
    sims.push(sim);
    await sim.start();
    const started = await api("POST", "/api/instances", {
      package: "iiot-device",
      node: "local",
      id: "busy",
      configuration: { DEVICE_ID: "busy" },
    });
    expect(started.status).toBe(201);
    expect(
      (
        await api("POST", "/api/instances", {
          package: "iiot-device",
          node: "local",
          id: "busy",
          configuration: { DEVICE_ID: "busy" },
        })
      ).status,
    ).toBe(409);
    expect((await api("DELETE", "/api/nodes/edge-a")).status).toBe(204);
    expect((await api("POST", "/api/nodes", NODE)).status).toBe(201);

    const answers = await Promise.all([
      api("POST", "/api/instances/busy/move", { node: "edge-a" }),
      api("POST", "/api/instances/busy/snapshots"),
      api("POST", "/api/instances/busy/move", { node: "local" }),
      api("POST", "/api/instances/busy/stop"),
      api("POST", "/api/instances/busy/move", { node: "edge-a" }),
      api("POST", "/api/instances/busy/start"),
    ]);
    expect(answers.map((a) => a.status)).toEqual([200, 201, 200, 200, 200, 200]);
    const view = await api("GET", "/api/instances/busy");
    expect(view.body).toMatchObject({ node: "edge-a", desired: "running" });
    const hosts = ["local", "edge-a"].filter(
      (n) => gateway.inProcess.runtimeOf(n)?.get("busy") !== undefined,
    );
    expect(hosts).toEqual(["edge-a"]);
    expect((await fetch(`${gateway.url}/twins/busy/properties/temperature`)).status).toBe(200);

    // In use: the node and the package cannot go; moving where it is, or resuming a running twin, conflicts.
    expect((await api("DELETE", "/api/nodes/edge-a")).status).toBe(409);
    expect((await api("POST", "/api/instances/busy/move", { node: "edge-a" })).status).toBe(409);
    await waitFor(
      "busy attached",
      async () => (await api("GET", "/api/instances/busy")).body.lifecycle !== "Unbound",
    );
    expect((await api("POST", "/api/instances/busy/start")).status).toBe(409);
    expect((await api("POST", "/api/instances/busy/move", {})).status).toBe(400);
    expect((await api("DELETE", "/api/instances/busy")).status).toBe(204);
  });

  it("restores a snapshot as a new instance, and over its own instance (rolled back)", async () => {
    const sim = new IiotDeviceSimulator({ id: "snap", brokerUrl: gateway.brokerUrl, rate: 10 });
    sims.push(sim);
    await sim.start();
    const start = { package: "iiot-device", node: "local", id: "snap", configuration: { DEVICE_ID: "snap" } };
    expect((await api("POST", "/api/instances", start)).status).toBe(201);
    await waitFor("snap has a temperature", async () => {
      const res = await fetch(`${gateway.url}/twins/snap/properties/temperature`);
      return res.status === 200 && typeof (await res.json()) === "number";
    });
    const snapshot = await api("POST", "/api/instances/snap/snapshots");
    expect(snapshot.status).toBe(201);
    const details = await api("GET", `/api/snapshots/${snapshot.body.id}`);
    expect(details.body).toMatchObject({
      instance: "snap",
      record: { id: "snap" },
      state: { format: "dtc-twin-state/1" },
    });

    const copy = await api("POST", `/api/snapshots/${snapshot.body.id}/restore`, {
      node: "edge-a",
      id: "snap-copy",
    });
    expect(copy.status, JSON.stringify(copy.body)).toBe(201);
    expect(copy.body).toMatchObject({
      id: "snap-copy",
      node: "edge-a",
      origin: { restoredFrom: snapshot.body.id },
    });
    expect((copy.body.td as Json).id).toBe("urn:dtc:twin:snap-copy");

    const rolledBack = await api("POST", `/api/snapshots/${snapshot.body.id}/restore`, { node: "edge-a" });
    expect(rolledBack.status).toBe(200);
    expect(rolledBack.body).toMatchObject({ id: "snap", node: "edge-a" });
    expect(gateway.inProcess.runtimeOf("local")?.get("snap")).toBeUndefined();
    expect((await api("POST", `/api/snapshots/${snapshot.body.id}/restore`, { node: "nope" })).status).toBe(
      404,
    );

    expect((await api("DELETE", `/api/snapshots/${snapshot.body.id}`)).status).toBe(204);
    expect((await api("GET", `/api/snapshots/${snapshot.body.id}`)).status).toBe(404);
    for (const id of ["snap", "snap-copy"])
      expect((await api("DELETE", `/api/instances/${id}`)).status).toBe(204);
  });

  it("limits request bodies (413)", async () => {
    const big = await api("POST", "/api/nodes", { ...NODE, id: "big", labels: { pad: "x".repeat(70_000) } });
    expect(big.status).toBe(413);
  });
});
