import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { HttpClientFactory } from "@node-wot/binding-http";
import { MqttClientFactory } from "@node-wot/binding-mqtt";
import { Servient } from "@node-wot/core";
import Docker from "dockerode";
import { afterAll, beforeAll, beforeEach, describe, expect, it } from "vitest";
import type { Gateway } from "../src/gateway.js";
import { type EmbeddedBroker, startEmbeddedBroker } from "../src/mqtt/embedded-broker.js";
import { IiotDeviceSimulator } from "../src/simulator/index.js";
import type { JsonObject } from "../src/wot/rdf.js";
import { freePort } from "./brokers.js";
import {
  buildTwinTestImage,
  dockerUnavailable,
  startDockerEngine,
  type TestDockerEngine,
} from "./docker-engine.js";
import { waitFor } from "./helpers.js";
import { type Answer, adminToken, call, FAST, startTestGateway } from "./manager-client.js";

/**
 * The Docker platform with a real engine (a private dockerd, or DTC_TEST_DOCKER_HOST) and the
 * twin image built FROM scratch from this machine's Node and the built project: twins run as
 * containers, move between the gateway's process and containers with their state, are reported
 * failed when their container dies, are adopted by a restarted gateway, and leave nothing behind.
 */

const SKIP = dockerUnavailable();

/** The index of the first form of a property with `scheme` that supports `op`. */
/** A copy of `td` whose properties keep their HTTP forms only. */
function httpOnly(td: JsonObject): JsonObject {
  const copy = structuredClone(td);
  for (const p of Object.values(copy.properties as Record<string, { forms: { href: string }[] }>)) {
    p.forms = p.forms.filter((f) => f.href.startsWith("http"));
  }
  return copy;
}

function formIndex(td: JsonObject, property: string, scheme: string, op: string): number {
  const forms = ((td.properties as Record<string, JsonObject>)[property]?.forms ?? []) as JsonObject[];
  const index = forms.findIndex((f) => String(f.href).startsWith(`${scheme}:`) && [f.op].flat().includes(op));
  if (index < 0) throw new Error(`${property} has no ${scheme} form for ${op}`);
  return index;
}

