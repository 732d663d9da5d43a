import { fork } from "node:child_process";
import { createHistogram, type RecordableHistogram } from "node:perf_hooks";
import { setTimeout as sleep } from "node:timers/promises";
import { fileURLToPath } from "node:url";
import bindingHttp from "@node-wot/binding-http";
import bindingMqtt from "@node-wot/binding-mqtt";
import { Servient } from "@node-wot/core";
import ivm from "isolated-vm";
import mqtt, { type MqttClient } from "mqtt";
import { EntanglementWindow, type FidelityParams } from "../src/domain/entanglement.js";
import type { StateRecord } from "../src/domain/twin-state.js";
import { noDelay } from "../src/mqtt/connections.js";
import { startEmbeddedBroker } from "../src/mqtt/embedded-broker.js";
import { thingModelsDir } from "../src/paths.js";
import type { Twin } from "../src/runtime/twin.js";
import { describeTwin } from "../src/runtime/twin-description.js";
import { TwinRuntime } from "../src/runtime/twin-runtime.js";
import { IiotDeviceSimulator, IiotFleet } from "../src/simulator/index.js";
import { instantiate, toExposedThingInit } from "../src/wot/instantiate.js";
import { loadThingModels, SAMPLE_SCHEMA_BASE, ThingModelRegistry } from "../src/wot/model-registry.js";
import type { JsonObject } from "../src/wot/rdf.js";
import { freePort } from "../test/brokers.js";
import { type Benchmark, type BenchRow, exited, measure, nextMessage, valueRow } from "./harness.js";

/**
 * The twin runtime end to end, on an embedded aedes broker on loopback, each figure beside a
 * baseline of the same run: (1) PT -> consumer latency vs raw broker publish -> receive; (2) the
 * smallest Td that keeps ODTE >= 0.99 at 10 Hz vs the same for raw broker delays; (3) how many 1 Hz
 * twins keep ODTE >= 0.99 at Td = 10 ms vs how many 1 Hz PTs a bare subscriber keeps there;
 * (4) memory per twin vs a bare node-wot ExposedThing of the same TD; (5) augmentation: hot update
 * vs bare isolated-vm, and per-message cost with 1 and 3 functions vs none.
 *
 * The fleets of (3) run in a child process (PTs are not the gateway: on 2 cores they get the other
 * one), and (4) measures in fresh child processes run with --expose-gc; both are this file, started
 * with a role argument. About 5 minutes in all.
 */

// CommonJS packages whose named exports Node's ESM loader cannot detect: take them from the default.
const { HttpServer } = bindingHttp;
const { MqttBrokerServer } = bindingMqtt;

/** An embedded broker and a twin runtime on it, both on loopback, as the gateway runs them. */
async function loopbackRuntime(registry: ThingModelRegistry) {
  const broker = await startEmbeddedBroker({ port: 0 });
  const runtime = await TwinRuntime.start({
    registry,
    brokerUrl: broker.url,
    http: { port: 0, address: "127.0.0.1" },
  });
  return { broker, runtime };
}

const IIOT = new URL("iiot-device.tm.jsonld", SAMPLE_SCHEMA_BASE).href;
const THIS_FILE = fileURLToPath(import.meta.url);
const log = (line: string) => process.stdout.write(`  twins: ${line}\n`);

/** Histograms take whole numbers >= 1: delays are recorded in nanoseconds. */
const ns = (ms: number) => Math.max(1, Math.round(ms * 1e6));
const pct = (h: RecordableHistogram, p: number) => h.percentile(p) / 1e6;

/**
 * A sub-millisecond wall clock for delays from a PT's `ts` (Date.now() ticks in whole ms).
 * Anchored on a Date.now() tick when created, once per case, so that drift between the monotonic and
 * the wall clock cannot build up over the run. PT timestamps are whole ms (floored), so delays from
 * them read up to 1 ms high.
 */
function wallClock(): () => number {
  const start = Date.now();
  let now = Date.now();
  while (now === start) now = Date.now();
  const offset = now - performance.now();
  return () => offset + performance.now();
}

async function connect(url: string): Promise<MqttClient> {
  const client = await mqtt.connectAsync(url, { reconnectPeriod: 0 });
  noDelay(client); // as dtc's own clients: Nagle would hold back small packets
  return client;
}

/** The MQTT topic of a property's observeproperty form in an exposed TD. */
function observeTopic(td: JsonObject, property: string): string {
  const forms = ((td.properties as Record<string, JsonObject>)[property]?.forms ?? []) as JsonObject[];
  const form = forms.find(
    (f) => String(f.href).startsWith("mqtt:") && [f.op].flat().includes("observeproperty"),
  );
  if (!form) throw new Error(`${property} has no MQTT observeproperty form`);
  return new URL(String(form.href)).pathname.slice(1);
}

