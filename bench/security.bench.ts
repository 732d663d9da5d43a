import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createHistogram, type RecordableHistogram } from "node:perf_hooks";
import mqtt, { type MqttClient } from "mqtt";
import { Client } from "undici";
import { type GatewayProcess, startGatewayProcess } from "../test/gateway-process.js";
import { type Benchmark, type BenchRow, valueRow } from "./harness.js";

/**
 * What authentication and the ACLs cost: two gateway processes in the same run, one with
 * DTC_AUTH=off (the baseline) and one with it on (API tokens over HTTP; the embedded broker's
 * authenticate and authorizePublish/Subscribe hooks over MQTT), measured in alternating rounds
 * (A B A B) so that drift of the machine falls on both alike.
 *  - `PUT /things/{id}`: sequential registrations of a ~2 KB TD over a keep-alive connection
 *    (the token checked on each: a hash and a map lookup).
 *  - PT publish -> consumer notification: a PT client publishes telemetry of a twin, a consumer
 *    subscribed to the twin's `temperature` property topic receives the twin's update (the broker
 *    authorises the PT's publish, the twin's commit and publish, and the delivery).
 */

const ROUNDS = Number(process.env.DTC_BENCH_SECURITY_ROUNDS ?? 3);
const PUTS_PER_ROUND = 400;
const MESSAGES_PER_ROUND = 200;

const log = (line: string) => process.stdout.write(`  security: ${line}\n`);

interface Side {
  name: "auth off" | "auth on";
  gateway: GatewayProcess;
  dataDir: string;
  /** Authorization header value; undefined with auth off. */
  bearer: string | undefined;
  /** MQTT passwords: the PT's device token and the consumer's reader token. */
  device?: string;
  reader?: string;
  brokerUrl: string;
  client: Client;
  puts: RecordableHistogram;
  notifications: RecordableHistogram;
}

function td(id: string, i: number): string {
  const properties: Record<string, unknown> = {};
  for (let p = 0; p < 12; p++) {
    properties[`p${p}`] = {
      type: "number",
      description: `property ${p} of thing ${i}, with some text to make the TD about two kilobytes`,
      forms: [{ href: `https://device-${i}.example/p${p}` }],
    };
  }
  return JSON.stringify({
    "@context": "https://www.w3.org/2022/wot/td/v1.1",
    id,
    title: `Thing ${i}`,
    securityDefinitions: { nosec_sc: { scheme: "nosec" } },
    security: "nosec_sc",
    properties,
  });
}

async function request(
  side: Side,
  method: string,
  path: string,
  body?: string,
): Promise<{ status: number; text: string }> {
  const res = await side.client.request({
    path,
    method: method as "GET",
    headers: {
      ...(body === undefined ? {} : { "Content-Type": "application/json" }),
      ...(side.bearer ? { Authorization: side.bearer } : {}),
    },
    ...(body === undefined ? {} : { body }),
  });
  return { status: res.statusCode, text: await res.body.text() };
}

async function start(name: Side["name"]): Promise<Side> {
  const dataDir = mkdtempSync(join(tmpdir(), "dtc-bench-sec-"));
  const gateway = await startGatewayProcess({
    DTC_DATA_DIR: dataDir,
    DTC_AUTH: name === "auth on" ? "on" : "off",
    DTC_ENTANGLEMENT_INTERVAL_MS: "1000",
    // The bench writes faster than a person: no 429 in the figures.
    DTC_WRITE_RATE_LIMIT: "1000000",
  });
  const side: Side = {
    name,
    gateway,
    dataDir,
    bearer: undefined,
    brokerUrl: "",
    client: new Client(gateway.url, { pipelining: 1 }),
    puts: createHistogram(),
    notifications: createHistogram(),
  };
  if (name === "auth on") {
    side.bearer = `Bearer ${readFileSync(join(dataDir, "admin.token"), "utf8").trim()}`;
    const token = async (role: string) =>
      (
        JSON.parse(
          (await request(side, "POST", "/api/tokens", JSON.stringify({ name: role, role }))).text,
        ) as { token: string }
      ).token;
    side.device = await token("device:b1");
    side.reader = await token("reader");
  }
  const started = await request(
    side,
    "POST",
    "/api/instances",
    JSON.stringify({ package: "iiot-device", node: "local", id: "b1", configuration: { DEVICE_ID: "b1" } }),
  );
  if (started.status !== 201) throw new Error(`${name}: start b1: ${started.status} ${started.text}`);
  const node = JSON.parse((await request(side, "GET", "/api/instances/b1")).text) as {
    td: { properties: Record<string, { forms: { href: string }[] }> };
  };
  const mqttForm = node.td.properties.temperature?.forms.find((f) => f.href.startsWith("mqtt"));
  if (!mqttForm) throw new Error(`${name}: the twin's TD has no MQTT form`);
  // mqtt: is no special scheme: URL gives it no origin.
  const form = new URL(mqttForm.href);
  side.brokerUrl = `${form.protocol}//${form.host}`;
  return side;
}

