import { type ChildProcess, spawn } from "node:child_process";
import { once } from "node:events";
import { existsSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { Gateway } from "../src/gateway.js";
import { IiotDeviceSimulator } from "../src/simulator/index.js";
import { SAMPLE_SCHEMA_BASE } from "../src/wot/model-registry.js";
import { freePort } from "./brokers.js";
import { waitFor } from "./helpers.js";
import { adminToken, call, FAST, startTestGateway } from "./manager-client.js";

/** GET /metrics: the series of the spec with their labels, behind the reader role, bounded, optional. */

const PROMETHEUS = "/usr/bin/prometheus";
const IIOT = new URL("iiot-device.tm.jsonld", SAMPLE_SCHEMA_BASE).href;

interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

/** The samples of a Prometheus text exposition (no escapes in dtc's label values). */
function parse(text: string): Sample[] {
  const samples: Sample[] = [];
  for (const line of text.split("\n")) {
    if (line === "" || line.startsWith("#")) continue;
    const match = /^([a-zA-Z_:][\w:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    if (!match) throw new Error(`not an exposition line: ${line}`);
    const labels: Record<string, string> = {};
    for (const [, key, value] of (match[2] ?? "").matchAll(/(\w+)="([^"]*)"/g)) {
      labels[key as string] = value as string;
    }
    samples.push({ name: match[1] as string, labels, value: Number(match[3]) });
  }
  return samples;
}

/** The samples named `name` whose labels include `labels`. */
const find = (samples: Sample[], name: string, labels: Record<string, string> = {}) =>
  samples.filter((s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v));

/** Why the Prometheus test cannot run here; in CI a missing binary is an error. */
function prometheusMissing(): string | undefined {
  if (existsSync(PROMETHEUS)) return undefined;
  const reason = `${PROMETHEUS} is not installed (Debian package prometheus)`;
  if (process.env.CI === "true") throw new Error(`CI: ${reason}`);
  return reason;
}

describe("GET /metrics", () => {
  let gateway: Gateway;
  let admin: string;
  let reader: string;
  const sim = { current: undefined as IiotDeviceSimulator | undefined };
  const scrape = async (token = reader) => {
    const res = await fetch(`${gateway.url}/metrics`, { headers: { Authorization: `Bearer ${token}` } });
    expect(res.status).toBe(200);
    return { type: res.headers.get("content-type"), samples: parse(await res.text()) };
  };
  const api = (method: string, path: string, body?: unknown) => call(gateway.url, method, path, body, admin);

  beforeAll(async () => {
    gateway = await startTestGateway({ DTC_AUTH: "on", DTC_METRICS_MAX_TWINS: "1" });
    admin = adminToken(gateway);
    reader = gateway.tokens.create({ name: "prometheus", role: "reader" }).token;
    // The simulator is a device: it connects with a device token of its twin.
    const device = gateway.tokens.create({ name: "a1", role: "device:a1" }).token;
    sim.current = new IiotDeviceSimulator({
      id: "a1",
      brokerUrl: gateway.brokerUrl,
      rate: 10,
      mqttOptions: { username: "a1", password: device },
    });
    for (const id of ["a1", "b1"]) {
      const started = await api("POST", "/api/instances", {
        package: "iiot-device",
        node: "local",
        id,
        configuration: { DEVICE_ID: id },
        fidelity: FAST,
      });
      expect(started.status, JSON.stringify(started.body)).toBe(201);
    }
    await sim.current.start();
    await waitFor(
      "a1 Entangled",
      async () => (await api("GET", "/api/instances/a1")).body.lifecycle === "Entangled",
    );
  }, 30_000);

  afterAll(async () => {
    await sim.current?.stop();
    await gateway?.close();
  });

  it("needs the reader role", async () => {
    expect((await fetch(`${gateway.url}/metrics`)).status).toBe(401);
    const { type } = await scrape();
    expect(type).toBe("text/plain; version=0.0.4; charset=utf-8");
  });

  it("has per-twin series of the in-process twins, within DTC_METRICS_MAX_TWINS", async () => {
    const labels = { twin: "a1", schema: IIOT, node: "local", platform: "in-process" };
    // Entangled (as its scrape says) with its updates measured: a loaded machine may take a while.
    const samples = await waitFor("a1 Entangled, its updates measured", async () => {
      const { samples } = await scrape();
      const measured = find(samples, "dtc_twin_update_delay_seconds_count", { schema: IIOT }).some(
        (s) => s.value > 0,
      );
      const entangled =
        find(samples, "dtc_twin_lifecycle_state", { ...labels, state: "Entangled" })[0]?.value === 1;
      return measured && entangled ? samples : undefined;
    });
    for (const name of [
      "dtc_twin_odte",
      "dtc_twin_timeliness",
      "dtc_twin_reliability",
      "dtc_twin_availability",
      "dtc_twin_odte_threshold",
      "dtc_twin_odte_window_seconds",
      "dtc_twin_failed",
      "dtc_twin_messages_total",
      "dtc_twin_malformed_messages_total",
      "dtc_twin_sequence_gaps_total",
      "dtc_twin_commands_total",
    ]) {
      expect(find(samples, name, labels), name).toHaveLength(1);
    }
    expect(find(samples, "dtc_twin_odte", labels)[0]?.value).toBeGreaterThanOrEqual(0.9);
    expect(find(samples, "dtc_twin_messages_total", labels)[0]?.value).toBeGreaterThan(0);
    expect(find(samples, "dtc_twin_lifecycle_state", { ...labels, state: "Entangled" })[0]?.value).toBe(1);
    expect(find(samples, "dtc_twin_lifecycle_state", { ...labels, state: "Unbound" })[0]?.value).toBe(0);
    expect(find(samples, "dtc_twin_lifecycle_state", labels)).toHaveLength(6);
    // The limit is one twin: b1 (after a1 by id) has none, and is counted.
    expect(samples.filter((s) => s.labels.twin === "b1")).toEqual([]);
    expect(find(samples, "dtc_twin_series_omitted")[0]?.value).toBe(1);
    // The histograms are labelled by schema, node and platform, never by twin.
    const fleet = { schema: IIOT, node: "local", platform: "in-process" };
    expect(find(samples, "dtc_twin_processing_seconds_count", fleet)[0]?.value).toBeGreaterThan(0);
    expect(find(samples, "dtc_twin_update_delay_seconds_bucket", { twin: "a1" })).toEqual([]);
  });

  it("has the directory's, the manager's, the HTTP API's, the broker's and the process's series", async () => {
    expect((await api("PUT", "/things/not-an-iri", {})).status).toBe(400);
    expect((await call(gateway.url, "GET", "/things", undefined, reader)).status).toBe(200);
    expect((await api("POST", "/api/instances/nope/stop", {})).status).toBe(404);
    expect((await api("GET", "/no/such/path-x1")).status).toBe(404);
    const { samples } = await scrape();
    const value = (name: string, labels: Record<string, string> = {}) => {
      const found = find(samples, name, labels);
      expect(found, `${name} ${JSON.stringify(labels)}`).toHaveLength(1);
      return found[0]?.value as number;
    };
    // Directory: the twins' TDs (and the manager's) were created; the bad PUT refused as invalid.
    expect(
      value("dtc_directory_writes_total", { operation: "create", outcome: "ok" }),
    ).toBeGreaterThanOrEqual(3);
    expect(value("dtc_directory_writes_total", { operation: "update", outcome: "invalid" })).toBe(1);
    expect(value("dtc_directory_things")).toBeGreaterThanOrEqual(3);
    expect(value("dtc_directory_index_lag_seconds")).toBeGreaterThanOrEqual(0);
    expect(value("dtc_directory_search_duration_seconds_count", { kind: "list" })).toBe(1);
    // Manager.
    expect(value("dtc_manager_operations_total", { operation: "start", outcome: "ok" })).toBe(2);
    expect(value("dtc_manager_operations_total", { operation: "stop", outcome: "notFound" })).toBe(1);
    expect(value("dtc_manager_operation_duration_seconds_count", { operation: "start" })).toBe(2);
    expect(value("dtc_manager_reconcile_duration_seconds_count")).toBeGreaterThanOrEqual(1);
    expect(value("dtc_manager_instances", { desired: "running", actual: "running" })).toBe(2);
    expect(value("dtc_manager_instances", { desired: "stopped", actual: "gaveUp" })).toBe(0);
    expect(value("dtc_node_ready", { node: "local", platform: "in-process" })).toBe(1);
    // HTTP: route templates, never raw paths.
    expect(
      value("dtc_http_requests_total", { method: "GET", route: "/api/instances/:id", status: "200" }),
    ).toBeGreaterThanOrEqual(1);
    expect(value("dtc_http_requests_total", { method: "GET", route: "/metrics", status: "401" })).toBe(1);
    expect(value("dtc_http_requests_total", { method: "GET", route: "unmatched", status: "404" })).toBe(1);
    expect(samples.filter((s) => Object.values(s.labels).some((v) => v.includes("path-x1")))).toEqual([]);
    expect(samples.filter((s) => s.labels.route?.includes("nope"))).toEqual([]);
    expect(
      value("dtc_http_request_duration_seconds_count", { method: "POST", route: "/api/instances" }),
    ).toBe(2);
    // The embedded broker: the simulator and the twins' runtime are its clients.
    expect(value("dtc_mqtt_clients")).toBeGreaterThanOrEqual(2);
    expect(value("dtc_mqtt_messages_in_total")).toBeGreaterThan(0);
    expect(value("dtc_mqtt_messages_out_total")).toBeGreaterThan(0);
    // The process (prom-client's defaults).
    expect(value("process_cpu_user_seconds_total")).toBeGreaterThan(0);
    expect(find(samples, "nodejs_heap_size_used_bytes")).toHaveLength(1);
  });

  it("is what a real Prometheus scrapes: ODTE while entangled, Unbound once the PT is gone", async (ctx) => {
    const skip = prometheusMissing();
    if (skip) ctx.skip(skip);
    const dir = mkdtempSync(join(tmpdir(), "dtc-prometheus-"));
    let prometheus: ChildProcess | undefined;
    try {
      const port = await freePort();
      const target = new URL(gateway.url).host;
      writeFileSync(
        join(dir, "prometheus.yml"),
        [
          "global: { scrape_interval: 1s, evaluation_interval: 1s }",
          "scrape_configs:",
          "  - job_name: dtc",
          "    metrics_path: /metrics",
          "    scrape_timeout: 1s",
          `    authorization: { type: Bearer, credentials: "${reader}" }`,
          `    static_configs: [{ targets: ["${target}"] }]`,
          "",
        ].join("\n"),
      );
      prometheus = spawn(
        PROMETHEUS,
        [
          `--config.file=${join(dir, "prometheus.yml")}`,
          `--storage.tsdb.path=${join(dir, "data")}`,
          `--web.listen-address=127.0.0.1:${port}`,
          "--log.level=warn",
        ],
        { stdio: ["ignore", "ignore", "pipe"] },
      );
      let log = "";
      prometheus.stderr?.on("data", (chunk) => {
        log += String(chunk);
      });
      const base = `http://127.0.0.1:${port}`;
      await waitFor(
        `Prometheus ready (${log})`,
        () =>
          fetch(`${base}/-/ready`).then(
            (r) => r.ok,
            () => false,
          ),
        20_000,
      );
      /** The instant vector of `expr`. */
      const query = async (expr: string) => {
        const res = await fetch(`${base}/api/v1/query?query=${encodeURIComponent(expr)}`);
        const body = (await res.json()) as {
          status: string;
          data: { result: { metric: Record<string, string>; value: [number, string] }[] };
        };
        expect(body.status).toBe("success");
        return body.data.result.map((r) => ({ labels: r.metric, value: Number(r.value[1]) }));
      };
      const up = await waitFor(
        "the gateway scraped",
        async () => (await query('up{job="dtc"} == 1'))[0],
        20_000,
      );
      expect(up.labels.instance).toBe(target);
      const odte = await waitFor(
        "dtc_twin_odte >= 0.9",
        async () => (await query('dtc_twin_odte{twin="a1"} >= 0.9'))[0],
        20_000,
      );
      expect(odte.labels).toMatchObject({ twin: "a1", schema: IIOT, node: "local", platform: "in-process" });
      expect((await query('dtc_twin_lifecycle_state{twin="a1",state="Entangled"}'))[0]?.value).toBe(1);
      // The PT goes: its last will says offline, and the twin is Unbound.
      (sim.current as IiotDeviceSimulator).crash();
      await waitFor(
        "dtc_twin_lifecycle_state Unbound = 1",
        async () => (await query('dtc_twin_lifecycle_state{twin="a1",state="Unbound"} == 1'))[0],
        20_000,
      );
      expect((await query('dtc_twin_lifecycle_state{twin="a1",state="Entangled"}'))[0]?.value).toBe(0);
    } finally {
      if (prometheus && prometheus.exitCode === null) {
        const exit = once(prometheus, "exit");
        prometheus.kill("SIGTERM");
        await exit;
      }
      rmSync(dir, { recursive: true, force: true });
    }
  }, 90_000);
});

describe("GET /metrics with DTC_METRICS=off", () => {
  it("is not served, and nothing is measured", async () => {
    const gateway = await startTestGateway({ DTC_METRICS: "off" });
    try {
      expect((await fetch(`${gateway.url}/metrics`)).status).toBe(404);
      expect(gateway.routes.some((r) => r.path === "/metrics")).toBe(false);
    } finally {
      await gateway.close();
    }
  });
});
