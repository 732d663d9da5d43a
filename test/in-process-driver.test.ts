import { randomUUID } from "node:crypto";
import mqtt from "mqtt";
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from "vitest";
import type { InstanceHandle, InstanceSpec, NodeTarget } from "../src/platforms/driver.js";
import { InProcessDriver } from "../src/platforms/in-process/driver.js";
import { AugmentationError } from "../src/runtime/augmentation.js";
import { TwinNotFoundError } from "../src/runtime/twin-runtime.js";
import { IiotDeviceSimulator } from "../src/simulator/index.js";
import type { ThingModelRegistry } from "../src/wot/model-registry.js";
import type { JsonObject } from "../src/wot/rdf.js";
import { startBroker, type TestBroker } from "./brokers.js";
import { sample, sampleRegistry, waitFor } from "./helpers.js";

const IIOT = sample("iiot-device.tm.jsonld");
// 10 Hz over a 2 s window keeps each scenario short; Td = 50 ms leaves room on a busy CI box.
const FIDELITY = { expectedUpdateRate: 10, odteWindow: 2, desiredTimeliness: 50, odteThreshold: 0.9 };
// Where the gateway would serve the twins; nothing listens there in these tests.
const PUBLIC_BASE = "http://127.0.0.1:8080/twins";

const node = (id: string): NodeTarget => ({ id, platform: "in-process" });

function spec(id: string, nodeId: string, extra: Partial<InstanceSpec> = {}): InstanceSpec {
  return {
    id,
    node: node(nodeId),
    artefact: { module: "dtc:iiot-device" },
    requirements: {},
    twin: { id, schema: IIOT, placeholders: { DEVICE_ID: id }, fidelity: FIDELITY },
    ...extra,
  };
}

const entangled = (handle: InstanceHandle) => () => handle.status().lifecycle === "Entangled";

/** The retained message on `topic` (undefined when there is none), as a fresh subscriber sees it. */
async function retained(brokerUrl: string, topic: string): Promise<string | undefined> {
  const probe = await mqtt.connectAsync(brokerUrl);
  try {
    const marker = `probe/${randomUUID()}`;
    const seen: { topic: string; payload: string }[] = [];
    probe.on("message", (t, payload) => seen.push({ topic: t, payload: String(payload) }));
    // Retained messages come on subscription, before anything published after it.
    await probe.subscribeAsync([topic, marker]);
    await probe.publishAsync(marker, "x");
    await waitFor("the marker", () => seen.some((m) => m.topic === marker));
    const message = seen.find((m) => m.topic === topic);
    return message && message.payload !== "" ? message.payload : undefined;
  } finally {
    await probe.endAsync();
  }
}

async function readProperty(handle: InstanceHandle, name: string): Promise<unknown> {
  const response = await fetch(`${handle.httpTarget()}/${handle.id}/properties/${name}`);
  expect(response.status).toBe(200);
  return response.json();
}

