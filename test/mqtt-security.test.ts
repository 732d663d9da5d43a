import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Servient } from "@node-wot/core";
import mqtt, { type IClientOptions, type MqttClient } from "mqtt";
import { pino } from "pino";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { ManagerStore } from "../src/manager/manager-store.js";
import { MqttConnections, MqttSubscriptionRefusedError } from "../src/mqtt/connections.js";
import { type EmbeddedBroker, startEmbeddedBroker } from "../src/mqtt/embedded-broker.js";
import { measureBrokerLatency } from "../src/mqtt/latency.js";
import { TwinRuntime } from "../src/runtime/twin-runtime.js";
import { Authenticator, INTERNAL_USER, TWIN_USER_PREFIX } from "../src/security/authenticator.js";
import type { TwinTopics } from "../src/security/mqtt-acl.js";
import { TokenService } from "../src/security/tokens.js";
import { IiotDeviceSimulator } from "../src/simulator/index.js";
import { StablePathMqttBrokerServer } from "../src/wot/servers.js";
import { sample, sampleRegistry, selfSignedCertificate, waitFor } from "./helpers.js";

const TOPICS: Record<string, TwinTopics> = {
  d1: { telemetry: "dtc/iiot/d1/telemetry", status: "dtc/iiot/d1/status", command: "dtc/iiot/d1/commands" },
  d2: { telemetry: "dtc/iiot/d2/telemetry", status: "dtc/iiot/d2/status", command: "dtc/iiot/d2/commands" },
};

/** How mqtt.js rejects a subscription the broker refused: SUBACK 0x80. */
const REFUSED = { packet: { granted: [128] } };

let dir = "";
let store: ManagerStore;
let tokens: TokenService;
let authenticator: Authenticator;
let broker: EmbeddedBroker;
const clients: MqttClient[] = [];
/** What the broker logged (pino JSON lines). */
const brokerLog: string[] = [];

const token = (role: string) => tokens.create({ name: role, role }).token;
const internal = () => ({ username: INTERNAL_USER, password: authenticator.internalPassword(INTERNAL_USER) });

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), "dtc-mqtt-security-"));
  store = new ManagerStore(join(dir, "manager.sqlite"));
  tokens = new TokenService(store);
  authenticator = new Authenticator({ tokens, internalSecret: "x" });
  broker = await startEmbeddedBroker({
    port: 0,
    security: {
      authenticator,
      // Asynchronous, as the gateway's (a TD made from its schema): the checks wait for it, in order.
      twinTopics: async (id) => {
        await new Promise((resolve) => setTimeout(resolve, 5));
        return TOPICS[id];
      },
      twinTopicsTtlMs: 50,
      revalidateIntervalMs: 0,
      logger: pino({ level: "debug" }, { write: (line: string) => brokerLog.push(line) }),
    },
  });
});

afterEach(async () => {
  await Promise.all(clients.splice(0).map((c) => c.endAsync(true).catch(() => {})));
});

afterAll(async () => {
  await broker?.close();
  store?.close();
  if (dir !== "") rmSync(dir, { recursive: true, force: true });
});

/** A connected client (no retries: a refusal rejects with its CONNACK code). */
async function connect(options: IClientOptions, url = broker.url): Promise<MqttClient> {
  const client = await mqtt.connectAsync(
    url,
    { reconnectPeriod: 0, connectTimeout: 5000, ...options },
    false,
  );
  client.on("error", () => {});
  clients.push(client);
  return client;
}

/** Connects with `password` (a token, any user name) or internal credentials. */
const as = (password: string, username = "anyone") => connect({ username, password });

/** Everything `client` receives, once subscribed to `filters`. */
async function recorder(client: MqttClient, ...filters: string[]) {
  const messages: { topic: string; body: string; retain: boolean }[] = [];
  client.on("message", (topic, payload, packet) =>
    messages.push({ topic, body: String(payload), retain: packet.retain }),
  );
  await client.subscribeAsync(filters, { qos: 1 });
  return {
    messages,
    topics: () => messages.map((m) => m.topic),
    /** Resolves once `body` came on `topic`: what was sent before it from the same client came first. */
    marker: (topic: string, body: string) =>
      waitFor(`marker ${body} on ${topic}`, () => messages.some((m) => m.topic === topic && m.body === body)),
  };
}

