import { HttpClientFactory } from "@node-wot/binding-http";
import { MqttClientFactory } from "@node-wot/binding-mqtt";
import { Servient } from "@node-wot/core";
import mqtt from "mqtt";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { TwinRuntime } from "../src/runtime/twin-runtime.js";
import { CameraSimulator, IiotDeviceSimulator } from "../src/simulator/index.js";
import type { JsonObject } from "../src/wot/rdf.js";
import { validateThingDescription } from "../src/wot/validation.js";
import { BROKER_KINDS, startBroker, type TestBroker, unavailable } from "./brokers.js";
import { sample, sampleRegistry, waitFor } from "./helpers.js";

const IIOT = sample("iiot-device.tm.jsonld");
// 10 Hz over a 2 s window keeps each scenario short; Td = 50 ms leaves room on a busy 2-core CI box.
const FIDELITY = { expectedUpdateRate: 10, odteWindow: 2, desiredTimeliness: 50, odteThreshold: 0.9 };

/** The forms of one affordance of a TD. */
function formsOf(td: JsonObject, kind: "properties" | "actions", name: string): JsonObject[] {
  return ((td[kind] as Record<string, JsonObject>)[name]?.forms ?? []) as JsonObject[];
}

/** The index of the first form of an affordance whose href has `scheme` and that supports `op`. */
function formIndex(
  td: JsonObject,
  kind: "properties" | "actions",
  name: string,
  scheme: string,
  op: string,
): number {
  const index = formsOf(td, kind, name).findIndex(
    (f) => String(f.href).startsWith(`${scheme}:`) && [f.op].flat().includes(op),
  );
  if (index < 0) throw new Error(`${name} has no ${scheme} form for ${op}`);
  return index;
}