describe("in-process platform driver", () => {
  let broker: TestBroker;
  let registry: ThingModelRegistry;
  let driver: InProcessDriver;
  let devices: IiotDeviceSimulator[] = [];

  async function device(id: string): Promise<IiotDeviceSimulator> {
    const sim = new IiotDeviceSimulator({ id, brokerUrl: broker.url, rate: 10 });
    devices.push(sim);
    await sim.start();
    return sim;
  }

  beforeAll(async () => {
    broker = await startBroker("aedes");
    registry = await sampleRegistry();
  });

  beforeEach(() => {
    driver = new InProcessDriver({
      registry,
      brokerUrl: broker.url,
      httpBaseUri: () => PUBLIC_BASE,
      pushIntervalMs: 100,
    });
  });

  afterEach(async () => {
    await driver.close();
    await Promise.all(devices.map((d) => d.stop()));
    devices = [];
  });

  afterAll(async () => {
    await broker?.stop();
  });

  it("starts a twin on a node: Entangled with its PT, served over HTTP at httpTarget(), status pushed to listeners", async () => {
    expect(await driver.ready(node("a"))).toEqual({ ready: true });
    expect(driver.runtimeOf("a")).toBeUndefined();
    const handle = await driver.start(spec("s1", "a"));
    expect([handle.id, handle.node]).toEqual(["s1", "a"]);
    expect(driver.runtimeOf("a")).toBeDefined();
    const changes: string[] = [];
    let evaluations = 0;
    handle.onStatus({
      lifecycleChanged: () => changes.push(handle.status().lifecycle),
      entanglementEvaluated: () => evaluations++,
    });

    await device("s1");
    await waitFor("Entangled", entangled(handle));
    expect(changes).toEqual(expect.arrayContaining(["Bound", "Entangled"]));
    await waitFor("an entanglement evaluation", () => evaluations > 0);
    expect(handle.status().entanglement?.odte).toBeGreaterThan(0.9);
    expect(handle.status().failed).toBeUndefined();

    // The gateway forwards /twins/{path} to `${httpTarget()}/{path}`: node-wot answers at /{id}/...
    expect(typeof (await readProperty(handle, "temperature"))).toBe("number");
    // Polled: on a loaded machine a late update can flip the twin to Disentangled for a moment.
    await waitFor(
      "Entangled read over HTTP",
      async () => (await readProperty(handle, "lifecycleState")) === "Entangled",
    );
    // Forms point at the gateway's public /twins/, not at the loopback server.
    const td = handle.description();
    expect(td.id).toBe("urn:dtc:twin:s1");
    const temperature = (td.properties as Record<string, JsonObject>).temperature as JsonObject;
    const hrefs = (temperature.forms as JsonObject[]).map((f) => f.href);
    expect(hrefs).toContain(`${PUBLIC_BASE}/s1/properties/temperature`);
    expect(await driver.running(node("a"))).toEqual(["s1"]);
    expect(await driver.adopt(spec("s1", "a"))).toBeUndefined();
  });

  it("creates one runtime per node, shared by concurrent first starts", async () => {
    const [x, y] = await Promise.all([driver.start(spec("c1", "n")), driver.start(spec("c2", "n"))]);
    expect(x.httpTarget()).toBe(y.httpTarget());
    expect((await driver.running(node("n"))).sort()).toEqual(["c1", "c2"]);
    const other = await driver.start(spec("c3", "m"));
    expect(other.httpTarget()).not.toBe(x.httpTarget());
    expect(await driver.running(node("n"))).not.toContain("c3");
    expect(await driver.running(node("unused"))).toEqual([]);
  });

  it("moves a twin between nodes: history kept, Entangled again, retained TD still on the broker", async () => {
    await device("mv");
    const source = await driver.start(spec("mv", "a"));
    await waitFor("Entangled on a", entangled(source));
    const state = await source.exportState();
    const statesBefore = state.history.states.length;
    expect(statesBefore).toBeGreaterThan(0);

    const target = await driver.start(spec("mv", "b", { state }));
    await source.remove({ handover: true });

    expect((await target.exportState()).history.states.length).toBeGreaterThanOrEqual(statesBefore);
    await waitFor("Entangled on b", entangled(target));
    await waitFor(
      "Entangled read over HTTP",
      async () => (await readProperty(target, "lifecycleState")) === "Entangled",
    );
    expect(target.httpTarget()).not.toBe(driver.runtimeOf("a")?.digital.httpListenUrl);
    // The copy on b published the TD on the twin's topic; the removal on a left it there.
    const td = await retained(broker.url, "mv");
    expect(td && JSON.parse(td).id).toBe("urn:dtc:twin:mv");
    expect(await driver.running(node("a"))).not.toContain("mv");
    expect(await driver.running(node("b"))).toEqual(["mv"]);
    expect(() => source.status()).toThrow(TwinNotFoundError);
  });

  it("removes a twin: its retained TD cleared, no longer served, its handle unusable", async () => {
    const handle = await driver.start(spec("rm", "a"));
    const target = handle.httpTarget();
    expect(await retained(broker.url, "rm")).toBeDefined();
    await handle.remove();
    expect(await retained(broker.url, "rm")).toBeUndefined();
    expect((await fetch(`${target}/rm/properties/lifecycleState`)).status).toBe(404);
    expect(await driver.running(node("a"))).toEqual([]);
    expect(() => handle.description()).toThrow(TwinNotFoundError);
    await expect(handle.exportState()).rejects.toThrow(TwinNotFoundError);
    await expect(handle.remove()).rejects.toThrow(TwinNotFoundError);
  });

  it("stops a twin (Done, still answering) and resumes it (attached and Entangled again)", async () => {
    await device("st");
    const handle = await driver.start(spec("st", "a"));
    await waitFor("Entangled", entangled(handle));
    await handle.stop();
    expect(handle.status().lifecycle).toBe("Done");
    expect(await readProperty(handle, "lifecycleState")).toBe("Done");
    expect(typeof (await readProperty(handle, "temperature"))).toBe("number");
    await handle.resume();
    await waitFor("Entangled after resume", entangled(handle));
  });

  it("restarts a twin fresh from its configuration: same id and URLs, new history, listeners follow", async () => {
    await device("rs");
    const handle = await driver.start(
      spec("rs", "a", { augmentations: [{ name: "tag", source: "() => ({ tagged: true })" }] }),
    );
    await waitFor("Entangled", entangled(handle));
    // A function installed at run time is not part of the configuration.
    driver.runtimeOf("a")?.get("rs")?.installAugmentation("extra", "() => ({ extra: 1 })");
    const before = await handle.exportState();
    expect(before.augmentations.map((f) => f.name)).toEqual(["tag", "extra"]);
    const target = handle.httpTarget();
    let told = 0;
    handle.onStatus({ lifecycleChanged: () => told++ });

    const restartedAt = Date.now();
    await handle.restart();
    expect(told).toBe(1);
    expect(handle.id).toBe("rs");
    expect(handle.description().id).toBe("urn:dtc:twin:rs");
    expect(handle.httpTarget()).toBe(target);
    const after = await handle.exportState();
    expect(after.augmentations.map((f) => f.name)).toEqual(["tag"]);
    expect(after.history.states.every((s) => s.committedAt >= restartedAt)).toBe(true);
    expect(after.lifecycle.history.every((c) => c.at >= restartedAt)).toBe(true);
    // The new twin entangles again, and the listener hears it.
    await waitFor("Entangled after restart", entangled(handle));
    expect(told).toBeGreaterThan(1);
    expect(await retained(broker.url, "rs")).toBeDefined();
    expect(await driver.running(node("a"))).toEqual(["rs"]);
  });

  it("clones a twin from another's state under a new id", async () => {
    await device("cl");
    const source = await driver.start(
      spec("cl", "a", { augmentations: [{ name: "tag", source: "() => ({ tagged: true })" }] }),
    );
    await waitFor("Entangled", entangled(source));
    const state = await source.exportState();

    const clone = await driver.start(spec("cl-copy", "b", { twin: state.config, state }));
    expect(clone.id).toBe("cl-copy");
    expect(clone.description().id).toBe("urn:dtc:twin:cl-copy");
    const copied = await clone.exportState();
    expect(copied.properties.tagged).toBe(true);
    expect(copied.history.states.length).toBeGreaterThanOrEqual(state.history.states.length);
    expect(await readProperty(clone, "temperature")).toBe(copied.properties.temperature ?? null);
    // The source keeps running; the clone follows the same PT.
    expect(await driver.running(node("a"))).toEqual(["cl"]);
    await waitFor("the clone Entangled", entangled(clone));
  });

  it("fails to start with an augmentation that does not compile, leaving nothing running", async () => {
    const bad = spec("bad", "a", { augmentations: [{ name: "broken", source: "this is not (" }] });
    await expect(driver.start(bad)).rejects.toThrow(AugmentationError);
    expect(await driver.running(node("a"))).toEqual([]);
    expect(await retained(broker.url, "bad")).toBeUndefined();
    // Nothing left behind: the same id starts cleanly.
    const handle = await driver.start(spec("bad", "a"));
    expect(handle.status().lifecycle).toBeDefined();
  });

  it("removes orphans, and refuses work once closed", async () => {
    await driver.start(spec("keep", "a"));
    await driver.runtimeOf("a")?.create({ id: "orphan", schema: IIOT, placeholders: { DEVICE_ID: "o" } });
    expect((await driver.running(node("a"))).sort()).toEqual(["keep", "orphan"]);
    await driver.removeOrphan(node("a"), "orphan");
    await driver.removeOrphan(node("a"), "never-was");
    await driver.removeOrphan(node("unused"), "orphan");
    expect(await driver.running(node("a"))).toEqual(["keep"]);

    await driver.close();
    expect(driver.runtimeOf("a")).toBeUndefined();
    expect(await driver.ready(node("a"))).toMatchObject({ ready: false });
    await expect(driver.start(spec("late", "a"))).rejects.toThrow(/closed/);
  });
});
