import { fork } from "node:child_process";
import { createHistogram } from "node:perf_hooks";
import { setTimeout as sleep } from "node:timers/promises";
import { fileURLToPath } from "node:url";
import mqtt, { type MqttClient } from "mqtt";
import { collectDefaultMetrics, Registry } from "prom-client";
import { noDelay } from "../src/mqtt/connections.js";
import { startEmbeddedBroker } from "../src/mqtt/embedded-broker.js";
import { exposition, TwinMetrics } from "../src/observability/twin-metrics.js";
import { thingModelsDir } from "../src/paths.js";
import type { Twin } from "../src/runtime/twin.js";
import { TwinRuntime } from "../src/runtime/twin-runtime.js";
import { IiotFleet } from "../src/simulator/index.js";
import { loadThingModels, SAMPLE_SCHEMA_BASE, ThingModelRegistry } from "../src/wot/model-registry.js";
import type { JsonObject } from "../src/wot/rdf.js";
import { type Benchmark, type BenchRow, exited, nextMessage, valueRow } from "./harness.js";

/**
 * What metrics cost on the hot path, metrics off against on in the same run: (1) PT publish ->
 * MQTT consumer notification p50/p99 of one twin at 20 Hz; (2) N twins at 1 Hz: the gateway
 * process's CPU and the share of twins with ODTE >= 0.99 at Td = 10 ms. "On" is what the gateway
 * does with DTC_METRICS=on: every twin's commit hook observes the two histograms, and the registry
 * (per-twin series, process defaults) is scraped every 5 s (Prometheus' default is 15 s).
 * Off and on alternate in blocks, so both see the same conditions; the PTs of (2) run in a child.
 */

const IIOT = new URL("iiot-device.tm.jsonld", SAMPLE_SCHEMA_BASE).href;
const THIS_FILE = fileURLToPath(import.meta.url);
const log = (line: string) => process.stdout.write(`  metrics: ${line}\n`);

const LATENCY = { rateHz: 20, blocks: 16, perBlock: 50, warmup: 20 };
/** How often "on" scrapes the registry: three times Prometheus' default rate (15 s). */
const SCRAPE_MS = 5000;
const FLEET = { n: 1000, blocks: 4, windowS: 5, settleMs: 3000, tdMs: 10 };

/** The metrics of a gateway over `runtime`'s twins, as src/observability/metrics.ts makes them. */
function metricsOver(runtime: TwinRuntime) {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry });
  const twins = new TwinMetrics(registry, () =>
    runtime.list().map((twin) => ({
      twin: twin.id,
      schema: twin.config.schema,
      node: "local",
      platform: "in-process",
      status: { lifecycle: twin.lifecycleState, entanglement: twin.entanglement },
      counters: twin.counters,
    })),
  );
  const observer = (twin: Twin) =>
    twins.updateObserver({
      twin: twin.id,
      schema: twin.config.schema,
      node: "local",
      platform: "in-process",
    });
  /** Scrapes every SCRAPE_MS until stopped; resolves with the scrapes' durations, ms. */
  const scraping = () => {
    let stop = false;
    const times: number[] = [];
    const done = (async () => {
      while (!stop) {
        const t0 = performance.now();
        await exposition(registry, twins);
        times.push(performance.now() - t0);
        await sleep(SCRAPE_MS);
      }
    })();
    return async () => {
      stop = true;
      await done;
      return times;
    };
  };
  return { observer, scraping };
}

async function connect(url: string): Promise<MqttClient> {
  const client = await mqtt.connectAsync(url, { reconnectPeriod: 0 });
  noDelay(client);
  return client;
}

function observeTopic(td: JsonObject, property: string): string {
  const forms = ((td.properties as Record<string, JsonObject>)[property]?.forms ?? []) as JsonObject[];
  const form = forms.find(
    (f) => String(f.href).startsWith("mqtt:") && [f.op].flat().includes("observeproperty"),
  );
  if (!form) throw new Error(`${property} has no MQTT observeproperty form`);
  return new URL(String(form.href)).pathname.slice(1);
}

