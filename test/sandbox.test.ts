import { Hono } from "hono";
import mqtt from "mqtt";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { TwinConfig, TwinState } from "../src/domain/twin-state.js";
import { mountTwinsProxy } from "../src/http/twins-proxy.js";
import { AugmentationError } from "../src/runtime/augmentation.js";
import { CLIENT_ERROR_MARKER, clientError, parseClientError } from "../src/runtime/client-error.js";
import { Twin } from "../src/runtime/twin.js";
import { describeTwin } from "../src/runtime/twin-description.js";
import { TwinRuntime } from "../src/runtime/twin-runtime.js";
import { IiotDeviceSimulator } from "../src/simulator/index.js";
import { instantiate } from "../src/wot/instantiate.js";
import type { JsonObject } from "../src/wot/rdf.js";
import { startBroker, type TestBroker } from "./brokers.js";
import { sample, sampleRegistry, thrown, waitFor } from "./helpers.js";

/**
 * The augmentation and shadowing functions' sandbox as twins use it: what a hostile or broken
 * function can no longer do to a twin, its runtime or the gateway (each attack found against the
 * node:vm sandbox is one test here or in augmentation.test.ts).
 */

const IIOT = sample("iiot-device.tm.jsonld");
const TOPIC = "dtc/iiot/d1/telemetry";
const BREAKOUT = "0)); globalThis.__fns = null; ((0";
const FIDELITY = { expectedUpdateRate: 10, odteWindow: 2, desiredTimeliness: 250, odteThreshold: 0.9 };

