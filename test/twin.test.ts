import { afterEach, beforeAll, beforeEach, describe, expect, it, vi } from "vitest";
import type { TwinConfig } from "../src/domain/twin-state.js";
import { Twin, TwinStateError } from "../src/runtime/twin.js";
import { describeTwin } from "../src/runtime/twin-description.js";
import { instantiate } from "../src/wot/instantiate.js";
import type { ThingModelRegistry } from "../src/wot/model-registry.js";
import type { JsonObject } from "../src/wot/rdf.js";
import { sample, sampleRegistry, thrown } from "./helpers.js";

const T0 = Date.UTC(2026, 0, 1);
const TOPIC = "dtc/iiot/d1/telemetry";
let registry: ThingModelRegistry;
let td: JsonObject;

beforeAll(async () => {
  registry = await sampleRegistry();
  td = await instantiate(registry, sample("iiot-device.tm.jsonld"), {
    placeholders: { DEVICE_ID: "d1" },
    id: "urn:dtc:twin:d1",
  });
});

beforeEach(() => {
  vi.useFakeTimers({ toFake: ["Date"] });
  vi.setSystemTime(T0);
});
afterEach(() => vi.useRealTimers());

/** A twin of d1 at 10 Hz with W = 2 s, subscribed and connected (Unbound until it hears the PT). */
function d1(config: Partial<TwinConfig> = {}): Twin {
  const fidelity = { expectedUpdateRate: 10, odteWindow: 2, desiredTimeliness: 10 };
  const twin = new Twin(describeTwin(td, fidelity), {
    id: "d1",
    schema: sample("iiot-device.tm.jsonld"),
    fidelity,
    ...config,
  });
  twin.attach(async () => {});
  twin.setBrokerConnected(true, Date.now());
  twin.setSubscribed(true, Date.now());
  return twin;
}

/** Advances the clock to `at` and delivers one message stamped `delay` ms earlier. */
function deliver(twin: Twin, at: number, body: Record<string, unknown>, delay = 1) {
  vi.setSystemTime(at);
  return twin.handleTelemetry(TOPIC, JSON.stringify({ ts: at - delay, ...body }), at);
}

/** 10 Hz messages from `from` to `to`; returns the next sequence number. */
function stream(twin: Twin, from: number, to: number, seq = 1, periodMs = 100, delay = 1): number {
  for (let t = from; t <= to; t += periodMs)
    deliver(twin, t, { seq: seq++, temperature: 20, energy: seq, rate: 10 }, delay);
  return seq;
}