describe.each(BROKER_KINDS)("twin runtime on %s", (kind) => {
  const skip = unavailable(kind);
  let broker: TestBroker;
  let runtime: TwinRuntime;
  let client: typeof WoT;
  let clientServient: Servient;
  const devices: IiotDeviceSimulator[] = [];

  async function device(id: string, rate = 10): Promise<IiotDeviceSimulator> {
    const sim = new IiotDeviceSimulator({ id, brokerUrl: broker.url, rate });
    devices.push(sim);
    await sim.start();
    return sim;
  }

  beforeAll(async () => {
    if (skip) return;
    broker = await startBroker(kind);
    runtime = await TwinRuntime.start({
      registry: await sampleRegistry(),
      brokerUrl: broker.url,
      http: { port: 0, address: "127.0.0.1" },
      pushIntervalMs: 100,
    });
    clientServient = new Servient();
    clientServient.addClientFactory(new HttpClientFactory());
    clientServient.addClientFactory(new MqttClientFactory());
    client = (await clientServient.start()) as unknown as typeof WoT;
  });

  afterAll(async () => {
    if (skip) return;
    await Promise.all(devices.map((d) => d.stop()));
    await clientServient.shutdown();
    await runtime.close();
    await broker.stop();
  });

  it("fed by the simulator, reaches Entangled with ODTE >= 0.99; a node-wot client reads, observes and acts over HTTP and MQTT", async (ctx) => {
    if (skip) ctx.skip(skip);
    const twin = await runtime.create({
      id: "d1",
      schema: IIOT,
      placeholders: { DEVICE_ID: "d1" },
      fidelity: FIDELITY,
    });
    const td = runtime.description("d1");
    expect(td.id).toBe("urn:dtc:twin:d1");
    // The exposed TD, with its forms and the twin affordances, is a valid TD 1.1.
    expect(validateThingDescription(td)).toMatchObject({ valid: true });
    const thing = await client.consume(td as unknown as WoT.ThingDescription);
    // node-wot allows one observer per property and consumed thing: one for HTTP, one for MQTT.
    const overMqtt = await client.consume(td as unknown as WoT.ThingDescription);

    // Observe before entanglement, over HTTP (long poll) and MQTT.
    const httpStates: unknown[] = [];
    const mqttStates: unknown[] = [];
    const mqttFigures: number[] = [];
    const record = (into: unknown[]) => async (v: WoT.InteractionOutput) => void into.push(await v.value());
    await thing.observeProperty("lifecycleState", record(httpStates), undefined, {
      formIndex: formIndex(td, "properties", "lifecycleState", "http", "observeproperty"),
    });
    await overMqtt.observeProperty("lifecycleState", record(mqttStates), undefined, {
      formIndex: formIndex(td, "properties", "lifecycleState", "mqtt", "observeproperty"),
    });
    await overMqtt.observeProperty(
      "entanglement",
      async (v) => void mqttFigures.push(((await v.value()) as { odte: number }).odte),
      undefined,
      {
        formIndex: formIndex(td, "properties", "entanglement", "mqtt", "observeproperty"),
      },
    );

    const httpFigures: number[] = [];
    await thing.observeProperty(
      "entanglement",
      async (v) => void httpFigures.push(((await v.value()) as { odte: number }).odte),
      undefined,
      { formIndex: formIndex(td, "properties", "entanglement", "http", "observeproperty") },
    );

    // The PT comes only now, so that the observers see the twin bind and entangle.
    expect(twin.lifecycleState).toBe("Unbound");
    const sim = await device("d1");
    await waitFor(
      "ODTE >= 0.99 and Entangled",
      () => twin.lifecycleState === "Entangled" && twin.entanglement.odte >= 0.99,
    );
    // MQTT delivers every change; a long poll sees the changes made while a request is waiting
    // (Bound and Entangled may come within one re-poll), and the entanglement figures as they move.
    await waitFor("Bound and Entangled observed over MQTT", () =>
      ["Bound", "Entangled"].every((s) => mqttStates.includes(s)),
    );
    await waitFor("a lifecycle change observed over HTTP", () => httpStates.length > 0);
    expect(httpStates.every((s) => s === "Bound" || s === "Entangled")).toBe(true);
    await waitFor("entanglement pushed over MQTT", () => mqttFigures.some((odte) => odte >= 0.99));
    await waitFor("entanglement pushed over HTTP", () => httpFigures.some((odte) => odte > 0));

    const viaHttp = (await (await thing.readProperty("temperature")).value()) as number;
    expect(typeof viaHttp).toBe("number");
    const figures = (await (await thing.readProperty("entanglement")).value()) as Record<string, unknown>;
    expect(Object.keys(figures)).toEqual(
      expect.arrayContaining([
        "odte",
        "timeliness",
        "reliability",
        "availability",
        "windowSeconds",
        "desiredTimeliness",
        "expectedUpdateRate",
        "threshold",
        "evaluatedAt",
      ]),
    );
    // Polled: on a loaded machine a late update can flip the twin to Disentangled for a moment.
    await waitFor(
      "Entangled read by node-wot",
      async () => (await (await thing.readProperty("lifecycleState")).value()) === "Entangled",
    );

    // setRate over HTTP reaches the simulator, and the twin's state follows the PT's report.
    const commanded = new Promise((resolve) => sim.once("command", resolve));
    await thing.invokeAction("setRate", 20);
    expect(await commanded).toMatchObject({ command: "setRate", rate: 20 });
    expect(sim.rate).toBe(20);
    await waitFor("the twin to report the new rate", () => twin.properties.updateRate === 20);

    // And over MQTT.
    const again = new Promise((resolve) => sim.once("command", resolve));
    await thing.invokeAction("setRate", 10, {
      formIndex: formIndex(td, "actions", "setRate", "mqtt", "invokeaction"),
    });
    expect(await again).toMatchObject({ rate: 10 });
    await waitFor("rate back at 10", () => twin.properties.updateRate === 10);
  });

  it("disentangles when the PT halves its rate or runs late, goes Unbound when it goes offline, and recovers", async (ctx) => {
    if (skip) ctx.skip(skip);
    const sim = await device("d2");
    const twin = await runtime.create({
      id: "d2",
      schema: IIOT,
      placeholders: { DEVICE_ID: "d2" },
      fidelity: FIDELITY,
    });
    await waitFor("Entangled", () => twin.lifecycleState === "Entangled");

    sim.setRate(5); // without telling the twin (paper 004, phase 3)
    await waitFor("Disentangled at half rate", () => twin.lifecycleState === "Disentangled");
    await waitFor(
      "R about 0.5",
      () => twin.entanglement.windowSeconds === 2 && Math.abs(twin.entanglement.reliability - 0.5) <= 0.1,
    );
    sim.setRate(10);
    await waitFor("Entangled again", () => twin.lifecycleState === "Entangled");

    sim.setFaults({ latencyMs: 120 }); // above Td = 50 ms (phase 1)
    await waitFor(
      "Disentangled by latency",
      () => twin.lifecycleState === "Disentangled" && twin.entanglement.timeliness < 0.5,
    );
    sim.setFaults({ latencyMs: 0 });
    await waitFor("Entangled again", () => twin.lifecycleState === "Entangled");

    await sim.goOffline();
    await waitFor("Unbound when the PT is offline", () => twin.lifecycleState === "Unbound");
    await waitFor("A lowered", () => twin.entanglement.availability < 1);
    await sim.goOnline();
    await waitFor("recovered to Entangled", () => twin.lifecycleState === "Entangled", 15_000);
    const path = twin.lifecycleHistory().map((c) => c.to);
    expect(path).toEqual(expect.arrayContaining(["Disentangled", "Unbound", "Bound", "Entangled"]));
  });

  it("hot-swaps augmentation functions through the action and the MQTT management topic", async (ctx) => {
    if (skip) ctx.skip(skip);
    await device("d3");
    const twin = await runtime.create({
      id: "d3",
      schema: IIOT,
      placeholders: { DEVICE_ID: "d3" },
      fidelity: FIDELITY,
    });
    const thing = await client.consume(runtime.description("d3") as unknown as WoT.ThingDescription);
    await waitFor("a first update", () => twin.properties.temperature !== undefined);

    const out = await thing.invokeAction("installAugmentation", {
      name: "fahrenheit",
      source: "(v) => v.temperature === undefined ? {} : { temperatureF: v.temperature * 9 / 5 + 32 }",
    });
    expect(await out?.value()).toEqual({ name: "fahrenheit", replaced: false });
    const installedAt = twin.lastUpdate?.committedAt ?? 0;
    await waitFor(
      "the function to run on the next message",
      () => (twin.lastUpdate?.committedAt ?? 0) > installedAt && twin.properties.temperatureF !== undefined,
    );
    expect(twin.properties.temperatureF).toBeCloseTo((twin.properties.temperature as number) * 1.8 + 32);

    // A looping replacement is refused up front; the old one keeps running.
    await expect(
      thing.invokeAction("installAugmentation", { name: "fahrenheit", source: "() => { for (;;) {} }" }),
    ).rejects.toThrow();
    expect(twin.augmentations.list().map((f) => f.source)[0]).toMatch(/9 \/ 5/);

    // Over MQTT, with a reply on .../result.
    const manager = await mqtt.connectAsync(broker.url);
    await manager.subscribeAsync("dtc/twins/d3/augmentations/result");
    const replies: JsonObject[] = [];
    manager.on("message", (_, payload) => replies.push(JSON.parse(String(payload))));
    await manager.publishAsync(
      "dtc/twins/d3/augmentations",
      JSON.stringify({ name: "fahrenheit", source: "(v) => ({ temperatureF: -1 })" }),
    );
    await waitFor("the reply", () => replies.length === 1);
    expect(replies[0]).toEqual({ ok: true, name: "fahrenheit", replaced: true });
    await waitFor("the replacement in effect", () => twin.properties.temperatureF === -1);
    await manager.publishAsync(
      "dtc/twins/d3/augmentations",
      JSON.stringify({ name: "x", source: "not js (" }),
    );
    await waitFor("the refusal", () => replies.length === 2);
    expect(replies[1]).toMatchObject({
      ok: false,
      name: "x",
      error: expect.stringMatching(/does not compile/),
    });
    await manager.endAsync();
  });

  it("exports a twin and restores it as a clone with its state, functions and history", async (ctx) => {
    if (skip) ctx.skip(skip);
    await device("d4");
    const twin = await runtime.create({
      id: "d4",
      schema: IIOT,
      placeholders: { DEVICE_ID: "d4" },
      fidelity: FIDELITY,
    });
    twin.installAugmentation("tag", "() => ({ tagged: true })");
    await waitFor("Entangled", () => twin.lifecycleState === "Entangled");
    runtime.stop("d4");
    expect(twin.lifecycleState).toBe("Done");
    const state = runtime.exportState("d4");
    // A Done twin still answers with its last state.
    const thing = await client.consume(runtime.description("d4") as unknown as WoT.ThingDescription);
    expect(await (await thing.readProperty("lifecycleState")).value()).toBe("Done");
    const history = (await (await thing.readProperty("history")).value()) as {
      states: { committedAt: string; values: JsonObject }[];
      events: { type: string; data: { to?: string } }[];
    };
    expect(history.states.at(-1)?.values).toMatchObject({ tagged: true });
    expect(history.events.filter((e) => e.type === "lifecycleChanged").map((e) => e.data.to)).toEqual(
      expect.arrayContaining(["Bound", "Entangled", "Done"]),
    );

    const clone = await runtime.restore(JSON.parse(JSON.stringify(state)), { id: "d4-clone" });
    expect(runtime.description("d4-clone").id).toBe("urn:dtc:twin:d4-clone");
    expect(clone.properties.tagged).toBe(true);
    expect(clone.states().length).toBeGreaterThan(0);
    expect(clone.lifecycleHistory().map((c) => c.to)).toEqual(expect.arrayContaining(["Entangled", "Done"]));
    // The clone is Done like its source; resumed, it binds to the same PT and entangles again.
    await runtime.resume("d4-clone");
    await waitFor("the clone Entangled", () => clone.lifecycleState === "Entangled", 15_000);
  });

  it("mirrors a MASA camera fed by the camera simulator", async (ctx) => {
    if (skip) ctx.skip(skip);
    const camera = new CameraSimulator({ id: "cam1", brokerUrl: broker.url, rate: 10 });
    await camera.start();
    try {
      const twin = await runtime.create({
        id: "cam1",
        schema: sample("masa-camera.tm.jsonld"),
        placeholders: { CAMERA_ID: "cam1", LATITUDE: 44.6556, LONGITUDE: 10.9309 },
        fidelity: { odteWindow: 2 },
      });
      await waitFor("the camera twin Entangled", () => twin.lifecycleState === "Entangled");
      const detections = twin.properties.detections as { category: string }[];
      expect(Array.isArray(detections)).toBe(true);
      expect(twin.properties.objectCount).toBe(detections.length);
    } finally {
      await camera.stop();
    }
  });

  it("removes a twin: no longer served, its retained TD cleared from the broker", async (ctx) => {
    if (skip) ctx.skip(skip);
    await runtime.create({ id: "gone", schema: IIOT, placeholders: { DEVICE_ID: "gone" } });
    const base = runtime.digital.httpBase;
    expect((await fetch(`${base}/gone/properties/lifecycleState`)).status).toBe(200);
    await runtime.remove("gone");
    expect((await fetch(`${base}/gone/properties/lifecycleState`)).status).toBe(404);
    const probe = await mqtt.connectAsync(broker.url);
    const seen: string[] = [];
    probe.on("message", (topic) => seen.push(topic));
    // Retained messages come on subscription, before anything published after it.
    await probe.subscribeAsync(["gone", "probe/marker"]);
    await probe.publishAsync("probe/marker", "x");
    await waitFor("the marker", () => seen.includes("probe/marker"));
    expect(seen).toEqual(["probe/marker"]);
    await probe.endAsync();
  });

  it("gives twins URLs and topics by id, whatever their titles and exposure order", async (ctx) => {
    if (skip) ctx.skip(skip);
    // Two twins of the same device have the same title.
    await runtime.create({ id: "same-b", schema: IIOT, placeholders: { DEVICE_ID: "same" } });
    await runtime.create({ id: "same-a", schema: IIOT, placeholders: { DEVICE_ID: "same" } });
    const base = runtime.digital.httpBase;
    // Every property of the TD answers, the twin affordances included.
    const names = Object.keys(runtime.description("same-a").properties as JsonObject);
    expect(names).toEqual(
      expect.arrayContaining(["temperature", "lifecycleState", "entanglement", "history", "augmentations"]),
    );
    for (const name of names) {
      expect([name, (await fetch(`${base}/same-a/properties/${name}`)).status]).toEqual([name, 200]);
    }
    for (const id of ["same-a", "same-b"]) {
      const hrefs = formsOf(runtime.description(id), "properties", "temperature").map((f) => f.href);
      expect(hrefs).toContain(`${base}/${id}/properties/temperature`);
      expect(
        hrefs.some(
          (h) => String(h).endsWith(`/${id}/properties/temperature`) && String(h).startsWith("mqtt:"),
        ),
      ).toBe(true);
    }
  });
});

