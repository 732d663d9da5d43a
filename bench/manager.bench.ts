import { type ChildProcess, fork } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { fileURLToPath } from "node:url";
import { Client, Pool } from "undici";
import { loadConfig } from "../src/config.js";
import { type Gateway, startGateway } from "../src/gateway.js";
import { createLogger } from "../src/logger.js";
import { startEmbeddedBroker } from "../src/mqtt/embedded-broker.js";
import { thingModelsDir } from "../src/paths.js";
import type { Twin } from "../src/runtime/twin.js";
import { TwinRuntime } from "../src/runtime/twin-runtime.js";
import { IiotDeviceSimulator } from "../src/simulator/index.js";
import { loadThingModels, SAMPLE_SCHEMA_BASE, ThingModelRegistry } from "../src/wot/model-registry.js";
import { freePort } from "../test/brokers.js";
import { startGatewayProcess } from "../test/gateway-process.js";
import {
  type Benchmark,
  type BenchRow,
  exited as exitedWithin,
  nextMessage as next,
  valueRow,
} from "./harness.js";

const nextMessage = <T extends ChildMessage["type"]>(child: ChildProcess, type: T) =>
  next<Extract<ChildMessage, { type: T }>>(child, type);
const exited = (child: ChildProcess) => exitedWithin(child, 60_000);

/**
 * The DTC Manager over its HTTP API, each figure beside a baseline of the same run:
 * (1) start -> Entangled of an in-process twin through POST /api/instances, its PT already
 * publishing, vs the same twin created straight on a TwinRuntime (no manager, no directory);
 * (2) moving a twin with a full history between two in-process nodes, vs a snapshot of the same twin
 * (export and store, no start) and GET /healthz (the HTTP floor); (3) 1,000 instances started
 * through the API by 16 clients, their memory, and a restart of the gateway with them, vs 1,000
 * twins created straight on a TwinRuntime.
 *
 * (1) and (2) run a gateway in this process (embedded broker, temporary data directory, logs
 * silent, entanglement evaluated every 1 s as by default). (3) runs the gateway in a child process
 * with --expose-gc (this file, with a role argument), the clients here, and restarts it as users run
 * it (`node dist/src/main.js`). About 1.5 minutes.
 */

const IIOT = new URL("iiot-device.tm.jsonld", SAMPLE_SCHEMA_BASE).href;
const THIS_FILE = fileURLToPath(import.meta.url);
const log = (line: string) => process.stdout.write(`  manager: ${line}\n`);

/** Fidelity a 20 Hz PT on loopback meets from its first updates (Td 50 ms, W 2 s, threshold 0.9). */
const FIDELITY = { expectedUpdateRate: 20, desiredTimeliness: 50, odteWindow: 2 };
const RATE_HZ = 20;

/** Nearest-rank percentile of `values` (ms). */
function pct(values: number[], p: number): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.max(0, Math.ceil((p / 100) * sorted.length) - 1)] ?? Number.NaN;
}

const JSON_HEADERS = { "Content-Type": "application/json" };