describe("a twin's shadowing pipeline", () => {
  it("commits the mapped properties of a message and tells its listeners which changed", () => {
    const twin = d1();
    const changed: string[][] = [];
    twin.listen({ propertiesChanged: (names) => changed.push(names) });
    const record = deliver(twin, T0 + 5, { seq: 1, temperature: 21.5, energy: 3, rate: 10, extra: true });
    expect(twin.properties).toEqual({ temperature: 21.5, energy: 3, updateRate: 10 });
    expect(record).toMatchObject({ ptTimestamp: T0 + 4, committedAt: T0 + 5, sequence: 1 });
    expect(changed).toEqual([["temperature", "energy", "updateRate"]]);
    // A message without some properties leaves them as they were.
    deliver(twin, T0 + 10, { seq: 2, temperature: 22 });
    expect(twin.properties).toEqual({ temperature: 22, energy: 3, updateRate: 10 });
  });

  it("runs augmentation functions on each update and keeps the state unchanged by a failing one", () => {
    const twin = d1();
    twin.installAugmentation(
      "fahrenheit",
      "(v) => v.temperature === undefined ? {} : { temperatureF: v.temperature * 9 / 5 + 32 }",
    );
    deliver(twin, T0 + 1, { seq: 1, temperature: 100 });
    expect(twin.properties.temperatureF).toBe(212);
    twin.installAugmentation(
      "broken",
      "(v) => { if (v.temperature > 150) throw new Error('too hot'); return {}; }",
    );
    deliver(twin, T0 + 2, { seq: 2, temperature: 160 });
    expect(twin.properties).toMatchObject({ temperature: 160, temperatureF: 320 });
    expect(twin.counters.augmentationErrors).toBe(1);
    // The update's own events (a Bound twin is judged on each update: here it is Entangled after).
    expect(twin.events().find((e) => e.type === "augmentationFailed")).toMatchObject({
      at: T0 + 2,
      data: { name: "broken" },
    });
  });

  it("refuses a function that fails on the current state, keeping the one installed before", () => {
    const twin = d1();
    twin.installAugmentation("f", "(v) => ({ doubled: 2 })");
    const err = thrown(() => twin.installAugmentation("f", "(v) => v.nothing.deeper"), Error);
    expect(err.message).toMatch(/augmentation function "f": .*deeper/);
    deliver(twin, T0 + 1, { seq: 1, temperature: 1 });
    expect(twin.properties.doubled).toBe(2);
  });

  it("rejects a malformed message, counts it and keeps its state", () => {
    const twin = d1();
    deliver(twin, T0 + 1, { seq: 1, temperature: 20 });
    expect(twin.handleTelemetry(TOPIC, "not json", T0 + 2)).toBeUndefined();
    expect(
      twin.handleTelemetry(TOPIC, JSON.stringify({ ts: "yesterday", temperature: 1 }), T0 + 3),
    ).toBeUndefined();
    expect(twin.properties.temperature).toBe(20);
    expect(twin.counters).toMatchObject({ messages: 3, rejected: 2 });
    expect(twin.events().filter((e) => e.type === "messageRejected")).toHaveLength(2);
  });

  it("is not frozen by one message stamped in the future: it is refused, and genuine messages commit after it", () => {
    const twin = d1();
    deliver(twin, T0 + 1, { seq: 1, temperature: 20 });
    expect(
      twin.handleTelemetry(TOPIC, JSON.stringify({ ts: 1e308, temperature: 99 }), T0 + 2),
    ).toBeUndefined();
    expect(twin.properties.temperature).toBe(20);
    deliver(twin, T0 + 100, { seq: 2, temperature: 21 });
    expect(twin.properties.temperature).toBe(21);
    expect(twin.counters).toMatchObject({ rejected: 1 });
  });

  it("measures but does not commit a message older than the state, and counts lost sequence numbers", () => {
    const twin = d1();
    deliver(twin, T0 + 100, { seq: 5, temperature: 25 });
    vi.setSystemTime(T0 + 120);
    twin.handleTelemetry(TOPIC, JSON.stringify({ ts: T0 + 50, seq: 4, temperature: 24 }), T0 + 120);
    expect(twin.properties.temperature).toBe(25);
    deliver(twin, T0 + 200, { seq: 9, temperature: 29 });
    expect(twin.counters).toMatchObject({ stale: 1, lost: 3 });
  });

  it("can replace the declarative mapping with a custom shadowing function", () => {
    const twin = d1({ shadowing: "(m) => ({ temperature: m.tempK - 273.15 })" });
    deliver(twin, T0 + 1, { seq: 1, tempK: 300 });
    expect(twin.properties.temperature).toBeCloseTo(26.85);
  });
});

