import { type ChildProcess, spawn } from "node:child_process";
import {
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { pino } from "pino";
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from "vitest";
import type { Gateway } from "../src/gateway.js";
import { createLogger } from "../src/logger.js";
import {
  type FileSdEntry,
  PrometheusSdWriter,
  type RunningTwins,
  type ScrapeTarget,
  watchTwinProcesses,
} from "../src/observability/prometheus-sd.js";
import { TwinProcess } from "../src/runtime/twin-process.js";
import { loadTwinProcessSettings } from "../src/runtime/twin-process-config.js";
import { IiotDeviceSimulator } from "../src/simulator/index.js";
import { freePort, startBroker, type TestBroker } from "./brokers.js";
import {
  buildTwinTestImage,
  dockerUnavailable,
  startDockerEngine,
  type TestDockerEngine,
} from "./docker-engine.js";
import { sample, waitFor } from "./helpers.js";
import { type Answer, adminToken, call, FAST, startTestGateway } from "./manager-client.js";

/**
 * Prometheus scraping the twin processes wherever they run: the file_sd_configs file the gateway
 * keeps current (atomically replaced, debounced), the twin process's own /metrics on its management
 * port (and who may read it), and a real Prometheus finding a twin container through the file.
 */

const readEntries = (file: string) => JSON.parse(readFileSync(file, "utf8")) as FileSdEntry[];

const target = (twin: string, url: string, node = "edge-1"): ScrapeTarget => ({
  url,
  twin,
  schema: "https://example.org/tm/press",
  node,
  platform: "docker",
});

describe("the file_sd_configs writer", () => {
  let dir: string;
  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), "dtc-sd-"));
  });
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  it("lists each twin process at its management host:port with its labels, ordered by twin", async () => {
    const file = join(dir, "sub", "targets.json");
    const writer = new PrometheusSdWriter({
      file,
      targets: () => [target("b-2", "http://[::1]:9102/"), target("a-1", "http://127.0.0.1:9101", "edge-2")],
    });
    await writer.flush();
    expect(readEntries(file)).toEqual([
      {
        targets: ["127.0.0.1:9101"],
        labels: {
          twin: "a-1",
          schema: "https://example.org/tm/press",
          node: "edge-2",
          platform: "docker",
          __metrics_path__: "/metrics",
        },
      },
      {
        targets: ["[::1]:9102"],
        labels: expect.objectContaining({ twin: "b-2", node: "edge-1", __metrics_path__: "/metrics" }),
      },
    ]);
    await writer.close();
  });

  it("replaces the file whole (a new file renamed over it), leaves no temp file, and drops stopped twins", async () => {
    const file = join(dir, "targets.json");
    let running = [target("a-1", "http://127.0.0.1:9101"), target("b-2", "http://127.0.0.1:9102")];
    const writer = new PrometheusSdWriter({ file, targets: () => running, debounceMs: 0 });
    await writer.flush();
    const first = statSync(file).ino;
    expect(readEntries(file).map((e) => e.labels.twin)).toEqual(["a-1", "b-2"]);
    running = running.filter((t) => t.twin !== "a-1");
    await writer.flush();
    expect(statSync(file).ino).not.toBe(first);
    expect(readEntries(file).map((e) => e.labels.twin)).toEqual(["b-2"]);
    running = [];
    await writer.flush();
    expect(readEntries(file)).toEqual([]);
    expect(readdirSync(dir)).toEqual(["targets.json"]);
    // Unchanged targets: the file is left alone.
    const unchanged = statSync(file).ino;
    await writer.flush();
    expect(statSync(file).ino).toBe(unchanged);
    await writer.close();
  });

  it("writes at most once per debounce interval however many changes come meanwhile", async () => {
    const file = join(dir, "targets.json");
    let reads = 0;
    let running: ScrapeTarget[] = [];
    const writer = new PrometheusSdWriter({
      file,
      debounceMs: 300,
      targets: () => {
        reads++;
        return running;
      },
    });
    await writer.flush();
    expect(reads).toBe(1);
    const started = Date.now();
    for (let i = 0; i < 50; i++) {
      running = [...running, target(`t-${String(i).padStart(2, "0")}`, `http://127.0.0.1:${10_000 + i}`)];
      writer.schedule();
    }
    await waitFor("the 50 twins in the file", () => existsSync(file) && readEntries(file).length === 50);
    expect(Date.now() - started).toBeGreaterThanOrEqual(250);
    expect(reads).toBe(2);
    await writer.close();
  });

  it("keeps the file at close (the containers outlive the gateway) and writes nothing after", async () => {
    const file = join(dir, "targets.json");
    let running = [target("a-1", "http://127.0.0.1:9101")];
    const writer = new PrometheusSdWriter({ file, targets: () => running, debounceMs: 0 });
    await writer.flush();
    await writer.close();
    running = [];
    writer.schedule();
    await writer.flush();
    expect(readEntries(file).map((e) => e.labels.twin)).toEqual(["a-1"]);
  });

  it("says so when the file cannot be written, does not throw, and writes it once it can", async () => {
    const blocker = join(dir, "not-a-dir");
    writeFileSync(blocker, "");
    const file = join(blocker, "targets.json");
    const lines: string[] = [];
    const logger = pino({ level: "warn" }, { write: (line: string) => void lines.push(line) });
    const writer = new PrometheusSdWriter({
      file,
      targets: () => [target("a-1", "http://127.0.0.1:9101")],
      retryMs: 50,
      logger,
    });
    await writer.flush();
    expect(lines.join("")).toMatch(/could not write the targets file/);
    rmSync(blocker);
    mkdirSync(blocker);
    await waitFor("the file written on a retry", () => existsSync(file));
    expect(readEntries(file)).toHaveLength(1);
    await writer.close();
  });

  it("follows the manager's running twins: those with a process of their own, kept current on changes", async () => {
    const file = join(dir, "targets.json");
    const listeners = new Set<() => void>();
    const twins = new Map<string, { metricsTarget?(): string | undefined }>();
    const running: RunningTwins = {
      running: () =>
        [...twins].map(([id, handle]) => ({
          record: { id, schema: "https://example.org/tm/press", node: "n", platform: "docker" },
          handle,
        })),
      onRunningChange: (l) => {
        listeners.add(l);
        return () => listeners.delete(l);
      },
    };
    const changed = () => {
      for (const l of listeners) l();
    };
    const watch = watchTwinProcesses(running, { file, debounceMs: 20 });
    await waitFor("the first (empty) file", () => existsSync(file));
    expect(readEntries(file)).toEqual([]);
    twins.set("in-proc", {});
    twins.set("box", { metricsTarget: () => "http://127.0.0.1:9200" });
    changed();
    await waitFor("the container twin listed", () => readEntries(file).length === 1);
    expect(readEntries(file)[0]?.labels.twin).toBe("box");
    twins.delete("box");
    changed();
    await waitFor("the stopped twin dropped", () => readEntries(file).length === 0);
    await watch.close();
    expect(listeners.size).toBe(0);
  });
});

