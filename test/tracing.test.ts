import { type ChildProcess, spawn } from "node:child_process";
import { once } from "node:events";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import mqtt from "mqtt";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { MqttConnections } from "../src/mqtt/connections.js";
import { startTracing, type Tracing, traceHeaders, withSpan } from "../src/observability/tracing.js";
import { projectRoot } from "../src/paths.js";
import { TwinManagementClient } from "../src/runtime/management-client.js";
import { IiotDeviceSimulator } from "../src/simulator/index.js";
import { startBroker, type TestBroker, unavailable } from "./brokers.js";
import { sample, waitFor } from "./helpers.js";
import { call } from "./manager-client.js";
import { type OtlpReceiver, startOtlpReceiver } from "./otlp-receiver.js";

/**
 * Traces over OTLP/HTTP, end to end: a gateway process and a twin process export their spans to a
 * receiver of this test's own (test/otlp-receiver.ts: a loopback server, as no collector is packaged
 * in the registries this project can reach). The processes run from the sources (tsx): what runs is
 * what was just edited, without a build.
 */

const children = new Set<ChildProcess>();
const dirs: string[] = [];

/** `node --import tsx <entry>` with `env` over a clean environment; its stdout lines kept. */
function spawnSource(entry: string, env: Record<string, string>) {
  const child = spawn(process.execPath, ["--no-node-snapshot", "--import", "tsx", join(projectRoot, entry)], {
    // TMPDIR: the run's temp root (test/global-setup.ts), where its teardown looks for leftover processes.
    env: { PATH: process.env.PATH ?? "", TMPDIR: tmpdir(), ...env },
    stdio: ["ignore", "pipe", "inherit"],
    cwd: projectRoot,
  });
  children.add(child);
  const exited = once(child, "exit").then(() => children.delete(child));
  let stdout = "";
  child.stdout?.on("data", (d: Buffer) => {
    stdout += d.toString();
  });
  const lines = () =>
    stdout
      .split("\n")
      .filter((l) => l.startsWith("{"))
      .map((l) => JSON.parse(l) as Record<string, unknown>);
  const stop = async () => {
    if (child.exitCode === null && child.signalCode === null) child.kill("SIGTERM");
    await exited;
  };
  return { child, lines, stop };
}

/** A gateway process (auth off, free ports) and its URL once it listens. */
async function startGateway(env: Record<string, string>) {
  const dataDir = mkdtempSync(join(tmpdir(), "dtc-tracing-"));
  dirs.push(dataDir);
  const gateway = spawnSource("src/main.ts", {
    DTC_PORT: "0",
    DTC_MQTT_PORT: "0",
    DTC_AUTH: "off",
    DTC_DATA_DIR: dataDir,
    DTC_LOG_LEVEL: "info",
    ...env,
  });
  const listening = await waitFor(
    "the gateway listening",
    () => gateway.lines().find((l) => l.msg === "dtc gateway listening"),
    30_000,
  );
  return { ...gateway, url: listening.url as string, brokerUrl: listening.brokerUrl as string };
}

/** Registers a second in-process node, starts `id` on `local` and moves it there. */
async function startAndMove(url: string, id: string): Promise<void> {
  const node = await call(url, "POST", "/api/nodes", {
    id: "edge-a",
    platform: "in-process",
    tier: "edge",
    capabilities: { cpu: 2, memory: 2048, gpu: 0 },
    latencyMs: 1,
  });
  expect(node.status, JSON.stringify(node.body)).toBe(201);
  const started = await call(url, "POST", "/api/instances", {
    package: "iiot-device",
    node: "local",
    id,
    configuration: { DEVICE_ID: id },
  });
  expect(started.status, JSON.stringify(started.body)).toBe(201);
  const moved = await call(url, "POST", `/api/instances/${id}/move`, { node: "edge-a" });
  expect(moved.status, JSON.stringify(moved.body)).toBe(200);
  expect(moved.body).toMatchObject({ id, node: "edge-a" });
}

