import { execFile, spawn } from "node:child_process";
import { once } from "node:events";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import mqtt from "mqtt";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import {
  CATEGORIES,
  type CameraFrame,
  CameraSimulator,
  IiotDeviceSimulator,
  IiotFleet,
  type IiotTelemetry,
  Scheduler,
  seededRandom,
} from "../src/simulator/index.js";
import { freePort, startBroker, type TestBroker } from "./brokers.js";

let broker: TestBroker;
beforeAll(async () => {
  broker = await startBroker("aedes");
});
afterAll(() => broker?.stop());

/** Everything a test started, stopped after it whatever the outcome. */
const cleanup: (() => Promise<unknown> | unknown)[] = [];
afterEach(async () => {
  for (const done of cleanup.splice(0).reverse()) await done();
});

/** Polls `check` until it returns something other than undefined/false, or fails after `deadlineMs`. */
async function waitFor<T>(what: string, check: () => T | undefined | false, deadlineMs = 5000): Promise<T> {
  const until = Date.now() + deadlineMs;
  for (;;) {
    const value = check();
    if (value !== undefined && value !== false) return value;
    if (Date.now() > until) throw new Error(`timed out after ${deadlineMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

interface Received {
  topic: string;
  body: Record<string, unknown>;
  /** Receive time (epoch ms). */
  at: number;
  retain: boolean;
}

/** A subscriber recording every message on `filters`, with what it received when. */
async function listen(...filters: string[]) {
  const client = await mqtt.connectAsync(broker.url, { reconnectPeriod: 0 });
  const messages: Received[] = [];
  client.on("message", (topic, payload, packet) => {
    messages.push({ topic, body: JSON.parse(payload.toString()), at: Date.now(), retain: packet.retain });
  });
  await client.subscribeAsync(filters, { qos: 1 });
  cleanup.push(() => client.endAsync());
  return {
    client,
    messages,
    on: (topic: string) => messages.filter((m) => m.topic === topic),
    telemetry: (id: string) =>
      messages
        .filter((m) => m.topic === `dtc/iiot/${id}/telemetry`)
        .map((m) => m.body as unknown as IiotTelemetry),
  };
}

/** Starts a simulator and stops it after the test. */
async function started<S extends { start(): Promise<void>; stop(): Promise<void> }>(sim: S): Promise<S> {
  cleanup.push(() => sim.stop());
  await sim.start();
  return sim;
}

/** The retained message a fresh subscriber gets on `topic`. */
async function retained(topic: string): Promise<Record<string, unknown>> {
  const sub = await listen(topic);
  const m = await waitFor(`a retained message on ${topic}`, () => sub.messages.find((x) => x.retain));
  return m.body;
}

/** Telemetry samples whose ts falls in [from, from + windowMs), once one past the window arrived. */
async function inWindow(samples: () => { ts: number }[], from: number, windowMs: number): Promise<number> {
  await waitFor(
    `a sample after ${windowMs} ms`,
    () => samples().some((s) => s.ts >= from + windowMs),
    windowMs + 5000,
  );
  return samples().filter((s) => s.ts >= from && s.ts < from + windowMs).length;
}

describe("IIoT device simulator", () => {
  it("publishes a retained online status, then telemetry with the schema's fields and consecutive seq", async () => {
    const sub = await listen("dtc/iiot/t1/#");
    const before = Date.now();
    await started(new IiotDeviceSimulator({ id: "t1", brokerUrl: broker.url, rate: 20 }));
    await waitFor("10 samples", () => sub.telemetry("t1").length >= 10);

    expect(sub.messages[0]?.topic).toBe("dtc/iiot/t1/status");
    expect(sub.messages[0]?.body).toEqual({ status: "online", ts: expect.any(Number) });
    const samples = sub.telemetry("t1");
    let energy = 0;
    samples.forEach((s, i) => {
      expect(Object.keys(s).sort()).toEqual(["energy", "rate", "seq", "temperature", "ts"]);
      expect(s.seq).toBe(i + 1);
      expect(s.ts).toBeGreaterThanOrEqual(before);
      expect(s.ts).toBeLessThanOrEqual(Date.now());
      expect(s.temperature).toBeGreaterThanOrEqual(20);
      expect(s.temperature).toBeLessThanOrEqual(80);
      expect(s.energy).toBeGreaterThanOrEqual(energy);
      energy = s.energy;
      expect(s.rate).toBe(20);
    });
    expect(energy).toBeGreaterThan(0);
  });

  it("samples at its rate (20 Hz and 200 Hz over one second, within 25 %)", async () => {
    const sub = await listen("dtc/iiot/r20/telemetry", "dtc/iiot/r200/telemetry");
    await Promise.all([
      started(new IiotDeviceSimulator({ id: "r20", brokerUrl: broker.url, rate: 20 })),
      started(new IiotDeviceSimulator({ id: "r200", brokerUrl: broker.url, rate: 200 })),
    ]);
    for (const [id, rate] of [
      ["r20", 20],
      ["r200", 200],
    ] as const) {
      const first = await waitFor(`a first sample of ${id}`, () => sub.telemetry(id)[0]);
      const n = await inWindow(() => sub.telemetry(id), first.ts, 1000);
      expect(n).toBeGreaterThanOrEqual(rate * 0.75);
      expect(n).toBeLessThanOrEqual(rate * 1.25);
    }
  });

  it("obeys a setRate command over MQTT and ignores invalid commands with a warning", async () => {
    const sub = await listen("dtc/iiot/c1/telemetry");
    const warnings: string[] = [];
    const dev = await started(
      new IiotDeviceSimulator({
        id: "c1",
        brokerUrl: broker.url,
        rate: 5,
        onWarning: (w) => warnings.push(w),
      }),
    );
    await waitFor("a first sample", () => sub.telemetry("c1").length > 0);

    const applied = once(dev, "command");
    await sub.client.publishAsync("dtc/iiot/c1/commands", JSON.stringify({ command: "setRate", rate: 50 }));
    expect(await applied).toEqual([{ command: "setRate", rate: 50 }]);
    expect(dev.rate).toBe(50);
    const first50 = await waitFor("a sample at 50 Hz", () => sub.telemetry("c1").find((s) => s.rate === 50));
    const n = await inWindow(() => sub.telemetry("c1"), first50.ts, 500);
    expect(n).toBeGreaterThanOrEqual(25 * 0.75);
    expect(n).toBeLessThanOrEqual(25 * 1.25);

    for (const bad of [
      '{"command":"setRate","rate":0}',
      '{"command":"reboot"}',
      "not json",
      '{"rate":"fast"}',
    ]) {
      await sub.client.publishAsync("dtc/iiot/c1/commands", bad);
    }
    await waitFor("4 warnings", () => warnings.length === 4);
    expect(warnings[0]).toMatch(/c1.*rate must be a number > 0/);
    expect(warnings[1]).toMatch(/unknown command "reboot"/);
    expect(warnings[2]).toMatch(/not JSON/);
    expect(dev.rate).toBe(50);
  });

  it("loses about the share of samples set by loss, reproducibly with a seed, and keeps counting seq", async () => {
    const sub = await listen("dtc/iiot/+/telemetry");
    const options = { brokerUrl: broker.url, rate: 400, loss: 0.5 };
    const a = await started(new IiotDeviceSimulator({ id: "l1", ...options, random: seededRandom(7) }));
    const b = await started(new IiotDeviceSimulator({ id: "l2", ...options, random: seededRandom(7) }));
    await waitFor("300 samples", () => a.seq >= 300 && b.seq >= 300);
    await a.stop();
    await b.stop();
    await waitFor("every published sample", () => sub.telemetry("l1").length === a.sent);

    const seqs = sub.telemetry("l1").map((s) => s.seq);
    expect(seqs).toEqual([...seqs].sort((x, y) => x - y));
    expect(a.sent + a.dropped).toBe(a.seq);
    expect(a.dropped / a.seq).toBeGreaterThan(0.4);
    expect(a.dropped / a.seq).toBeLessThan(0.6);
    const last = seqs.at(-1) ?? 0;
    expect(last - seqs.length).toBeGreaterThan(0.4 * last); // the gaps are the lost samples
    // Same seed, same losses.
    await waitFor("l2's samples", () => sub.telemetry("l2").length === b.sent);
    const first100 = (id: string) =>
      sub
        .telemetry(id)
        .map((s) => s.seq)
        .filter((s) => s <= 100);
    expect(first100("l2")).toEqual(first100("l1"));
  });

  it("holds messages back by latency ± jitter while ts stays the sample time", async () => {
    const sub = await listen("dtc/iiot/lat1/telemetry");
    const dev = await started(
      new IiotDeviceSimulator({
        id: "lat1",
        brokerUrl: broker.url,
        rate: 20,
        latencyMs: 150,
        random: seededRandom(1),
      }),
    );
    await waitFor("10 samples", () => sub.on("dtc/iiot/lat1/telemetry").length >= 10);
    const delays = sub.on("dtc/iiot/lat1/telemetry").map((m) => m.at - (m.body.ts as number));
    expect(Math.min(...delays)).toBeGreaterThanOrEqual(150);
    expect(delays.sort((x, y) => x - y)[5]).toBeLessThan(400);

    const changedAt = Date.now();
    dev.setFaults({ latencyMs: 100, jitterMs: 50 });
    expect(dev.faults).toEqual({ latencyMs: 100, jitterMs: 50, loss: 0 });
    const sinceChange = () =>
      sub.on("dtc/iiot/lat1/telemetry").filter((m) => (m.body.ts as number) > changedAt);
    await waitFor("20 samples after the change", () => sinceChange().length >= 20);
    const jittered = sinceChange().map((m) => m.at - (m.body.ts as number));
    expect(Math.min(...jittered)).toBeGreaterThanOrEqual(50);
    expect(Math.max(...jittered) - Math.min(...jittered)).toBeGreaterThan(30);
  });

  it("goes offline (retained status, no telemetry, still connected) and back online, seq going on", async () => {
    const sub = await listen("dtc/iiot/o1/telemetry");
    const dev = await started(new IiotDeviceSimulator({ id: "o1", brokerUrl: broker.url, rate: 50 }));
    const witness = await started(new IiotDeviceSimulator({ id: "o2", brokerUrl: broker.url, rate: 50 }));
    await waitFor("samples", () => sub.telemetry("o1").length >= 3);

    await dev.goOffline();
    const seq = dev.seq;
    expect(dev.state).toBe("offline");
    expect(await retained("dtc/iiot/o1/status")).toEqual({ status: "offline", ts: expect.any(Number) });
    // The witness samples on: ten of its samples' time passes with none from the offline device.
    const witnessSeq = witness.seq;
    await waitFor("10 witness samples", () => witness.seq >= witnessSeq + 10);
    expect(dev.seq).toBe(seq);
    expect(sub.telemetry("o1").every((s) => s.seq <= seq)).toBe(true);
    expect(dev.client?.connected).toBe(true);

    await dev.goOnline();
    expect(await retained("dtc/iiot/o1/status")).toEqual({ status: "online", ts: expect.any(Number) });
    await waitFor("the next sample", () => sub.telemetry("o1").some((s) => s.seq === seq + 1));
  });

  it("crash() drops the connection so that the broker delivers the last will", async () => {
    const sub = await listen("dtc/iiot/k1/status");
    const dev = await started(new IiotDeviceSimulator({ id: "k1", brokerUrl: broker.url }));
    await waitFor("online", () => sub.messages.some((m) => m.body.status === "online"));
    dev.crash();
    expect(dev.state).toBe("crashed");
    // The will carries no ts: only the broker can have published it.
    const will = await waitFor("the will", () => sub.messages.find((m) => m.body.ts === undefined));
    expect(will.body).toEqual({ status: "offline" });
  });

  it("stop() publishes a retained offline status and disconnects cleanly (no will)", async () => {
    const sub = await listen("dtc/iiot/s1/status", "dtc/iiot/s2/status");
    const dev = new IiotDeviceSimulator({ id: "s1", brokerUrl: broker.url });
    await dev.start();
    await dev.stop();
    expect(dev.state).toBe("stopped");
    // A crash after the stop is the barrier: once its will is in, a will of s1 would have been too.
    const other = new IiotDeviceSimulator({ id: "s2", brokerUrl: broker.url });
    await other.start();
    other.crash();
    await waitFor("s2's will", () => sub.on("dtc/iiot/s2/status").some((m) => m.body.ts === undefined));
    expect(sub.on("dtc/iiot/s1/status").map((m) => m.body)).toEqual([
      { status: "online", ts: expect.any(Number) },
      { status: "offline", ts: expect.any(Number) },
    ]);
  });

  it("shares a client: status on start and stop, the will's payload on crash, the client left open", async () => {
    const client = await mqtt.connectAsync(broker.url);
    cleanup.push(() => client.endAsync());
    const sub = await listen("dtc/iiot/sh1/status");
    const dev = new IiotDeviceSimulator({ id: "sh1", client, rate: 10 });
    await dev.start();
    await dev.stop();
    await dev.start(); // a reboot
    dev.crash();
    await waitFor("4 statuses", () => sub.messages.length === 4);
    expect(sub.messages.map((m) => m.body.status)).toEqual(["online", "offline", "online", "offline"]);
    expect(sub.messages[3]?.body).toEqual({ status: "offline" });
    expect(client.connected).toBe(true);
  });

  it("rejects bad options and an unreachable broker, naming the fault", async () => {
    const brokerUrl = broker.url;
    expect(() => new IiotDeviceSimulator({ id: "x", brokerUrl, rate: 0 })).toThrow(
      /rate must be a number > 0/,
    );
    expect(() => new IiotDeviceSimulator({ id: "x", brokerUrl, loss: 1.5 })).toThrow(/loss/);
    expect(() => new IiotDeviceSimulator({ id: "x", brokerUrl, latencyMs: -1 })).toThrow(/latencyMs/);
    expect(() => new IiotDeviceSimulator({ id: "a/b", brokerUrl })).toThrow(/id/);
    expect(() => new IiotDeviceSimulator({ id: "x" })).toThrow(/brokerUrl and client/);
    expect(() => new IiotDeviceSimulator({ id: "x", brokerUrl }).setRate(1001)).toThrow(/<= 1000/);
    const nowhere = `mqtt://127.0.0.1:${await freePort()}`;
    const dev = new IiotDeviceSimulator({ id: "x", brokerUrl: nowhere });
    await expect(dev.start()).rejects.toThrow(nowhere);
    expect(dev.state).toBe("idle");
  });
});