describe("a twin process's /metrics on its management port", () => {
  let broker: TestBroker;
  const procs: TwinProcess[] = [];
  const sims: IiotDeviceSimulator[] = [];

  beforeAll(async () => {
    broker = await startBroker("aedes");
  });
  afterAll(async () => {
    await Promise.all(sims.map((s) => s.stop()));
    await Promise.all(procs.map((p) => p.close()));
    await broker?.stop();
  });

  async function start(id: string, env: Record<string, string>): Promise<string> {
    const settings = loadTwinProcessSettings({
      DTC_TWIN: JSON.stringify({
        twin: {
          id,
          schema: sample("iiot-device.tm.jsonld"),
          placeholders: { DEVICE_ID: id },
          fidelity: { expectedUpdateRate: 10, odteWindow: 2, desiredTimeliness: 250 },
        },
      }),
      DTC_MQTT_URL: broker.url,
      DTC_TWIN_PORT: "0",
      DTC_TWIN_MANAGEMENT_PORT: "0",
      DTC_TWIN_HOST: "127.0.0.1",
      DTC_ENTANGLEMENT_INTERVAL_MS: "100",
      ...env,
    });
    const proc = await TwinProcess.start(settings, createLogger("silent"));
    procs.push(proc);
    const sim = new IiotDeviceSimulator({ id, brokerUrl: broker.url, rate: 10 });
    sims.push(sim);
    await sim.start();
    return `http://127.0.0.1:${proc.managementPort}`;
  }
  const get = (url: string, token?: string) =>
    fetch(url, token === undefined ? {} : { headers: { Authorization: `Bearer ${token}` } });

  it("exports the twin's series labelled twin, schema, node and platform, its histograms and the process's", async () => {
    const base = await start("m-1", {
      DTC_TWIN_TOKEN: "manage",
      DTC_METRICS_TOKEN: "scrape",
      DTC_TWIN_NODE: "edge-9",
    });
    const labels = `twin="m-1",schema="${sample("iiot-device.tm.jsonld")}",node="edge-9",platform="docker"`;
    const text = await waitFor("updates counted and the ODTE evaluated", async () => {
      const res = await get(`${base}/metrics`, "scrape");
      expect(res.status).toBe(200);
      expect(res.headers.get("content-type")).toMatch(/^text\/plain; version=0\.0\.4/);
      const body = await res.text();
      const count = /^dtc_twin_update_delay_seconds_count\{[^}]*\} (\d+)/m.exec(body)?.[1];
      return Number(count ?? 0) > 5 && body.includes(`dtc_twin_odte{${labels}}`) ? body : undefined;
    });
    expect(text).toMatch(
      new RegExp(`^dtc_twin_messages_total\\{${labels.replace(/[.?/]/g, "\\$&")}\\} [1-9]`, "m"),
    );
    expect(text).toContain(`dtc_twin_lifecycle_state{${labels},state="Unbound"}`);
    expect(text).toMatch(
      /^dtc_twin_processing_seconds_bucket\{le="0\.001",schema="[^"]+",node="edge-9",platform="docker"\}/m,
    );
    expect(text).toMatch(/^process_cpu_user_seconds_total /m);
    expect(text).toMatch(/^nodejs_eventloop_lag_seconds /m);
    // The management token reads it too; the metrics token opens /metrics only.
    expect((await get(`${base}/metrics`, "manage")).status).toBe(200);
    const refused = await get(`${base}/metrics`);
    expect(refused.status).toBe(401);
    expect(await refused.text()).toContain("DTC_METRICS_TOKEN");
    expect((await get(`${base}/metrics`, "wrong")).status).toBe(401);
    expect((await get(`${base}/status`, "scrape")).status).toBe(401);
    expect((await get(`${base}/status`, "manage")).status).toBe(200);
  });

  it("without DTC_METRICS_TOKEN, /metrics needs the management token like every other route", async () => {
    const base = await start("m-2", { DTC_TWIN_TOKEN: "manage" });
    expect((await get(`${base}/metrics`)).status).toBe(401);
    expect((await get(`${base}/metrics`, "scrape")).status).toBe(401);
    const res = await get(`${base}/metrics`, "manage");
    expect(res.status).toBe(200);
    // DTC_TWIN_NODE unset: an empty node label, platform docker.
    expect(await res.text()).toMatch(
      /dtc_twin_odte_threshold\{twin="m-2",schema="[^"]+",node="",platform="docker"\}/,
    );
  });
});