/** An IIoT-device telemetry message (the schema maps temperature, energy and rate; ts and seq). */
const telemetry = (seq: number, temperature: number, rate: number) =>
  JSON.stringify({ ts: Date.now(), seq, temperature, energy: seq, rate });

// --- 1. latency -------------------------------------------------------------------------------

const LATENCY = { rateHz: 20, warmup: 20, count: 200 };

/**
 * One publisher, one subscriber, one broker. Raw: the publisher's message straight to the
 * subscriber. Twin: the publisher is the PT, the subscriber a consumer of the twin's `temperature`
 * over MQTT (its TD's form); temperature = sequence number matches each notification to its publish.
 * The two alternate half a period apart, so both see the same conditions.
 */
async function latency(brokerUrl: string, runtime: TwinRuntime): Promise<BenchRow[]> {
  const id = "lat";
  await runtime.create({ id, schema: IIOT, placeholders: { DEVICE_ID: id } });
  const [pub, sub] = await Promise.all([connect(brokerUrl), connect(brokerUrl)]);
  const path = (publishTo: string, receiveOn: string) => ({
    publishTo,
    receiveOn,
    sent: new Map<number, number>(),
    hist: createHistogram(),
  });
  const raw = path("bench/raw/telemetry", "bench/raw/telemetry");
  const twin = path(`dtc/iiot/${id}/telemetry`, observeTopic(runtime.description(id), "temperature"));
  await sub.subscribeAsync([raw.receiveOn, twin.receiveOn], { qos: 0 });
  sub.on("message", (topic, payload) => {
    const at = performance.now();
    const p = topic === raw.receiveOn ? raw : twin;
    // The raw path delivers the message, the twin the property value (the sequence number).
    const body = JSON.parse(String(payload)) as number | { seq: number };
    const seq = typeof body === "number" ? body : body.seq;
    const sentAt = p.sent.get(seq);
    if (sentAt !== undefined && seq > LATENCY.warmup) p.hist.record(ns(at - sentAt));
  });
  const half = 1000 / LATENCY.rateHz / 2;
  for (let seq = 1; seq <= LATENCY.warmup + LATENCY.count; seq++) {
    for (const p of [raw, twin]) {
      const payload = telemetry(seq, seq, LATENCY.rateHz);
      p.sent.set(seq, performance.now());
      pub.publish(p.publishTo, payload, { qos: 0 });
      await sleep(half);
    }
  }
  await sleep(500);
  await Promise.all([pub.endAsync(), sub.endAsync()]);
  await runtime.remove(id);
  log(`latency: received raw ${raw.hist.count}/${LATENCY.count}, twin ${twin.hist.count}/${LATENCY.count}`);
  const rows: BenchRow[] = [];
  for (const p of [50, 99]) {
    const base = valueRow(`latency p${p}: raw broker publish -> subscriber`, pct(raw.hist, p), "ms");
    rows.push(base, valueRow(`latency p${p}: PT -> twin -> MQTT consumer`, pct(twin.hist, p), "ms", base));
  }
  return rows;
}

// --- 2. smallest Td for ODTE >= 0.99 ---------------------------------------------------------

const TIMELINESS = { rateHz: 10, windowS: 10, warmupMs: 2000, threshold: 0.99 };

interface Update {
  committedAt: number;
  ptTimestamp: number;
}

/**
 * The smallest Td (ms) at which `updates` give ODTE >= threshold, found with dtc's own
 * EntanglementWindow (R = A = 1 here, so ODTE = T): T only changes at the delays themselves, so
 * they are the candidates, smallest first. Also returns the ODTE one candidate lower (< threshold).
 */
function smallestTd(updates: Update[]): { td: number; odte: number; below: number | undefined } {
  const last = updates.at(-1);
  if (!last) throw new Error("no updates recorded");
  const odteAt = (td: number) => {
    const window = new EntanglementWindow({
      desiredTimelinessMs: td,
      expectedUpdateRateHz: TIMELINESS.rateHz,
      threshold: TIMELINESS.threshold,
      windowSeconds: TIMELINESS.windowS,
    });
    for (const u of updates) window.recordUpdate(u.committedAt, u.ptTimestamp);
    return window.evaluate(last.committedAt).odte;
  };
  const delays = [...new Set(updates.map((u) => u.committedAt - u.ptTimestamp))].sort((a, b) => a - b);
  let below: number | undefined;
  for (const delay of delays) {
    // Td must be > 0; on whole-ms clocks any Td in (0, 1) counts the same updates as 0.
    const odte = odteAt(Math.max(delay, 0.001));
    if (odte >= TIMELINESS.threshold) return { td: delay, odte, below };
    below = odte;
  }
  throw new Error("ODTE stays below the threshold whatever Td (updates missing?)");
}