/** One API call; throws unless it answered `expect`. */
async function call(
  client: Client | Pool,
  method: "GET" | "POST" | "DELETE",
  path: string,
  expect: number,
  body?: unknown,
): Promise<unknown> {
  const res = await client.request({
    path,
    method,
    headers: body === undefined ? {} : JSON_HEADERS,
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await res.body.text();
  if (res.statusCode !== expect)
    throw new Error(`${method} ${path}: ${res.statusCode} ${text.slice(0, 300)}`);
  return text === "" ? undefined : JSON.parse(text);
}

/** A start request; `fidelity: null` leaves the schema's. */
const startRequest = (id: string, node = "local", fidelity: object | null = FIDELITY) => ({
  package: "iiot-device",
  node,
  id,
  configuration: { DEVICE_ID: id },
  ...(fidelity ? { fidelity } : {}),
});

/**
 * When `twin` went Entangled, on the performance.now() clock: now, from a listener attached at once,
 * or (already Entangled when called) from its lifecycle history, whose times are whole ms.
 */
function entangled(twin: Twin, timeoutMs = 10_000): Promise<{ at: number; already: boolean }> {
  if (twin.lifecycleState === "Entangled") {
    const change = twin.lifecycleHistory().findLast((c) => c.to === "Entangled");
    const at = performance.now() - (Date.now() - (change?.at ?? Date.now()));
    return Promise.resolve({ at, already: true });
  }
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      off();
      reject(new Error(`twin ${twin.id} not Entangled within ${timeoutMs} ms (${twin.lifecycleState})`));
    }, timeoutMs);
    const off = twin.listen({
      lifecycleChanged: (c) => {
        if (c.to !== "Entangled") return;
        const at = performance.now();
        clearTimeout(timer);
        off();
        resolve({ at, already: false });
      },
    });
  });
}

/**
 * A random share of one PT period: a start (or move) lands anywhere between two samples, as it would
 * in use, not always at the same phase of the PT's schedule.
 */
const phase = () => Math.random() * (1000 / RATE_HZ);

/** A 20 Hz IIoT PT, publishing for 300 ms and a random phase before it returns. */
async function publishingPt(id: string, brokerUrl: string): Promise<IiotDeviceSimulator> {
  const sim = new IiotDeviceSimulator({ id, brokerUrl, rate: RATE_HZ });
  await sim.start();
  await sleep(300 + phase());
  return sim;
}

// --- 1. start -> Entangled -------------------------------------------------------------------

const START = { warmup: 3, samples: 25, others: 100 };

interface StartSample {
  /** Request sent (or create called) -> 201 read (create resolved). */
  started: number;
  /** 201 read (create resolved) -> Entangled; 0 when it was Entangled before. */
  entangled: number;
  total: number;
  /** The twin's first committed update -> Entangled, on its own whole-ms clock. */
  firstUpdate: number;
  already: boolean;
}

/**
 * Twins of the IIoT device schema whose PT publishes at 20 Hz since 300 ms: through the API on node
 * `local`, and straight on a TwinRuntime of the same kind on the same broker, alternately. Each
 * twin and its PT go before the next sample (fresh ids, so no retained status of an earlier PT).
 * `others`: idle twins (no PT) beside them on node `local` and on the runtime, so that the runtime
 * comes round to each twin's evaluation once per push interval (1 s) rather than every 50 ms.
 */