describe("MASA camera simulator", () => {
  it("publishes frames of detections near the camera, with count and frame numbers", async () => {
    const sub = await listen("dtc/masa/cameras/cam1/#");
    const cam = await started(
      new CameraSimulator({
        id: "cam1",
        brokerUrl: broker.url,
        rate: 20,
        latitude: 41.38,
        longitude: 2.17,
        random: seededRandom(5),
      }),
    );
    expect(cam.rate).toBe(20);
    const frames = () =>
      sub.on("dtc/masa/cameras/cam1/detections").map((m) => m.body as unknown as CameraFrame);
    await waitFor("10 frames", () => frames().length >= 10);
    expect(sub.messages[0]?.body).toEqual({ status: "online", ts: expect.any(Number) });
    frames().forEach((f, i) => {
      expect(Object.keys(f).sort()).toEqual(["count", "detections", "frame", "ts"]);
      expect(f.frame).toBe(i + 1);
      expect(f.count).toBe(f.detections.length);
      for (const d of f.detections) {
        expect(CATEGORIES).toContain(d.category);
        expect(d.confidence).toBeGreaterThanOrEqual(0);
        expect(d.confidence).toBeLessThanOrEqual(1);
        expect(Math.abs(d.latitude - 41.38)).toBeLessThan(0.001);
        expect(Math.abs(d.longitude - 2.17)).toBeLessThan(0.001);
        expect(d.speed).toBeGreaterThanOrEqual(0);
        expect(d.heading).toBeGreaterThanOrEqual(0);
        expect(d.heading).toBeLessThanOrEqual(360);
      }
    });
    expect(frames().some((f) => f.count > 0)).toBe(true);
  });

  it("defaults to 10 Hz and has the same status scheme", async () => {
    const sub = await listen("dtc/masa/cameras/cam2/status");
    const cam = new CameraSimulator({ id: "cam2", brokerUrl: broker.url });
    expect(cam.rate).toBe(10);
    await cam.start();
    cam.crash();
    await waitFor("the will", () => sub.messages.some((m) => m.body.ts === undefined));
  });
});