// ---- a real Docker engine and a real Prometheus

const PROMETHEUS = "/usr/bin/prometheus";

/** Why the engine test cannot run here; in CI a missing engine or Prometheus is an error. */
function engineTestUnavailable(): string | undefined {
  const docker = dockerUnavailable();
  if (docker) return docker;
  if (!existsSync(PROMETHEUS)) {
    const reason = `${PROMETHEUS} is not installed (Debian package prometheus)`;
    if (process.env.CI === "true") throw new Error(`CI: ${reason}`);
    return reason;
  }
  return undefined;
}

const SKIP = engineTestUnavailable();
if (SKIP) console.warn(`prometheus-sd.test.ts: skipping the Docker + Prometheus test: ${SKIP}`);

interface TestPrometheus {
  url: string;
  stop(): Promise<void>;
  log(): string;
}

/** A private Prometheus (its own dir, loopback, a free port) scraping the twins of `sdFile`. */
async function startPrometheus(dir: string, sdFile: string, token: string): Promise<TestPrometheus> {
  const port = await freePort();
  writeFileSync(join(dir, "scrape.token"), token, { mode: 0o600 });
  writeFileSync(
    join(dir, "prometheus.yml"),
    [
      "global:",
      "  scrape_interval: 1s",
      "  scrape_timeout: 1s",
      "scrape_configs:",
      "  - job_name: dtc-twins",
      "    honor_labels: true",
      "    authorization:",
      `      credentials_file: ${join(dir, "scrape.token")}`,
      "    file_sd_configs:",
      `      - files: ["${sdFile}"]`,
      "        refresh_interval: 1s",
      "",
    ].join("\n"),
  );
  let output = "";
  const proc: ChildProcess = spawn(
    PROMETHEUS,
    [
      `--config.file=${join(dir, "prometheus.yml")}`,
      `--storage.tsdb.path=${join(dir, "data")}`,
      `--web.listen-address=127.0.0.1:${port}`,
    ],
    { cwd: dir, stdio: ["ignore", "pipe", "pipe"] },
  );
  const keep = (d: Buffer) => {
    output = (output + d.toString()).slice(-16_384);
  };
  proc.stdout?.on("data", keep);
  proc.stderr?.on("data", keep);
  const exited = new Promise<void>((resolve) => proc.once("exit", () => resolve()));
  const url = `http://127.0.0.1:${port}`;
  await waitFor(
    "Prometheus ready",
    async () => {
      if (proc.exitCode !== null) throw new Error(`prometheus exited (${proc.exitCode}):\n${output}`);
      return (await fetch(`${url}/-/ready`).catch(() => undefined))?.ok;
    },
    30_000,
  );
  return {
    url,
    log: () => output,
    stop: async () => {
      if (proc.exitCode === null && proc.signalCode === null) {
        proc.kill("SIGTERM");
        const late = setTimeout(() => proc.kill("SIGKILL"), 10_000);
        await exited;
        clearTimeout(late);
      }
    },
  };
}