async function startToEntangled(gateway: Gateway, client: Client, others: number): Promise<BenchRow[]> {
  const registry = new ThingModelRegistry();
  await loadThingModels(registry, thingModelsDir);
  const runtime = await TwinRuntime.start({
    registry,
    brokerUrl: gateway.brokerUrl,
    http: { port: 0, address: "127.0.0.1" },
  });
  const idle = Array.from({ length: others }, (_, i) => i + 1);
  for (const k of idle) {
    await call(client, "POST", "/api/instances", 201, startRequest(`idle-api-${k}`, "local", null));
    await runtime.create({ id: `idle-rt-${k}`, schema: IIOT, placeholders: { DEVICE_ID: `idle-rt-${k}` } });
  }
  const tag = others === 0 ? "" : `-${others}`;
  const api: StartSample[] = [];
  const direct: StartSample[] = [];
  const sample = async (t0: number, t1: number, twin: Twin): Promise<StartSample> => {
    const e = await entangled(twin);
    const change = twin.lifecycleHistory().find((c) => c.to === "Entangled");
    const first = twin.states()[0];
    return {
      started: t1 - t0,
      entangled: Math.max(0, e.at - t1),
      total: e.at - t0,
      firstUpdate: (change?.at ?? Number.NaN) - (first?.committedAt ?? Number.NaN),
      already: e.already,
    };
  };
  try {
    for (let i = 1; i <= START.warmup + START.samples; i++) {
      const keep = i > START.warmup;
      // Through the API.
      const apiId = `start-api${tag}-${i}`;
      let sim = await publishingPt(apiId, gateway.brokerUrl);
      let t0 = performance.now();
      await call(client, "POST", "/api/instances", 201, startRequest(apiId));
      let t1 = performance.now();
      const twin = gateway.inProcess.runtimeOf("local")?.get(apiId);
      if (!twin) throw new Error(`instance ${apiId} has no twin on node local`);
      const apiSample = await sample(t0, t1, twin);
      if (keep) api.push(apiSample);
      await call(client, "DELETE", `/api/instances/${apiId}`, 204);
      await sim.stop();
      // Straight on a runtime.
      const rtId = `start-rt${tag}-${i}`;
      sim = await publishingPt(rtId, gateway.brokerUrl);
      t0 = performance.now();
      const created = await runtime.create({
        id: rtId,
        schema: IIOT,
        placeholders: { DEVICE_ID: rtId },
        fidelity: FIDELITY,
      });
      t1 = performance.now();
      const directSample = await sample(t0, t1, created);
      if (keep) direct.push(directSample);
      await runtime.remove(rtId);
      await sim.stop();
    }
    for (const k of idle) await call(client, "DELETE", `/api/instances/idle-api-${k}`, 204);
  } finally {
    await runtime.close();
  }
  const before = (s: StartSample[]) => s.filter((x) => x.already).length;
  const beside = others === 0 ? "" : ` (${others} idle twins beside)`;
  log(
    `start -> Entangled${beside}: ${START.samples} twins each way; Entangled before the 201 was read: ${before(api)}, before create resolved: ${before(direct)}`,
  );
  const rows: BenchRow[] = [];
  const parts: [keyof StartSample, string, string][] = [
    [
      "total",
      "start -> Entangled: TwinRuntime.create, no manager",
      "start -> Entangled: POST /api/instances",
    ],
    ["started", "create called -> resolved: TwinRuntime.create", "POST /api/instances -> 201"],
    ["entangled", "create resolved -> Entangled", "201 -> Entangled"],
    [
      "firstUpdate",
      "first update -> Entangled (ms clock): TwinRuntime.create",
      "first update -> Entangled (ms clock): POST /api/instances",
    ],
  ];
  for (const [key, baseName, name] of parts) {
    for (const p of [50, 95]) {
      const values = (s: StartSample[]) => s.map((x) => x[key] as number);
      const base = valueRow(`${baseName}${beside} p${p}`, pct(values(direct), p), "ms");
      rows.push(base, valueRow(`${name}${beside} p${p}`, pct(values(api), p), "ms", base));
    }
  }
  return rows;
}

// --- 2. move ---------------------------------------------------------------------------------

const MOVE = { warmup: 2, moves: 24, healthzPerMove: 5, settleMs: 200 };

/**
 * One twin (20 Hz PT) whose history is full (100 states, the default limit) moved back and forth
 * between node `local` and a second in-process node. Before each move, a snapshot of it (export and
 * store, the move's first half without the start) and GETs of /healthz.
 */
