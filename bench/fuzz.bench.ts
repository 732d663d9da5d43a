import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import fc from "fast-check";
import mqtt from "mqtt";
import { type GatewayProcess, startGatewayProcess } from "../test/gateway-process.js";
import {
  type FuzzTargets,
  hostileMessages,
  hostileRequests,
  isFault,
  pool,
  RequestSender,
  summary,
} from "../test/hostile-requests.js";
import { type Benchmark, type BenchRow, valueRow } from "./harness.js";

/**
 * Memory under a hostile load (the reliability issue's "done means"): a gateway process with a
 * twin on genuine 20 Hz telemetry takes 10,000 hostile requests (test/hostile-requests.ts, the
 * fuzz suite's generator) and 5,000 hostile MQTT messages, 8 at a time; its RSS is read before
 * (after a warm-up of 1,000), right after, and after a minute idle. The target: back within 20% of
 * the starting figure. The 5xx count is reported too (the fuzz suite asserts it is 0).
 *
 * DTC_BENCH_FUZZ_REQUESTS and DTC_BENCH_FUZZ_IDLE_MS shorten it; DTC_BENCH_FUZZ_SEED changes the draw.
 */

const REQUESTS = Number(process.env.DTC_BENCH_FUZZ_REQUESTS ?? 10_000);
const IDLE_MS = Number(process.env.DTC_BENCH_FUZZ_IDLE_MS ?? 60_000);
const SEED = Number(process.env.DTC_BENCH_FUZZ_SEED ?? 1);
const WARMUP = 1_000;
const CONCURRENCY = 8;

const log = (line: string) => process.stdout.write(`  fuzz: ${line}\n`);

const rssMiB = (pid: number) => {
  const line = readFileSync(`/proc/${pid}/status`, "utf8")
    .split("\n")
    .find((l) => l.startsWith("VmRSS:"));
  return Number(line?.match(/\d+/)?.[0] ?? Number.NaN) / 1024;
};

const targets: FuzzTargets = { twin: "fz", device: "fz", victim: "fz-victim", node: "fz-edge" };

async function run(): Promise<BenchRow[]> {
  const dataDir = mkdtempSync(join(tmpdir(), "dtc-bench-fuzz-"));
  const sender = new RequestSender(CONCURRENCY);
  let gateway: GatewayProcess | undefined;
  let client: mqtt.MqttClient | undefined;
  let genuine: ReturnType<typeof setInterval> | undefined;
  try {
    gateway = await startGatewayProcess({
      DTC_DATA_DIR: dataDir,
      DTC_LOG_LEVEL: "info",
      DTC_WRITE_RATE_LIMIT: "1000000",
    });
    const pid = gateway.child.pid as number;
    const api = async (method: string, path: string, body: unknown) => {
      const res = await fetch(`${gateway?.url}${path}`, {
        method,
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify(body),
      });
      if (res.status >= 300) throw new Error(`${method} ${path}: ${res.status} ${await res.text()}`);
      return (await res.json()) as Record<string, unknown>;
    };
    await api("POST", "/api/nodes", {
      id: targets.node,
      platform: "in-process",
      tier: "edge",
      capabilities: { cpu: 4, memory: 4096, gpu: 0 },
    });
    const twin = await api("POST", "/api/instances", {
      package: "iiot-device",
      node: "local",
      id: targets.twin,
      configuration: { DEVICE_ID: targets.device },
    });
    const forms = (twin.td as { properties: Record<string, { forms: { href: string }[] }> }).properties
      .temperature?.forms;
    const form = new URL(forms?.find((f) => f.href.startsWith("mqtt"))?.href ?? "");
    client = await mqtt.connectAsync(`${form.protocol}//${form.host}`, { reconnectPeriod: 100 });
    let seq = 0;
    const pt = client;
    genuine = setInterval(() => {
      seq++;
      pt.publish(
        `dtc/iiot/${targets.device}/telemetry`,
        JSON.stringify({ ts: Date.now(), seq, temperature: 20 + (seq % 6000) / 100, energy: seq, rate: 20 }),
      );
    }, 50);

    const blast = async (seed: number, count: number) => {
      const requests = fc.sample(hostileRequests(targets), { seed, numRuns: count });
      const messages = fc.sample(hostileMessages(targets), { seed, numRuns: Math.ceil(count / 2) });
      let sent = 0;
      let faults = 0;
      const t0 = performance.now();
      await pool(requests, CONCURRENCY, async (r) => {
        const m = messages[sent++ % messages.length];
        if (m && sent % 2 === 0) {
          try {
            pt.publish(m.topic, m.payload, () => undefined);
          } catch {
            // mqtt.js refuses some topics itself.
          }
        }
        const outcome = await sender.send(gateway?.url as string, r);
        if (isFault(outcome)) {
          faults++;
          if (faults <= 5) log(`fault: ${summary(outcome)}`);
        }
      });
      return { faults, perSec: count / ((performance.now() - t0) / 1000) };
    };

    await blast(SEED + 1000, WARMUP);
    const before = rssMiB(pid);
    log(`RSS after a warm-up of ${WARMUP}: ${before.toFixed(1)} MiB; sending ${REQUESTS}`);
    const { faults, perSec } = await blast(SEED, REQUESTS);
    const after = rssMiB(pid);
    log(`RSS right after: ${after.toFixed(1)} MiB; ${faults} faults; idle for ${IDLE_MS / 1000} s`);
    await new Promise((resolve) => setTimeout(resolve, IDLE_MS));
    const idle = rssMiB(pid);
    const start = valueRow("RSS before (after warm-up)", before, "MiB");
    return [
      start,
      valueRow(`RSS right after ${REQUESTS} hostile requests`, after, "MiB", start),
      valueRow(`RSS after ${IDLE_MS / 1000} s idle`, idle, "MiB", start),
      valueRow("hostile requests answered", perSec, "req/s"),
      valueRow("5xx or unanswered", faults, "requests"),
    ];
  } finally {
    if (genuine) clearInterval(genuine);
    await client?.endAsync();
    sender.close();
    await gateway?.stop();
    rmSync(dataDir, { recursive: true, force: true });
  }
}

export const benchmark: Benchmark = {
  name: "fuzz",
  description:
    "gateway RSS before, right after and a minute after 10,000 hostile requests (target: idle within 20%)",
  run,
};