describe("Prometheus scraping a twin container through the gateway's file_sd file (real engine)", () => {
  let engine: TestDockerEngine;
  let image: string;
  let dir: string;
  let gateway: Gateway;
  let prometheus: TestPrometheus | undefined;
  let api: (method: string, path: string, body?: unknown) => Promise<Answer>;
  const sims: IiotDeviceSimulator[] = [];
  const METRICS_TOKEN = "prometheus-scrape-token";

  beforeEach((ctx) => {
    if (SKIP) ctx.skip(SKIP);
  });

  beforeAll(async () => {
    if (SKIP) return;
    engine = await startDockerEngine();
    image = await buildTwinTestImage(engine);
    dir = mkdtempSync(join(tmpdir(), "dtc-sd-engine-"));
    mkdirSync(join(dir, "data"));
    mkdirSync(join(dir, "prometheus"));
    gateway = await startTestGateway({
      DTC_DATA_DIR: join(dir, "data"),
      DTC_AUTH: "on",
      DTC_METRICS_TOKEN: METRICS_TOKEN,
      // vfs copies the whole image for each container: on a busy machine that is more than 10 s.
      DTC_PLATFORM_TIMEOUT_MS: "60000",
    });
    const token = adminToken(gateway);
    api = (method, path, body) => call(gateway.url, method, path, body, token);
    const node = await api("POST", "/api/nodes", {
      id: "docker-1",
      platform: "docker",
      tier: "edge",
      capabilities: { cpu: 2, memory: 4096, gpu: 0 },
      latencyMs: 1,
      endpoint: { socketPath: engine.socketPath, network: "host" },
    });
    expect(node.status, JSON.stringify(node.body)).toBe(201);
    const pkg = await api("POST", "/api/packages", {
      id: "iiot-docker",
      schema: "iiot-device",
      platform: "docker",
      artefact: { image },
      requirements: { cpu: 0.5, memory: 256 },
    });
    expect(pkg.status, JSON.stringify(pkg.body)).toBe(201);
  }, 600_000);

  afterAll(async () => {
    await prometheus?.stop();
    await Promise.all(sims.map((s) => s.stop()));
    if (gateway) {
      for (const instance of (await api("GET", "/api/instances")).body) {
        await api("DELETE", `/api/instances/${instance.id}`);
      }
      await gateway.close();
    }
    if (dir) rmSync(dir, { recursive: true, force: true });
    await engine?.stop();
  }, 120_000);

  it("finds the twin in the file, scrapes its ODTE with its labels, and loses it from the file when it is removed", {
    timeout: 180_000,
  }, async () => {
    const sdFile = join(dir, "data", "prometheus-targets.json");
    const id = "press-sd";
    const started = await api("POST", "/api/instances", {
      package: "iiot-docker",
      node: "docker-1",
      id,
      configuration: { DEVICE_ID: id },
      fidelity: FAST,
    });
    expect(started.status, JSON.stringify(started.body)).toBe(201);
    const device = await api("POST", "/api/tokens", { name: id, role: `device:${id}` });
    const sim = new IiotDeviceSimulator({
      id,
      brokerUrl: gateway.brokerUrl,
      rate: 10,
      mqttOptions: { username: id, password: device.body.token as string },
    });
    sims.push(sim);
    await sim.start();

    const schema = started.body.schema as string;
    const listed = await waitFor("the container twin in the file_sd file", () =>
      existsSync(sdFile) ? readEntries(sdFile).find((e) => e.labels.twin === id) : undefined,
    );
    expect(listed.labels).toEqual({
      twin: id,
      schema,
      node: "docker-1",
      platform: "docker",
      __metrics_path__: "/metrics",
    });
    expect(listed.targets).toEqual([expect.stringMatching(/^127\.0\.0\.1:\d+$/)]);

    prometheus = await startPrometheus(join(dir, "prometheus"), sdFile, METRICS_TOKEN);
    const query = `dtc_twin_odte{twin="${id}",platform="docker"}`;
    type Result = { metric: Record<string, string>; value: [number, string] };
    const series = await waitFor(
      `${query} >= 0.9 in Prometheus`,
      async () => {
        const res = await fetch(`${prometheus?.url}/api/v1/query?query=${encodeURIComponent(query)}`);
        const body = (await res.json()) as { data: { result: Result[] } };
        const found = body.data.result[0];
        return found && Number(found.value[1]) >= 0.9 ? found : undefined;
      },
      90_000,
    ).catch((err: unknown) => {
      throw new Error(`${String(err)}\n--- prometheus log ---\n${prometheus?.log()}`);
    });
    expect(series.metric).toMatchObject({
      __name__: "dtc_twin_odte",
      job: "dtc-twins",
      instance: listed.targets[0],
      twin: id,
      schema,
      node: "docker-1",
      platform: "docker",
    });
    // The process's own series carry the target's labels too.
    const cpu = await fetch(
      `${prometheus.url}/api/v1/query?query=${encodeURIComponent(`process_cpu_user_seconds_total{twin="${id}"}`)}`,
    );
    expect(((await cpu.json()) as { data: { result: Result[] } }).data.result).toHaveLength(1);

    expect((await api("DELETE", `/api/instances/${id}`)).status).toBe(204);
    await waitFor("the removed twin dropped from the file", () => readEntries(sdFile).length === 0);
  });
});