async function move(gateway: Gateway, client: Client): Promise<BenchRow[]> {
  await call(client, "POST", "/api/nodes", 201, {
    id: "local-2",
    platform: "in-process",
    tier: "edge",
    capabilities: { cpu: 2, memory: 2048, gpu: 0 },
  });
  const id = "moved";
  const sim = await publishingPt(id, gateway.brokerUrl);
  const twinOn = (node: string) => {
    const twin = gateway.inProcess.runtimeOf(node)?.get(id);
    if (!twin) throw new Error(`instance ${id} has no twin on node ${node}`);
    return twin;
  };
  const moves: number[] = [];
  const toEntangled: number[] = [];
  const snapshots: number[] = [];
  const healthz: number[] = [];
  let alreadyEntangled = 0;
  try {
    await call(client, "POST", "/api/instances", 201, startRequest(id));
    const first = twinOn("local");
    const deadline = Date.now() + 30_000;
    while (first.states().length < 100 && Date.now() < deadline) await sleep(100);
    await entangled(first);
    let node = "local";
    for (let i = 1; i <= MOVE.warmup + MOVE.moves; i++) {
      const keep = i > MOVE.warmup;
      for (let k = 0; k < MOVE.healthzPerMove; k++) {
        const t = performance.now();
        await call(client, "GET", "/healthz", 200);
        if (keep) healthz.push(performance.now() - t);
      }
      let t = performance.now();
      await call(client, "POST", `/api/instances/${id}/snapshots`, 201);
      if (keep) snapshots.push(performance.now() - t);
      const target = node === "local" ? "local-2" : "local";
      t = performance.now();
      const view = (await call(client, "POST", `/api/instances/${id}/move`, 200, { node: target })) as {
        node: string;
      };
      const answered = performance.now();
      if (view.node !== target) throw new Error(`moved to ${view.node}, not ${target}`);
      const e = await entangled(twinOn(target));
      if (keep) {
        moves.push(answered - t);
        toEntangled.push(e.at - t);
        if (e.already) alreadyEntangled++;
      }
      node = target;
      await sleep(MOVE.settleMs + phase());
    }
    const twin = twinOn(node);
    log(
      `move: ${MOVE.moves} moves; history after them: ${twin.states().length} states, ${twin.events().length} events; Entangled before the move's answer was read: ${alreadyEntangled}; ODTE now ${twin.entanglement.odte.toFixed(3)}`,
    );
    await call(client, "DELETE", `/api/instances/${id}`, 204);
  } finally {
    await sim.stop();
  }
  const rows: BenchRow[] = [];
  for (const p of [50, 95]) {
    const floor = valueRow(`GET /healthz p${p} (HTTP floor)`, pct(healthz, p), "ms");
    const snapshot = valueRow(
      `POST /api/instances/{id}/snapshots p${p} (full history)`,
      pct(snapshots, p),
      "ms",
      floor,
    );
    rows.push(
      floor,
      snapshot,
      valueRow(`POST /api/instances/{id}/move p${p} (full history)`, pct(moves, p), "ms", snapshot),
      valueRow(`move: POST -> Entangled on the target p${p}`, pct(toEntangled, p), "ms", snapshot),
    );
  }
  return rows;
}

// --- 3. 1,000 instances ----------------------------------------------------------------------

const SCALE = { n: 1000, warmup: 20, concurrency: 16, settleMs: 1500 };

interface Sample {
  heapUsed: number;
  rss: number;
}

type ChildMessage =
  | { type: "listening"; url: string }
  | ({ type: "sample" } & Sample)
  | { type: "closed"; closeMs: number }
  | { type: "checkpointed"; ms: number; stallMs: number }
  | { type: "result"; createMs: number; before: Sample; after: Sample };

/** The next message of a given type from a child, or a rejection if it exits first. */
const forkChild = (...args: string[]) =>
  fork(THIS_FILE, args, { execArgv: ["--expose-gc", "--no-warnings"] });

/** Runs `task` for each of `items` with `concurrency` workers; returns the elapsed ms. */
async function concurrently<T>(items: T[], concurrency: number, task: (item: T) => Promise<unknown>) {
  let next = 0;
  const t0 = performance.now();
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (next < items.length) await task(items[next++] as T);
    }),
  );
  return performance.now() - t0;
}

interface StartTimes {
  /** Spawn -> GET /healthz answers. */
  listeningMs: number;
  /** Spawn -> the "dtc gateway listening" log line (after the manager started what should run). */
  readyMs: number;
  /** Spawn -> every instance listed with a lifecycle other than NotRunning. */
  runningMs: number;
}