const telemetry = (seq: number) =>
  JSON.stringify({ ts: Date.now(), seq, temperature: seq, energy: seq, rate: 20 });
const ns = (ms: number) => Math.max(1, Math.round(ms * 1e6));

/** (1) One twin; blocks of messages alternate metrics off and on. */
async function latency(brokerUrl: string, runtime: TwinRuntime): Promise<BenchRow[]> {
  const metrics = metricsOver(runtime);
  const twin = await runtime.create({ id: "lat", schema: IIOT, placeholders: { DEVICE_ID: "lat" } });
  const [pub, sub] = await Promise.all([connect(brokerUrl), connect(brokerUrl)]);
  const receiveOn = observeTopic(runtime.description("lat"), "temperature");
  await sub.subscribeAsync(receiveOn, { qos: 0 });
  const hist = { off: createHistogram(), on: createHistogram() };
  const sent = new Map<number, { at: number; mode: "off" | "on" }>();
  sub.on("message", (_topic, payload) => {
    const at = performance.now();
    const seq = JSON.parse(String(payload)) as number;
    const s = sent.get(seq);
    if (s) hist[s.mode].record(ns(at - s.at));
  });
  let seq = 0;
  for (let w = 0; w < LATENCY.warmup; w++) {
    pub.publish("dtc/iiot/lat/telemetry", telemetry(++seq), { qos: 0 });
    await sleep(1000 / LATENCY.rateHz);
  }
  const scrapes: number[] = [];
  for (let block = 0; block < LATENCY.blocks; block++) {
    const mode = block % 2 === 0 ? "off" : "on";
    twin.onCommit = mode === "on" ? metrics.observer(twin) : undefined;
    const stopScraping = mode === "on" ? metrics.scraping() : undefined;
    for (let i = 0; i < LATENCY.perBlock; i++) {
      seq++;
      sent.set(seq, { at: performance.now(), mode });
      pub.publish("dtc/iiot/lat/telemetry", telemetry(seq), { qos: 0 });
      await sleep(1000 / LATENCY.rateHz);
    }
    if (stopScraping) scrapes.push(...(await stopScraping()));
  }
  await sleep(300);
  await Promise.all([pub.endAsync(), sub.endAsync()]);
  await runtime.remove("lat");
  const expected = (LATENCY.blocks / 2) * LATENCY.perBlock;
  log(
    `latency: received off ${hist.off.count}/${expected}, on ${hist.on.count}/${expected}; ${scrapes.length} scrapes, mean ${mean(scrapes).toFixed(2)} ms`,
  );
  const rows: BenchRow[] = [];
  for (const p of [50, 99]) {
    const off = valueRow(
      `latency p${p} PT -> MQTT consumer: metrics off`,
      hist.off.percentile(p) / 1e6,
      "ms",
    );
    rows.push(
      off,
      valueRow(`latency p${p} PT -> MQTT consumer: metrics on`, hist.on.percentile(p) / 1e6, "ms", off),
    );
  }
  return rows;
}

const mean = (values: number[]) =>
  values.length === 0 ? 0 : values.reduce((a, b) => a + b, 0) / values.length;