const connect = (url: string, password: string | undefined) =>
  new Promise<MqttClient>((resolve, reject) => {
    const client = mqtt.connect(url, {
      ...(password ? { username: "bench", password } : {}),
      reconnectPeriod: 0,
    });
    client.once("connect", () => resolve(client));
    client.once("error", reject);
  });

async function putRound(side: Side, round: number): Promise<void> {
  for (let i = 0; i < PUTS_PER_ROUND; i++) {
    const id = `urn:bench:${round}:${i}`;
    const t0 = performance.now();
    const res = await request(side, "PUT", `/things/${encodeURIComponent(id)}`, td(id, i));
    side.puts.record(Math.max(1, Math.round((performance.now() - t0) * 1e6)));
    if (res.status !== 201) throw new Error(`${side.name}: PUT ${id}: ${res.status} ${res.text}`);
  }
}

async function notificationRound(side: Side): Promise<void> {
  const consumer = await connect(side.brokerUrl, side.reader);
  const pt = await connect(side.brokerUrl, side.device);
  try {
    await consumer.subscribeAsync("b1/properties/temperature");
    // The twin binds when it hears from its PT.
    pt.publish("dtc/iiot/b1/status", "online", { retain: true });
    for (let i = 0; i < MESSAGES_PER_ROUND; i++) {
      const temperature = 20 + ((i * 7919) % 1000) / 100 + Math.random() / 1000;
      const received = new Promise<void>((resolve, reject) => {
        const timer = setTimeout(
          () => reject(new Error(`${side.name}: no notification for message ${i}`)),
          5000,
        );
        const onMessage = (_topic: string, payload: Buffer) => {
          if (Number(payload.toString()) !== temperature) return;
          clearTimeout(timer);
          consumer.off("message", onMessage);
          resolve();
        };
        consumer.on("message", onMessage);
      });
      const t0 = performance.now();
      pt.publish(
        "dtc/iiot/b1/telemetry",
        JSON.stringify({ ts: Date.now(), seq: i, temperature, energy: i, rate: 5 }),
      );
      await received;
      side.notifications.record(Math.max(1, Math.round((performance.now() - t0) * 1e6)));
    }
  } finally {
    await Promise.all([consumer.endAsync(), pt.endAsync()]);
  }
}

const ms = (h: RecordableHistogram, p: number) => h.percentile(p) / 1e6;

export const benchmark: Benchmark = {
  name: "security",
  description: "cost of authentication and MQTT ACLs: auth on vs off (baseline), alternating rounds",
  async run(): Promise<BenchRow[]> {
    const sides = [await start("auth off"), await start("auth on")];
    try {
      for (let round = 0; round < ROUNDS; round++) {
        for (const side of sides) {
          await putRound(side, round);
          await notificationRound(side);
        }
        log(`round ${round + 1}/${ROUNDS} done`);
      }
      const [off, on] = sides as [Side, Side];
      const rows: BenchRow[] = [];
      for (const [what, h] of [
        ["PUT /things p50", (s: Side) => ms(s.puts, 50)],
        ["PUT /things p99", (s: Side) => ms(s.puts, 99)],
        ["PT publish -> consumer notification p50", (s: Side) => ms(s.notifications, 50)],
        ["PT publish -> consumer notification p99", (s: Side) => ms(s.notifications, 99)],
      ] as const) {
        const base = valueRow(`${what}, auth off`, h(off), "ms");
        rows.push(base, valueRow(`${what}, auth on`, h(on), "ms", base));
      }
      return rows;
    } finally {
      for (const side of sides) {
        await side.client.close();
        await side.gateway.stop();
        rmSync(side.dataDir, { recursive: true, force: true });
      }
    }
  },
};