/** `node dist/src/main.js` on `dataDir`: when it answers, logs that it listens, and runs `n` instances. */
async function startProcess(dataDir: string, n: number): Promise<StartTimes> {
  const port = await freePort();
  const base = `http://127.0.0.1:${port}`;
  const t0 = performance.now();
  const starting = startGatewayProcess({
    DTC_DATA_DIR: dataDir,
    DTC_PORT: String(port),
    DTC_LOG_LEVEL: "info",
  });
  starting.catch(() => {});
  const client = new Client(base);
  let listeningMs = Number.NaN;
  let runningMs = Number.NaN;
  let readyMs = Number.NaN;
  try {
    for (;;) {
      try {
        await call(client, "GET", "/healthz", 200);
        listeningMs = performance.now() - t0;
        break;
      } catch {
        await sleep(5);
      }
      if (performance.now() - t0 > 120_000) throw new Error("the gateway did not answer within 120 s");
    }
    for (;;) {
      const views = (await call(client, "GET", "/api/instances", 200)) as { lifecycle: string }[];
      if (views.length === n && views.every((v) => v.lifecycle !== "NotRunning")) {
        runningMs = performance.now() - t0;
        break;
      }
      if (performance.now() - t0 > 300_000) throw new Error("the instances did not all run within 300 s");
      await sleep(50);
    }
    readyMs = (await starting).readyMs;
  } finally {
    await client.close();
    await (await starting.catch(() => undefined))?.stop();
  }
  return { listeningMs, readyMs, runningMs };
}