describe("Docker platform driver (real engine)", () => {
  let engine: TestDockerEngine;
  let docker: Docker;
  let image: string;
  let dataDir: string;
  let gateway: Gateway;
  let api: (method: string, path: string, body?: unknown) => Promise<Answer>;
  const sims: IiotDeviceSimulator[] = [];
  let servient: Servient;
  let wot: typeof WoT;

  /** The containers of an instance on the engine (running or not). */
  const containersOf = (instance: string) =>
    docker.listContainers({ all: true, filters: JSON.stringify({ label: [`dtc.instance=${instance}`] }) });
  const lifecycle = async (id: string) => (await api("GET", `/api/instances/${id}`)).body.lifecycle;
  /** The admin token of the gateway (authentication is on, as users run it). */
  let token: string;
  const authed = (url: string) => fetch(url, { headers: { Authorization: `Bearer ${token}` } });
  /** A simulated PT with its own device token (its MQTT rights follow its twin's TD: start the twin first). */
  const simulate = async (id: string, brokerUrl = gateway.brokerUrl) => {
    const device = await api("POST", "/api/tokens", { name: id, role: `device:${id}` });
    const sim = new IiotDeviceSimulator({
      id,
      brokerUrl,
      rate: 10,
      mqttOptions: { username: id, password: device.body.token as string },
    });
    sims.push(sim);
    await sim.start();
  };

  /** The same ports at every start: adopted containers keep the broker and URLs they were given. */
  let ports: { DTC_PORT: string; DTC_MQTT_PORT: string };
  /** Starts twin `id` of `pkg` on `node`, fed by its own simulated device; expects a 201. */
  const startTwin = async (id: string, pkg: string, node: string, brokerUrl = gateway.brokerUrl) => {
    servient.addCredentials({ [`urn:dtc:twin:${id}`]: { token, username: "dtc", password: token } });
    const started = await api("POST", "/api/instances", {
      package: pkg,
      node,
      id,
      configuration: { DEVICE_ID: id },
      fidelity: FAST,
    });
    expect(started.status, JSON.stringify(started.body)).toBe(201);
    await simulate(id, brokerUrl);
    return started;
  };
  /** Observes `temperature` over the TD's MQTT form; the values land in the returned array. */
  const observeTemperature = async (thing: WoT.ConsumedThing, td: JsonObject): Promise<number[]> => {
    const observed: number[] = [];
    await thing.observeProperty(
      "temperature",
      async (v) => void observed.push((await v.value()) as number),
      undefined,
      { formIndex: formIndex(td, "temperature", "mqtt", "observeproperty") },
    );
    return observed;
  };

  async function openGateway(): Promise<void> {
    ports ??= { DTC_PORT: String(await freePort()), DTC_MQTT_PORT: String(await freePort()) };
    gateway = await startTestGateway({
      DTC_DATA_DIR: dataDir,
      DTC_STATUS_INTERVAL_MS: "200",
      DTC_AUTH: "on",
      // A private vfs engine on a loaded 2-core machine (other suites build images beside it) can
      // take longer than the default 10 s to create a container.
      DTC_PLATFORM_TIMEOUT_MS: "60000",
      ...ports,
    });
    token = adminToken(gateway);
    api = (method, path, body) => call(gateway.url, method, path, body, token);
  }

  beforeEach((ctx) => {
    if (SKIP) ctx.skip(SKIP);
  });

  beforeAll(async () => {
    if (SKIP) return;
    engine = await startDockerEngine();
    docker = new Docker({ socketPath: engine.socketPath });
    image = await buildTwinTestImage(engine);
    dataDir = mkdtempSync(join(tmpdir(), "dtc-docker-"));
    await openGateway();
    servient = new Servient();
    servient.addClientFactory(new HttpClientFactory());
    servient.addClientFactory(new MqttClientFactory());
    wot = (await servient.start()) as unknown as typeof WoT;

    const node = await api("POST", "/api/nodes", {
      id: "docker-1",
      platform: "docker",
      tier: "edge",
      capabilities: { cpu: 2, memory: 4096, gpu: 1 },
      latencyMs: 1,
      endpoint: { socketPath: engine.socketPath, network: "host" },
    });
    expect(node.status, JSON.stringify(node.body)).toBe(201);
    const pkg = await api("POST", "/api/packages", {
      id: "iiot-docker",
      schema: "iiot-device",
      platform: "docker",
      artefact: { image },
      requirements: { cpu: 0.5, memory: 256 },
    });
    expect(pkg.status, JSON.stringify(pkg.body)).toBe(201);
  }, 600_000);

  afterAll(async () => {
    await Promise.all(sims.map((s) => s.stop()));
    await servient?.shutdown();
    // Instances go with their containers; then nothing of this gateway may be left on the engine.
    if (gateway) {
      for (const instance of (await api("GET", "/api/instances")).body) {
        await api("DELETE", `/api/instances/${instance.id}`);
      }
      await gateway.close();
    }
    if (dataDir) rmSync(dataDir, { recursive: true, force: true });
    await engine?.stop();
  }, 120_000);

  it("runs an IIoT twin in a container: Entangled against the simulator, read by a node-wot client through its published TD", {
    timeout: 120_000,
  }, async () => {
    const started = await startTwin("press-d", "iiot-docker", "docker-1");
    expect(started.body).toMatchObject({ id: "press-d", node: "docker-1", platform: "docker" });
    const links = (started.body.td as JsonObject).links as { rel: string; href: string }[];
    expect(links).toContainEqual({
      rel: "https://w3id.org/dtc#platform",
      href: "https://w3id.org/dtc#Docker",
    });

    // One container, labelled, with the package's limits.
    const [container, ...others] = await containersOf("press-d");
    expect(others).toEqual([]);
    expect(container?.State).toBe("running");
    expect(container?.Labels).toMatchObject({
      "dtc.instance": "press-d",
      "dtc.node": "docker-1",
      "dtc.package": "iiot-docker",
      "dtc.schema": "https://w3id.org/dtc/thing-models/iiot-device.tm.jsonld",
    });
    const inspected = await docker.getContainer(container?.Id as string).inspect();
    expect(inspected.HostConfig.NanoCpus).toBe(0.5e9);
    expect(inspected.HostConfig.Memory).toBe(256 * 2 ** 20);

    await waitFor(
      "the container twin Entangled",
      async () => (await lifecycle("press-d")) === "Entangled",
      30_000,
    );

    // The directory's TD, consumed by node-wot: HTTP through the gateway, MQTT on the broker.
    const td = (await (await authed(`${gateway.url}/things/urn:dtc:twin:press-d`)).json()) as JsonObject;
    const thing = await wot.consume(td as unknown as WoT.ThingDescription);
    const temperature = await thing.readProperty("temperature", {
      formIndex: formIndex(td, "temperature", "http", "readproperty"),
    });
    expect(typeof (await temperature.value())).toBe("number");
    const observed = await observeTemperature(thing, td);
    await waitFor("temperature observed over MQTT", () => observed.length > 2);
    const entangled = `/search/named/twins-by-entanglement?minOdte=0.9&state=Entangled`;
    await waitFor("found Entangled in the directory", async () => {
      const res = await authed(`${gateway.url}${entangled}`);
      const body = (await res.json()) as { results: { bindings: { thing: { value: string } }[] } };
      return body.results.bindings.some((b) => b.thing.value === "urn:dtc:twin:press-d");
    });
  });

  it("moves a twin in-process -> Docker -> in-process with its history; the client never reads the TD again", {
    timeout: 120_000,
  }, async () => {
    await startTwin("press-m", "iiot-device", "local");
    await waitFor("Entangled in-process", async () => (await lifecycle("press-m")) === "Entangled", 20_000);

    const td = (await (await authed(`${gateway.url}/things/urn:dtc:twin:press-m`)).json()) as JsonObject;
    const thing = await wot.consume(td as unknown as WoT.ThingDescription);
    // Reads through a consumer of the TD's HTTP forms only: node-wot 0.9.2 gives a call that names
    // a formIndex a fresh client without credentials after the first (see manager-journey.test.ts).
    const reader = await wot.consume(httpOnly(td) as unknown as WoT.ThingDescription);
    const history = async () =>
      (await (await reader.readProperty("history")).value()) as {
        states: { committedAt: string }[];
      };
    const observed = await observeTemperature(thing, td);
    await waitFor("observations in-process", () => observed.length > 2);
    for (const node of ["docker-1", "local"]) {
      // The history is bounded (100 states by default): the last states before the move must be there after it.
      const before = (await history()).states;
      const last = before.at(-1)?.committedAt;
      expect(last).toBeDefined();
      const moved = await api("POST", "/api/instances/press-m/move", { node });
      expect(moved.status, JSON.stringify(moved.body)).toBe(200);
      expect(moved.body).toMatchObject({ node, platform: node === "local" ? "in-process" : "docker" });
      // Same TD id and the same forms: a consumer has nothing to re-read.
      expect((moved.body.td as JsonObject).id).toBe("urn:dtc:twin:press-m");
      expect(JSON.stringify((moved.body.td as JsonObject).properties)).toBe(JSON.stringify(td.properties));
      const running = (await containersOf("press-m")).filter((c) => c.State === "running");
      expect(running.length).toBe(node === "local" ? 0 : 1);
      expect(gateway.inProcess.runtimeOf("local")?.get("press-m") === undefined).toBe(node !== "local");

      // Through the same ConsumedThing: the history came along, and it keeps growing.
      const after = await history();
      expect(after.states.map((r) => r.committedAt)).toContain(last);
      expect(after.states.length).toBeGreaterThanOrEqual(Math.min(before.length, 100));
      const seen = observed.length;
      await waitFor(`MQTT observations continuing on ${node}`, () => observed.length > seen + 3, 20_000);
      await waitFor(`Entangled on ${node}`, async () => (await lifecycle("press-m")) === "Entangled", 20_000);
      await waitFor(
        `Entangled read by node-wot on ${node}`,
        async () => (await (await reader.readProperty("lifecycleState")).value()) === "Entangled",
      );
    }
    expect(await containersOf("press-m")).toEqual([]);
  });

  it("reports an instance failed within 2 s of its container being killed, then starts it again", {
    timeout: 120_000,
  }, async () => {
    const [container] = await containersOf("press-d");
    const killedAt = Date.now();
    await docker.getContainer(container?.Id as string).kill();
    const failed = await waitFor(
      "the failure reported",
      async () => {
        const view = (await api("GET", "/api/instances/press-d")).body;
        return (view.failures as { count: number } | undefined)?.count === 1 ? view : false;
      },
      5_000,
    );
    expect(Date.now() - killedAt).toBeLessThan(2_000);
    expect(
      ((failed as Record<string, unknown>).failures as { last: { reason: string } }).last.reason,
    ).toMatch(/exited with code 137/);
    // The reconcile loop starts it again, in a new container, from its last saved state.
    await waitFor("Entangled again", async () => (await lifecycle("press-d")) === "Entangled", 60_000);
    const now = await containersOf("press-d");
    expect(now.map((c) => c.Id)).not.toContain(container?.Id);
    expect(now.filter((c) => c.State === "running").length).toBe(1);
  });

  it("adopts its containers across a gateway restart and removes orphans by label", {
    timeout: 120_000,
  }, async () => {
    const [before] = await containersOf("press-d");
    const states = async () =>
      (
        (await (await authed(`${gateway.url}/twins/press-d/properties/history`)).json()) as {
          states: unknown[];
        }
      ).states.length;
    await waitFor("some history", async () => (await states()) > 5);
    const seen = await states();
    // An orphan: a container of this gateway for an instance it does not know.
    const orphan = await docker.createContainer({
      Image: image,
      Cmd: ["-e", "setInterval(() => {}, 1000)"],
      Labels: { ...before?.Labels, "dtc.instance": "ghost" },
      HostConfig: { NetworkMode: "host" },
    });
    await orphan.start();

    await gateway.close();
    expect((await containersOf("press-d")).map((c) => [c.Id, c.State])).toEqual([[before?.Id, "running"]]);
    await openGateway();
    expect((await containersOf("press-d")).map((c) => c.Id)).toEqual([before?.Id]);
    expect(await lifecycle("press-d")).not.toBe("NotRunning");
    expect(await states()).toBeGreaterThanOrEqual(seen);
    await waitFor("the orphan removed", async () => (await containersOf("ghost")).length === 0);
  });

  it("removes the container and the TD", { timeout: 60_000 }, async () => {
    expect((await api("DELETE", "/api/instances/press-d")).status).toBe(204);
    expect(await containersOf("press-d")).toEqual([]);
    expect((await authed(`${gateway.url}/things/urn:dtc:twin:press-d`)).status).toBe(404);
    expect((await authed(`${gateway.url}/twins/press-d/properties/temperature`)).status).toBe(404);
  });

  it("says why a twin cannot start: engine down, bad endpoint, image missing, GPU unavailable", {
    timeout: 60_000,
  }, async () => {
    const badEndpoint = await api("POST", "/api/nodes", {
      id: "docker-bad",
      platform: "docker",
      tier: "edge",
      capabilities: { cpu: 1, memory: 512 },
      endpoint: { socketPath: "/nonexistent/docker.sock", host: "x" },
    });
    expect(badEndpoint.status).toBe(400);
    expect(badEndpoint.body.detail).toMatch(/endpoint\.host/);

    expect(
      (
        await api("POST", "/api/nodes", {
          id: "docker-down",
          platform: "docker",
          tier: "edge",
          capabilities: { cpu: 1, memory: 512 },
          endpoint: { socketPath: join(tmpdir(), "no-such-engine.sock"), network: "host" },
        })
      ).status,
    ).toBe(201);
    const down = await api("POST", "/api/instances", {
      package: "iiot-docker",
      node: "docker-down",
      configuration: { DEVICE_ID: "x" },
    });
    expect(down.status).toBe(409);
    expect(down.body.detail).toMatch(
      /not ready: the Docker engine at unix:\/\/.*no-such-engine\.sock does not answer/,
    );

    const missing = await api("POST", "/api/packages", {
      id: "iiot-missing",
      schema: "iiot-device",
      platform: "docker",
      artefact: { image: "dtc-no-such-image:1" },
    });
    expect(missing.status).toBe(201);
    const pull = await api("POST", "/api/instances", {
      package: "iiot-missing",
      node: "docker-1",
      configuration: { DEVICE_ID: "x" },
    });
    expect(pull.status).toBe(409);
    expect(pull.body.detail).toMatch(
      /image dtc-no-such-image:1 is not on the Docker engine .* could not be pulled/,
    );

    const gpu = await api("POST", "/api/packages", {
      id: "iiot-gpu",
      schema: "iiot-device",
      platform: "docker",
      artefact: { image },
      requirements: { gpu: 1 },
    });
    expect(gpu.status).toBe(201);
    const noDevice = await api("POST", "/api/instances", {
      package: "iiot-gpu",
      node: "docker-1",
      id: "gpu-twin",
      configuration: { DEVICE_ID: "x" },
    });
    // A twin process that exits at start (its broker refuses it): 502 with the container's last lines.
    expect(
      (
        await api("POST", "/api/nodes", {
          id: "docker-nobroker",
          platform: "docker",
          tier: "edge",
          capabilities: { cpu: 1, memory: 1024 },
          endpoint: { socketPath: engine.socketPath, network: "host", brokerUrl: "mqtt://127.0.0.1:1" },
        })
      ).status,
    ).toBe(201);
    const exits = await api("POST", "/api/instances", {
      package: "iiot-docker",
      node: "docker-nobroker",
      id: "no-broker",
      configuration: { DEVICE_ID: "x" },
    });
    expect(exits.status).toBe(502);
    expect(exits.body.detail).toMatch(/did not start: container dtc-no-broker-\w+ exited with code 1/);
    expect(exits.body.detail).toMatch(/dtc-twin: failed to start: .*ECONNREFUSED/);
    expect(await containersOf("no-broker")).toEqual([]);

    // The engine has no GPU runtime: it refuses the device request, and the manager says so.
    expect(noDevice.status).toBe(502);
    expect(noDevice.body.detail).toMatch(/gpu/i);
    expect(await containersOf("gpu-twin")).toEqual([]);
    expect((await api("GET", "/api/instances/gpu-twin")).status).toBe(404);
  });

  it("publishes a twin's ports on a bridge network and reaches it there", { timeout: 120_000 }, async () => {
    // A user-defined bridge network; the twin reaches a broker on the network's gateway address.
    const name = `dtc-test-${process.pid}`;
    const network = await docker.createNetwork({ Name: name, Driver: "bridge" });
    let broker: EmbeddedBroker | undefined;
    try {
      const info = await network.inspect();
      const hostIp = info.IPAM?.Config?.[0]?.Gateway as string;
      broker = await startEmbeddedBroker({ port: 0, host: "0.0.0.0" });
      const port = new URL(broker.url).port;
      expect(
        (
          await api("POST", "/api/nodes", {
            id: "docker-bridge",
            platform: "docker",
            tier: "edge",
            capabilities: { cpu: 2, memory: 2048 },
            endpoint: { socketPath: engine.socketPath, network: name, brokerUrl: `mqtt://${hostIp}:${port}` },
          })
        ).status,
      ).toBe(201);
      await startTwin("press-b", "iiot-docker", "docker-bridge", `mqtt://127.0.0.1:${port}`);
      const [container] = await containersOf("press-b");
      const ports = (await docker.getContainer(container?.Id as string).inspect()).NetworkSettings.Ports;
      expect(ports["8080/tcp"]?.[0]).toMatchObject({ HostIp: "127.0.0.1" });
      await waitFor(
        "Entangled on the bridge network",
        async () => (await lifecycle("press-b")) === "Entangled",
        30_000,
      );
      await waitFor(
        "Entangled read through /twins",
        async () =>
          (await (await authed(`${gateway.url}/twins/press-b/properties/lifecycleState`)).json()) ===
          "Entangled",
      );
      expect((await api("DELETE", "/api/instances/press-b")).status).toBe(204);
      expect(await containersOf("press-b")).toEqual([]);
    } finally {
      await broker?.close();
      // The engine releases a removed container's endpoint a moment after the removal.
      await waitFor("the test network removed", () =>
        network.remove().then(
          () => true,
          () => false,
        ),
      );
    }
  });
});