describe("IIoT fleet", () => {
  it("runs 100 devices on one client, each with its own seq and rate, first samples spread", async () => {
    const client = await mqtt.connectAsync(broker.url);
    cleanup.push(() => client.endAsync());
    const sub = await listen("dtc/iiot/+/telemetry", "dtc/iiot/+/status");
    const fleet = await started(new IiotFleet({ count: 100, prefix: "f", client, rate: 10 }));
    expect(fleet.device("f100")?.id).toBe("f100");

    const ids = fleet.devices.map((d) => d.id);
    await waitFor("2 samples of each device", () => ids.every((id) => sub.telemetry(id).length >= 2));
    const firsts = ids.map((id) => sub.telemetry(id)[0] as IiotTelemetry);
    expect(firsts.every((s) => s.seq === 1)).toBe(true);
    const ts = firsts.map((s) => s.ts);
    expect(Math.max(...ts) - Math.min(...ts)).toBeGreaterThanOrEqual(50); // spread over the 100 ms period

    await sub.client.publishAsync("dtc/iiot/f7/commands", JSON.stringify({ command: "setRate", rate: 20 }));
    await waitFor("f7 at 20 Hz", () => sub.telemetry("f7").some((s) => s.rate === 20));
    expect(fleet.devices.filter((d) => d.rate !== 10).map((d) => d.id)).toEqual(["f7"]);

    await fleet.stop();
    const offline = () =>
      sub.messages.filter((m) => /^dtc\/iiot\/f\d+\/status$/.test(m.topic) && m.body.status === "offline");
    await waitFor("100 offline statuses", () => offline().length === 100);
    expect(client.connected).toBe(true);
  });
});