/**
 * The simulator at 10 Hz. First a raw subscriber alone receives its messages for one window W, then
 * a twin of it (after a warm-up) for one window. One after the other: in one process, whichever of
 * the two handled a message second would wait for the other.
 */
async function timeliness(brokerUrl: string, runtime: TwinRuntime): Promise<BenchRow[]> {
  const id = "odte";
  const sim = new IiotDeviceSimulator({ id, brokerUrl, rate: TIMELINESS.rateHz });
  await sim.start();
  const side = () => ({ recording: false, from: 0, to: 0, updates: [] as Update[], hist: createHistogram() });
  const record = async (s: ReturnType<typeof side>) => {
    await sleep(TIMELINESS.warmupMs);
    s.from = Date.now();
    s.recording = true;
    await sleep(TIMELINESS.windowS * 1000);
    s.recording = false;
    s.to = Date.now();
  };

  const rawSide = side();
  const sub = await connect(brokerUrl);
  let clock = wallClock();
  sub.on("message", (_topic, payload) => {
    const hiRes = clock();
    const committedAt = Date.now();
    if (!rawSide.recording) return;
    const { ts } = JSON.parse(String(payload)) as { ts: number };
    rawSide.hist.record(ns(hiRes - ts));
    rawSide.updates.push({ committedAt, ptTimestamp: ts });
  });
  await sub.subscribeAsync(`dtc/iiot/${id}/telemetry`, { qos: 0 });
  await record(rawSide);
  await sub.endAsync();

  const twinSide = side();
  const twin = await runtime.create({
    id,
    schema: IIOT,
    placeholders: { DEVICE_ID: id },
    fidelity: {
      desiredTimeliness: 10,
      expectedUpdateRate: TIMELINESS.rateHz,
      odteWindow: TIMELINESS.windowS,
      odteThreshold: TIMELINESS.threshold,
    },
    // Every committed update of the run stays in the twin's log (consumers only hear of changes).
    historyLimit: 1000,
  });
  clock = wallClock();
  let heard = 0;
  twin.listen({
    propertiesChanged: () => {
      const u = twin.lastUpdate as StateRecord;
      if (!twinSide.recording) return;
      heard++;
      twinSide.hist.record(ns(clock() - u.ptTimestamp));
    },
  });
  await record(twinSide);
  twinSide.updates = twin
    .states()
    .filter((u) => u.committedAt >= twinSide.from && u.committedAt <= twinSide.to);
  const live = twin.entanglement;
  await sim.stop();
  await runtime.remove(id);

  const rawTd = smallestTd(rawSide.updates);
  const twinTd = smallestTd(twinSide.updates);
  log(
    `Td: ${twinSide.updates.length} twin updates (${heard} notified), ${rawSide.updates.length} raw; twin ODTE ${twinTd.odte.toFixed(3)} at Td = ${twinTd.td} ms, ${twinTd.below?.toFixed(3) ?? "-"} one step lower; raw ODTE ${rawTd.odte.toFixed(3)} at ${rawTd.td} ms; twin's live ODTE at Td = 10 ms: ${live.odte.toFixed(3)}`,
  );
  const w = `@${TIMELINESS.rateHz} Hz, W=${TIMELINESS.windowS} s`;
  const rawRow = valueRow(`Td for ODTE>=0.99 ${w} (ms clock): raw broker`, rawTd.td, "ms");
  const rawP99 = valueRow(`delay p99 ${w} (sub-ms clock): raw broker`, pct(rawSide.hist, 99), "ms");
  return [
    rawRow,
    valueRow(`Td for ODTE>=0.99 ${w} (ms clock): twin commit`, twinTd.td, "ms", rawRow),
    rawP99,
    valueRow(`delay p99 ${w} (sub-ms clock): twin commit`, pct(twinSide.hist, 99), "ms", rawP99),
  ];
}

// --- 3. how many twins -----------------------------------------------------------------------

