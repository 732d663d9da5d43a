import { type ChildProcess, spawn } from "node:child_process";
import { once } from "node:events";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { HttpClientFactory } from "@node-wot/binding-http";
import { Servient } from "@node-wot/core";
import { afterAll, beforeAll, describe, expect, it, onTestFinished } from "vitest";
import { loadConfig } from "../src/config.js";
import { type Gateway, startGateway } from "../src/gateway.js";
import { createLogger } from "../src/logger.js";
import { projectRoot } from "../src/paths.js";
import { IiotDeviceSimulator } from "../src/simulator/index.js";
import { waitFor } from "./helpers.js";

const FAST = { expectedUpdateRate: 10, odteWindow: 2, desiredTimeliness: 50 };

/** Starts an IIoT twin on node local through the manager's API; returns the instance. */
async function startTwin(gateway: Gateway, id: string, fidelity?: object): Promise<Record<string, unknown>> {
  const res = await fetch(`${gateway.url}/api/instances`, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({
      package: "iiot-device",
      node: "local",
      id,
      configuration: { DEVICE_ID: id },
      fidelity,
    }),
  });
  const body = (await res.json()) as Record<string, unknown>;
  expect(res.status, JSON.stringify(body)).toBe(201);
  return body;
}

const lifecycleOf = async (gateway: Gateway, id: string) =>
  ((await (await fetch(`${gateway.url}/api/instances/${id}`)).json()) as { lifecycle: string }).lifecycle;

const removeTwin = async (gateway: Gateway, id: string) =>
  expect((await fetch(`${gateway.url}/api/instances/${id}`, { method: "DELETE" })).status).toBe(204);