describe("a twin's binding and lifecycle", () => {
  it("binds on the first message, or on an online status, once subscribed", () => {
    const heard = d1();
    expect(heard.lifecycleState).toBe("Unbound");
    deliver(heard, T0 + 1, { seq: 1 });
    // Bound by the message, and judged on it at once (one timely update in its first period).
    expect(heard.lifecycleHistory().map((c) => c.to)).toEqual(["Bound", "Entangled"]);

    const online = d1();
    online.handleStatus(Buffer.from('{"status":"online"}'), T0);
    expect(online.lifecycleState).toBe("Bound");
  });

  it("does not bind before it is subscribed", () => {
    const twin = new Twin(describeTwin(td), { id: "d1", schema: sample("iiot-device.tm.jsonld") });
    twin.setBrokerConnected(true, T0);
    twin.handleStatus("online", T0);
    expect(twin.lifecycleState).toBe("Unbound");
    twin.setSubscribed(true, T0);
    expect(twin.lifecycleState).toBe("Bound");
  });

  it("goes Entangled as soon as ODTE reaches the threshold, but Disentangled only after a full window", () => {
    const good = d1();
    stream(good, T0, T0 + 500);
    good.evaluate(T0 + 500);
    expect(good.lifecycleState).toBe("Entangled");

    const slow = d1();
    stream(slow, T0, T0 + 1000, 1, 100, 50); // every update 50 ms late, Td = 10 ms
    slow.evaluate(T0 + 1000);
    expect(slow.lifecycleState).toBe("Bound");
    stream(slow, T0 + 1100, T0 + 2100, 12, 100, 50);
    slow.evaluate(T0 + 2100);
    expect(slow.lifecycleState).toBe("Disentangled");
  });

  it("while Bound, is judged on each update: Entangled on the one that brings ODTE to the threshold", () => {
    // Bound on the PT's online status at T0; no evaluate() call anywhere below.
    const twin = d1();
    twin.handleStatus("online", T0);
    const seen: [string, number][] = [];
    twin.listen({ lifecycleChanged: (c) => seen.push([c.to, c.at]) });
    deliver(twin, T0 + 100, { seq: 1, temperature: 20 }, 50); // late (Td = 10 ms): T = 0
    let seq = stream(twin, T0 + 200, T0 + 900, 2); // 8 timely of 9: ODTE 0.89 < 0.9
    expect(twin.lifecycleState).toBe("Bound");
    stream(twin, T0 + 1000, T0 + 1000, seq); // 9 of 10: ODTE 0.9, the threshold
    expect(twin.lifecycleState).toBe("Entangled");
    expect(seen).toEqual([["Entangled", T0 + 1000]]);
    expect(twin.entanglement).toMatchObject({ odte: 0.9, updates: 10, entangled: true });

    // Falling short stays Bound until a whole window (2 s) has been seen, then Disentangled.
    const slow = d1();
    slow.handleStatus("online", T0);
    seq = stream(slow, T0 + 100, T0 + 1900, 1, 100, 50);
    expect(slow.lifecycleState).toBe("Bound");
    stream(slow, T0 + 2000, T0 + 2000, seq, 100, 50);
    expect(slow.lifecycleState).toBe("Disentangled");
    expect(slow.lifecycleHistory().at(-1)).toMatchObject({ to: "Disentangled", at: T0 + 2000 });
  });

  it("emits entanglementChanged only when the threshold is crossed", () => {
    const twin = d1();
    const crossings: boolean[] = [];
    twin.listen({ entanglementChanged: (f) => crossings.push(f.entangled) });
    let seq = stream(twin, T0, T0 + 1000);
    twin.evaluate(T0 + 1000);
    seq = stream(twin, T0 + 1100, T0 + 2000, seq);
    twin.evaluate(T0 + 2000);
    // Half the rate for a whole window: R = 0.5.
    seq = stream(twin, T0 + 2200, T0 + 4200, seq, 200);
    twin.evaluate(T0 + 4200);
    twin.evaluate(T0 + 4200);
    expect(twin.entanglement.reliability).toBeGreaterThan(0.45);
    expect(twin.entanglement.reliability).toBeLessThan(0.6);
    expect(crossings).toEqual([true, false]);
    expect(twin.lifecycleState).toBe("Disentangled");
  });

  it("loses its binding when the PT reports offline or the broker goes, and recovers", () => {
    const twin = d1();
    const seen: string[] = [];
    twin.listen({ lifecycleChanged: (c) => seen.push(c.to) });
    stream(twin, T0, T0 + 500);
    twin.evaluate(T0 + 500);
    twin.handleStatus('{"status":"offline"}', T0 + 600);
    twin.handleStatus("online", T0 + 700);
    twin.setBrokerConnected(false, T0 + 800);
    twin.setBrokerConnected(true, T0 + 900);
    const f = twin.evaluate(T0 + 900);
    expect(f.availability).toBeLessThan(1);
    expect(seen).toEqual(["Bound", "Entangled", "Unbound", "Bound", "Unbound", "Bound"]);
  });

  it("without a status topic, judges the PT by its heartbeat", () => {
    const noStatus = structuredClone(describeTwin(td));
    delete (noStatus["dtc:physicalInterface"] as JsonObject)["dtc:statusTopic"];
    const twin = new Twin(noStatus, {
      id: "d1",
      schema: "x",
      fidelity: { expectedUpdateRate: 10, odteWindow: 2 },
    });
    twin.setBrokerConnected(true, T0);
    twin.setSubscribed(true, T0);
    deliver(twin, T0 + 100, { seq: 1 });
    expect(twin.lifecycleHistory().map((c) => c.to)).toEqual(["Bound", "Entangled"]);
    twin.evaluate(T0 + 400); // silent for 3 periods > 2/Re
    expect(twin.lifecycleState).toBe("Unbound");
    deliver(twin, T0 + 500, { seq: 2 });
    expect(twin.lifecycleState).toBe("Bound");
  });

  it("stops (Done) keeping its state, refuses commands, and resumes Unbound", async () => {
    const twin = d1();
    stream(twin, T0, T0 + 500);
    twin.detach(T0 + 600);
    expect(twin.lifecycleState).toBe("Done");
    expect(deliver(twin, T0 + 700, { seq: 99, temperature: 99 })).toBeUndefined();
    expect(twin.properties.temperature).toBe(20);
    await expect(twin.invoke("setRate", 5)).rejects.toThrow(/is Done: detached/);
    twin.resume(T0 + 800);
    expect(twin.lifecycleState).toBe("Unbound");
  });
});

