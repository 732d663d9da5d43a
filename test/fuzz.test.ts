import { monitorEventLoopDelay } from "node:perf_hooks";
import fc from "fast-check";
import mqtt from "mqtt";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { Gateway } from "../src/gateway.js";
import { waitFor } from "./helpers.js";
import {
  type FuzzTargets,
  hostileMessages,
  hostileRequests,
  isFault,
  type Outcome,
  pool,
  RequestSender,
  summary,
} from "./hostile-requests.js";
import { call, startTestGateway } from "./manager-client.js";

/**
 * The fuzz suite of the reliability issue: seeded batches of hostile requests over every route
 * family and hostile MQTT messages on every topic, sent concurrently while a twin runs on genuine
 * telemetry; then conflicting operations on one instance at once. It asserts what a user would:
 * no 5xx (a 503 with Retry-After is back-pressure, not a fault), no crash, the event loop never
 * held for 1 s, and nothing lost (the twin follows its PT, a registered TD is intact).
 *
 * Short by default (CI). Longer: DTC_FUZZ_RUNS=10000 DTC_FUZZ_SEEDS=1,2,3 npx vitest run test/fuzz.test.ts
 * A failure names its seed: DTC_FUZZ_SEEDS=<seed> replays it.
 */
const SEEDS = (process.env.DTC_FUZZ_SEEDS ?? "1,2,3").split(",").map(Number);
const RUNS = Number(process.env.DTC_FUZZ_RUNS ?? 400);
const CONCURRENCY = 8;
const sender = new RequestSender(CONCURRENCY);
const STALL_NS = 1e9;

const targets: FuzzTargets = { twin: "fz", device: "fz", victim: "fz-victim", node: "fz-edge" };