const SCALE = {
  steps: [100, 250, 500, 1000, 2000, 5000, 10_000],
  tdMs: 10,
  windowS: 5,
  /** After the fleet started: every PT has sent, every twin has bound, restart gaps left W. */
  settleMs: 2000,
  /**
   * Consecutive windows W judged per step; the step's share is their median. One window is at the
   * mercy of one stall (a stall of Td fails every twin with a message in it).
   */
  windows: 3,
  /** A step passes when this share of twins (or PTs) has ODTE >= 0.99. */
  pass: 0.99,
  /** Steps go on past a failing one (one stall can fail a step) until the share falls below this. */
  stopBelow: 0.9,
  /**
   * The twins phase does not start a step that would take it past this (the whole benchmark should
   * stay within ~6 minutes). A step's creation is estimated at 1.5x the last per-twin time: it grows
   * with N, as the broker scans its retained messages (a TD per twin) on every subscribe.
   */
  twinsBudgetMs: 125_000,
};
const SCALE_PARAMS: FidelityParams = {
  desiredTimelinessMs: SCALE.tdMs,
  expectedUpdateRateHz: 1,
  threshold: 0.99,
  windowSeconds: SCALE.windowS,
};

/** A message of a given type from a child, or a rejection if it exits first. */
/**
 * `count` simulated PTs (ids t1..tN, 1 Hz, spread evenly over the second) in a child process: PTs
 * are not the gateway, and on 2 cores they get the other one.
 */
async function startFleet(brokerUrl: string, count: number): Promise<{ stop(): Promise<void> }> {
  const child = fork(THIS_FILE, ["fleet", brokerUrl, String(count)], { execArgv: [] });
  await nextMessage(child, "started");
  return {
    stop: async () => {
      child.send({ type: "stop" });
      await exited(child);
    },
  };
}

interface Step {
  n: number;
  /** Share of twins (PTs) with ODTE >= 0.99 at the end of each window. */
  shares: number[];
  /** Their median. */
  share: number;
  /** Delay p99 over all the windows. */
  p99Ms: number;
  note: string;
}

/** Sleeps through SCALE.windows windows W and returns `evaluate()` at the end of each. */
async function judgeWindows<T>(evaluate: () => T): Promise<T[]> {
  const results: T[] = [];
  for (let k = 0; k < SCALE.windows; k++) {
    await sleep(SCALE.windowS * 1000);
    results.push(evaluate());
  }
  return results;
}

const median = (values: number[]) => {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor((sorted.length - 1) / 2)] as number;
};
const percents = (shares: number[]) => shares.map((s) => `${(100 * s).toFixed(1)}%`).join(" ");

/**
 * The baseline: a bare mqtt.js subscriber judging each PT with the same ODTE window. Judged after
 * the step, at the windows' end times: evaluating N windows at once while measuring would stall the
 * broker (same process) and fail the next window.
 */
async function rawStep(brokerUrl: string, n: number): Promise<Step> {
  const sub = await connect(brokerUrl);
  const received = new Map<string, Update[]>();
  const hist = createHistogram();
  const clock = wallClock();
  let recording = false;
  sub.on("message", (topic, payload) => {
    const hiRes = clock();
    const committedAt = Date.now();
    if (!recording) return;
    const { ts } = JSON.parse(String(payload)) as { ts: number };
    const id = topic.split("/")[2] as string;
    let updates = received.get(id);
    if (!updates) {
      updates = [];
      received.set(id, updates);
    }
    updates.push({ committedAt, ptTimestamp: ts });
    hist.record(ns(hiRes - ts));
  });
  await sub.subscribeAsync("dtc/iiot/+/telemetry", { qos: 0 });
  const fleet = await startFleet(brokerUrl, n);
  await sleep(SCALE.settleMs);
  recording = true;
  const ends = await judgeWindows(() => Date.now());
  recording = false;
  await fleet.stop();
  await sub.endAsync();
  const passing = ends.map(() => 0);
  for (const updates of received.values()) {
    const window = new EntanglementWindow(SCALE_PARAMS);
    let next = 0;
    ends.forEach((end, k) => {
      for (; next < updates.length && (updates[next] as Update).committedAt <= end; next++) {
        const u = updates[next] as Update;
        window.recordUpdate(u.committedAt, u.ptTimestamp);
      }
      if (window.evaluate(end).odte >= SCALE_PARAMS.threshold) passing[k] = (passing[k] ?? 0) + 1;
    });
  }
  const shares = passing.map((p) => p / n);
  return { n, shares, share: median(shares), p99Ms: pct(hist, 99), note: `${received.size} PTs heard` };
}

