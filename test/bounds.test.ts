import { readFileSync } from "node:fs";
import net from "node:net";
import { join } from "node:path";
import { type ServerType, serve } from "@hono/node-server";
import aedesModule, { type Aedes } from "aedes";
import { Hono } from "hono";
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from "vitest";
import { DirectoryEvents } from "../src/directory/events.js";
import { MAX_SUBSCRIBERS, mountNotificationsApi } from "../src/directory/notifications-api.js";
import type { DirectoryStore } from "../src/directory/store.js";
import { LIFECYCLE_WRITE_GAP_MS, TwinStatusPublisher } from "../src/directory/twin-status.js";
import type { LifecycleState } from "../src/domain/lifecycle.js";
import type { Gateway } from "../src/gateway.js";
import { MAX_SNAPSHOTS_PER_INSTANCE } from "../src/manager/manager.js";
import { MAX_ODTE_WINDOW_S } from "../src/manager/model.js";
import { MAX_OFFLINE_MESSAGES, MqttConnections, MqttOfflineQueueFullError } from "../src/mqtt/connections.js";
import { freePort } from "../src/net.js";
import { thingModelsDir } from "../src/paths.js";
import type { StatusListener } from "../src/platforms/driver.js";
import { startFakeDockerEngine } from "./fake-docker-engine.js";
import { waitFor } from "./helpers.js";
import { type Answer, call, startTestGateway } from "./manager-client.js";

/**
 * Every bound of the manager, its platforms and its publishers, tested one past its limit: the
 * ODTE window, snapshots per instance, event streams, what removed nodes held, status-graph writes
 * of a flapping twin, MQTT messages kept while the broker is down.
 */

describe("DTC Manager bounds", () => {
  let gateway: Gateway;
  const api = (method: string, path: string, body?: unknown) => call(gateway.url, method, path, body);
  const fields = (a: Answer) => ((a.body.validationErrors ?? []) as { field: string }[]).map((e) => e.field);
  beforeAll(async () => {
    gateway = await startTestGateway();
  });
  afterAll(() => gateway?.close());

  it(`refuses an ODTE window over ${MAX_ODTE_WINDOW_S} s on a schema and on an instance (400 naming the field)`, async () => {
    const model = JSON.parse(readFileSync(join(thingModelsDir, "iiot-device.tm.jsonld"), "utf8"));
    const withWindow = (w: number) => ({
      ...model,
      "dtc:fidelity": { ...model["dtc:fidelity"], "dtc:odteWindow": w },
    });
    const wide = await api("POST", "/api/schemas?id=wide", withWindow(MAX_ODTE_WINDOW_S + 1));
    expect(wide.status).toBe(400);
    expect(fields(wide)).toEqual(["dtc:fidelity.dtc:odteWindow"]);
    expect(wide.body.detail).toContain(`at most ${MAX_ODTE_WINDOW_S} s`);
    expect((await api("GET", "/api/schemas/wide")).status).toBe(404);
    expect((await api("POST", "/api/schemas?id=widest", withWindow(MAX_ODTE_WINDOW_S))).status).toBe(201);

    const instance = await api("POST", "/api/instances", {
      package: "iiot-device",
      node: "local",
      id: "w1",
      configuration: { DEVICE_ID: "w1" },
      fidelity: { odteWindow: MAX_ODTE_WINDOW_S + 1 },
    });
    expect(instance.status).toBe(400);
    expect(fields(instance)).toEqual(["fidelity.odteWindow"]);
    expect((await api("GET", "/api/instances/w1")).status).toBe(404);
  });

  it(`keeps at most ${MAX_SNAPSHOTS_PER_INSTANCE} snapshots of an instance: the next is refused (409) until one is removed`, async () => {
    const start = { package: "iiot-device", node: "local", id: "s1", configuration: { DEVICE_ID: "s1" } };
    expect((await api("POST", "/api/instances", start)).status).toBe(201);
    const ids: string[] = [];
    for (let n = 0; n < MAX_SNAPSHOTS_PER_INSTANCE; n++) {
      const taken = await api("POST", "/api/instances/s1/snapshots");
      expect(taken.status).toBe(201);
      ids.push(taken.body.id as string);
    }
    const refused = await api("POST", "/api/instances/s1/snapshots");
    expect(refused.status).toBe(409);
    expect(refused.body.detail).toContain(`${MAX_SNAPSHOTS_PER_INSTANCE} snapshots`);
    expect((await api("GET", "/api/snapshots?instance=s1")).body).toHaveLength(MAX_SNAPSHOTS_PER_INSTANCE);
    expect((await api("DELETE", `/api/snapshots/${ids[0]}`)).status).toBe(204);
    expect((await api("POST", "/api/instances/s1/snapshots")).status).toBe(201);
    expect((await api("DELETE", "/api/instances/s1")).status).toBe(204);
  });

  it("closes a removed in-process node's runtime (its twins' HTTP server stops listening)", async () => {
    const node = {
      id: "edge-r",
      platform: "in-process",
      tier: "edge",
      capabilities: { cpu: 1, memory: 512 },
    };
    expect((await api("POST", "/api/nodes", node)).status).toBe(201);
    const start = { package: "iiot-device", node: "edge-r", id: "r1", configuration: { DEVICE_ID: "r1" } };
    expect((await api("POST", "/api/instances", start)).status).toBe(201);
    const listening = gateway.inProcess.runtimeOf("edge-r")?.digital.httpListenUrl;
    if (listening === undefined) throw new Error("edge-r has no runtime");
    expect((await fetch(`${listening}/r1`)).status).toBe(200);
    expect((await api("DELETE", "/api/instances/r1")).status).toBe(204);
    expect((await api("DELETE", "/api/nodes/edge-r")).status).toBe(204);
    expect(gateway.inProcess.runtimeOf("edge-r")).toBeUndefined();
    await expect(fetch(`${listening}/r1`)).rejects.toThrow();
  });

  it("closes a removed Docker node's engine client and every connection it had to the engine", async () => {
    const engine = await startFakeDockerEngine("ping-only");
    try {
      const node = {
        id: "docker-r",
        platform: "docker",
        tier: "edge",
        capabilities: { cpu: 1, memory: 512 },
        endpoint: engine.endpoint,
      };
      expect((await api("POST", "/api/nodes", node)).body.ready).toBe(true);
      const address = `http://127.0.0.1:${engine.port}`;
      expect(await gateway.docker.engines()).toContain(address);
      expect(await engine.connections()).toBeGreaterThan(0);
      expect((await api("DELETE", "/api/nodes/docker-r")).status).toBe(204);
      expect(await gateway.docker.engines()).not.toContain(address);
      await waitFor("no connection to the engine", async () => (await engine.connections()) === 0, 2_000);
    } finally {
      await engine.close();
    }
  });
});