describe("tracing over OTLP/HTTP", () => {
  let receiver: OtlpReceiver;

  beforeAll(async () => {
    receiver = await startOtlpReceiver();
  });

  afterAll(async () => {
    await Promise.all(
      [...children].map((child) => {
        const exited = once(child, "exit");
        child.kill("SIGKILL");
        return exited;
      }),
    );
    await receiver?.close();
    for (const dir of dirs) rmSync(dir, { recursive: true, force: true });
  });

  it("exports a move as one trace: dtc.manager.move, the driver's export, start (with the state) and remove, and the directory's write, as its children", async () => {
    const gateway = await startGateway({
      OTEL_EXPORTER_OTLP_ENDPOINT: receiver.url,
      OTEL_BSP_SCHEDULE_DELAY: "100",
      OTEL_RESOURCE_ATTRIBUTES: "deployment.environment=test",
    });
    try {
      await startAndMove(gateway.url, "traced-1");
      const move = await waitFor("the move's span", () =>
        receiver.spans.find(
          (s) => s.name === "dtc.manager.move" && s.attributes["dtc.instance"] === "traced-1",
        ),
      );
      expect(move).toMatchObject({
        service: "dtc-gateway",
        parentSpanId: "",
        status: 0,
        attributes: {
          "dtc.operation": "move",
          "dtc.node": "local",
          "dtc.platform": "in-process",
          "dtc.node.target": "edge-a",
        },
      });
      const trace = () => receiver.spans.filter((s) => s.traceId === move.traceId);
      const child = (name: string) => trace().find((s) => s.name === name && s.parentSpanId === move.spanId);
      await waitFor("the move's driver spans", () =>
        ["dtc.driver.export", "dtc.driver.start", "dtc.driver.remove", "dtc.directory.put"].every(child),
      );
      expect(child("dtc.driver.export")?.attributes).toMatchObject({
        "dtc.instance": "traced-1",
        "dtc.node": "local",
      });
      expect(child("dtc.driver.start")?.attributes).toMatchObject({
        "dtc.instance": "traced-1",
        "dtc.node": "edge-a",
        "dtc.platform": "in-process",
        "dtc.state.imported": true,
      });
      expect(child("dtc.driver.remove")?.attributes).toMatchObject({ "dtc.node": "local" });
      // The start before it is a trace of its own.
      const start = receiver.spans.find(
        (s) => s.name === "dtc.manager.start" && s.attributes["dtc.instance"] === "traced-1",
      );
      expect(start?.traceId).not.toBe(move.traceId);
      // Every span of the trace hangs from the move.
      const ids = new Set(trace().map((s) => s.spanId));
      for (const span of trace()) if (span !== move) expect(ids.has(span.parentSpanId), span.name).toBe(true);

      // An update's path, sampled (one per twin per 10 s): PT message -> shadowing -> functions -> commit -> publish.
      const pt = new IiotDeviceSimulator({ id: "traced-1", brokerUrl: gateway.brokerUrl, rate: 10 });
      await pt.start();
      try {
        const update = await waitFor("an update's span", () =>
          receiver.spans.find(
            (s) => s.name === "dtc.twin.update" && s.attributes["dtc.update.outcome"] === "committed",
          ),
        );
        expect(update.attributes["dtc.twin"]).toBe("traced-1");
        expect(update.events).toEqual(["shadowing", "functions", "commit", "publish"]);
        expect(receiver.spans.filter((s) => s.name === "dtc.twin.update")).toHaveLength(1);
      } finally {
        await pt.stop();
      }
    } finally {
      await gateway.stop();
    }
  }, 60_000);

  it("carries the gateway's trace into a twin process: its dtc.twin.import and dtc.twin.export spans are children of the caller's, and its log lines name the trace", async (ctx) => {
    if (unavailable("aedes")) ctx.skip();
    const broker: TestBroker = await startBroker("aedes");
    // This process is the caller (as the Docker driver is in the gateway): tracing on here too.
    process.env.OTEL_EXPORTER_OTLP_ENDPOINT = receiver.url;
    let tracing: Tracing | undefined;
    const twinId = "traced-twin";
    const twin = spawnSource("src/twin-main.ts", {
      DTC_MQTT_URL: broker.url,
      DTC_TWIN_PORT: "0",
      DTC_TWIN_MANAGEMENT_PORT: "0",
      DTC_TWIN_HOST: "127.0.0.1",
      DTC_TWIN: JSON.stringify({
        twin: { id: twinId, schema: sample("iiot-device.tm.jsonld"), placeholders: { DEVICE_ID: twinId } },
      }),
      OTEL_EXPORTER_OTLP_ENDPOINT: receiver.url,
      OTEL_BSP_SCHEDULE_DELAY: "100",
    });
    try {
      tracing = await startTracing({ serviceName: "dtc-tracing-test" });
      expect(tracing.enabled).toBe(true);
      const ready = await waitFor(
        "the twin process ready",
        () => twin.lines().find((l) => l.msg === "twin process ready"),
        30_000,
      );
      const client = new TwinManagementClient(`http://127.0.0.1:${ready.managementPort}`);
      let parent = { traceId: "", spanId: "" };
      await withSpan("test.move", {}, async (span) => {
        parent = { traceId: span?.spanContext().traceId ?? "", spanId: span?.spanContext().spanId ?? "" };
        const state = await client.exportState();
        await client.importState(state);
      });
      await tracing.shutdown();
      expect(parent.traceId).toMatch(/^[0-9a-f]{32}$/);
      const twinSpan = (name: string) =>
        receiver.spans.find((s) => s.name === name && s.traceId === parent.traceId);
      await waitFor(
        "the twin process's spans",
        () => twinSpan("dtc.twin.export") && twinSpan("dtc.twin.import"),
      );
      for (const name of ["dtc.twin.export", "dtc.twin.import"]) {
        expect(twinSpan(name)).toMatchObject({
          service: "dtc-twin",
          parentSpanId: parent.spanId,
          attributes: { "dtc.twin": twinId, "http.response.status_code": 200 },
        });
      }
      // The import's log line, written inside its span, carries its trace and span ids.
      const imported = twin.lines().find((l) => l.msg === "twin state imported");
      expect(imported).toMatchObject({
        trace_id: parent.traceId,
        span_id: twinSpan("dtc.twin.import")?.spanId,
      });
      // Lines outside any span carry none.
      expect(ready.trace_id).toBeUndefined();
    } finally {
      await tracing?.shutdown();
      delete process.env.OTEL_EXPORTER_OTLP_ENDPOINT;
      await twin.stop();
      await broker.stop();
    }
  }, 60_000);

  it("sends a command's traceparent as an MQTT 5 user property, and none over MQTT 3.1.1", async (ctx) => {
    const reason = unavailable("mosquitto");
    if (reason) ctx.skip(reason);
    const broker = await startBroker("mosquitto");
    process.env.OTEL_EXPORTER_OTLP_ENDPOINT = receiver.url;
    const tracing = await startTracing({ serviceName: "dtc-tracing-test" });
    const watcher = await mqtt.connectAsync(broker.url, { protocolVersion: 5 });
    const received: { topic: string; traceparent: unknown }[] = [];
    watcher.on("message", (topic, _payload, packet) =>
      received.push({ topic, traceparent: packet.properties?.userProperties?.traceparent }),
    );
    await watcher.subscribeAsync("cmd/#");
    const v5 = new MqttConnections({ protocolVersion: 5 }).acquire(broker.url);
    const v311 = new MqttConnections().acquire(broker.url);
    try {
      await waitFor("both connected", () => v5.connected && v311.connected);
      let traceparent = "";
      await withSpan("test.command", {}, async () => {
        traceparent = traceHeaders().traceparent ?? "";
        await v5.publish("cmd/v5", "{}", { qos: 1, userProperties: { traceparent } });
        await v311.publish("cmd/v311", "{}", { qos: 1, userProperties: { traceparent } });
      });
      expect(traceparent).toMatch(/^00-[0-9a-f]{32}-[0-9a-f]{16}-01$/);
      await waitFor("both commands", () => received.length === 2);
      expect(received.find((m) => m.topic === "cmd/v5")?.traceparent).toBe(traceparent);
      expect(received.find((m) => m.topic === "cmd/v311")?.traceparent).toBeUndefined();
    } finally {
      await tracing.shutdown();
      delete process.env.OTEL_EXPORTER_OTLP_ENDPOINT;
      await v5.release();
      await v311.release();
      await watcher.endAsync();
      await broker.stop();
    }
  });

  it("sends nothing with OTEL_SDK_DISABLED=true, and its log lines carry no trace ids", async () => {
    const silent = await startOtlpReceiver();
    const gateway = await startGateway({
      OTEL_EXPORTER_OTLP_ENDPOINT: silent.url,
      OTEL_SDK_DISABLED: "true",
      OTEL_BSP_SCHEDULE_DELAY: "100",
    });
    try {
      await startAndMove(gateway.url, "untraced-1");
    } finally {
      // A gateway exports what it buffered as it closes: once it exited, nothing more can come.
      await gateway.stop();
      await silent.close();
    }
    expect(silent.posts()).toBe(0);
    expect(gateway.lines().filter((l) => l.trace_id !== undefined)).toEqual([]);
  }, 60_000);
});