/** The internal client, subscribed to everything. */
async function everything() {
  return recorder(await connect(internal()), "#");
}

describe("CONNECT", () => {
  it("refuses anonymous clients, bad tokens and bad internal passwords", async () => {
    await expect(connect({})).rejects.toMatchObject({ code: 5 });
    await expect(connect({ username: "someone" })).rejects.toMatchObject({ code: 5 });
    await expect(as(`dtc_0123456789abcdef_${"a".repeat(43)}`)).rejects.toMatchObject({ code: 4 });
    await expect(as("not a token")).rejects.toMatchObject({ code: 4 });
    await expect(as("wrong", INTERNAL_USER)).rejects.toMatchObject({ code: 4 });
    await expect(
      as(authenticator.internalPassword(INTERNAL_USER), `${TWIN_USER_PREFIX}d1`),
    ).rejects.toMatchObject({
      code: 4,
    });
  });

  it("accepts a token with any user name, and the internal users", async () => {
    const reader = token("reader");
    expect((await as(reader)).connected).toBe(true);
    expect((await as(reader, "")).connected).toBe(true);
    expect((await connect(internal())).connected).toBe(true);
    const twinUser = `${TWIN_USER_PREFIX}d1`;
    expect((await as(authenticator.internalPassword(twinUser), twinUser)).connected).toBe(true);
  });
});

describe("a device token", () => {
  it("publishes its twin's telemetry and status, and nothing else", async () => {
    const all = await everything();
    const gateway = await connect(internal());
    await gateway.publishAsync("d1", "the TD", { qos: 1, retain: true });
    const device = await as(token("device:d1"));
    await device.publishAsync("dtc/iiot/d1/telemetry", "sample", { qos: 1 });
    await device.publishAsync("dtc/iiot/d1/status", "online", { qos: 1, retain: true });
    // Refused, acknowledged as MQTT 3.1.1 allows, and dropped; the connection stays up.
    await device.publishAsync("dtc/iiot/d2/telemetry", "forged", { qos: 1 });
    await device.publishAsync("d1/actions/setRate", "forged", { qos: 1 });
    await device.publishAsync("dtc/twins/d1/augmentations", "forged", { qos: 1 });
    await device.publishAsync("d1", "forged TD", { qos: 1, retain: true });
    await device.publishAsync("dtc/iiot/d1/commands", "forged", { qos: 0 });
    await device.publishAsync("dtc/iiot/d1/telemetry", "marker", { qos: 1 });
    await all.marker("dtc/iiot/d1/telemetry", "marker");
    expect(device.connected).toBe(true);
    expect(all.messages.filter((m) => m.body.startsWith("forged"))).toEqual([]);
    expect(all.messages).toContainEqual({ topic: "dtc/iiot/d1/telemetry", body: "sample", retain: false });
    expect(all.messages).toContainEqual({ topic: "dtc/iiot/d1/status", body: "online", retain: false });
    // The retained TD is still the twin's, and the retained status the device's.
    const late = await recorder(await connect(internal()), "d1", "dtc/iiot/d1/status");
    await waitFor("the retained messages", () => late.messages.length === 2);
    expect(late.messages).toContainEqual({ topic: "d1", body: "the TD", retain: true });
    expect(late.messages).toContainEqual({ topic: "dtc/iiot/d1/status", body: "online", retain: true });
  });

  it("subscribes only its command topic", async () => {
    const device = await as(token("device:d1"));
    expect(await device.subscribeAsync("dtc/iiot/d1/commands", { qos: 1 })).toEqual([
      { topic: "dtc/iiot/d1/commands", qos: 1 },
    ]);
    for (const filter of ["#", "dtc/iiot/d1/telemetry", "dtc/iiot/+/commands", "d1/properties/temperature"]) {
      await expect(device.subscribeAsync(filter), filter).rejects.toMatchObject(REFUSED);
    }
  });

  it("has its last will published on its status topic, and one elsewhere dropped", async () => {
    const all = await everything();
    const d1 = token("device:d1");
    const good = await connect({
      username: "pt",
      password: d1,
      will: { topic: "dtc/iiot/d1/status", payload: Buffer.from("offline"), qos: 1, retain: true },
    });
    const bad = await connect({
      username: "pt",
      password: d1,
      will: { topic: "dtc/iiot/d2/status", payload: Buffer.from("forged offline"), qos: 1, retain: true },
    });
    // A crash (no DISCONNECT) makes the broker publish the will.
    bad.stream.destroy();
    good.stream.destroy();
    await all.marker("dtc/iiot/d1/status", "offline");
    const device = await as(d1);
    await device.publishAsync("dtc/iiot/d1/telemetry", "marker 2", { qos: 1 });
    await all.marker("dtc/iiot/d1/telemetry", "marker 2");
    expect(all.messages.filter((m) => m.body.startsWith("forged"))).toEqual([]);
  });

  it("of an unknown twin may do nothing", async () => {
    const all = await everything();
    const device = await as(token("device:gone"));
    await device.publishAsync("dtc/iiot/gone/telemetry", "forged", { qos: 1 });
    await expect(device.subscribeAsync("dtc/iiot/gone/commands")).rejects.toMatchObject(REFUSED);
    const gateway = await connect(internal());
    await gateway.publishAsync("marker", "end", { qos: 1 });
    await all.marker("marker", "end");
    expect(all.topics()).not.toContain("dtc/iiot/gone/telemetry");
  });
});