describe("a twin's actions", () => {
  it("turn into commands on the PT's command topic, leaving the state as it is", async () => {
    const sent: [string, unknown][] = [];
    const twin = d1();
    twin.attach(async (topic, payload) => {
      sent.push([topic, JSON.parse(payload)]);
    });
    deliver(twin, T0 + 1, { seq: 1, rate: 10 });
    await twin.invoke("setRate", 5);
    expect(sent).toEqual([["dtc/iiot/d1/commands", { command: "setRate", rate: 5, ts: T0 + 1 }]]);
    expect(twin.properties.updateRate).toBe(10);
    expect(() => twin.commandFor("lifecycleState", 1)).toThrow(TwinStateError);
  });
});

describe("a twin's state export and import", () => {
  it("round-trips through JSON with properties, functions, history and entanglement observations", () => {
    const twin = d1({ historyLimit: 5 });
    twin.installAugmentation("f", "(v) => ({ seen: true })");
    stream(twin, T0, T0 + 1500);
    twin.evaluate(T0 + 1500);
    expect(twin.lifecycleState).toBe("Entangled");
    const state = JSON.parse(JSON.stringify(twin.exportState(T0 + 1500)));
    expect(state.history.states).toHaveLength(5);

    const copy = new Twin(state.td, state.config, state);
    expect(copy.lifecycleState).toBe("Unbound");
    expect(copy.properties).toEqual(twin.properties);
    expect(copy.augmentations.list().map((f) => f.name)).toEqual(["f"]);
    expect(copy.lifecycleHistory().map((c) => c.to)).toEqual(["Bound", "Entangled"]);
    expect(copy.states()).toEqual(twin.states());
    expect(copy.entanglement).toEqual(twin.entanglement);
    // Moved 200 ms later: it binds again and continues the same window, with the gap unavailable.
    copy.attach(async () => {});
    copy.setBrokerConnected(true, T0 + 1700);
    copy.setSubscribed(true, T0 + 1700);
    stream(copy, T0 + 1700, T0 + 2000, 17);
    const f = copy.evaluate(T0 + 2000);
    expect(f.updates).toBeGreaterThan(15);
    // The 200 ms it ran nowhere count as unavailable: 0.9 of the 2 s window.
    expect(f.availability).toBeCloseTo(0.9, 2);
    expect(f.odte).toBeLessThanOrEqual(0.9);
  });

  it("refuses an id that cannot name URLs and topics", () => {
    expect(() => new Twin(td, { id: "D 1", schema: "x" })).toThrow(/lowercase letters/);
  });
});