describe("a thousand twins", () => {
  let broker: TestBroker;
  let runtime: TwinRuntime;

  beforeAll(async () => {
    broker = await startBroker("aedes");
    runtime = await TwinRuntime.start({
      registry: await sampleRegistry(),
      brokerUrl: broker.url,
      http: { port: 0, address: "127.0.0.1" },
    });
  });
  afterAll(async () => {
    await runtime.close();
    await broker.stop();
  });

  it("run one MQTT action's handler exactly once", async () => {
    for (let i = 0; i < 1000; i++) {
      await runtime.create({ id: `t${i}`, schema: IIOT, placeholders: { DEVICE_ID: `t${i}` } });
    }
    const pt = await mqtt.connectAsync(broker.url);
    const commands: JsonObject[] = [];
    pt.on("message", (_, payload) => commands.push(JSON.parse(String(payload))));
    await pt.subscribeAsync("dtc/iiot/t500/commands");
    const td = runtime.description("t500");
    const form = formsOf(td, "actions", "setRate").find((f) => String(f.href).startsWith("mqtt:"));
    const topic = new URL(String(form?.href)).pathname.slice(1);
    expect(topic).toBe("t500/actions/setRate");
    await pt.publishAsync(topic, "3", { qos: 1 });
    await pt.publishAsync(topic, "4", { qos: 1 });
    // Commands keep their order: once the second is here, every copy of the first would be too.
    await waitFor("the second command", () => commands.some((c) => c.rate === 4));
    expect(commands.map((c) => c.rate)).toEqual([3, 4]);
    expect(runtime.get("t500")?.counters.commands).toBe(2);
    await pt.endAsync();
  }, 120_000);
});