describe("users", () => {
  it("a reader subscribes to twins' TDs, properties and events, not to #, and publishes nothing", async () => {
    const reader = await as(token("reader"));
    await expect(reader.subscribeAsync("#")).rejects.toMatchObject(REFUSED);
    await expect(reader.subscribeAsync("+/#")).rejects.toMatchObject(REFUSED);
    await expect(reader.subscribeAsync("$SYS/#")).rejects.toMatchObject(REFUSED);
    await expect(reader.subscribeAsync("dtc/iiot/d1/telemetry")).rejects.toMatchObject(REFUSED);
    const got = await recorder(reader, "d1/properties/temperature", "d1/events/#", "d1");
    const gateway = await connect(internal());
    await gateway.publishAsync("d1/properties/temperature", "21.5", { qos: 1 });
    await gateway.publishAsync("d1/events/lifecycleChanged", "Bound", { qos: 1 });
    await got.marker("d1/events/lifecycleChanged", "Bound");
    expect(got.messages).toContainEqual({ topic: "d1/properties/temperature", body: "21.5", retain: false });

    const all = await everything();
    await reader.publishAsync("d1/actions/setRate", "forged", { qos: 1 });
    await reader.publishAsync("d1/properties/rate/writeproperty", "forged", { qos: 1 });
    // A reader may publish nothing, so the bound is the gateway's marker, sent once those were acknowledged.
    await gateway.publishAsync("marker", "reader", { qos: 1 });
    await all.marker("marker", "reader");
    expect(all.messages.filter((m) => m.body === "forged")).toEqual([]);
  });

  it("an operator invokes actions and writes properties, but installs no functions", async () => {
    const all = await everything();
    const operator = await as(token("operator"));
    await operator.publishAsync("dtc/twins/d1/augmentations", "forged", { qos: 1 });
    await expect(operator.subscribeAsync("dtc/twins/d1/augmentations/result")).rejects.toMatchObject(REFUSED);
    await operator.publishAsync("d1/properties/rate/writeproperty", "5", { qos: 1 });
    await operator.publishAsync("d1/actions/setRate", "10", { qos: 1 });
    await all.marker("d1/actions/setRate", "10");
    expect(all.messages).toContainEqual({
      topic: "d1/properties/rate/writeproperty",
      body: "5",
      retain: false,
    });
    expect(all.topics()).not.toContain("dtc/twins/d1/augmentations");
  });

  it("an admin installs functions and reads their results", async () => {
    const all = await everything();
    const admin = await as(token("admin"));
    const results = await recorder(admin, "dtc/twins/d1/augmentations/result");
    await admin.publishAsync("dtc/twins/d1/augmentations", '{"name":"f","source":"(v) => v"}', { qos: 1 });
    await all.marker("dtc/twins/d1/augmentations", '{"name":"f","source":"(v) => v"}');
    const gateway = await connect(internal());
    await gateway.publishAsync("dtc/twins/d1/augmentations/result", '{"ok":true}', { qos: 1 });
    await results.marker("dtc/twins/d1/augmentations/result", '{"ok":true}');
    await expect(admin.subscribeAsync("#")).rejects.toMatchObject(REFUSED);
  });

  it("a revoked token's connection is closed by revalidate()", async () => {
    const created = tokens.create({ name: "soon revoked", role: "reader" });
    const kept = await as(token("reader"));
    const client = await as(created.token);
    const closed = new Promise<void>((resolve) => client.once("close", () => resolve()));
    expect(await broker.revalidate()).toBe(0);
    tokens.revoke(created.id);
    expect(await broker.revalidate()).toBe(1);
    await closed;
    expect(kept.connected).toBe(true);
    await expect(as(created.token)).rejects.toMatchObject({ code: 4 });
  });
});