async function scale(registry: ThingModelRegistry): Promise<BenchRow[]> {
  const rows: BenchRow[] = [];
  const rawSteps: Step[] = [];
  {
    const broker = await startEmbeddedBroker({ port: 0 });
    try {
      for (const n of SCALE.steps) {
        const step = await rawStep(broker.url, n);
        rawSteps.push(step);
        log(
          `scale raw N=${n}: ODTE>=0.99 for ${percents(step.shares)} (${step.note}), delay p99 ${step.p99Ms.toFixed(2)} ms`,
        );
        if (step.share < SCALE.stopBelow) break;
      }
    } finally {
      await broker.close();
    }
  }

  const twinSteps: (Step & { createMs: number })[] = [];
  const { broker, runtime } = await loopbackRuntime(registry);
  try {
    const twins: Twin[] = [];
    const probe = { recording: false, hist: createHistogram(), clock: wallClock() };
    let createMs = 0;
    let perTwinMs = 0;
    const phaseStart = performance.now();
    for (const n of SCALE.steps) {
      const stepMs = SCALE.settleMs + SCALE.windows * SCALE.windowS * 1000 + 3000;
      const estimate = (n - twins.length) * perTwinMs * 1.5 + stepMs;
      if (performance.now() - phaseStart + estimate > SCALE.twinsBudgetMs) {
        log(`scale twins N=${n}: skipped, ~${Math.round(estimate / 1000)} s would overrun the time budget`);
        break;
      }
      // Twins are added while the PTs are quiet: creation time is that of an idle gateway.
      const t0 = performance.now();
      for (let i = twins.length + 1; i <= n; i++) {
        const id = `t${i}`;
        const twin = await runtime.create({
          id,
          schema: IIOT,
          placeholders: { DEVICE_ID: id },
          fidelity: {
            desiredTimeliness: SCALE.tdMs,
            expectedUpdateRate: 1,
            odteWindow: SCALE.windowS,
            odteThreshold: 0.99,
          },
        });
        twin.listen({
          propertiesChanged: () => {
            if (probe.recording)
              probe.hist.record(ns(probe.clock() - (twin.lastUpdate as StateRecord).ptTimestamp));
          },
        });
        twins.push(twin);
      }
      perTwinMs = (performance.now() - t0) / (n - (twinSteps.at(-1)?.n ?? 0));
      createMs += performance.now() - t0;
      Object.assign(probe, { hist: createHistogram(), clock: wallClock() });
      const fleet = await startFleet(broker.url, n);
      await sleep(SCALE.settleMs);
      probe.recording = true;
      // The runtime's own evaluations (each twin's at most one push interval old): evaluating all
      // of them here at once would be a burst the runtime itself avoids.
      const judged = await judgeWindows(() => twins.map((t) => t.entanglement));
      probe.recording = false;
      await fleet.stop();
      const below = (key: "timeliness" | "reliability" | "availability") =>
        judged.map((figures) => figures.filter((f) => f[key] < 0.99).length).join("/");
      const shares = judged.map((figures) => figures.filter((f) => f.odte >= 0.99).length / n);
      const step = {
        n,
        shares,
        share: median(shares),
        p99Ms: pct(probe.hist, 99),
        createMs,
        note: `twins below 0.99 per window: T ${below("timeliness")}, R ${below("reliability")}, A ${below("availability")}`,
      };
      twinSteps.push(step);
      log(
        `scale twins N=${n}: ODTE>=0.99 for ${percents(shares)} (${step.note}), delay p99 ${step.p99Ms.toFixed(2)} ms, created in ${(createMs / 1000).toFixed(1)} s`,
      );
      if (step.share < SCALE.stopBelow) break;
    }
  } finally {
    await runtime.close();
    await broker.close();
  }

  /** The last N of the passing steps before the first failing one. */
  const largest = (steps: Step[], share: number) => {
    const failing = steps.findIndex((s) => s.share < share);
    return (failing < 0 ? steps : steps.slice(0, failing)).at(-1)?.n ?? 0;
  };
  const rawMax = largest(rawSteps, SCALE.pass);
  const capped = rawMax === SCALE.steps.at(-1);
  const head = `max 1 Hz twins, ODTE>=0.99 (Td=${SCALE.tdMs} ms, W=${SCALE.windowS} s) in >=99% (median)`;
  const rawMaxRow = valueRow(`${head}: raw broker + subscriber`, rawMax, capped ? "PTs (cap)" : "PTs");
  const twinMax = largest(twinSteps, SCALE.pass);
  rows.push(rawMaxRow, valueRow(`${head}: dtc twins`, twinMax, "twins", rawMaxRow));
  rows.push(
    valueRow(`max 1 Hz twins, ODTE>=0.99 in all (median): dtc twins`, largest(twinSteps, 1), "twins"),
  );
  const created = twinSteps.at(-1);
  if (created) rows.push(valueRow(`create ${created.n} twins (idle gateway)`, created.createMs / 1000, "s"));
  for (const n of SCALE.steps) {
    const raw = rawSteps.find((s) => s.n === n);
    const twin = twinSteps.find((s) => s.n === n);
    const rawShare = raw && valueRow(`N=${n}: share with ODTE>=0.99 (median): raw`, 100 * raw.share, "%");
    const rawP99 = raw && valueRow(`N=${n}: delay p99: raw`, raw.p99Ms, "ms");
    if (rawShare) rows.push(rawShare);
    if (twin)
      rows.push(valueRow(`N=${n}: share with ODTE>=0.99 (median): twins`, 100 * twin.share, "%", rawShare));
    if (rawP99) rows.push(rawP99);
    if (twin) rows.push(valueRow(`N=${n}: delay p99: twins`, twin.p99Ms, "ms", rawP99));
  }
  return rows;
}