async function thousand(): Promise<BenchRow[]> {
  // Baseline: TwinRuntime.create in a child of its own (with an embedded broker, as the gateway has).
  const rtChild = forkChild("runtime");
  let direct: Extract<ChildMessage, { type: "result" }>;
  try {
    direct = await nextMessage(rtChild, "result");
  } finally {
    await exited(rtChild);
  }

  const dataDir = mkdtempSync(join(tmpdir(), "dtc-bench-manager-"));
  const emptyDir = mkdtempSync(join(tmpdir(), "dtc-bench-manager-empty-"));
  const rows: BenchRow[] = [];
  try {
    const child = forkChild("gateway", dataDir);
    let createMs: number;
    let before: Sample;
    let after: Sample;
    let closeMs: number;
    const checkpoints: { when: string; ms: number; stallMs: number }[] = [];
    try {
      const { url } = await nextMessage(child, "listening");
      const pool = new Pool(url, { connections: SCALE.concurrency });
      const sample = async () => {
        const answer = nextMessage(child, "sample");
        child.send({ type: "sample" });
        return answer;
      };
      try {
        // Warm-up: the first instances start node local's runtime and compile validators.
        const warm = Array.from({ length: SCALE.warmup }, (_, i) => `warm-${i + 1}`);
        await concurrently(warm, SCALE.concurrency, (id) =>
          call(pool, "POST", "/api/instances", 201, startRequest(id, "local", null)),
        );
        await concurrently(warm, SCALE.concurrency, (id) =>
          call(pool, "DELETE", `/api/instances/${id}`, 204),
        );
        await sleep(SCALE.settleMs);
        before = await sample();
        const ids = Array.from({ length: SCALE.n }, (_, i) => `inst-${i + 1}`);
        createMs = await concurrently(ids, SCALE.concurrency, (id) =>
          call(pool, "POST", "/api/instances", 201, startRequest(id, "local", null)),
        );
        await sleep(SCALE.settleMs);
        after = await sample();
        // The manager's periodic save (every 30 s by default): first every state is new, then none.
        for (const when of ["every state new", "nothing changed"]) {
          const done = nextMessage(child, "checkpointed");
          child.send({ type: "checkpoint" });
          const { ms, stallMs } = await done;
          checkpoints.push({ when, ms, stallMs });
        }
        const views = (await call(pool, "GET", "/api/instances", 200)) as { lifecycle: string }[];
        log(
          `${SCALE.n} instances: ${views.length} listed, ${views.filter((v) => v.lifecycle === "Unbound").length} Unbound (no PTs)`,
        );
      } finally {
        await pool.close();
      }
      const closed = nextMessage(child, "closed");
      child.send({ type: "close" });
      closeMs = (await closed).closeMs;
    } finally {
      await exited(child);
    }
    const empty = await startProcess(emptyDir, 0);
    const restart = await startProcess(dataDir, SCALE.n);
    log(
      `gateway close with ${SCALE.n} instances (states saved): ${(closeMs / 1000).toFixed(1)} s; empty start: listening ${empty.listeningMs.toFixed(0)} ms, logged ${empty.readyMs.toFixed(0)} ms`,
    );

    const kb = (bytes: number) => bytes / SCALE.n / 1024;
    const rate = (ms: number) => SCALE.n / (ms / 1000);
    const c = SCALE.concurrency;
    const directRate = valueRow(
      `create ${SCALE.n}: TwinRuntime.create, ${c} concurrent`,
      rate(direct.createMs),
      "twins/s",
    );
    const directHeap = valueRow(
      `memory heap: twin on a TwinRuntime, idle`,
      kb(direct.after.heapUsed - direct.before.heapUsed),
      "KB/twin",
    );
    const directRss = valueRow(
      `memory RSS: twin on a TwinRuntime, idle`,
      kb(direct.after.rss - direct.before.rss),
      "KB/twin",
    );
    const emptyListening = valueRow(
      "gateway start, empty data dir: GET /healthz answers",
      empty.listeningMs,
      "ms",
    );
    const emptyReady = valueRow('gateway start, empty data dir: "listening" logged', empty.readyMs, "ms");
    rows.push(
      directRate,
      valueRow(
        `create ${SCALE.n}: POST /api/instances, ${c} clients`,
        rate(createMs),
        "instances/s",
        directRate,
      ),
      valueRow(`create ${SCALE.n}: POST /api/instances, ${c} clients, total`, createMs / 1000, "s"),
      directHeap,
      valueRow(
        `memory heap: instance through the manager, idle`,
        kb(after.heapUsed - before.heapUsed),
        "KB/instance",
        directHeap,
      ),
      directRss,
      valueRow(
        `memory RSS: instance through the manager, idle`,
        kb(after.rss - before.rss),
        "KB/instance",
        directRss,
      ),
      emptyListening,
      valueRow(
        `gateway restart, ${SCALE.n} instances: GET /healthz answers`,
        restart.listeningMs,
        "ms",
        emptyListening,
      ),
      emptyReady,
      valueRow(
        `gateway restart, ${SCALE.n} instances: "listening" logged`,
        restart.readyMs,
        "ms",
        emptyReady,
      ),
      valueRow(`gateway restart, ${SCALE.n} instances: all running again`, restart.runningMs, "ms"),
      ...checkpoints.flatMap(({ when, ms, stallMs }) => [
        valueRow(`checkpoint of ${SCALE.n} idle instances, ${when}: duration`, ms, "ms"),
        valueRow(`checkpoint of ${SCALE.n} idle instances, ${when}: longest event-loop stall`, stallMs, "ms"),
      ]),
    );
  } finally {
    rmSync(dataDir, { recursive: true, force: true });
    rmSync(emptyDir, { recursive: true, force: true });
  }
  return rows;
}

// --- the benchmark ---------------------------------------------------------------------------

export const benchmark: Benchmark = {
  name: "manager",
  description: "DTC Manager over HTTP: start -> Entangled, move with state, 1,000 instances and a restart",
  async run() {
    const rows: BenchRow[] = [];
    const dataDir = mkdtempSync(join(tmpdir(), "dtc-bench-manager-"));
    try {
      const gateway = await startGateway(
        loadConfig({
          DTC_PORT: "0",
          DTC_MQTT_PORT: "0",
          DTC_DATA_DIR: dataDir,
          DTC_LOG_LEVEL: "silent",
          DTC_AUTH: "off",
        }),
        createLogger("silent"),
      );
      const client = new Client(gateway.url);
      try {
        rows.push(...(await startToEntangled(gateway, client, 0)));
        rows.push(...(await startToEntangled(gateway, client, START.others)));
        rows.push(...(await move(gateway, client)));
      } finally {
        await client.close();
        await gateway.close();
      }
    } finally {
      rmSync(dataDir, { recursive: true, force: true });
    }
    rows.push(...(await thousand()));
    return rows;
  },
};