describe("directory event streams", () => {
  let server: ServerType;
  let base: string;
  const events = new DirectoryEvents();
  const LIMIT = 3;
  beforeAll(async () => {
    const app = new Hono();
    mountNotificationsApi(app, { events, maxSubscribers: LIMIT });
    server = serve({ fetch: app.fetch, port: 0, hostname: "127.0.0.1" });
    await new Promise((resolve) => server.once("listening", resolve));
    base = `http://127.0.0.1:${(server.address() as net.AddressInfo).port}`;
  });
  afterAll(async () => {
    events.close();
    await new Promise((resolve) => server.close(resolve));
  });

  it(`answers the stream past the limit (default ${MAX_SUBSCRIBERS}) with 503 and Retry-After, and takes one again once another ends`, async () => {
    const open = async () => {
      const abort = new AbortController();
      const res = await fetch(`${base}/events`, { signal: abort.signal });
      return { res, abort };
    };
    const streams = [];
    for (let n = 0; n < LIMIT; n++) streams.push(await open());
    for (const { res } of streams) expect(res.status).toBe(200);
    expect(events.subscriberCount).toBe(LIMIT);
    const refused = await fetch(`${base}/events`);
    expect(refused.status).toBe(503);
    expect(refused.headers.get("content-type")).toBe("application/problem+json");
    expect(refused.headers.get("retry-after")).toBe("3");
    expect(((await refused.json()) as { detail: string }).detail).toContain(
      `${LIMIT} event streams are open`,
    );

    streams[0]?.abort.abort();
    await waitFor("one stream fewer", () => events.subscriberCount < LIMIT);
    const again = await open();
    expect(again.res.status).toBe(200);
    for (const { abort } of [...streams.slice(1), again]) abort.abort();
    await waitFor("every stream closed", () => events.subscriberCount === 0);
  });
});