// --- 4. memory -------------------------------------------------------------------------------

/** `messages`: measured after this many messages per twin (at 100 the default history log is full). */
const MEMORY = { n: 1000, warmup: 20, messages: [10, 100], functions: 100 };

interface MemoryResult {
  type: "result";
  createMs: number;
  idleHeap: number;
  idleRss: number;
  /** Per MEMORY.messages checkpoint: heap and RSS growth since before creating. */
  fed: { messages: number; minMessages: number; heap: number; rss: number }[];
  /** Heap growth for the first function of MEMORY.functions twins, and for each further one. */
  functionHeap?: [first: number, further: number];
  /** JSON size of one exposed TD. */
  tdBytes: number;
}

/** Messages `from`..`to` to each of the measured twins m1..mN, one round every 100 ms. */
async function feed(brokerUrl: string, from: number, to: number): Promise<void> {
  const pub = await connect(brokerUrl);
  for (let round = from; round <= to; round++) {
    for (let i = 1; i <= MEMORY.n; i++)
      pub.publish(`dtc/iiot/m${i}/telemetry`, telemetry(round, 20 + (round % 10), 10));
    await sleep(100);
  }
  await pub.endAsync();
}

/** Measures in a fresh child process run with --expose-gc; the broker stays here, out of the figures. */
async function measureMemory(mode: "twins" | "bare"): Promise<MemoryResult> {
  const broker = await startEmbeddedBroker({ port: 0 });
  const child = fork(THIS_FILE, ["memory", mode, broker.url], { execArgv: ["--expose-gc", "--no-warnings"] });
  let failure: unknown;
  const feeding: Promise<void>[] = [];
  child.on("message", (m: { type?: string; from?: number; to?: number }) => {
    if (m.type !== "feed") return;
    const fed = feed(broker.url, m.from as number, m.to as number).catch((err: unknown) => {
      failure = err;
      child.kill();
    });
    feeding.push(fed);
  });
  try {
    const result = await nextMessage<MemoryResult>(child, "result");
    await Promise.all(feeding);
    return result;
  } catch (err) {
    throw failure ?? err;
  } finally {
    await exited(child);
    await broker.close();
  }
}

async function memory(): Promise<BenchRow[]> {
  const bare = await measureMemory("bare");
  const twins = await measureMemory("twins");
  const kb = (bytes: number, count = MEMORY.n) => bytes / count / 1024;
  log(
    `memory: twins heard at least ${twins.fed.map((f) => f.minMessages).join(" / ")} messages each; exposed TD ${twins.tdBytes} bytes (twin), ${bare.tdBytes} bytes (bare node-wot)`,
  );
  const bareHeap = valueRow(`memory heap: bare node-wot ExposedThing`, kb(bare.idleHeap), "KB/thing");
  const bareRss = valueRow(`memory RSS: bare node-wot ExposedThing`, kb(bare.idleRss), "KB/thing");
  const twinHeap = valueRow(`memory heap: dtc twin, idle`, kb(twins.idleHeap), "KB/twin", bareHeap);
  const bareCreate = valueRow(
    `create ${MEMORY.n}: bare node-wot produce + expose`,
    bare.createMs / MEMORY.n,
    "ms/thing",
  );
  const after = (f: MemoryResult["fed"][number]) => `after ${f.messages} messages`;
  return [
    bareHeap,
    twinHeap,
    ...twins.fed.map((f) => valueRow(`memory heap: dtc twin, ${after(f)}`, kb(f.heap), "KB/twin", bareHeap)),
    bareRss,
    valueRow(`memory RSS: dtc twin, idle`, kb(twins.idleRss), "KB/twin", bareRss),
    ...twins.fed.map((f) => valueRow(`memory RSS: dtc twin, ${after(f)}`, kb(f.rss), "KB/twin", bareRss)),
    valueRow(
      "memory heap: + first augmentation function (with the twin's vm context)",
      kb(twins.functionHeap?.[0] ?? Number.NaN, MEMORY.functions),
      "KB/twin",
      twinHeap,
    ),
    valueRow(
      "memory heap: + each further augmentation function",
      kb(twins.functionHeap?.[1] ?? Number.NaN, MEMORY.functions),
      "KB/twin",
      twinHeap,
    ),
    bareCreate,
    valueRow(`create ${MEMORY.n}: dtc runtime.create`, twins.createMs / MEMORY.n, "ms/twin", bareCreate),
  ];
}