describe("the gateway's own clients", () => {
  it("a twin container has its own topics and its PT's", async () => {
    const user = `${TWIN_USER_PREFIX}d1`;
    const twin = await as(authenticator.internalPassword(user), user);
    await recorder(twin, "d1/actions/setRate", "dtc/twins/d1/augmentations", "dtc/iiot/d1/telemetry");
    await expect(twin.subscribeAsync("dtc/iiot/d2/telemetry")).rejects.toMatchObject(REFUSED);
    await expect(twin.subscribeAsync("d2/#")).rejects.toMatchObject(REFUSED);
    const all = await everything();
    await twin.publishAsync("d2", "forged", { qos: 1, retain: true });
    await twin.publishAsync("dtc/iiot/d2/commands", "forged", { qos: 1 });
    await twin.publishAsync("dtc/iiot/d1/commands", '{"command":"setRate"}', { qos: 1 });
    await twin.publishAsync("d1", "TD", { qos: 1, retain: true });
    await all.marker("d1", "TD");
    expect(all.topics()).toContain("dtc/iiot/d1/commands");
    expect(all.messages.filter((m) => m.body === "forged")).toEqual([]);
  });

  it("shared connections, latency probes and node-wot's broker client connect with credentials", async () => {
    const lines: string[] = [];
    const logged: string[] = [];
    const logger = pino(
      { level: "info" },
      {
        write: (line: string) => {
          lines.push(line);
          logged.push(JSON.parse(line).msg);
        },
      },
    );
    const connections = new MqttConnections({}, logger);
    const ok = connections.acquire(broker.url, internal());
    await waitFor("the internal connection", () => ok.connected);
    const unsubscribe = await ok.subscribe("d1/#", () => {});
    unsubscribe();
    const device = connections.acquire(broker.url, { username: "pt", password: token("device:d1") });
    await waitFor("the device connection", () => device.connected);
    await expect(device.subscribe("dtc/iiot/d2/commands", () => {})).rejects.toBeInstanceOf(
      MqttSubscriptionRefusedError,
    );
    const refused = connections.acquire(broker.url, { username: INTERNAL_USER, password: "wrong-secret" });
    await waitFor("the refusal logged", () => logged.includes("MQTT connection failed; retrying"));
    expect(refused.connected).toBe(false);
    // Retried every second, logged once; never with a password.
    expect(logged.filter((m) => m === "MQTT connection failed; retrying")).toHaveLength(1);
    expect(lines.filter((l) => l.includes("wrong-secret") || l.includes(internal().password))).toEqual([]);
    await Promise.all([ok.release(), device.release(), refused.release()]);

    expect(await measureBrokerLatency(broker.url, 1, { credentials: internal() })).toBeGreaterThan(0);
    await expect(measureBrokerLatency(broker.url, 1)).rejects.toThrow(/unreachable: .*[Nn]ot authorized/);

    const servient = new Servient();
    const pathOf = () => "d1";
    const open = new StablePathMqttBrokerServer({ uri: broker.url }, pathOf);
    await expect(open.start(servient)).rejects.toThrow(/[Nn]ot authorized/);
    const secured = new StablePathMqttBrokerServer({ uri: broker.url, ...internal() }, pathOf);
    await secured.start(servient);
    await secured.stop();
  });
});

