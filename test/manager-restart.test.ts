import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it, onTestFinished } from "vitest";
import type { Gateway } from "../src/gateway.js";
import { thingModelsDir } from "../src/paths.js";
import { IiotDeviceSimulator } from "../src/simulator/index.js";
import { startGatewayProcess } from "./gateway-process.js";
import { waitFor } from "./helpers.js";
import { call, FAST, startTestGateway } from "./manager-client.js";

/** The manager's desired state outlives the gateway: a restart brings everything back. */

const historyOf = async (base: string, id: string) =>
  ((await (await fetch(`${base}/twins/${id}/properties/history`)).json()) as { states: unknown[] }).states
    .length;

describe("DTC Manager across gateway restarts", () => {
  const sims: IiotDeviceSimulator[] = [];
  afterAll(() => Promise.all(sims.map((s) => s.stop())));

  it("keeps schemas, packages, nodes, snapshots, instances and their state (graceful restart)", {
    timeout: 60_000,
  }, async () => {
    const dataDir = mkdtempSync(join(tmpdir(), "dtc-restart-"));
    onTestFinished(() => rmSync(dataDir, { recursive: true, force: true }));
    let gateway: Gateway = await startTestGateway({ DTC_DATA_DIR: dataDir });
    const first = gateway.url;
    // An external broker would outlive the gateway; the embedded one restarts with it on the same port.
    const brokerPort = new URL(gateway.brokerUrl).port;

    const model = JSON.parse(readFileSync(join(thingModelsDir, "iiot-device.tm.jsonld"), "utf8"));
    expect((await call(first, "POST", "/api/schemas?id=kept", model)).status).toBe(201);
    expect(
      (await call(first, "POST", "/api/packages", { id: "kept-pkg", schema: "kept", platform: "in-process" }))
        .status,
    ).toBe(201);
    const node = {
      id: "edge-k",
      platform: "in-process",
      tier: "mec",
      capabilities: { cpu: 2, memory: 1024 },
    };
    expect((await call(first, "POST", "/api/nodes", node)).status).toBe(201);
    for (const id of ["k1", "k2"]) {
      const sim = new IiotDeviceSimulator({ id, brokerUrl: gateway.brokerUrl, rate: 10 });
      sims.push(sim);
      await sim.start();
      const started = await call(first, "POST", "/api/instances", {
        package: "kept-pkg",
        node: "edge-k",
        id,
        configuration: { DEVICE_ID: id },
        fidelity: FAST,
      });
      expect(started.status, JSON.stringify(started.body)).toBe(201);
    }
    await waitFor("k1 with some history", async () => (await historyOf(first, "k1")) >= 5);
    expect((await call(first, "POST", "/api/instances/k2/stop")).status).toBe(200);
    const snapshot = await call(first, "POST", "/api/instances/k1/snapshots");
    expect(snapshot.status).toBe(201);
    for (const sim of sims) await sim.stop();
    const before = await historyOf(first, "k1");
    await gateway.close();

    gateway = await startTestGateway({ DTC_DATA_DIR: dataDir, DTC_MQTT_PORT: brokerPort });
    try {
      const base = gateway.url;
      expect((await call(base, "GET", "/api/schemas?q=kept")).body.map((s) => s.id)).toContain("kept");
      expect((await call(base, "GET", "/api/packages/kept-pkg")).status).toBe(200);
      expect((await call(base, "GET", "/api/nodes/edge-k")).body).toMatchObject({
        tier: "mec",
        instances: 2,
      });
      expect((await call(base, "GET", "/api/snapshots")).body.map((s) => s.id)).toEqual([snapshot.body.id]);

      // Running again with its state; the stopped one stays stopped (Done) and readable.
      expect((await call(base, "GET", "/api/instances/k1")).body).toMatchObject({
        node: "edge-k",
        desired: "running",
      });
      expect(await historyOf(base, "k1")).toBeGreaterThanOrEqual(before);
      expect((await call(base, "GET", "/api/instances/k2")).body).toMatchObject({
        desired: "stopped",
        lifecycle: "Done",
      });
      expect((await fetch(`${base}/things/urn:dtc:twin:k1`)).status).toBe(200);

      // And it binds to its PT again.
      for (const sim of sims) await sim.start();
      await waitFor(
        "k1 Entangled again",
        async () => (await call(base, "GET", "/api/instances/k1")).body.lifecycle === "Entangled",
      );
      expect((await call(base, "POST", "/api/instances/k2/start")).status).toBe(200);
      await waitFor(
        "k2 Entangled again",
        async () => (await call(base, "GET", "/api/instances/k2")).body.lifecycle === "Entangled",
      );
    } finally {
      await gateway.close();
    }
  });

  it("brings instances back after kill -9 (the desired state was on disk before the 201)", {
    timeout: 60_000,
  }, async () => {
    const dataDir = mkdtempSync(join(tmpdir(), "dtc-kill-"));
    let gateway = await startGatewayProcess({ DTC_DATA_DIR: dataDir });
    try {
      const started = await call(gateway.url, "POST", "/api/instances", {
        package: "iiot-device",
        node: "local",
        id: "survivor",
        configuration: { DEVICE_ID: "survivor" },
      });
      expect(started.status).toBe(201);
      gateway.child.kill("SIGKILL");
      await new Promise((resolve) => gateway.child.once("exit", resolve));
      gateway = await startGatewayProcess({ DTC_DATA_DIR: dataDir });
      const view = await waitFor("the instance running again", async () => {
        const answer = await call(gateway.url, "GET", "/api/instances/survivor");
        return answer.body.lifecycle !== "NotRunning" ? answer.body : undefined;
      });
      expect(view).toMatchObject({ id: "survivor", node: "local", desired: "running" });
      expect((await fetch(`${gateway.url}/twins/survivor/properties/lifecycleState`)).status).toBe(200);
    } finally {
      await gateway.stop();
      rmSync(dataDir, { recursive: true, force: true });
    }
  });
});