// --- 5. augmentation -------------------------------------------------------------------------

const FUNCTIONS = {
  fahrenheit:
    "(v) => (typeof v.temperature === 'number' ? { temperatureF: v.temperature * 9 / 5 + 32 } : {})",
  average:
    "(v, { state }) => ({ temperatureAvg: typeof state.temperatureAvg === 'number' ? 0.9 * state.temperatureAvg + 0.1 * v.temperature : v.temperature })",
  outlier:
    "(v, { state }) => ({ temperatureOutlier: typeof state.temperatureAvg === 'number' && Math.abs(v.temperature - state.temperatureAvg) > 5 })",
};

async function augmentation(runtime: TwinRuntime): Promise<BenchRow[]> {
  const make = async (functions: (keyof typeof FUNCTIONS)[]) => {
    const id = `aug${functions.length}`;
    const twin = await runtime.create({ id, schema: IIOT, placeholders: { DEVICE_ID: id } });
    for (const name of functions) twin.installAugmentation(name, FUNCTIONS[name]);
    let seq = 0;
    const topic = `dtc/iiot/${id}/telemetry`;
    // Telemetry as the broker would hand it over; the PT's clock is this one.
    const message = () => {
      seq++;
      twin.handleTelemetry(topic, telemetry(seq, 20 + (seq % 10), 10), Date.now());
    };
    return { twin, message };
  };
  const none = await make([]);
  const one = await make(["fahrenheit"]);
  const three = await make(["fahrenheit", "average", "outlier"]);
  // The floor of a hot update: compiling and evaluating the source, with a time limit, in an
  // isolate and context that exist (the twin's do).
  const bareVm = "hot update: bare isolated-vm compile + run in an existing context";
  const isolate = new ivm.Isolate({ memoryLimit: 32 });
  const context = isolate.createContextSync();
  const evaluate = (into: ivm.Context) =>
    isolate.compileScriptSync(FUNCTIONS.fahrenheit).runSync(into, { timeout: 50, reference: true }).release();
  const msg0 = "handleTelemetry: 0 functions";
  const rows = await measure([
    {
      name: "(reference) bare isolated-vm new context + compile + run",
      fn: () => {
        const fresh = isolate.createContextSync();
        evaluate(fresh);
        fresh.release();
      },
    },
    { name: bareVm, fn: () => evaluate(context) },
    {
      name: "hot update: twin.installAugmentation (replace)",
      fn: () => one.twin.installAugmentation("fahrenheit", FUNCTIONS.fahrenheit),
      baseline: bareVm,
    },
    { name: msg0, fn: none.message },
    { name: "handleTelemetry: 1 function", fn: one.message, baseline: msg0 },
    { name: "handleTelemetry: 3 functions", fn: three.message, baseline: msg0 },
  ]);
  const checks = [none, one, three].map(
    ({ twin }) => `${twin.id}: ${twin.counters.augmentationErrors} errors`,
  );
  log(`augmentation: ${checks.join(", ")}; aug3 state ${JSON.stringify(three.twin.properties)}`);
  for (const id of ["aug0", "aug1", "aug3"]) await runtime.remove(id);
  isolate.dispose();
  return rows;
}

// --- the benchmark ---------------------------------------------------------------------------

export const benchmark: Benchmark = {
  name: "twins",
  description: "twin runtime: latency, Td, scale, memory, augmentation (embedded aedes on loopback)",
  async run() {
    const registry = new ThingModelRegistry();
    await loadThingModels(registry, thingModelsDir);
    const rows: BenchRow[] = [];
    const { broker, runtime } = await loopbackRuntime(registry);
    try {
      rows.push(...(await latency(broker.url, runtime)));
      rows.push(...(await timeliness(broker.url, runtime)));
      rows.push(...(await augmentation(runtime)));
    } finally {
      await runtime.close();
      await broker.close();
    }
    rows.push(...(await memory()));
    rows.push(...(await scale(registry)));
    return rows;
  },
};

// --- child processes -------------------------------------------------------------------------

async function fleetChild(brokerUrl: string, count: number): Promise<void> {
  const fleet = new IiotFleet({ count, prefix: "t", brokerUrl, rate: 1 });
  await fleet.start();
  process.send?.({ type: "started" });
  // Stop when told, or when the parent is gone.
  await new Promise((resolve) => {
    process.once("message", resolve);
    process.once("disconnect", resolve);
  });
  await fleet.stop();
  if (process.connected) process.disconnect();
}