describe(`fuzz: hostile requests and messages (seeds ${SEEDS.join(",")}, ${RUNS} requests each)`, () => {
  let gateway: Gateway;
  let client: mqtt.MqttClient;
  let genuine: ReturnType<typeof setInterval>;
  const published: { at: number; temperature: number }[] = [];
  const uncaught: unknown[] = [];
  const onUncaught = (err: unknown) => uncaught.push(err instanceof Error ? (err.stack ?? err.message) : err);
  const keepTd = {
    "@context": "https://www.w3.org/2022/wot/td/v1.1",
    id: "urn:fuzz:keep",
    title: "kept intact",
    securityDefinitions: { nosec_sc: { scheme: "nosec" } },
    security: "nosec_sc",
    properties: { p: { type: "number", forms: [{ href: "http://127.0.0.1:1/p" }] } },
  };

  beforeAll(async () => {
    process.on("uncaughtException", onUncaught);
    process.on("unhandledRejection", onUncaught);
    gateway = await startTestGateway({ DTC_WRITE_RATE_LIMIT: "1000000" });
    const node = await call(gateway.url, "POST", "/api/nodes", {
      id: targets.node,
      platform: "in-process",
      tier: "edge",
      capabilities: { cpu: 4, memory: 4096, gpu: 0 },
    });
    expect(node.status).toBe(201);
    const twin = await call(gateway.url, "POST", "/api/instances", {
      package: "iiot-device",
      node: "local",
      id: targets.twin,
      configuration: { DEVICE_ID: targets.device },
    });
    expect(twin.status).toBe(201);
    expect((await call(gateway.url, "PUT", `/things/${encodeURIComponent(keepTd.id)}`, keepTd)).status).toBe(
      201,
    );
    // The PT: genuine telemetry at 20 Hz, each reading a value the twin's state must reach.
    client = await mqtt.connectAsync(gateway.brokerUrl, { reconnectPeriod: 100 });
    let seq = 0;
    genuine = setInterval(() => {
      seq++;
      const temperature = 20 + (seq % 6000) / 100;
      published.push({ at: Date.now(), temperature });
      if (published.length > 200) published.shift();
      client.publish(
        `dtc/iiot/${targets.device}/telemetry`,
        JSON.stringify({ ts: Date.now(), seq, temperature, energy: seq, rate: 20 }),
      );
    }, 50);
  });

  afterAll(async () => {
    clearInterval(genuine);
    await client?.endAsync();
    await gateway?.close();
    sender.close();
    process.off("uncaughtException", onUncaught);
    process.off("unhandledRejection", onUncaught);
  });

  /** The twin's state follows its PT: its temperature is one of the last second's readings. */
  const followsItsPt = () =>
    waitFor(
      "the twin to commit a current reading",
      async () => {
        const res = await fetch(`${gateway.url}/twins/${targets.twin}/properties/temperature`);
        if (res.status !== 200) return false;
        const value = (await res.json()) as number;
        const recent = published.filter((p) => p.at > Date.now() - 1500).map((p) => p.temperature);
        return recent.includes(value);
      },
      10_000,
    );

  const intact = async () => {
    expect((await fetch(`${gateway.url}/healthz`)).status).toBe(200);
    const kept = await call(gateway.url, "GET", `/things/${encodeURIComponent(keepTd.id)}`);
    expect(kept.status).toBe(200);
    expect(kept.body).toMatchObject({ title: keepTd.title, properties: keepTd.properties });
    await followsItsPt();
    expect(uncaught).toEqual([]);
  };

  for (const seed of SEEDS) {
    it(`seed ${seed}: no 5xx, no crash, no stall over 1 s, nothing lost`, {
      timeout: 120_000 + RUNS * 100,
    }, async () => {
      await intact();
      const requests = fc.sample(hostileRequests(targets), { seed, numRuns: RUNS });
      const messages = fc.sample(hostileMessages(targets), { seed, numRuns: Math.ceil(RUNS / 2) });
      const delay = monitorEventLoopDelay({ resolution: 10 });
      delay.enable();
      const faults: Outcome[] = [];
      let sent = 0;
      await pool(requests, CONCURRENCY, async (r) => {
        const m = messages[sent++ % messages.length];
        if (m && sent % 2 === 0) {
          try {
            client.publish(m.topic, m.payload, () => undefined);
          } catch {
            // mqtt.js refuses some topics itself (wildcards, NUL): the client's limit, not the gateway's.
          }
        }
        const outcome = await sender.send(gateway.url, r);
        if (isFault(outcome)) faults.push(outcome);
      });
      delay.disable();
      const maxMs = delay.max / 1e6;
      expect(faults.map(summary), `seed ${seed}: ${faults.length} faults of ${RUNS}`).toEqual([]);
      expect(maxMs, `seed ${seed}: the event loop was held for ${maxMs.toFixed(0)} ms`).toBeLessThan(
        STALL_NS / 1e6,
      );
      await intact();
    });
  }

  it("conflicting operations on one instance at once leave it coherent: running where it says, or gone everywhere", {
    timeout: 120_000,
  }, async () => {
    const api = (method: string, path: string, body?: unknown) => call(gateway.url, method, path, body);
    const start = {
      package: "iiot-device",
      node: "local",
      id: targets.victim,
      configuration: { DEVICE_ID: targets.victim },
    };
    for (let round = 0; round < 5; round++) {
      const existing = await api("GET", `/api/instances/${targets.victim}`);
      if (existing.status === 404) expect((await api("POST", "/api/instances", start)).status).toBe(201);
      const ops: [string, string, unknown?][] = [
        ["POST", `/api/instances/${targets.victim}/move`, { node: round % 2 === 0 ? targets.node : "local" }],
        ["POST", `/api/instances/${targets.victim}/stop`],
        ["POST", `/api/instances/${targets.victim}/start`],
        ["POST", `/api/instances/${targets.victim}/restart`],
        ["POST", `/api/instances/${targets.victim}/snapshots`],
        ["DELETE", `/api/instances/${targets.victim}`],
        ["GET", `/twins/${targets.victim}/properties/lifecycleState`],
        ["POST", `/twins/${targets.victim}/actions/setRate`, 5],
      ];
      // Each round in another order: which one wins differs, the rules must not.
      const shuffled =
        fc.sample(fc.shuffledSubarray(ops, { minLength: ops.length }), { seed: round, numRuns: 1 })[0] ?? ops;
      const answers = await Promise.all(
        shuffled.map(([m, p, b]) => api(m, p, b).then((a) => ({ op: `${m} ${p}`, ...a }))),
      );
      const faults = answers.filter((a) => a.status >= 500 && a.status !== 503);
      expect(faults.map((a) => `${a.op} -> ${a.status} ${JSON.stringify(a.body).slice(0, 200)}`)).toEqual([]);
      // Coherent afterwards: the instance, its twin and its TD agree.
      const after = await api("GET", `/api/instances/${targets.victim}`);
      const td = await api("GET", `/things/${encodeURIComponent(`urn:dtc:twin:${targets.victim}`)}`);
      if (after.status === 404) {
        expect(td.status).toBe(404);
        await waitFor(
          "the removed twin to stop serving",
          async () => (await fetch(`${gateway.url}/twins/${targets.victim}`)).status === 404,
        );
      } else {
        expect(after.status).toBe(200);
        expect(td.status).toBe(200);
        const lifecycle = await waitFor("the twin to answer", async () => {
          const res = await fetch(`${gateway.url}/twins/${targets.victim}/properties/lifecycleState`);
          return res.status === 200 ? ((await res.json()) as string) : undefined;
        });
        expect(["Unbound", "Bound", "Entangled", "Disentangled", "Done"]).toContain(lifecycle);
        expect(after.body.node === "local" || after.body.node === targets.node).toBe(true);
      }
      const snapshots = await api("GET", `/api/snapshots?instance=${targets.victim}`);
      expect(snapshots.status).toBe(200);
    }
    await intact();
  });
});