describe("scheduler", () => {
  it("runs tasks in due order, equal times in insertion order, and skips cancelled ones", async () => {
    const scheduler = new Scheduler();
    const ran: string[] = [];
    const t0 = performance.now();
    scheduler.at(t0 + 30, () => ran.push("c"));
    scheduler.at(t0 + 10, () => ran.push("a"));
    scheduler.at(t0 + 10, () => ran.push("b"));
    const cancelled = scheduler.at(t0 + 20, () => ran.push("x"));
    scheduler.at(t0 + 40, () => ran.push("d"));
    scheduler.cancel(cancelled);
    await waitFor("all tasks", () => ran.length === 4);
    expect(ran).toEqual(["a", "b", "c", "d"]);
    expect(performance.now() - t0).toBeGreaterThanOrEqual(40);
  });
});

describe("simulate CLI", () => {
  const repo = fileURLToPath(new URL("..", import.meta.url));
  let outDir = "";
  let cli = "";

  // The CLI and what it imports, compiled on their own: neither a stale dist/ nor other modules being
  // edited can change what is tested. Inside node_modules/ so that the output resolves "mqtt".
  beforeAll(async () => {
    const cache = path.join(repo, "node_modules", ".cache");
    mkdirSync(cache, { recursive: true });
    outDir = mkdtempSync(path.join(cache, "dtc-simulate-test-"));
    const tsconfig = path.join(outDir, "tsconfig.json");
    writeFileSync(
      tsconfig,
      JSON.stringify({
        extends: path.join(repo, "tsconfig.json"),
        compilerOptions: { rootDir: repo, outDir, noEmit: false, declaration: false, sourceMap: false },
        files: [path.join(repo, "src", "simulate.ts")],
        include: [],
      }),
    );
    await promisify(execFile)(process.execPath, [
      path.join(repo, "node_modules", "typescript", "bin", "tsc"),
      "-p",
      tsconfig,
    ]);
    cli = path.join(outDir, "src", "simulate.js");
  });
  afterAll(() => {
    if (outDir !== "") rmSync(outDir, { recursive: true, force: true });
  });

  function run(...args: string[]) {
    const env = { ...process.env };
    delete env.DTC_MQTT_URL;
    const proc = spawn(process.execPath, [cli, ...args], { env, stdio: ["pipe", "pipe", "pipe"] });
    const output = { stdout: "", stderr: "" };
    proc.stdout?.on("data", (d) => {
      output.stdout += String(d);
    });
    proc.stderr?.on("data", (d) => {
      output.stderr += String(d);
    });
    const exited = new Promise<number | null>((resolve) => proc.once("exit", (code) => resolve(code)));
    cleanup.push(() => {
      if (proc.exitCode === null && proc.signalCode === null) proc.kill("SIGKILL");
    });
    return { proc, output, exited };
  }

  /** The exit code, failing after a 10 s deadline. */
  async function exitOf(p: { exited: Promise<number | null> }): Promise<number | null> {
    let timer: NodeJS.Timeout | undefined;
    const deadline = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error("the CLI did not exit within 10 s")), 10_000);
    });
    try {
      return await Promise.race([p.exited, deadline]);
    } finally {
      clearTimeout(timer);
    }
  }

  it("publishes, takes runtime commands on stdin, prints stats and stops on SIGTERM with offline status", async () => {
    const sub = await listen("dtc/iiot/cli1/#");
    const sim = run("iiot", "--id", "cli1", "--rate", "20", "--broker", broker.url);
    await waitFor("5 samples", () => sub.telemetry("cli1").length >= 5);
    sim.proc.stdin?.write("rate 40\n");
    await waitFor("a sample at 40 Hz", () => sub.telemetry("cli1").some((s) => s.rate === 40));
    await waitFor("a stats line", () => /sent=\d+ .*dropped=0 rate=40Hz/.test(sim.output.stdout));
    sim.proc.kill("SIGTERM");
    expect(await exitOf(sim)).toBe(0);
    const statuses = sub.on("dtc/iiot/cli1/status").map((m) => m.body);
    expect(statuses.at(-1)).toEqual({ status: "offline", ts: expect.any(Number) });
  });

  it("runs a fleet with --count and a camera, both stopping on SIGINT", async () => {
    const sub = await listen("dtc/iiot/+/telemetry", "dtc/masa/cameras/cc/detections");
    const fleet = run(
      "iiot",
      "--id",
      "q",
      "--count",
      "3",
      "--rate",
      "10",
      "--loss",
      "0",
      "--broker",
      broker.url,
    );
    const cam = run("camera", "--id", "cc", "--lat", "41.38", "--lon", "2.17", "--broker", broker.url);
    await waitFor("samples of q1..q3", () => ["q1", "q2", "q3"].every((id) => sub.telemetry(id).length > 0));
    const frame = await waitFor("a frame with detections", () =>
      sub.on("dtc/masa/cameras/cc/detections").find((m) => (m.body as unknown as CameraFrame).count > 0),
    );
    expect((frame.body as unknown as CameraFrame).detections[0]?.latitude).toBeCloseTo(41.38, 2);
    fleet.proc.kill("SIGINT");
    cam.proc.kill("SIGINT");
    expect(await exitOf(fleet)).toBe(0);
    expect(await exitOf(cam)).toBe(0);
  });

  it.each([
    [["toaster", "--id", "x"], /unknown kind of device "toaster"/],
    [["iiot"], /--id is required/],
    [["iiot", "--id", "x", "--rate", "0"], /--rate must be a number > 0/],
    [["iiot", "--id", "x", "--rate", "fast"], /--rate/],
    [["iiot", "--id", "x", "--loss", "150"], /--loss must be a percentage from 0 to 100/],
    [["iiot", "--id", "x", "--broker", "http://127.0.0.1:1883"], /--broker must be a URL/],
    [["iiot", "--id", "x", "--broker", "not a url"], /--broker/],
    [["iiot", "--id", "x", "--bogus", "1"], /--bogus/],
    [["camera", "--id", "x", "--count", "3"], /--count/],
    [["iiot", "--id", "x", "--username", "u"], /--username needs --password/],
    [["iiot", "--id", "x", "--broker", "mqtt://u:p@127.0.0.1:1883"], /--broker must not carry credentials/],
  ])("exits with status 2 on bad arguments: %j", async (args, message) => {
    const sim = run(...args);
    expect(await exitOf(sim)).toBe(2);
    expect(sim.output.stderr).toMatch(message);
    expect(sim.output.stderr).toMatch(/Usage:/);
  });

  it("waits for a broker that is not up yet, saying so, then publishes", async () => {
    const port = await freePort();
    const sim = run("iiot", "--id", "late1", "--rate", "20", "--broker", `mqtt://127.0.0.1:${port}`);
    await waitFor("a retry notice", () =>
      /not reachable \(ECONNREFUSED\): retrying in \d+ s/.test(sim.output.stderr),
    );
    expect(sim.proc.exitCode).toBeNull();
    const late = await startBroker("aedes", { port });
    cleanup.push(() => late.stop());
    const client = await mqtt.connectAsync(late.url, { reconnectPeriod: 0 });
    cleanup.push(() => client.endAsync());
    const samples: string[] = [];
    client.on("message", (topic) => samples.push(topic));
    await client.subscribeAsync("dtc/iiot/late1/telemetry");
    await waitFor("samples once the broker is up", () => samples.length >= 3, 10_000);
    sim.proc.kill("SIGTERM");
    expect(await exitOf(sim)).toBe(0);
  });

  it("stops with status 0 while still waiting for its broker", async () => {
    const sim = run("iiot", "--id", "late2", "--broker", `mqtt://127.0.0.1:${await freePort()}`);
    await waitFor("a retry notice", () => /retrying/.test(sim.output.stderr));
    sim.proc.kill("SIGINT");
    expect(await exitOf(sim)).toBe(0);
  });

  it("connects with --password (a device token), and exits when the broker refuses it", async () => {
    const { ManagerStore } = await import("../src/manager/manager-store.js");
    const { TokenService } = await import("../src/security/tokens.js");
    const { Authenticator, INTERNAL_USER } = await import("../src/security/authenticator.js");
    const dir = mkdtempSync(path.join(tmpdir(), "dtc-simulate-auth-"));
    const store = new ManagerStore(path.join(dir, "manager.sqlite"));
    cleanup.push(() => rmSync(dir, { recursive: true, force: true }));
    cleanup.push(() => store.close());
    const tokens = new TokenService(store);
    const authenticator = new Authenticator({ tokens, internalSecret: "x" });
    const topics = {
      telemetry: "dtc/iiot/sec1/telemetry",
      status: "dtc/iiot/sec1/status",
      command: "dtc/iiot/sec1/commands",
    };
    const secured = await startBroker("aedes", {
      security: { authenticator, twinTopics: (id) => (id === "sec1" ? topics : undefined) },
    });
    cleanup.push(() => secured.stop());
    const client = await mqtt.connectAsync(secured.url, {
      reconnectPeriod: 0,
      username: INTERNAL_USER,
      password: authenticator.internalPassword(INTERNAL_USER),
    });
    cleanup.push(() => client.endAsync());
    const samples: string[] = [];
    client.on("message", (topic) => samples.push(topic));
    await client.subscribeAsync("dtc/iiot/sec1/#");
    const device = tokens.create({ name: "sec1", role: "device:sec1" }).token;
    const sim = run("iiot", "--id", "sec1", "--rate", "20", "--broker", secured.url, "--password", device);
    await waitFor(
      "samples from the device",
      () => samples.filter((t) => t.endsWith("/telemetry")).length >= 3,
    );
    expect(samples).toContain("dtc/iiot/sec1/status");
    sim.proc.kill("SIGTERM");
    expect(await exitOf(sim)).toBe(0);
    const refused = run(
      "iiot",
      "--id",
      "sec1",
      "--broker",
      secured.url,
      "--password",
      "dtc_0123456789abcdef_x",
    );
    expect(await exitOf(refused)).toBe(1);
    expect(refused.output.stderr).toMatch(/Bad username or password/i);
  });

  it("prints its usage with --help", async () => {
    const sim = run("--help");
    expect(await exitOf(sim)).toBe(0);
    expect(sim.output.stdout).toMatch(/Usage: npm run simulate -- <iiot\|camera>/);
  });
});