describe("gateway (in-process)", () => {
  let gateway: Gateway;
  let dataDir: string;
  beforeAll(async () => {
    dataDir = mkdtempSync(join(tmpdir(), "dtc-gw-"));
    gateway = await startGateway(
      loadConfig({
        DTC_PORT: "0",
        DTC_MQTT_PORT: "0",
        DTC_DATA_DIR: dataDir,
        DTC_ENTANGLEMENT_INTERVAL_MS: "100",
        DTC_AUTH: "off",
        DTC_CORS_ORIGINS: "http://app.example",
      }),
      createLogger("silent"),
    );
  });
  afterAll(async () => {
    await gateway?.close();
    rmSync(dataDir, { recursive: true, force: true });
  });

  it("serves /healthz with version and uptime", async () => {
    const res = await fetch(`${gateway.url}/healthz`);
    expect(res.status).toBe(200);
    const body = (await res.json()) as Record<string, unknown>;
    expect(body).toMatchObject({ status: "ok", name: "dtc", version: "0.1.0" });
    expect(body.uptime).toBeTypeOf("number");
  });

  it("answers unknown paths with RFC 9457 problem details", async () => {
    const res = await fetch(`${gateway.url}/nope`);
    expect(res.status).toBe(404);
    expect(res.headers.get("content-type")).toBe("application/problem+json");
    expect(await res.json()).toMatchObject({ status: 404, title: "Not Found", instance: "/nope" });
  });

  it("registers the sample schemas at start", () => {
    expect(gateway.models.iris().length).toBeGreaterThanOrEqual(4);
  });

  it("serves its twins at {url}/twins/{id}: a node-wot client reads and observes one fed through the embedded broker", async () => {
    const sim = new IiotDeviceSimulator({ id: "gw1", brokerUrl: gateway.brokerUrl, rate: 10 });
    const { td } = (await startTwin(gateway, "gw1", FAST)) as { td: Record<string, unknown> };
    const hrefs = JSON.stringify(td.properties);
    expect(hrefs).toContain(`"${gateway.url}/twins/gw1/properties/temperature"`);
    const servient = new Servient();
    servient.addClientFactory(new HttpClientFactory());
    const wot = (await servient.start()) as unknown as typeof WoT;
    try {
      const thing = await wot.consume(td as unknown as WoT.ThingDescription);
      const states: unknown[] = [];
      await thing.observeProperty("lifecycleState", async (v) => void states.push(await v.value()));
      // The PT starts once the consumer observes. A long poll sees the changes made while a request
      // waits (Bound and Entangled can come within one re-poll), so the final state is read.
      await sim.start();
      await waitFor("a lifecycle change observed through the gateway", () => states.length > 0);
      await waitFor("Entangled", async () => (await lifecycleOf(gateway, "gw1")) === "Entangled");
      // Read through node-wot until it says so too: on a loaded machine a late update can flip the
      // twin to Disentangled for a moment between the two reads.
      await waitFor(
        "Entangled read by node-wot",
        async () => (await (await thing.readProperty("lifecycleState")).value()) === "Entangled",
      );
      expect(typeof (await (await thing.readProperty("temperature")).value())).toBe("number");
      const commanded = new Promise((resolve) => sim.once("command", resolve));
      await thing.invokeAction("setRate", 5);
      expect(await commanded).toMatchObject({ rate: 5 });
      expect((await fetch(`${gateway.url}/twins/nobody/properties/x`)).status).toBe(404);
    } finally {
      await servient.shutdown();
      await sim.stop();
      await removeTwin(gateway, "gw1");
    }
  });

  it("publishes its twins to the directory with their status: found by a named query while Entangled, gone once removed", async () => {
    const sim = new IiotDeviceSimulator({ id: "dir1", brokerUrl: gateway.brokerUrl, rate: 10 });
    await sim.start();
    await startTwin(gateway, "dir1", FAST);
    const tdUrl = `${gateway.url}/things/${encodeURIComponent("urn:dtc:twin:dir1")}`;
    const entangled = `${gateway.url}/search/named/twins-by-entanglement?minOdte=0.9&state=Entangled`;
    const things = async (url: string) =>
      (
        (await (await fetch(url)).json()) as { results: { bindings: { thing: { value: string } }[] } }
      ).results.bindings.map((b) => b.thing.value);
    try {
      await waitFor("the twin's TD in the directory", async () => (await fetch(tdUrl)).status === 200);
      const td = (await (await fetch(tdUrl)).json()) as { properties: Record<string, unknown> };
      expect(Object.keys(td.properties)).toContain("entanglement");
      await waitFor("Entangled", async () => (await lifecycleOf(gateway, "dir1")) === "Entangled");
      await waitFor("the twin found by twins-by-entanglement", async () =>
        (await things(entangled)).includes("urn:dtc:twin:dir1"),
      );
      expect(await things(`${gateway.url}/search/named/twins-by-node?platform=in-process`)).toContain(
        "urn:dtc:twin:dir1",
      );
      // The PT goes quiet: the status graph follows the twin out of Entangled.
      await sim.stop();
      await waitFor(
        "the twin gone from the Entangled ones",
        async () => !(await things(entangled)).includes("urn:dtc:twin:dir1"),
        15_000,
      );
    } finally {
      await sim.stop();
      await removeTwin(gateway, "dir1");
    }
    await waitFor("the TD removed from the directory", async () => (await fetch(tdUrl)).status === 404);
    expect(await things(`${gateway.url}/search/named/twins-by-lifecycle?state=Unbound`)).not.toContain(
      "urn:dtc:twin:dir1",
    );
  });

  it("lets browsers call it from the origins it is told (CORS), and from no other", async () => {
    const preflight = await fetch(`${gateway.url}/things/urn:x:1`, {
      method: "OPTIONS",
      headers: { Origin: "http://app.example", "Access-Control-Request-Method": "PUT" },
    });
    expect(preflight.status).toBe(204);
    expect(preflight.headers.get("access-control-allow-origin")).toBe("http://app.example");
    expect(preflight.headers.get("access-control-allow-methods")).toContain("PUT");
    expect(preflight.headers.get("access-control-allow-headers")).toContain("Authorization");
    const list = await fetch(`${gateway.url}/things`, { headers: { Origin: "http://app.example" } });
    expect(list.headers.get("access-control-allow-origin")).toBe("http://app.example");
    expect(list.headers.get("access-control-expose-headers")).toContain("Link");
    const other = await fetch(`${gateway.url}/things`, { headers: { Origin: "http://evil.example" } });
    expect(other.headers.get("access-control-allow-origin")).toBeNull();
  });
});

