import { type ChildProcess, spawn } from "node:child_process";
import { once } from "node:events";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { HttpClientFactory } from "@node-wot/binding-http";
import { MqttClientFactory } from "@node-wot/binding-mqtt";
import { Servient } from "@node-wot/core";
import mqtt from "mqtt";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { TwinState } from "../src/domain/twin-state.js";
import { projectRoot, thingModelsDir } from "../src/paths.js";
import {
  TwinManagementClient,
  TwinManagementError,
  type TwinManagementEvent,
} from "../src/runtime/management-client.js";
import { IiotDeviceSimulator } from "../src/simulator/index.js";
import type { JsonObject } from "../src/wot/rdf.js";
import { startBroker, type TestBroker } from "./brokers.js";
import { sample, waitFor } from "./helpers.js";

/**
 * The standalone twin process (`node dist/src/twin-main.js`, what a container runs) and its
 * management endpoint, through the client the Docker driver uses: real processes, a real broker,
 * a simulated PT. `npm test` builds dist/ first.
 */

const twinMain = join(projectRoot, "dist/src/twin-main.js");
const IIOT = sample("iiot-device.tm.jsonld");
// As test/twin-runtime.test.ts, with a Td that leaves room for three processes on a busy box: these
// tests are about the process and its endpoint, not about timeliness.
const FIDELITY = { expectedUpdateRate: 10, odteWindow: 2, desiredTimeliness: 250, odteThreshold: 0.9 };
/** A twin attached to its PT (whether it is Entangled at a given instant is up to the machine's load). */
const ATTACHED = ["Unbound", "Bound", "Entangled", "Disentangled"];
const BASE_URI = "http://gateway.example/twins";

interface Ready {
  httpPort: number;
  managementPort: number;
  twin: string | null;
}

interface TwinChild {
  child: ChildProcess;
  ready: Ready;
  client: TwinManagementClient;
  /** Resolves with the exit code (or signal) once the process exited. */
  exited: Promise<number | string>;
  stderr(): string;
}

const children = new Set<ChildProcess>();

/** Spawns the process with `env` over a clean environment; resolves on end of the process. */
function spawnTwin(env: Record<string, string>): {
  child: ChildProcess;
  exited: Promise<number | string>;
  stdout(): string;
  stderr(): string;
} {
  const child = spawn(process.execPath, ["--no-node-snapshot", twinMain], {
    // TMPDIR: the run's temp root (test/global-setup.ts), where its teardown looks for leftover processes.
    env: { PATH: process.env.PATH ?? "", TMPDIR: tmpdir(), ...env },
    stdio: ["ignore", "pipe", "pipe"],
  });
  children.add(child);
  let stdout = "";
  let stderr = "";
  child.stdout?.on("data", (d: Buffer) => {
    stdout += d.toString();
  });
  child.stderr?.on("data", (d: Buffer) => {
    stderr += d.toString();
  });
  const exited = new Promise<number | string>((resolve) =>
    child.once("exit", (code, signal) => {
      children.delete(child);
      resolve(code ?? signal ?? "unknown");
    }),
  );
  return { child, exited, stdout: () => stdout, stderr: () => stderr };
}