describe("a twin's functions in their sandbox", () => {
  let td: JsonObject;
  let seq = 0;

  beforeAll(async () => {
    td = await instantiate(await sampleRegistry(), IIOT, {
      placeholders: { DEVICE_ID: "d1" },
      id: "urn:dtc:twin:d1",
    });
  });

  const config = (extra: Partial<TwinConfig> = {}): TwinConfig => ({
    id: "d1",
    schema: IIOT,
    fidelity: FIDELITY,
    ...extra,
  });

  /** A twin of d1, attached and bound as soon as it hears its PT. */
  function twinOf(extra: Partial<TwinConfig> = {}, restored?: TwinState): Twin {
    const twin = new Twin(describeTwin(td, FIDELITY), config(extra), restored);
    twin.attach(async () => {});
    twin.setBrokerConnected(true, Date.now());
    twin.setSubscribed(true, Date.now());
    return twin;
  }

  const deliver = (twin: Twin, body: Record<string, unknown>) =>
    twin.handleTelemetry(TOPIC, JSON.stringify({ ts: Date.now(), seq: ++seq, ...body }), Date.now());

  it("never lets a result change the prototype of the twin's properties", () => {
    const twin = twinOf();
    deliver(twin, { temperature: 20 });
    // Refused at install: the probe runs it on the current state.
    expect(
      thrown(
        () => twin.installAugmentation("proto", `() => JSON.parse('{"__proto__": {"polluted": true}}')`),
        AugmentationError,
      ).message,
    ).toMatch(/must not return a property named __proto__/);
    // One that does so only later is stopped then.
    twin.installAugmentation(
      "later",
      `(v) => v.temperature > 25 ? JSON.parse('{"__proto__": {"polluted": true}, "hot": true}') : {}`,
    );
    expect(deliver(twin, { temperature: 30 })).toBeDefined();
    expect(Object.getPrototypeOf(twin.properties)).toBe(Object.prototype);
    expect((twin.properties as { polluted?: unknown }).polluted).toBeUndefined();
    expect(twin.properties).toMatchObject({ temperature: 30 });
    expect(twin.properties.hot).toBeUndefined();
    expect(
      twin
        .events()
        .filter((e) => e.type === "augmentationFailed")
        .map((e) => e.data),
    ).toEqual([
      { name: "later", error: 'augmentation function "later": must not return a property named __proto__' },
    ]);

    // The custom shadowing function likewise, and a PT message that carries the key itself.
    const shadowed = twinOf({ shadowing: "(m) => m" });
    expect(deliver(shadowed, { temperature: 21 })).toBeDefined();
    const rejected = shadowed.handleTelemetry(
      TOPIC,
      `{"ts": ${Date.now()}, "seq": ${++seq}, "__proto__": {"polluted": true}}`,
      Date.now(),
    );
    expect(rejected).toBeUndefined();
    expect(Object.getPrototypeOf(shadowed.properties)).toBe(Object.prototype);
    expect(shadowed.events().at(-1)).toMatchObject({
      type: "messageRejected",
      data: { reason: expect.stringMatching(/must not return a property named __proto__/) },
    });
  });

  it("disables a function that keeps overrunning, records it and tells its listeners", () => {
    const twin = twinOf();
    deliver(twin, { temperature: 20 });
    twin.installAugmentation(
      "hotloop",
      "(v) => { if (v.temperature > 25) for (;;) {} return { ok: true }; }",
    );
    const told: string[] = [];
    twin.listen({ augmentationDisabled: (d) => told.push(d.name) });
    for (let i = 0; i < 4; i++) expect(deliver(twin, { temperature: 30 + i })).toBeDefined();
    expect(twin.properties.temperature).toBe(33);
    expect(told).toEqual(["hotloop"]);
    const events = twin.events();
    expect(events.filter((e) => e.type === "augmentationFailed")).toHaveLength(3);
    expect(events.filter((e) => e.type === "augmentationDisabled").map((e) => e.data)).toEqual([
      { name: "hotloop", reason: "disabled after 3 overruns in a row (the last: ran over its 50 ms limit)" },
    ]);
    expect(twin.augmentations.list()).toMatchObject([{ name: "hotloop", disabled: true }]);
    // It comes back disabled from the twin's state.
    const state = JSON.parse(JSON.stringify(twin.exportState())) as TwinState;
    expect(state.augmentations).toEqual([
      { name: "hotloop", source: expect.any(String), disabled: expect.stringMatching(/3 overruns/) },
    ]);
    const copy = twinOf({}, state);
    expect(copy.augmentations.list()).toMatchObject([{ name: "hotloop", disabled: true }]);
    twin.dispose();
    copy.dispose();
  });

  it("a custom shadowing function that keeps overrunning is disabled: the messages are rejected, not committed unmapped", () => {
    const twin = twinOf({ shadowing: "(m) => { if (m.t > 25) for (;;) {} return { temperature: m.t }; }" });
    expect(deliver(twin, { t: 20 })?.values).toMatchObject({ temperature: 20 });
    for (let i = 0; i < 3; i++) expect(deliver(twin, { t: 30 })).toBeUndefined();
    expect(twin.events().filter((e) => e.type === "augmentationDisabled")).toHaveLength(1);
    expect(deliver(twin, { t: 21 })).toBeUndefined();
    expect(twin.events().at(-1)).toMatchObject({
      type: "messageRejected",
      data: { reason: expect.stringMatching(/the custom shadowing function does not run: disabled after 3/) },
    });
    expect(twin.properties.temperature).toBe(20);
    twin.dispose();
  });

  it("puts a restored state's functions through the checks of an install: a bad one is dropped and recorded, the twin starts", () => {
    const twin = twinOf();
    deliver(twin, { temperature: 20 });
    twin.installAugmentation("good", "(v) => ({ temperatureF: v.temperature * 9 / 5 + 32 })");
    const state = JSON.parse(JSON.stringify(twin.exportState())) as TwinState;
    state.augmentations.push(
      { name: "breakout", source: BREAKOUT },
      { name: "probe", source: "(v) => v.missing.deep" },
      { name: "loops", source: "() => { for (;;) {} }" },
      { name: "bad name!", source: "() => ({})" },
      { name: "off", source: "() => ({ off: true })", disabled: "disabled after 3 overruns in a row" },
    );
    const restored = twinOf({}, state);
    expect(restored.augmentations.list().map((f) => [f.name, f.disabled])).toEqual([
      ["good", false],
      ["off", true],
    ]);
    expect(restored.droppedAugmentations.map((d) => d.name)).toEqual([
      "breakout",
      "probe",
      "loops",
      "bad name!",
    ]);
    const dropped = restored.events().filter((e) => e.type === "augmentationDropped");
    expect(dropped.map((e) => e.data)).toEqual([
      { name: "breakout", error: expect.stringMatching(/"breakout": does not compile/) },
      { name: "probe", error: expect.stringMatching(/Cannot read properties/) },
      { name: "loops", error: expect.stringMatching(/ran over its 50 ms limit/) },
      { name: "bad name!", error: expect.stringMatching(/name must be/) },
    ]);
    expect(deliver(restored, { temperature: 30 })?.values).toEqual({ temperature: 30, temperatureF: 86 });

    // A restored custom shadowing function that fails its checks: the twin starts, and rejects
    // its messages rather than committing them unmapped. A fresh twin is refused instead.
    const bad = JSON.parse(JSON.stringify(state)) as TwinState;
    bad.config.shadowing = BREAKOUT;
    const shadowless = twinOf(bad.config, bad);
    expect(shadowless.events().find((e) => e.type === "augmentationDropped")?.data).toMatchObject({
      name: "shadowing",
    });
    expect(deliver(shadowless, { temperature: 30 })).toBeUndefined();
    expect(shadowless.events().at(-1)).toMatchObject({
      type: "messageRejected",
      data: { reason: expect.stringMatching(/shadowing function does not run: does not compile/) },
    });
    expect(() => twinOf({ shadowing: BREAKOUT })).toThrow(AugmentationError);
    for (const t of [twin, restored, shadowless]) t.dispose();
  });

  it("frees its isolates when dismissed", () => {
    const twin = twinOf({ shadowing: "(m) => ({ temperature: m.t })" });
    twin.installAugmentation("f", "() => ({ f: 1 })");
    expect(twin.augmentations.stats().isolate).toBe(true);
    twin.dismiss(Date.now());
    expect(twin.lifecycleState).toBe("Stopped");
    expect(twin.augmentations.stats().isolate).toBe(false);
    // Its state still lists the functions.
    expect(twin.exportState().augmentations.map((f) => f.name)).toEqual(["f"]);
  });
});

