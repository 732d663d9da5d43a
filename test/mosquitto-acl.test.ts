import { execFileSync } from "node:child_process";
import { chmodSync, mkdtempSync, readFileSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import mqtt, { type IClientOptions, type MqttClient } from "mqtt";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import type { TwinState } from "../src/domain/twin-state.js";
import { ManagerStore } from "../src/manager/manager-store.js";
import type { InstanceRecord } from "../src/manager/model.js";
import { writeMosquittoConfig } from "../src/mosquitto-config.js";
import { mosquittoFiles } from "../src/security/mosquitto.js";
import { mosquittoHash, TokenService } from "../src/security/tokens.js";
import { startBroker, type TestBroker, unavailable } from "./brokers.js";
import { sample, waitFor } from "./helpers.js";

const INTERNAL = { username: "dtc-gateway", password: "internal secret" };

describe("mosquittoFiles", () => {
  const record = (id: string, role: string, expires?: string) => ({
    id,
    name: `${role} token`,
    role,
    created: "2025-01-01T00:00:00.000Z",
    ...(expires ? { expires } : {}),
    sha256: "00",
    mosquitto: `$7$101$salt$hash-of-${id}`,
  });
  const twins = [
    {
      id: "d1",
      topics: {
        telemetry: "dtc/iiot/d1/telemetry",
        status: "dtc/iiot/d1/status",
        command: "dtc/iiot/d1/commands",
      },
    },
  ];

  it("gives the internal user everything, each role its patterns and each device its twin's PT topics", () => {
    const files = mosquittoFiles({
      tokens: [
        record("00000000000000aa", "reader"),
        record("00000000000000bb", "operator"),
        record("00000000000000cc", "admin"),
        record("00000000000000dd", "device:d1"),
        record("00000000000000ee", "device:gone"),
        record("00000000000000ff", "reader", "2020-01-01T00:00:00.000Z"),
        record("0000000000000011", "nonsense"),
      ],
      internal: INTERNAL,
      twins,
      now: Date.parse("2025-06-01T00:00:00.000Z"),
    });
    const passwd = files.passwordFile.trim().split("\n");
    expect(passwd[0]).toMatch(/^dtc-gateway:\$7\$101\$[A-Za-z0-9+/=]+\$[A-Za-z0-9+/=]+$/);
    expect(passwd.slice(1)).toEqual(
      ["aa", "bb", "cc", "dd", "ee"].map((s) => `00000000000000${s}:$7$101$salt$hash-of-00000000000000${s}`),
    );
    const sections = Object.fromEntries(
      files.aclFile
        .split(/\n(?=user )/)
        .slice(1)
        .map((section) => {
          const [user, ...lines] = section.trim().split("\n");
          return [user?.slice(5), lines.filter((l) => l.startsWith("topic") || l.startsWith("# no"))];
        }),
    );
    expect(sections["dtc-gateway"]).toEqual(["topic readwrite #"]);
    const reader = ["topic read +", "topic read +/properties/#", "topic read +/events/#"];
    const operator = [...reader, "topic write +/actions/+", "topic write +/properties/+/writeproperty"];
    expect(sections["00000000000000aa"]).toEqual(reader);
    expect(sections["00000000000000bb"]).toEqual(operator);
    expect(sections["00000000000000cc"]).toEqual([
      ...operator,
      "topic write dtc/twins/+/augmentations",
      "topic read dtc/twins/+/augmentations/result",
    ]);
    expect(sections["00000000000000dd"]).toEqual([
      "topic write dtc/iiot/d1/telemetry",
      "topic write dtc/iiot/d1/status",
      "topic read dtc/iiot/d1/commands",
    ]);
    expect(sections["00000000000000ee"]).toEqual([
      "# no topics: twin gone has no known TD with a physical interface",
    ]);
    expect(sections["00000000000000ff"]).toBeUndefined();
    expect(sections["0000000000000011"]).toBeUndefined();
  });

  it("refuses what would break the files' lines", () => {
    expect(() => mosquittoFiles({ tokens: [], internal: { username: "a:b", password: "x" }, twins })).toThrow(
      /user name/,
    );
    expect(() =>
      mosquittoFiles({ tokens: [], internal: { username: "a\nuser x", password: "x" }, twins }),
    ).toThrow(/user name/);
    expect(() =>
      mosquittoFiles({
        tokens: [record("00000000000000dd", "device:d1")],
        internal: INTERNAL,
        twins: [{ id: "d1", topics: { telemetry: "t\ntopic readwrite #" } }],
      }),
    ).toThrow(/twin d1: PT topic/);
  });
});

describe("the real mosquitto with the generated files", () => {
  const skip = unavailable("mosquitto");
  let dir = "";
  let store: ManagerStore;
  let broker: TestBroker | undefined;
  let result: Awaited<ReturnType<typeof writeMosquittoConfig>>;
  const warnings: string[] = [];
  const tokens: Record<string, { id: string; token: string }> = {};
  const clients: MqttClient[] = [];

  beforeAll(async () => {
    if (skip) return;
    dir = mkdtempSync(join(tmpdir(), "dtc-mosquitto-acl-"));
    store = new ManagerStore(join(dir, "manager.sqlite"));
    const service = new TokenService(store);
    for (const role of ["reader", "operator", "admin", "device:d1", "device:d2"]) {
      tokens[role] = service.create({ name: role, role });
    }
    // One that expired a minute ago.
    tokens.expired = new TokenService(store, () => Date.now() - 120_000).create({
      name: "old",
      role: "reader",
      ttlSeconds: 60,
    });
    const now = new Date().toISOString();
    const instance = (id: string): InstanceRecord => ({
      id,
      package: "iiot-device",
      schema: sample("iiot-device.tm.jsonld"),
      node: "local",
      platform: "in-process",
      configuration: { DEVICE_ID: id },
      desired: "running",
      createdAt: now,
      updatedAt: now,
    });
    // d1 was never saved (its TD is made from its schema); d2's saved state has its TD.
    store.instances.put("d1", instance("d1"));
    store.instances.put("d2", instance("d2"));
    store.instances.put("broken", { ...instance("broken"), schema: "https://example.org/no-such-schema" });
    const td = {
      "dtc:physicalInterface": { "dtc:telemetryTopic": "plant/d2/data", "dtc:commandTopic": "plant/d2/cmd" },
    };
    // Only its TD matters here.
    store.states.put("d2", { td } as unknown as TwinState);
    store.close();

    result = await writeMosquittoConfig({
      dataDir: dir,
      outDir: join(dir, "mosquitto"),
      internal: INTERNAL,
      onWarning: (m) => warnings.push(m),
    });
    store = new ManagerStore(join(dir, "manager.sqlite"));
    expect(statSync(result.passwordFile).mode & 0o777).toBe(0o600);
    // mosquitto started as root reads its files as the user it drops to.
    chmodSync(dir, 0o755);
    chmodSync(join(dir, "mosquitto"), 0o755);
    chmodSync(result.passwordFile, 0o644);
    broker = await startBroker("mosquitto", {
      mosquittoConfig: [
        `password_file ${result.passwordFile}`,
        `acl_file ${result.aclFile}`,
        "allow_anonymous false",
      ],
    });
  });

  afterEach(async () => {
    await Promise.all(clients.splice(0).map((c) => c.endAsync(true).catch(() => {})));
  });

  afterAll(async () => {
    await broker?.stop();
    store?.close();
    if (dir !== "") rmSync(dir, { recursive: true, force: true });
  });

  async function connect(options: IClientOptions): Promise<MqttClient> {
    const client = await mqtt.connectAsync(
      (broker as TestBroker).url,
      { reconnectPeriod: 0, connectTimeout: 5000, ...options },
      false,
    );
    client.on("error", () => {});
    clients.push(client);
    return client;
  }
  /** username = the token id, password = the token. */
  const as = (role: string) => {
    const t = tokens[role] as { id: string; token: string };
    return connect({ username: t.id, password: t.token });
  };

  /**
   * mosquitto's acl_file does not check subscriptions (all are granted, SUBACK 0), but what it
   * delivers: `client` subscribed to `filters` gets a message on `allowed` and none on `forbidden`
   * (published before it by the gateway, so they would have come first; retained TDs it may read
   * come too).
   */
  async function expectOnly(client: MqttClient, filters: string[], allowed: string, forbidden: string[]) {
    const received: string[] = [];
    client.on("message", (topic) => received.push(topic));
    await client.subscribeAsync([...filters, allowed], { qos: 1 });
    const gateway = await connect(INTERNAL);
    for (const topic of forbidden) await gateway.publishAsync(topic, "not for you", { qos: 1 });
    await gateway.publishAsync(allowed, "for you", { qos: 1 });
    await waitFor(`a message on ${allowed}`, () => received.includes(allowed));
    expect(received.filter((t) => forbidden.includes(t))).toEqual([]);
  }

  async function everything() {
    const client = await connect(INTERNAL);
    const messages: { topic: string; body: string }[] = [];
    client.on("message", (topic, payload) => messages.push({ topic, body: String(payload) }));
    await client.subscribeAsync("#", { qos: 1 });
    return {
      client,
      messages,
      marker: (topic: string, body: string) =>
        waitFor(`marker ${body}`, () => messages.some((m) => m.topic === topic && m.body === body)),
    };
  }

  it("writes the files from the store: tokens, and the twins' PT topics", (ctx) => {
    if (skip) ctx.skip(skip);
    expect(result.users).toBe(6); // the internal user and five live tokens
    expect(result.twins).toBe(2);
    expect(warnings).toEqual([expect.stringContaining("twin broken: its TD cannot be made")]);
    const acl = readFileSync(result.aclFile, "utf8");
    expect(acl).toContain(`user ${tokens["device:d1"]?.id}\ntopic write dtc/iiot/d1/telemetry`);
    expect(acl).toContain(
      `user ${tokens["device:d2"]?.id}\ntopic write plant/d2/data\ntopic read plant/d2/cmd`,
    );
    expect(acl).not.toContain(tokens.expired?.id);
  });

  it("hashes passwords as mosquitto_passwd does", (ctx) => {
    if (skip) ctx.skip(skip);
    const file = join(dir, "passwd-by-mosquitto");
    execFileSync("mosquitto_passwd", ["-b", "-c", file, "someone", "secret"], { stdio: "ignore" });
    const made = readFileSync(file, "utf8").trim().split(":")[1] as string;
    const [, , iterations, salt] = made.split("$");
    expect(mosquittoHash("secret", Buffer.from(salt as string, "base64"), Number(iterations))).toBe(made);
  });

  it("refuses anonymous clients, wrong passwords and expired tokens", async (ctx) => {
    if (skip) ctx.skip(skip);
    await expect(connect({})).rejects.toMatchObject({ code: 5 });
    await expect(connect({ username: tokens.reader?.id, password: "wrong" })).rejects.toMatchObject({
      code: expect.any(Number),
    });
    await expect(as("expired")).rejects.toMatchObject({ code: expect.any(Number) });
    expect((await as("reader")).connected).toBe(true);
  });

  it("a device publishes its telemetry and status only, and receives its commands only", async (ctx) => {
    if (skip) ctx.skip(skip);
    const all = await everything();
    await all.client.publishAsync("d1", "the TD", { qos: 1, retain: true });
    const device = await as("device:d1");
    await device.publishAsync("dtc/iiot/d1/telemetry", "sample", { qos: 1 });
    await device.publishAsync("dtc/iiot/d1/status", "online", { qos: 1, retain: true });
    await device.publishAsync("dtc/iiot/d2/telemetry", "forged", { qos: 1 });
    await device.publishAsync("d1/actions/setRate", "forged", { qos: 1 });
    await device.publishAsync("dtc/twins/d1/augmentations", "forged", { qos: 1 });
    await device.publishAsync("d1", "forged TD", { qos: 1, retain: true });
    await device.publishAsync("dtc/iiot/d1/telemetry", "marker", { qos: 1 });
    await all.marker("dtc/iiot/d1/telemetry", "marker");
    expect(all.messages).toContainEqual({ topic: "dtc/iiot/d1/telemetry", body: "sample" });
    expect(all.messages).toContainEqual({ topic: "dtc/iiot/d1/status", body: "online" });
    expect(all.messages.filter((m) => m.body.startsWith("forged"))).toEqual([]);
    expect(await device.subscribeAsync("dtc/iiot/d1/commands", { qos: 1 })).toEqual([
      { topic: "dtc/iiot/d1/commands", qos: 1 },
    ]);
    // mosquitto grants any subscription and filters what it delivers by the read rights.
    await expectOnly(device, ["#", "dtc/iiot/d2/commands"], "dtc/iiot/d1/commands", [
      "dtc/iiot/d2/commands",
      "dtc/iiot/d1/telemetry",
      "d1/properties/temperature",
    ]);
    // The retained TD is still the gateway's.
    const late = await connect(INTERNAL);
    const retained = new Promise<string>((resolve) =>
      late.on("message", (_t, payload) => resolve(String(payload))),
    );
    await late.subscribeAsync("d1");
    expect(await retained).toBe("the TD");
    // The device of a twin known from its saved state.
    const d2 = await as("device:d2");
    await d2.publishAsync("plant/d2/data", "d2 sample", { qos: 1 });
    await all.marker("plant/d2/data", "d2 sample");
  });

  it("a reader gets twins' properties, and through # nothing it may not read", async (ctx) => {
    if (skip) ctx.skip(skip);
    const reader = await as("reader");
    await expectOnly(reader, ["#", "+/#", "dtc/iiot/d1/telemetry"], "d1/properties/temperature", [
      "dtc/iiot/d1/telemetry",
      "d1/actions/setRate",
      "dtc/twins/d1/augmentations",
      "dtc/twins/d1/augmentations/result",
    ]);
    const all = await everything();
    await reader.publishAsync("d1/actions/setRate", "forged", { qos: 1 });
    await all.client.publishAsync("marker", "reader", { qos: 1 });
    await all.marker("marker", "reader");
    expect(all.messages.filter((m) => m.body === "forged")).toEqual([]);
  });

  it("an operator invokes actions but installs no functions; an admin installs them", async (ctx) => {
    if (skip) ctx.skip(skip);
    const all = await everything();
    const operator = await as("operator");
    await operator.publishAsync("dtc/twins/d1/augmentations", "forged", { qos: 1 });
    await operator.publishAsync("d1/properties/rate/writeproperty", "5", { qos: 1 });
    await operator.publishAsync("d1/actions/setRate", "10", { qos: 1 });
    await all.marker("d1/actions/setRate", "10");
    expect(all.messages).toContainEqual({ topic: "d1/properties/rate/writeproperty", body: "5" });
    expect(all.messages.filter((m) => m.body === "forged")).toEqual([]);
    const admin = await as("admin");
    expect(await admin.subscribeAsync("dtc/twins/d1/augmentations/result")).toEqual([
      { topic: "dtc/twins/d1/augmentations/result", qos: 0 },
    ]);
    await admin.publishAsync("dtc/twins/d1/augmentations", "install", { qos: 1 });
    await all.marker("dtc/twins/d1/augmentations", "install");
    await expectOnly(admin, ["#"], "dtc/twins/d1/augmentations/result", [
      "dtc/iiot/d1/telemetry",
      "d1/actions/setRate",
    ]);
  });
});