async function memoryChild(mode: string, brokerUrl: string): Promise<void> {
  const gc = (globalThis as { gc?: () => void }).gc;
  if (!gc) throw new Error("the memory child needs --expose-gc");
  const sample = () => {
    gc();
    gc();
    const { heapUsed, rss } = process.memoryUsage();
    return { heapUsed, rss };
  };
  const registry = new ThingModelRegistry();
  await loadThingModels(registry, thingModelsDir);
  const twins: Twin[] = [];
  /** Creates one twin (thing) and returns its exposed TD. */
  let create: (id: string) => Promise<unknown>;
  let close: () => Promise<void>;
  let runtime: TwinRuntime | undefined;
  if (mode === "twins") {
    const rt = await TwinRuntime.start({ registry, brokerUrl, http: { port: 0, address: "127.0.0.1" } });
    runtime = rt;
    create = async (id) => {
      twins.push(await rt.create({ id, schema: IIOT, placeholders: { DEVICE_ID: id } }));
      return rt.description(id);
    };
    close = () => rt.close();
  } else {
    // The same TD as a twin's, on a plain Servient: no dtc runtime, no dtc server subclasses. HTTP
    // on one loopback base URI as dtc's, or node-wot would add forms for every address of the host.
    const port = await freePort();
    const servient = new Servient();
    servient.addServer(
      new HttpServer({
        port,
        address: "127.0.0.1",
        devFriendlyUri: true,
        baseUri: `http://127.0.0.1:${port}`,
      }),
    );
    servient.addServer(new MqttBrokerServer({ uri: brokerUrl }));
    const wot = (await servient.start()) as unknown as typeof WoT;
    create = async (id) => {
      const td = describeTwin(
        await instantiate(registry, IIOT, { placeholders: { DEVICE_ID: id }, id: `urn:dtc:twin:${id}` }),
      );
      const thing = await wot.produce(toExposedThingInit(td) as WoT.ExposedThingInit);
      await thing.expose();
      return thing.getThingDescription();
    };
    close = () => servient.shutdown();
  }
  // Warm-up: lazily compiled validators, caches and first-use allocations stay out of the figures.
  for (let i = 1; i <= MEMORY.warmup; i++) await create(`w${i}`);
  await sleep(500);
  const before = sample();
  const t0 = performance.now();
  let td: unknown;
  for (let i = 1; i <= MEMORY.n; i++) td = await create(`m${i}`);
  const createMs = performance.now() - t0;
  await sleep(500);
  const idle = sample();
  const result: MemoryResult = {
    type: "result",
    createMs,
    idleHeap: idle.heapUsed - before.heapUsed,
    idleRss: idle.rss - before.rss,
    tdBytes: JSON.stringify(td).length,
    fed: [],
  };
  if (runtime) {
    const measured = twins.slice(MEMORY.warmup);
    let sent = 0;
    for (const messages of MEMORY.messages) {
      process.send?.({ type: "feed", from: sent + 1, to: messages });
      sent = messages;
      const deadline = Date.now() + 60_000;
      while (measured.some((t) => t.counters.messages < messages) && Date.now() < deadline) await sleep(100);
      await sleep(1500); // the digital side's notifications and one evaluation
      const fed = sample();
      result.fed.push({
        messages,
        minMessages: Math.min(...measured.map((t) => t.counters.messages)),
        heap: fed.heapUsed - before.heapUsed,
        rss: fed.rss - before.rss,
      });
    }
    // The first function brings the twin's vm context; later ones only themselves.
    const some = measured.slice(0, MEMORY.functions);
    const heap0 = sample().heapUsed;
    for (const twin of some) twin.installAugmentation("fahrenheit", FUNCTIONS.fahrenheit);
    const heap1 = sample().heapUsed;
    for (const twin of some) {
      twin.installAugmentation("average", FUNCTIONS.average);
      twin.installAugmentation("outlier", FUNCTIONS.outlier);
    }
    result.functionHeap = [heap1 - heap0, (sample().heapUsed - heap1) / 2];
  }
  process.send?.(result);
  await close();
  if (process.connected) process.disconnect();
}

if (process.argv[1] === THIS_FILE) {
  const [role, ...args] = process.argv.slice(2);
  const run =
    role === "fleet"
      ? fleetChild(args[0] as string, Number(args[1]))
      : role === "memory"
        ? memoryChild(args[0] as string, args[1] as string)
        : Promise.reject(new Error(`unknown bench child role ${role}`));
  run.catch((err: unknown) => {
    process.stderr.write(`${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
    process.exit(1);
  });
}