/** (2) N twins at 1 Hz: blocks of one window W each alternate metrics off and on. */
async function fleet(brokerUrl: string, runtime: TwinRuntime): Promise<BenchRow[]> {
  const metrics = metricsOver(runtime);
  const fidelity = {
    desiredTimeliness: FLEET.tdMs,
    expectedUpdateRate: 1,
    odteWindow: FLEET.windowS,
    odteThreshold: 0.99,
  };
  const twins: Twin[] = [];
  for (let i = 1; i <= FLEET.n; i++) {
    twins.push(
      await runtime.create({ id: `t${i}`, schema: IIOT, placeholders: { DEVICE_ID: `t${i}` }, fidelity }),
    );
  }
  const child = fork(THIS_FILE, ["fleet", brokerUrl, String(FLEET.n)], { execArgv: [] });
  await nextMessage(child, "started");
  const result = {
    off: { cpu: [] as number[], share: [] as number[] },
    on: { cpu: [] as number[], share: [] as number[] },
  };
  const scrapes: number[] = [];
  try {
    await sleep(FLEET.settleMs + FLEET.windowS * 1000);
    for (let block = 0; block < FLEET.blocks; block++) {
      const mode = block % 2 === 0 ? "off" : "on";
      for (const twin of twins) twin.onCommit = mode === "on" ? metrics.observer(twin) : undefined;
      const stopScraping = mode === "on" ? metrics.scraping() : undefined;
      // One window W to let the previous block's window pass, one measured.
      await sleep(FLEET.windowS * 1000);
      const cpu0 = process.cpuUsage();
      const t0 = performance.now();
      await sleep(FLEET.windowS * 1000);
      const cpu = process.cpuUsage(cpu0);
      const elapsedS = (performance.now() - t0) / 1000;
      if (stopScraping) scrapes.push(...(await stopScraping()));
      result[mode].cpu.push((cpu.user + cpu.system) / 1000 / elapsedS);
      result[mode].share.push(twins.filter((t) => t.entanglement.odte >= 0.99).length / FLEET.n);
      log(
        `fleet N=${FLEET.n} block ${block + 1} (metrics ${mode}): CPU ${result[mode].cpu.at(-1)?.toFixed(0)} ms/s, ODTE>=0.99 ${(100 * (result[mode].share.at(-1) ?? 0)).toFixed(1)}%`,
      );
    }
  } finally {
    child.send({ type: "stop" });
    await exited(child);
  }
  log(`fleet: ${scrapes.length} scrapes of ${FLEET.n} twins' series, mean ${mean(scrapes).toFixed(1)} ms`);
  const head = `N=${FLEET.n} twins at 1 Hz (Td=${FLEET.tdMs} ms, W=${FLEET.windowS} s)`;
  const cpuOff = valueRow(`${head}: gateway CPU, metrics off`, mean(result.off.cpu), "ms/s");
  const shareOff = valueRow(`${head}: ODTE>=0.99 share, metrics off`, 100 * mean(result.off.share), "%");
  return [
    cpuOff,
    valueRow(`${head}: gateway CPU, metrics on (5 s scrapes)`, mean(result.on.cpu), "ms/s", cpuOff),
    shareOff,
    valueRow(`${head}: ODTE>=0.99 share, metrics on`, 100 * mean(result.on.share), "%", shareOff),
    valueRow(`scrape of ${FLEET.n} twins' series (mean)`, mean(scrapes), "ms"),
  ];
}

export const benchmark: Benchmark = {
  name: "metrics",
  description: "cost of metrics on the hot path: off vs on, same run (embedded aedes on loopback)",
  async run() {
    const registry = new ThingModelRegistry();
    await loadThingModels(registry, thingModelsDir);
    const broker = await startEmbeddedBroker({ port: 0 });
    const runtime = await TwinRuntime.start({
      registry,
      brokerUrl: broker.url,
      http: { port: 0, address: "127.0.0.1" },
    });
    try {
      return [...(await latency(broker.url, runtime)), ...(await fleet(broker.url, runtime))];
    } finally {
      await runtime.close();
      await broker.close();
    }
  },
};

/** The PTs of (2), in a child process: PTs are not the gateway. */
async function fleetChild(brokerUrl: string, count: number): Promise<void> {
  const fleet = new IiotFleet({ count, prefix: "t", brokerUrl, rate: 1 });
  await fleet.start();
  process.send?.({ type: "started" });
  await new Promise((resolve) => {
    process.once("message", resolve);
    process.once("disconnect", resolve);
  });
  await fleet.stop();
  if (process.connected) process.disconnect();
}

if (process.argv[1] === THIS_FILE) {
  const [role, ...args] = process.argv.slice(2);
  const run =
    role === "fleet"
      ? fleetChild(args[0] as string, Number(args[1]))
      : Promise.reject(new Error(`unknown bench child role ${role}`));
  run.catch((err: unknown) => {
    process.stderr.write(`${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
    process.exit(1);
  });
}