describe("client errors", () => {
  it("are marked in the message, and only those are read back", () => {
    expect(clientError("bad function").message).toBe(`${CLIENT_ERROR_MARKER} bad function`);
    expect(parseClientError(clientError("bad function").message)).toEqual({
      status: 422,
      reason: "bad function",
    });
    expect(parseClientError(clientError("twin d1 is Done", 409).message)).toEqual({
      status: 409,
      reason: "twin d1 is Done",
    });
    expect(parseClientError("twin d1 is Done: detached from its physical twin")).toBeUndefined();
  });
});

describe("a twin runtime facing hostile functions", () => {
  let broker: TestBroker;
  let runtime: TwinRuntime;
  let sim: IiotDeviceSimulator;
  const uncaught: unknown[] = [];
  const onUncaught = (err: unknown) => uncaught.push(err);

  beforeAll(async () => {
    process.on("uncaughtException", onUncaught);
    broker = await startBroker("aedes");
    runtime = await TwinRuntime.start({
      registry: await sampleRegistry(),
      brokerUrl: broker.url,
      http: { port: 0, address: "127.0.0.1" },
      pushIntervalMs: 100,
    });
    sim = new IiotDeviceSimulator({ id: "s1", brokerUrl: broker.url, rate: 10 });
    await sim.start();
  });

  afterAll(async () => {
    await sim?.stop();
    await runtime?.close();
    await broker?.stop();
    process.off("uncaughtException", onUncaught);
  });

  it("answers every management message on MQTT, a breakout included, and the twin keeps committing", async () => {
    const twin = await runtime.create({
      id: "s1",
      schema: IIOT,
      placeholders: { DEVICE_ID: "s1" },
      fidelity: FIDELITY,
    });
    await waitFor("a first update", () => twin.lastUpdate !== undefined);
    const manager = await mqtt.connectAsync(broker.url);
    try {
      await manager.subscribeAsync("dtc/twins/s1/augmentations/result", { qos: 1 });
      const replies: JsonObject[] = [];
      manager.on("message", (_, payload) => replies.push(JSON.parse(String(payload))));
      const requests = [
        JSON.stringify({ name: "evil", source: BREAKOUT }),
        "not json {",
        "[1]",
        JSON.stringify({ name: 5 }),
        JSON.stringify({ name: "nosource" }),
        JSON.stringify({ name: "loops", source: "() => { for (;;) {} }" }),
        JSON.stringify({
          name: "micro",
          source: "() => { Promise.resolve().then(() => { for (;;) {} }); return {}; }",
        }),
        JSON.stringify({ name: "tag", source: "() => ({ tagged: true })" }),
      ];
      for (const request of requests) {
        await manager.publishAsync("dtc/twins/s1/augmentations", request, { qos: 1 });
      }
      await waitFor("every reply", () => replies.length === requests.length);
      expect(replies).toEqual([
        {
          ok: false,
          name: "evil",
          error: expect.stringMatching(/^augmentation function "evil": does not compile/),
        },
        { ok: false, error: "payload is not JSON" },
        { ok: false, error: expect.stringMatching(/expected/) },
        { ok: false, error: expect.stringMatching(/expected/) },
        { ok: false, name: "nosource", error: expect.stringMatching(/"source" must be a string/) },
        { ok: false, name: "loops", error: expect.stringMatching(/ran over its 50 ms limit/) },
        { ok: false, name: "micro", error: expect.stringMatching(/ran over its 50 ms limit/) },
        { ok: true, name: "tag", replaced: false },
      ]);
      // The process is alive, nothing was thrown into mqtt.js, and the twin still commits.
      const since = twin.lastUpdate?.committedAt ?? 0;
      await waitFor(
        "an update with the function's value",
        () => (twin.lastUpdate?.committedAt ?? 0) > since && twin.lastUpdate?.values.tagged === true,
      );
      expect(uncaught).toEqual([]);
      expect(twin.augmentations.list().map((f) => f.name)).toEqual(["tag"]);
    } finally {
      await manager.endAsync();
    }
  });

  it("turns a refused function into a 422 through the gateway's twins proxy, a command to a stopped twin into a 409", async () => {
    await runtime.create({ id: "s2", schema: IIOT, placeholders: { DEVICE_ID: "s2" }, fidelity: FIDELITY });
    const app = new Hono();
    mountTwinsProxy(app, (id) => (runtime.get(id) ? runtime.digital.httpListenUrl : undefined));
    const invoke = (action: string, body: unknown) =>
      app.request(`/twins/s2/actions/${action}`, {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify(body),
      });

    const refused = await invoke("installAugmentation", { name: "evil", source: BREAKOUT });
    expect(refused.status).toBe(422);
    expect(refused.headers.get("content-type")).toBe("application/problem+json");
    expect(await refused.json()).toMatchObject({
      title: "Unprocessable Content",
      status: 422,
      detail: expect.stringMatching(/^augmentation function "evil": does not compile/),
    });
    const loops = await invoke("installAugmentation", { name: "loops", source: "() => { for (;;) {} }" });
    expect([loops.status, ((await loops.json()) as { detail: string }).detail]).toEqual([
      422,
      'augmentation function "loops": ran over its 50 ms limit',
    ]);
    // node-wot checks the input against the action's schema; what it refuses is the client's fault too.
    const malformed = await invoke("installAugmentation", { name: 1 });
    expect([malformed.status, ((await malformed.json()) as { detail: string }).detail]).toEqual([
      422,
      "invalid input: Invalid value according to DataSchema",
    ]);
    const installed = await invoke("installAugmentation", {
      name: "tag",
      source: "() => ({ tagged: true })",
    });
    expect(installed.status).toBe(200);
    expect(await installed.json()).toEqual({ name: "tag", replaced: false });
    const removed = await invoke("removeAugmentation", { name: "tag" });
    expect([removed.status, await removed.json()]).toEqual([200, { removed: true }]);

    // A command to a stopped twin is the client's error too, with the status it stands for.
    runtime.stop("s2");
    const detached = await invoke("setRate", 5);
    expect(detached.status).toBe(409);
    expect(detached.headers.get("content-type")).toBe("application/problem+json");
    expect(((await detached.json()) as { detail: string }).detail).toMatch(/twin s2 is Done/);
  });

  it("frees a removed twin's isolate", async () => {
    const twin = await runtime.create({ id: "s3", schema: IIOT, placeholders: { DEVICE_ID: "s3" } });
    twin.installAugmentation("f", "() => ({ f: 1 })");
    expect(twin.augmentations.stats().isolate).toBe(true);
    const state = await runtime.remove("s3");
    expect(twin.augmentations.stats().isolate).toBe(false);
    expect(state.augmentations).toEqual([{ name: "f", source: "() => ({ f: 1 })" }]);
  });
});
