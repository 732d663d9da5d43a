import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { IiotDeviceSimulator } from "../src/simulator/index.js";
import { freePort } from "./brokers.js";
import {
  buildTwinTestImage,
  dockerUnavailable,
  startDockerEngine,
  type TestDockerEngine,
} from "./docker-engine.js";
import { type GatewayProcess, startGatewayProcess } from "./gateway-process.js";
import { waitFor } from "./helpers.js";
import { call } from "./manager-client.js";
import { type OtlpReceiver, type ReceivedSpan, startOtlpReceiver } from "./otlp-receiver.js";

/**
 * A move's trace across processes: a gateway process (the built one, as users run it) moves a
 * twin from its own process into a twin container on a real Docker engine and back, and exports
 * its spans over OTLP/HTTP to this test's receiver (test/otlp-receiver.ts); the container gets the
 * gateway's OTEL_* variables and exports its own there too (network "host": it reaches the
 * receiver on 127.0.0.1). Each move is one trace: the manager's span, the driver's calls as its
 * children, and the container's management operations as children of those.
 */

const SKIP = dockerUnavailable();
if (SKIP) console.warn(`tracing-docker.test.ts: skipping the traced move into a container: ${SKIP}`);

const TWIN = "traced-d";

describe("a move's trace through a twin container (real engine, OTLP/HTTP)", () => {
  let engine: TestDockerEngine | undefined;
  let receiver: OtlpReceiver | undefined;
  let gateway: GatewayProcess | undefined;
  let dataDir: string | undefined;
  let sim: IiotDeviceSimulator | undefined;
  let brokerUrl: string;
  const api = (method: string, path: string, body?: unknown) => call(gateway?.url ?? "", method, path, body);

  beforeEach((ctx) => {
    if (SKIP) ctx.skip(SKIP);
  });

  beforeAll(async () => {
    if (SKIP) return;
    receiver = await startOtlpReceiver();
    engine = await startDockerEngine();
    const image = await buildTwinTestImage(engine);
    dataDir = mkdtempSync(join(tmpdir(), "dtc-tracing-docker-"));
    const mqttPort = await freePort();
    brokerUrl = `mqtt://127.0.0.1:${mqttPort}`;
    gateway = await startGatewayProcess({
      DTC_DATA_DIR: dataDir,
      DTC_MQTT_PORT: String(mqttPort),
      DTC_LOG_LEVEL: "info",
      DTC_ENTANGLEMENT_INTERVAL_MS: "100",
      // vfs copies the whole image for each container: on a busy machine that is more than 10 s.
      DTC_PLATFORM_TIMEOUT_MS: "60000",
      OTEL_EXPORTER_OTLP_ENDPOINT: receiver.url,
      OTEL_BSP_SCHEDULE_DELAY: "100",
    });
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
    await sim?.stop();
    if (gateway) {
      // The instance goes with its container (if a failed move left one).
      await api("DELETE", `/api/instances/${TWIN}`).catch(() => undefined);
      await gateway.stop();
    }
    await receiver?.close();
    if (dataDir) rmSync(dataDir, { recursive: true, force: true });
    await engine?.stop();
  }, 120_000);

  it("traces in-process -> Docker -> in-process: dtc.manager.move, its dtc.driver.* children, and the container's dtc.twin.import, export and shutdown under them, one trace id per move", {
    timeout: 240_000,
  }, async () => {
    const started = await api("POST", "/api/instances", {
      package: "iiot-device",
      node: "local",
      id: TWIN,
      configuration: { DEVICE_ID: TWIN },
    });
    expect(started.status, JSON.stringify(started.body)).toBe(201);
    sim = new IiotDeviceSimulator({ id: TWIN, brokerUrl, rate: 10 });
    await sim.start();

    for (const node of ["docker-1", "local"]) {
      const moved = await api("POST", `/api/instances/${TWIN}/move`, { node });
      expect(moved.status, JSON.stringify(moved.body)).toBe(200);
      expect(moved.body).toMatchObject({ node, platform: node === "local" ? "in-process" : "docker" });
    }

    const spans = (receiver as OtlpReceiver).spans;
    const moveTo = (target: string) =>
      waitFor(`the move to ${target}`, () =>
        spans.find(
          (s) =>
            s.name === "dtc.manager.move" &&
            s.attributes["dtc.instance"] === TWIN &&
            s.attributes["dtc.node.target"] === target,
        ),
      );
    /** The span `name` whose parent is `parent` (and whose attributes include `attributes`). */
    const childOf = (parent: ReceivedSpan, name: string, attributes: Record<string, unknown> = {}) =>
      spans.find(
        (s) =>
          s.traceId === parent.traceId &&
          s.parentSpanId === parent.spanId &&
          s.name === name &&
          Object.entries(attributes).every(([k, v]) => s.attributes[k] === v),
      );
    const waitChild = (parent: ReceivedSpan, name: string, attributes: Record<string, unknown> = {}) =>
      waitFor(`${name} under ${parent.name}`, () => childOf(parent, name, attributes), 30_000);

    // In: the source's export, the container's start with the state, which it imports.
    const moveIn = await moveTo("docker-1");
    expect(moveIn).toMatchObject({
      service: "dtc-gateway",
      parentSpanId: "",
      status: 0,
      attributes: { "dtc.node": "local", "dtc.platform": "in-process", "dtc.platform.target": "docker" },
    });
    await waitChild(moveIn, "dtc.driver.export", { "dtc.node": "local" });
    const startIn = await waitChild(moveIn, "dtc.driver.start", {
      "dtc.node": "docker-1",
      "dtc.platform": "docker",
      "dtc.state.imported": true,
    });
    await waitChild(moveIn, "dtc.driver.remove", { "dtc.node": "local" });
    const imported = await waitChild(startIn, "dtc.twin.import");

    // Back: the container's export and its shutdown (the driver's remove), the in-process start.
    const moveOut = await moveTo("local");
    expect(moveOut.traceId).not.toBe(moveIn.traceId);
    expect(moveOut).toMatchObject({
      service: "dtc-gateway",
      parentSpanId: "",
      attributes: { "dtc.node": "docker-1", "dtc.platform": "docker", "dtc.platform.target": "in-process" },
    });
    const exportOut = await waitChild(moveOut, "dtc.driver.export", { "dtc.node": "docker-1" });
    await waitChild(moveOut, "dtc.driver.start", { "dtc.node": "local", "dtc.state.imported": true });
    const removeOut = await waitChild(moveOut, "dtc.driver.remove", { "dtc.node": "docker-1" });
    const exported = await waitChild(exportOut, "dtc.twin.export");
    const shutdown = await waitChild(removeOut, "dtc.twin.shutdown");

    // The container's spans: service dtc-twin, its twin id, answered 200.
    for (const span of [imported, exported, shutdown]) {
      expect(span, span.name).toMatchObject({
        service: "dtc-twin",
        status: 0,
        attributes: { "dtc.twin": TWIN, "http.response.status_code": 200 },
      });
    }
    // Each move's trace is one tree: every span but the root hangs from a span of the trace, and
    // the container's spans from the gateway's.
    for (const move of [moveIn, moveOut]) {
      const trace = spans.filter((s) => s.traceId === move.traceId);
      const byId = new Map(trace.map((s) => [s.spanId, s]));
      expect(trace.filter((s) => s.parentSpanId === "")).toEqual([move]);
      for (const span of trace) {
        if (span === move) continue;
        const parent = byId.get(span.parentSpanId);
        expect(parent, `the parent of ${span.name}`).toBeDefined();
        if (span.service === "dtc-twin") expect(parent?.service, span.name).toBe("dtc-gateway");
      }
      expect(new Set(trace.map((s) => s.service))).toEqual(new Set(["dtc-gateway", "dtc-twin"]));
    }
  });
});
