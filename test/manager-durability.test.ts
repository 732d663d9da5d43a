import { once } from "node:events";
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeAll, describe, expect, it } from "vitest";
import { freePort } from "../src/net.js";
import { thingModelsDir } from "../src/paths.js";
import { IiotDeviceSimulator } from "../src/simulator/index.js";
import { type GatewayProcess, gatewayMain, startGatewayProcess } from "./gateway-process.js";
import { waitFor } from "./helpers.js";
import { call } from "./manager-client.js";

/**
 * The manager's durability across kill -9, as the directory's (directory-durability.test.ts): what
 * the API acknowledged (schemas, packages, nodes, instances with their desired state, snapshots) is
 * there after a restart on the same data dir, and the twins run again.
 */

const WRITERS = 4;
/** Instance starts acknowledged before the kill. */
const STARTS = 12;

describe("manager durability (kill -9 of the gateway process)", () => {
  const gateways: GatewayProcess[] = [];
  const sims: IiotDeviceSimulator[] = [];
  let model: Record<string, unknown>;
  beforeAll(() => {
    if (!existsSync(gatewayMain))
      throw new Error(`${gatewayMain} is missing: run "npm run build" (npm test builds first)`);
    model = JSON.parse(readFileSync(join(thingModelsDir, "iiot-device.tm.jsonld"), "utf8"));
  });
  const killGateways = () => Promise.all(gateways.splice(0).map((g) => g.kill()));
  afterEach(async () => {
    await Promise.all(sims.splice(0).map((s) => s.stop()));
    await killGateways();
  });

  it("keeps every schema, package, node, instance and snapshot acknowledged before the kill, and runs the twins again", {
    timeout: 120_000,
  }, async () => {
    const dataDir = mkdtempSync(join(tmpdir(), "dtc-manager-kill-"));
    try {
      const first = await startGatewayProcess({ DTC_DATA_DIR: dataDir });
      gateways.push(first);

      // What the API acknowledged: the floor of what must survive. An operation unanswered at the
      // kill may or may not have landed, so its instance's desired state is not asserted.
      const acked = {
        schemas: new Set<string>(),
        packages: new Set<string>(),
        nodes: new Set<string>(),
        instances: new Map<string, { node: string; desired: "running" | "stopped" }>(),
        snapshots: new Map<string, string>(),
      };
      const unanswered = new Set<string>();
      let killed = false;
      const kill = () => {
        if (killed) return;
        killed = true;
        first.child.kill("SIGKILL");
      };
      /** A call that resolves undefined once the gateway is gone. */
      const send = async (method: string, path: string, body?: unknown) => {
        if (killed) return undefined;
        try {
          return await call(first.url, method, path, body);
        } catch {
          return undefined;
        }
      };
      const writer = async (w: number) => {
        const schema = `s${w}`;
        const pkg = `p${w}`;
        const node = `n${w}`;
        if ((await send("POST", `/api/schemas?id=${schema}`, model))?.status !== 201) return;
        acked.schemas.add(schema);
        const registered = await send("POST", "/api/packages", { id: pkg, schema, platform: "in-process" });
        if (registered?.status !== 201) return;
        acked.packages.add(pkg);
        const nodeBody = {
          id: node,
          platform: "in-process",
          tier: "edge",
          capabilities: { cpu: 4, memory: 4096 },
        };
        if ((await send("POST", "/api/nodes", nodeBody))?.status !== 201) return;
        acked.nodes.add(node);
        for (let k = 0; !killed; k++) {
          const id = `i${w}-${k}`;
          const start = { package: pkg, node, id, configuration: { DEVICE_ID: id } };
          if ((await send("POST", "/api/instances", start))?.status !== 201) return;
          acked.instances.set(id, { node, desired: "running" });
          // Killed right after the API answered.
          if ([...acked.instances.keys()].length >= STARTS) kill();
          unanswered.add(id);
          const snapshot = await send("POST", `/api/instances/${id}/snapshots`);
          if (snapshot?.status !== 201) return;
          acked.snapshots.set(snapshot.body.id as string, id);
          if (k % 3 === 1) {
            if ((await send("POST", `/api/instances/${id}/stop`))?.status !== 200) return;
            acked.instances.set(id, { node, desired: "stopped" });
          }
          unanswered.delete(id);
        }
      };
      await Promise.all(Array.from({ length: WRITERS }, (_, w) => writer(w)));
      expect(killed).toBe(true);
      if (first.child.exitCode === null && first.child.signalCode === null) await once(first.child, "exit");
      expect(first.child.signalCode).toBe("SIGKILL");

      const mqttPort = await freePort();
      const second = await startGatewayProcess({ DTC_DATA_DIR: dataDir, DTC_MQTT_PORT: String(mqttPort) });
      gateways.push(second);
      const api = (path: string) => call(second.url, "GET", path);
      const missing: string[] = [];
      for (const id of acked.schemas) if ((await api(`/api/schemas/${id}`)).status !== 200) missing.push(id);
      for (const id of acked.packages)
        if ((await api(`/api/packages/${id}`)).status !== 200) missing.push(id);
      for (const id of acked.nodes) if ((await api(`/api/nodes/${id}`)).status !== 200) missing.push(id);
      for (const [snapshot, instance] of acked.snapshots) {
        const read = await api(`/api/snapshots/${snapshot}`);
        if (read.status !== 200 || read.body.instance !== instance || !read.body.state)
          missing.push(snapshot);
      }
      expect(missing).toEqual([]);

      // Every acknowledged instance is there, on its node, desired as acknowledged, and runs again.
      for (const [id, { node, desired }] of acked.instances) {
        const view = await waitFor(`${id} running again`, async () => {
          const answer = await api(`/api/instances/${id}`);
          return answer.body.lifecycle !== "NotRunning" ? answer : undefined;
        });
        expect(view?.body.node, id).toBe(node);
        if (unanswered.has(id)) continue;
        expect(view?.body.desired, id).toBe(desired);
        expect(view?.body.lifecycle, id).toBe(desired === "stopped" ? "Done" : "Unbound");
        expect((await fetch(`${second.url}/twins/${id}/properties/lifecycleState`)).status, id).toBe(200);
      }
      // And one binds to its PT again.
      const [running] =
        [...acked.instances].find(([id, a]) => a.desired === "running" && !unanswered.has(id)) ?? [];
      if (running === undefined) throw new Error("no running instance was acknowledged");
      const sim = new IiotDeviceSimulator({
        id: running,
        brokerUrl: `mqtt://127.0.0.1:${mqttPort}`,
        rate: 10,
      });
      sims.push(sim);
      await sim.start();
      await waitFor(`${running} bound to its PT`, async () =>
        ["Bound", "Entangled"].includes((await api(`/api/instances/${running}`)).body.lifecycle as string),
      );
      await second.stop();
    } finally {
      // Not while a gateway of a failed run still writes there.
      await killGateways();
      rmSync(dataDir, { recursive: true, force: true });
    }
  });
});