describe("twin process", () => {
  let broker: TestBroker;
  let watcher: mqtt.MqttClient;
  /** Every message seen on the watched topics, in order. */
  const seen: { topic: string; payload: string }[] = [];
  const devices: IiotDeviceSimulator[] = [];
  let dir: string;

  beforeAll(async () => {
    broker = await startBroker("aedes");
    watcher = await mqtt.connectAsync(broker.url);
    watcher.on("message", (topic, payload) => seen.push({ topic, payload: payload.toString() }));
    dir = mkdtempSync(join(tmpdir(), "dtc-twin-process-"));
  });

  afterAll(async () => {
    await Promise.all(
      [...children].map((child) => {
        const exited = once(child, "exit");
        child.kill("SIGKILL");
        return exited;
      }),
    );
    await Promise.all(devices.map((d) => d.stop()));
    await watcher?.endAsync();
    await broker?.stop();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  const baseEnv = (): Record<string, string> => ({
    DTC_MQTT_URL: broker.url,
    DTC_TWIN_PORT: "0",
    DTC_TWIN_MANAGEMENT_PORT: "0",
    DTC_TWIN_HOST: "127.0.0.1",
    DTC_ENTANGLEMENT_INTERVAL_MS: "100",
  });

  /** Starts a twin process and resolves once it logged that it is ready. */
  async function startTwin(config: unknown, env: Record<string, string> = {}): Promise<TwinChild> {
    const spawned = spawnTwin({ ...baseEnv(), DTC_TWIN: JSON.stringify(config), ...env });
    let exit: number | string | undefined;
    void spawned.exited.then((code) => {
      exit = code;
    });
    const line = await waitFor("the ready line", () => {
      if (exit !== undefined) {
        throw new Error(`the twin process exited (${exit}) before it was ready: ${spawned.stderr()}`);
      }
      return spawned
        .stdout()
        .split("\n")
        .find((l) => l.includes('"twin process ready"'));
    });
    const ready = JSON.parse(line as string) as Ready;
    return {
      child: spawned.child,
      ready,
      client: new TwinManagementClient(`http://127.0.0.1:${ready.managementPort}`, {
        token: env.DTC_TWIN_TOKEN,
      }),
      exited: spawned.exited,
      stderr: spawned.stderr,
    };
  }

  /** Runs the process to its end: exit code and stderr. */
  async function runToExit(env: Record<string, string>): Promise<{ code: number | string; stderr: string }> {
    const spawned = spawnTwin(env);
    const code = await spawned.exited;
    return { code, stderr: spawned.stderr() };
  }

  async function device(id: string): Promise<IiotDeviceSimulator> {
    const sim = new IiotDeviceSimulator({ id, brokerUrl: broker.url, rate: 10 });
    devices.push(sim);
    await sim.start();
    return sim;
  }

  const twinConfig = (id: string, schema = IIOT) => ({
    id,
    schema,
    placeholders: { DEVICE_ID: id },
    fidelity: FIDELITY,
  });

  /** Collects a process's events until closed. */
  function collect(client: TwinManagementClient) {
    const events: TwinManagementEvent[] = [];
    const ended: { closed: boolean; err?: Error } = { closed: false };
    const close = client.events(
      (e) => events.push(e),
      (err) => {
        ended.closed = true;
        ended.err = err;
      },
    );
    const lifecycles = () => events.filter((e) => e.type !== "twin").map((e) => e.data.lifecycle);
    return { events, ended, close, lifecycles };
  }

  /** Watches a twin's retained-TD topic: the messages on it from now on (the retained one first). */
  async function watchTd(id: string): Promise<() => string[]> {
    await watcher.subscribeAsync(id);
    return () => seen.filter((m) => m.topic === id).map((m) => m.payload);
  }

  it("starts, is healthy, entangles (seen through /events), and serves its TD and properties over HTTP and MQTT; SIGTERM removes it and exits 0", async () => {
    await device("p1");
    const twin = await startTwin({ twin: twinConfig("p1") }, { DTC_TWIN_BASE_URI: BASE_URI });
    expect(twin.ready).toMatchObject({ twin: "p1", httpPort: expect.any(Number) });
    expect(twin.ready.httpPort).toBeGreaterThan(0);
    expect(twin.ready.managementPort).toBeGreaterThan(0);

    const health = await twin.client.health();
    expect(health).toMatchObject({ ok: true, status: "ok", id: "p1" });

    const stream = collect(twin.client);
    await waitFor("Entangled, seen through /events", () => stream.lifecycles().includes("Entangled"));
    expect(stream.events[0]?.type).toBe("status");
    await waitFor("entanglement events", () => stream.events.some((e) => e.type === "entanglement"));
    const status = await twin.client.status();
    expect(ATTACHED).toContain(status.lifecycle);
    expect(status.entanglement?.odte).toEqual(expect.any(Number));

    // The TD's HTTP forms are under the base URI the gateway gives; MQTT forms point at the broker.
    const td = await twin.client.td();
    expect(td.id).toBe("urn:dtc:twin:p1");
    const hrefs = Object.values(td.properties as Record<string, { forms: { href: string }[] }>).flatMap((p) =>
      p.forms.map((f) => f.href),
    );
    expect(hrefs).toContain(`${BASE_URI}/p1/properties/temperature`);
    expect(hrefs.some((h) => h.startsWith("mqtt://"))).toBe(true);
    expect(hrefs.every((h) => h.startsWith(BASE_URI) || h.startsWith("mqtt://"))).toBe(true);

    // node-wot's server answers at the process's HTTP port, whatever the forms' base.
    const direct = await fetch(`http://127.0.0.1:${twin.ready.httpPort}/p1/properties/temperature`);
    expect(direct.status).toBe(200);
    expect(typeof (await direct.json())).toBe("number");
    // A node-wot client, on the TD with its base rewritten to where the process listens.
    const servient = new Servient();
    servient.addClientFactory(new HttpClientFactory());
    servient.addClientFactory(new MqttClientFactory());
    const wot = (await servient.start()) as unknown as typeof WoT;
    try {
      const local = JSON.parse(
        JSON.stringify(td).replaceAll(BASE_URI, `http://127.0.0.1:${twin.ready.httpPort}`),
      ) as WoT.ThingDescription;
      const thing = await wot.consume(local);
      expect(typeof (await (await thing.readProperty("temperature")).value())).toBe("number");
      expect(ATTACHED).toContain(await (await thing.readProperty("lifecycleState")).value());
    } finally {
      await servient.shutdown();
    }

    // The retained TD is on the broker; SIGTERM removes the twin, which clears it.
    const onTopic = await watchTd("p1");
    await waitFor("the retained TD", () => onTopic()[0]?.includes("urn:dtc:twin:p1"));
    twin.child.kill("SIGTERM");
    expect(await twin.exited).toBe(0);
    await waitFor("the retained TD cleared (an empty retained message)", () => onTopic().includes(""));
    // The event stream saw the twin dismissed, then ended without an error.
    await waitFor("the stream closed", () => stream.ended.closed);
    expect(stream.ended.err).toBeUndefined();
    expect(stream.lifecycles().at(-1)).toBe("Stopped");
  });

  it("stops (Done) and resumes; conflicting operations answer 409", async () => {
    await device("p2");
    const twin = await startTwin({ twin: twinConfig("p2") });
    await waitFor("Entangled", async () => (await twin.client.status()).lifecycle === "Entangled");

    await twin.client.stop();
    expect((await twin.client.status()).lifecycle).toBe("Done");
    expect(await twin.client.health()).toMatchObject({ ok: true, lifecycle: "Done" });
    await twin.client.resume();
    await waitFor("Entangled again", async () => (await twin.client.status()).lifecycle === "Entangled");

    const conflict = await twin.client.resume().catch((err: unknown) => err);
    expect(conflict).toBeInstanceOf(TwinManagementError);
    expect(conflict).toMatchObject({ status: 409, message: expect.stringContaining("only a Done twin") });
    // A state of another twin is refused, and the twin keeps running.
    const state = await twin.client.exportState();
    const other = { ...state, config: { ...state.config, id: "someone-else" } };
    await expect(twin.client.importState(other)).rejects.toMatchObject({ status: 409 });
    await expect(twin.client.importState({ format: "nope" } as unknown as TwinState)).rejects.toMatchObject({
      status: 400,
    });
    const broken = { ...state, augmentations: [{ name: "broken", source: "((" }] };
    await expect(twin.client.importState(broken)).rejects.toMatchObject({
      status: 400,
      message: expect.stringContaining("broken"),
    });
    const health = await twin.client.health();
    expect(health.ok).toBe(true);
    expect(ATTACHED).toContain(health.lifecycle);
    const unknown = await fetch(`http://127.0.0.1:${twin.ready.managementPort}/twins`);
    expect(unknown.status).toBe(404);
    expect(unknown.headers.get("content-type")).toBe("application/problem+json");

    await twin.client.shutdown();
    expect(await twin.exited).toBe(0);
  });

  it("moves: the state exported from one process is imported by another awaiting it, history and all; shutdown with handover keeps the retained TD, without clears it", async () => {
    await device("p3");
    const source = await startTwin({ twin: twinConfig("p3") });
    await waitFor("Entangled", async () => (await source.client.status()).lifecycle === "Entangled");
    await waitFor("some history", async () => (await source.client.exportState()).history.states.length >= 5);

    const target = await startTwin({ twin: twinConfig("p3"), awaitState: true });
    expect(target.ready.twin).toBeNull();
    expect(await target.client.health()).toMatchObject({ ok: false, status: "awaiting-state", id: "p3" });
    await expect(target.client.td()).rejects.toMatchObject({ status: 409 });
    await expect(target.client.waitReady(200)).rejects.toThrow(/not ready within 200 ms.*awaiting-state/);
    const stream = collect(target.client);
    await waitFor("the first event", () => stream.events.length > 0);
    expect(stream.events[0]).toEqual({ type: "status", data: { lifecycle: null } });

    const state = await source.client.exportState();
    const imported = await target.client.importState(state);
    expect(imported.td.id).toBe("urn:dtc:twin:p3");
    // Attached again (it may have bound already: the PT's status is retained on the broker).
    expect(ATTACHED).toContain(imported.status.lifecycle);
    await target.client.waitReady(5000);
    await waitFor("a twin event", () => stream.events.some((e) => e.type === "twin"));
    await waitFor("Entangled on the target", () => stream.lifecycles().includes("Entangled"));

    // The history came along (the source's states are the target's first), and goes on.
    const moved = (await waitFor("new states on the target", async () => {
      const now = await target.client.exportState();
      return now.history.states.length > state.history.states.length ? now : undefined;
    })) as TwinState;
    expect(moved.history.states.slice(0, state.history.states.length)).toEqual(state.history.states);
    expect(moved.lifecycle.history.length).toBeGreaterThan(state.lifecycle.history.length);

    // The source leaves with handover: the retained TD (the target's now) stays.
    const onTopic = await watchTd("p3");
    await waitFor("the retained TD", () => onTopic()[0]?.includes("urn:dtc:twin:p3"));
    const last = await source.client.shutdown({ handover: true });
    expect(last?.lifecycle.state).toBe("Stopped");
    expect(await source.exited).toBe(0);
    await watcher.unsubscribeAsync("p3");
    seen.length = 0;
    const again = await watchTd("p3");
    await waitFor("the retained TD still there", () => again().length > 0);
    expect(again()[0]).toContain("urn:dtc:twin:p3");

    // The target leaves for good: its retained TD is cleared.
    expect((await target.client.shutdown({ handover: false }))?.config.id).toBe("p3");
    expect(await target.exited).toBe(0);
    await waitFor("the retained TD cleared", () => again().includes(""));
    await waitFor("the target's stream ended", () => stream.ended.closed);
  });

  it("with DTC_TWIN_TOKEN, every route but /health needs the bearer token", async () => {
    const twin = await startTwin({ twin: twinConfig("p4"), awaitState: true }, { DTC_TWIN_TOKEN: "s3cret" });
    const base = `http://127.0.0.1:${twin.ready.managementPort}`;
    expect((await fetch(`${base}/health`)).status).toBe(503); // open: awaiting its state
    const refused = await fetch(`${base}/status`);
    expect(refused.status).toBe(401);
    expect(refused.headers.get("content-type")).toBe("application/problem+json");
    expect(refused.headers.get("www-authenticate")).toMatch(/^Bearer/);
    expect((await fetch(`${base}/state`, { headers: { Authorization: "Bearer wrong" } })).status).toBe(401);
    const anonymous = new TwinManagementClient(base);
    await expect(anonymous.exportState()).rejects.toMatchObject({ status: 401 });
    // With the token: the route answers (409: no twin yet).
    await expect(twin.client.status()).rejects.toMatchObject({ status: 409 });
    await expect(anonymous.shutdown()).rejects.toMatchObject({ status: 401 });
    expect(await twin.client.shutdown()).toBeUndefined();
    expect(await twin.exited).toBe(0);
    // Gone: the client says it is unreachable (no status).
    const gone = await twin.client.health().catch((err: unknown) => err);
    expect(gone).toBeInstanceOf(TwinManagementError);
    expect((gone as TwinManagementError).status).toBeUndefined();
  });

  it("runs a schema given in `models` (not in thing-models/), configured through DTC_TWIN_FILE", async () => {
    await device("p5");
    const iri = "https://example.org/models/custom-device.tm.jsonld";
    const model = JSON.parse(
      readFileSync(join(thingModelsDir, "iiot-device.tm.jsonld"), "utf8"),
    ) as JsonObject;
    model.title = "Custom device {{DEVICE_ID}}";
    const file = join(dir, "p5.json");
    writeFileSync(file, JSON.stringify({ twin: twinConfig("p5", iri), models: { [iri]: model } }));
    const twin = await startTwin(undefined, { DTC_TWIN: "", DTC_TWIN_FILE: file });
    const td = await twin.client.td();
    expect(td.title).toBe("Custom device p5");
    expect(td.links).toContainEqual(expect.objectContaining({ rel: "type", href: iri }));
    await waitFor("Entangled", async () => (await twin.client.status()).lifecycle === "Entangled");
    await twin.client.shutdown();
    expect(await twin.exited).toBe(0);

    // Without the model, the same configuration cannot start: a configuration error.
    const { code, stderr } = await runToExit({
      ...baseEnv(),
      DTC_TWIN: JSON.stringify({ twin: twinConfig("p5", iri) }),
    });
    expect(code).toBe(2);
    expect(stderr).toMatch(/^dtc-twin: /);
    expect(stderr).toContain("DTC_TWIN");
    expect(stderr).toContain(`${iri}: (iri): is not a registered Thing Model`);
  });

  it("refuses a bad environment with exit status 2, naming the variable", async () => {
    const config = JSON.stringify({ twin: twinConfig("p6") });
    const noBroker = await runToExit({ DTC_TWIN: config });
    expect(noBroker.code).toBe(2);
    expect(noBroker.stderr).toContain("DTC_MQTT_URL: is required");

    const badJson = await runToExit({ ...baseEnv(), DTC_TWIN: "{not json" });
    expect(badJson.code).toBe(2);
    expect(badJson.stderr).toContain("DTC_TWIN: is not valid JSON");

    const badTwin = await runToExit({
      ...baseEnv(),
      DTC_TWIN: JSON.stringify({ twin: { ...twinConfig("P6"), fidelity: { odteThreshold: 2 } } }),
    });
    expect(badTwin.code).toBe(2);
    expect(badTwin.stderr).toContain("DTC_TWIN: twin.id: must be 1-63 characters");
    expect(badTwin.stderr).toContain("DTC_TWIN: twin.fidelity.odteThreshold:");

    const both = await runToExit({ ...baseEnv(), DTC_TWIN: config, DTC_TWIN_FILE: join(dir, "x.json") });
    expect(both.code).toBe(2);
    expect(both.stderr).toContain("exactly one of DTC_TWIN and DTC_TWIN_FILE");

    const neither = await runToExit({ ...baseEnv(), DTC_TWIN_PORT: "http" });
    expect(neither.code).toBe(2);
    expect(neither.stderr).toContain("exactly one of DTC_TWIN and DTC_TWIN_FILE");
    expect(neither.stderr).toContain("DTC_TWIN_PORT: must be a port number");

    const secret = await runToExit({ DTC_TWIN: config, DTC_TWIN_TOKEN: "hush", LOG_LEVEL: "loud" });
    expect(secret.code).toBe(2);
    expect(secret.stderr).toContain("LOG_LEVEL");
    expect(secret.stderr).not.toContain("hush");
  });
});