// --- child processes -------------------------------------------------------------------------

function sampleMemory(): Sample {
  const gc = (globalThis as { gc?: () => void }).gc;
  if (!gc) throw new Error("the bench child needs --expose-gc");
  gc();
  gc();
  const { heapUsed, rss } = process.memoryUsage();
  return { heapUsed, rss };
}

/** A gateway as users run it, on `dataDir`; samples memory and closes when told. */
async function gatewayChild(dataDir: string): Promise<void> {
  const gateway = await startGateway(
    loadConfig({
      DTC_PORT: "0",
      DTC_MQTT_PORT: "0",
      DTC_DATA_DIR: dataDir,
      DTC_LOG_LEVEL: "silent",
      DTC_AUTH: "off",
    }),
    createLogger("silent"),
  );
  process.on("message", async (m: { type?: string }) => {
    if (m.type === "sample") process.send?.({ type: "sample", ...sampleMemory() });
    if (m.type === "checkpoint") {
      // The longest gap between 1 ms timers while it runs: how long telemetry would wait.
      let last = performance.now();
      let stallMs = 0;
      let ticking = true;
      const tick = () => {
        const now = performance.now();
        stallMs = Math.max(stallMs, now - last);
        last = now;
        if (ticking) setTimeout(tick, 1);
      };
      setTimeout(tick, 1);
      const t0 = performance.now();
      await gateway.manager.checkpoint();
      const ms = performance.now() - t0;
      await sleep(20);
      ticking = false;
      process.send?.({ type: "checkpointed", ms, stallMs });
    }
    if (m.type === "close") {
      const t0 = performance.now();
      await gateway.close();
      process.send?.({ type: "closed", closeMs: performance.now() - t0 });
      process.disconnect();
    }
  });
  process.once("disconnect", () => process.exit(0));
  process.send?.({ type: "listening", url: gateway.url });
}

/** The baseline: an embedded broker and a TwinRuntime as the gateway runs them, twins created straight. */
async function runtimeChild(): Promise<void> {
  const registry = new ThingModelRegistry();
  await loadThingModels(registry, thingModelsDir);
  const broker = await startEmbeddedBroker({ port: 0 });
  const runtime = await TwinRuntime.start({
    registry,
    brokerUrl: broker.url,
    http: { port: 0, address: "127.0.0.1" },
  });
  const create = (id: string) => runtime.create({ id, schema: IIOT, placeholders: { DEVICE_ID: id } });
  const warm = Array.from({ length: SCALE.warmup }, (_, i) => `warm-${i + 1}`);
  await concurrently(warm, SCALE.concurrency, create);
  for (const id of warm) await runtime.remove(id);
  await sleep(SCALE.settleMs);
  const before = sampleMemory();
  const ids = Array.from({ length: SCALE.n }, (_, i) => `inst-${i + 1}`);
  const createMs = await concurrently(ids, SCALE.concurrency, create);
  await sleep(SCALE.settleMs);
  const after = sampleMemory();
  process.send?.({ type: "result", createMs, before, after });
  await runtime.close();
  await broker.close();
  process.disconnect();
}

if (process.argv[1] === THIS_FILE) {
  const [role, ...args] = process.argv.slice(2);
  const run =
    role === "gateway"
      ? gatewayChild(args[0] as string)
      : role === "runtime"
        ? runtimeChild()
        : Promise.reject(new Error(`unknown bench child role ${role}`));
  run.catch((err: unknown) => {
    process.stderr.write(`${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
    process.exit(1);
  });
}