describe("twin status graph writes", () => {
  afterEach(() => {
    vi.useRealTimers();
  });

  it(`writes a flapping twin's lifecycle at most once per ${LIFECYCLE_WRITE_GAP_MS} ms, the latest state last`, async () => {
    vi.useFakeTimers();
    const writes: string[] = [];
    const store = {
      putGraph: async (_graph: string, triples: string) => {
        writes.push(triples);
      },
      deleteGraph: async () => {},
    } as unknown as DirectoryStore;
    const publisher = new TwinStatusPublisher({ store, intervalMs: 60_000 });
    let state: LifecycleState = "Unbound";
    let listener: StatusListener = {};
    const source = {
      status: () => ({ lifecycle: state }),
      onStatus: (l: StatusListener) => {
        listener = l;
        return () => {};
      },
    };
    await publisher.watch(source, "urn:dtc:twin:f1");
    expect(writes).toHaveLength(1);

    // A PT flapping: a thousand lifecycle changes in a burst.
    for (let n = 0; n < 1000; n++) {
      state = n % 2 === 0 ? "Bound" : "Disentangled";
      listener.lifecycleChanged?.();
      await Promise.resolve();
    }
    state = "Entangled";
    listener.lifecycleChanged?.();
    await vi.advanceTimersByTimeAsync(LIFECYCLE_WRITE_GAP_MS);
    expect(writes).toHaveLength(2);
    expect(writes[1]).toContain("#Entangled>");

    // Quiet for a gap: the next change is written at once.
    await vi.advanceTimersByTimeAsync(LIFECYCLE_WRITE_GAP_MS);
    state = "Disentangled";
    listener.lifecycleChanged?.();
    await vi.advanceTimersByTimeAsync(0);
    expect(writes).toHaveLength(3);
    expect(writes[2]).toContain("#Disentangled>");
    publisher.close();
  });
});

describe("MQTT messages kept while the broker is down", () => {
  const createAedes = aedesModule as unknown as () => Aedes;

  it(`keeps at most ${MAX_OFFLINE_MESSAGES} of each QoS: the oldest QoS 0 dropped, further QoS 1 refused; the kept ones are sent`, async () => {
    const port = await freePort();
    const connection = new MqttConnections().acquire(`mqtt://127.0.0.1:${port}`);
    const broker = createAedes();
    const server = net.createServer(broker.handle);
    try {
      const outcomes = { sent: 0, dropped: 0, refused: 0 };
      const publish = (topic: string, n: number, qos: 0 | 1) =>
        connection.publish(topic, String(n), { qos }).then(
          () => {
            outcomes.sent++;
          },
          (err: unknown) => {
            expect(err).toBeInstanceOf(MqttOfflineQueueFullError);
            outcomes[(err as Error).message.includes("dropped") ? "dropped" : "refused"]++;
          },
        );
      const pending: Promise<void>[] = [];
      for (let n = 0; n <= MAX_OFFLINE_MESSAGES; n++) pending.push(publish("t/commands", n, 1));
      for (let n = 0; n < MAX_OFFLINE_MESSAGES + 500; n++) pending.push(publish("t/values", n, 0));
      await waitFor(
        "the messages past the limit turned away",
        () => outcomes.dropped + outcomes.refused === 501,
      );
      expect(outcomes).toEqual({ sent: 0, dropped: 500, refused: 1 });
      expect(connection.waiting).toBe(2 * MAX_OFFLINE_MESSAGES);

      const received: Record<string, string[]> = { "t/commands": [], "t/values": [] };
      broker.on("publish", (packet, client) => {
        if (client) received[packet.topic]?.push(packet.payload.toString());
      });
      await new Promise<void>((resolve) => server.listen(port, "127.0.0.1", resolve));
      await Promise.all(pending);
      expect(outcomes.sent).toBe(2 * MAX_OFFLINE_MESSAGES);
      // QoS 0 is done once written: the broker may still be reading it.
      await waitFor(
        "every kept value at the broker",
        () => received["t/values"]?.length === MAX_OFFLINE_MESSAGES,
      );
      expect(received["t/commands"]).toHaveLength(MAX_OFFLINE_MESSAGES);
      // The latest values are the ones kept.
      expect(received["t/values"]?.[0]).toBe("500");
      expect(received["t/values"]?.at(-1)).toBe(String(MAX_OFFLINE_MESSAGES + 499));
      expect(connection.waiting).toBe(0);
    } finally {
      await connection.release();
      await new Promise<void>((resolve) => broker.close(() => resolve()));
      await new Promise<void>((resolve) => (server.listening ? server.close(() => resolve()) : resolve()));
    }
  });
});