describe("an in-process twin runtime with the gateway's credentials", () => {
  it("binds its twin to a PT that connects with a device token, and serves the management topic", async () => {
    const runtime = await TwinRuntime.start({
      registry: await sampleRegistry(),
      brokerUrl: broker.url,
      brokerCredentials: internal(),
      http: { port: 0, address: "127.0.0.1" },
      // The digital side's credentials travel through DigitalInterface (see the report).
      mqttDigital: false,
      pushIntervalMs: 100,
    });
    const pt = new IiotDeviceSimulator({
      id: "d1",
      brokerUrl: broker.url,
      rate: 20,
      mqttOptions: { username: "pt", password: token("device:d1") },
    });
    try {
      const twin = await runtime.create({
        id: "d1",
        schema: sample("iiot-device.tm.jsonld"),
        placeholders: { DEVICE_ID: "d1" },
      });
      await pt.start();
      await waitFor(
        "the twin bound to its PT",
        () => twin.lifecycleState !== "Unbound" && twin.properties.temperature !== undefined,
      );
      const admin = await as(token("admin"));
      const results = await recorder(admin, "dtc/twins/d1/augmentations/result");
      await admin.publishAsync(
        "dtc/twins/d1/augmentations",
        JSON.stringify({ name: "f", source: "(v) => ({})" }),
        { qos: 1 },
      );
      await waitFor("the management answer", () => results.messages.length > 0);
      expect(JSON.parse(results.messages[0]?.body ?? "{}")).toMatchObject({ ok: true, name: "f" });
    } finally {
      await pt.stop();
      await runtime.close();
    }
  });
});

describe("the broker's log", () => {
  it("says who was refused what and why, and never holds a credential", () => {
    const entries = brokerLog.map((line) => JSON.parse(line) as Record<string, unknown>);
    expect(entries).toContainEqual(
      expect.objectContaining({
        msg: "MQTT: publish refused",
        action: "publish",
        topic: "dtc/iiot/d2/telemetry",
        reason: expect.stringContaining("twin d1"),
        principal: expect.stringMatching(/^token:[0-9a-f]{16}$/),
      }),
    );
    expect(entries).toContainEqual(expect.objectContaining({ msg: "MQTT: subscribe refused", topic: "#" }));
    expect(entries).toContainEqual(expect.objectContaining({ msg: "MQTT: connection refused" }));
    expect(
      brokerLog.filter((line) => /dtc_[0-9a-f]{16}_/.test(line) || line.includes(internal().password)),
    ).toEqual([]);
  });
});

describe("MQTT over TLS", () => {
  it("listens on a second port with the certificate, with the same checks", async () => {
    const tlsDir = mkdtempSync(join(tmpdir(), "dtc-mqtts-"));
    let tlsBroker: EmbeddedBroker | undefined;
    try {
      selfSignedCertificate(tlsDir);
      tlsBroker = await startEmbeddedBroker({
        port: 0,
        security: { authenticator, twinTopics: (id) => TOPICS[id] },
        tls: { certFile: join(tlsDir, "cert.pem"), keyFile: join(tlsDir, "key.pem"), port: 0 },
      });
      expect(tlsBroker.tlsUrl).toBe(`mqtts://127.0.0.1:${tlsBroker.tlsPort}`);
      const ca = readFileSync(join(tlsDir, "cert.pem"));
      const reader = await connect({ username: "x", password: token("reader"), ca }, tlsBroker.tlsUrl);
      await expect(reader.subscribeAsync("#")).rejects.toMatchObject(REFUSED);
      await expect(connect({ ca }, tlsBroker.tlsUrl)).rejects.toMatchObject({ code: 5 });
      // The plain listener is there too.
      expect((await connect(internal(), tlsBroker.url)).connected).toBe(true);
      await Promise.all(clients.splice(0).map((c) => c.endAsync(true)));
    } finally {
      await tlsBroker?.close();
      rmSync(tlsDir, { recursive: true, force: true });
    }
  });

  it("refuses to start without its certificate files", async () => {
    await expect(
      startEmbeddedBroker({
        port: 0,
        tls: { certFile: "/nonexistent/cert.pem", keyFile: "/nonexistent/key.pem", port: 0 },
      }),
    ).rejects.toThrow(/TLS certificate or key/);
  });
});

describe("without security (DTC_AUTH=off)", () => {
  it("is open", async () => {
    const open = await startEmbeddedBroker({ port: 0 });
    try {
      const client = await connect({}, open.url);
      expect(await client.subscribeAsync("#")).toEqual([{ topic: "#", qos: 0 }]);
      expect(await open.revalidate()).toBe(0);
      await client.endAsync(true);
    } finally {
      await open.close();
    }
  });
});