describe("gateway shutdown", () => {
  it("closes while a consumer's long poll is waiting on a twin", async () => {
    const dataDir = mkdtempSync(join(tmpdir(), "dtc-gw-"));
    onTestFinished(() => rmSync(dataDir, { recursive: true, force: true }));
    const gateway = await startGateway(
      loadConfig({ DTC_PORT: "0", DTC_MQTT_PORT: "0", DTC_DATA_DIR: dataDir, DTC_AUTH: "off" }),
      createLogger("silent"),
    );
    await startTwin(gateway, "idle");
    const local = gateway.inProcess.runtimeOf("local");
    if (!local) throw new Error("node local has no runtime after a start");
    // No PT: these observations wait for a change that never comes, one through the gateway, one
    // straight at node-wot's server (as a consumer in the same host may).
    const polls = [`${gateway.url}/twins`, local.digital.httpListenUrl].map((base) =>
      fetch(`${base}/idle/properties/lifecycleState/observable`).catch((err) => err),
    );
    await waitFor("the long poll to reach the twin", async () => {
      const res = await fetch(`${gateway.url}/twins/idle/properties/lifecycleState`);
      return res.status === 200;
    });
    const started = Date.now();
    await gateway.close();
    expect(Date.now() - started).toBeLessThan(5_000);
    await Promise.all(polls);
  });
});

/** The built entry point, as `npm start` runs it (npm test builds first). */
const main = join(projectRoot, "dist/src/main.js");

/** What startProcess() made: afterAll kills the processes still running and removes the dirs. */
const processes: { child: ChildProcess; dataDir: string }[] = [];

function startProcess(env: Record<string, string>): ChildProcess {
  const dataDir = mkdtempSync(join(tmpdir(), "dtc-proc-"));
  const child = spawn(process.execPath, ["--no-node-snapshot", main], {
    env: {
      PATH: process.env.PATH ?? "",
      // The run's temp root (test/global-setup.ts), where its teardown looks for leftover processes.
      TMPDIR: tmpdir(),
      DTC_MQTT_PORT: "0",
      DTC_DATA_DIR: dataDir,
      ...env,
    },
    stdio: ["ignore", "pipe", "pipe"],
  });
  processes.push({ child, dataDir });
  return child;
}

/** Resolves with the first stdout log line matching `msg`, or rejects at the deadline. */
function waitForLog(child: ChildProcess, msg: string, ms = 20_000): Promise<Record<string, unknown>> {
  return new Promise((resolve, reject) => {
    let buffer = "";
    const timer = setTimeout(() => reject(new Error(`no "${msg}" log line within ${ms} ms`)), ms);
    child.stdout?.on("data", (chunk: Buffer) => {
      buffer += chunk.toString();
      for (const line of buffer.split("\n")) {
        if (!line.startsWith("{")) continue;
        try {
          const entry = JSON.parse(line) as Record<string, unknown>;
          if (entry.msg === msg) {
            clearTimeout(timer);
            resolve(entry);
          }
        } catch {
          // a partial line: wait for the rest
        }
      }
    });
  });
}

describe("gateway process (node dist/src/main.js)", () => {
  beforeAll(() => {
    if (!existsSync(main)) throw new Error(`${main} is missing: run "npm run build" (npm test builds first)`);
  });
  afterAll(async () => {
    for (const { child, dataDir } of processes.splice(0)) {
      if (child.exitCode === null && child.signalCode === null) {
        const exited = once(child, "exit");
        child.kill("SIGKILL");
        await exited;
      }
      rmSync(dataDir, { recursive: true, force: true });
    }
  });

  it("starts, serves /healthz and exits 0 on SIGTERM and on SIGINT", async () => {
    for (const signal of ["SIGTERM", "SIGINT"] as const) {
      const child = startProcess({ DTC_PORT: "0" });
      const { url } = (await waitForLog(child, "dtc gateway listening")) as { url: string };
      const res = await fetch(`${url}/healthz`);
      expect(res.status).toBe(200);
      const exited = once(child, "exit");
      child.kill(signal);
      const [code] = await exited;
      expect(code, signal).toBe(0);
    }
  });

  it("refuses a bad configuration with exit code 2 and the variable named", async () => {
    const child = startProcess({ DTC_PORT: "http" });
    let stderr = "";
    child.stderr?.on("data", (c: Buffer) => {
      stderr += c.toString();
    });
    const [code] = await once(child, "exit");
    expect(code).toBe(2);
    expect(stderr).toContain("Invalid configuration");
    expect(stderr).toContain('DTC_PORT: must be a port number (0-65535) (got "http")');
  });
});
