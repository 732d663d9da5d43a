import { type ExposedThing, Servient } from "@node-wot/core";
import { Hono } from "hono";
import mqtt from "mqtt";
import { pino } from "pino";
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from "vitest";
import type { Gateway } from "../src/gateway.js";
import { nestsDeeperThan } from "../src/http/twin-requests.js";
import { mountTwinsProxy } from "../src/http/twins-proxy.js";
import { parseClientError } from "../src/runtime/client-error.js";
import { MAX_SEQUENCE_REORDER, Twin } from "../src/runtime/twin.js";
import { describeTwin } from "../src/runtime/twin-description.js";
import { TwinRuntime } from "../src/runtime/twin-runtime.js";
import { instantiate } from "../src/wot/instantiate.js";
import type { JsonObject } from "../src/wot/rdf.js";
import { StablePathHttpServer } from "../src/wot/servers.js";
import { startBroker, type TestBroker } from "./brokers.js";
import { sample, sampleRegistry, waitFor } from "./helpers.js";
import { call, startTestGateway } from "./manager-client.js";

/**
 * What a client, a PT or a twin's own function can send a twin, through the gateway and on MQTT:
 * the reproductions of the reliability issue's twin parts. Each used to answer 500, crash the
 * gateway or cost a twin forever; each must be a 4xx (or a 503 to retry), with everything still
 * serving after it. Every suite also fails if anything reached the process's last resort.
 */

/** Errors no handler caught: each would have ended the process. */
const uncaught: unknown[] = [];
const onUncaught = (err: unknown) => uncaught.push(err);
beforeAll(() => {
  process.on("uncaughtException", onUncaught);
  process.on("unhandledRejection", onUncaught);
});
afterEach(() => expect(uncaught.splice(0)).toEqual([]));
afterAll(() => {
  process.off("uncaughtException", onUncaught);
  process.off("unhandledRejection", onUncaught);
});

const IIOT = sample("iiot-device.tm.jsonld");

/** `[` 5,000 deep, then as many `]`: node-wot's validation recursed on it until the stack overflowed. */
const DEEP = `${"[".repeat(5000)}${"]".repeat(5000)}`;

describe("a twin's HTTP surface through the gateway", () => {
  let gateway: Gateway;
  const raw = (method: string, path: string, body?: string, signal?: AbortSignal) =>
    fetch(`${gateway.url}${path}`, {
      method,
      ...(body === undefined ? {} : { headers: { "Content-Type": "application/json" }, body }),
      ...(signal ? { signal } : {}),
    });
  const start = async (id: string, node = "local") => {
    const started = await call(gateway.url, "POST", "/api/instances", {
      package: "iiot-device",
      node,
      id,
      configuration: { DEVICE_ID: id },
    });
    expect(started.status).toBe(201);
  };
  const alive = async () => expect((await fetch(`${gateway.url}/healthz`)).status).toBe(200);
  const longPolls = (node: string, id: string) =>
    gateway.inProcess.runtimeOf(node)?.digital.longPollsOf(id) ?? 0;

  beforeAll(async () => {
    // Small, so that the oversized body below is written whole before the 413 (a client cut off
    // mid-body fails on its own side).
    gateway = await startTestGateway({ DTC_MAX_BODY_BYTES: "65536" });
    const node = {
      id: "edge-b",
      platform: "in-process",
      tier: "edge",
      capabilities: { cpu: 1, memory: 512, gpu: 0 },
    };
    expect((await call(gateway.url, "POST", "/api/nodes", node)).status).toBe(201);
    await start("h1");
  });
  afterAll(() => gateway?.close());

  it("refuses an action input its schema does not allow with 400 naming the error (node-wot answered 500)", async () => {
    for (const [body, detail] of [
      ['"x"', /the input of action "setRate" does not fit its schema: \(root\): must be number/],
      ["2000", /must be <= 1000/],
      [DEEP, /the body nests deeper than 64 levels/],
      ["{", /the body is not JSON/],
    ] as const) {
      const res = await raw("POST", "/twins/h1/actions/setRate", body);
      expect(res.status, body.slice(0, 10)).toBe(400);
      expect(res.headers.get("content-type")).toBe("application/problem+json");
      expect(((await res.json()) as { detail: string }).detail).toMatch(detail);
    }
    const named = await call(gateway.url, "POST", "/twins/h1/actions/installAugmentation", {
      name: 1,
      source: "() => ({})",
    });
    expect(named.status).toBe(400);
    expect(named.body.validationErrors).toEqual([{ field: "name", description: "must be string" }]);
    // A body that fits goes on.
    expect((await raw("POST", "/twins/h1/actions/setRate", "5")).status).toBe(204);
    await alive();
  });

  it("answers a name the TD does not declare with 404, the prototype's included", async () => {
    for (const [method, path] of [
      ["POST", "/twins/h1/actions/toString"],
      ["POST", "/twins/h1/actions/__proto__"],
      ["POST", "/twins/h1/actions/constructor"],
      ["POST", "/twins/h1/actions/hasOwnProperty"],
      ["GET", "/twins/h1/properties/constructor"],
      ["PUT", "/twins/h1/properties/constructor"],
      ["GET", "/twins/h1/properties/__proto__/observable"],
      ["GET", "/twins/h1/events/valueOf"],
      ["GET", "/twins/h1/properties/history/observable"],
      ["GET", "/twins/h1/properties/temperature/observable/more"],
      ["GET", "/twins/h1/things"],
      ["GET", "/twins/h1/actions"],
    ] as const) {
      const res = await raw(method, path, method === "GET" ? undefined : "1");
      expect(res.status, `${method} ${path}`).toBe(404);
      expect(res.headers.get("content-type")).toBe("application/problem+json");
    }
    expect((await call(gateway.url, "GET", "/twins/h1/properties/history/observable")).body.detail).toBe(
      'property "history" of the twin is not observable',
    );
    await alive();
  });

  it("answers a method the affordance does not take with 405 and Allow", async () => {
    for (const [method, path, allow] of [
      ["PUT", "/twins/h1/properties/temperature", "GET, HEAD, OPTIONS"],
      ["PUT", "/twins/h1/properties/lifecycleState", "GET, HEAD, OPTIONS"],
      ["DELETE", "/twins/h1/properties/temperature", "GET, HEAD, OPTIONS"],
      ["PUT", "/twins/h1/properties", "GET, HEAD, OPTIONS"],
      ["GET", "/twins/h1/actions/setRate", "POST, OPTIONS"],
      ["PUT", "/twins/h1/actions/setRate", "POST, OPTIONS"],
      ["POST", "/twins/h1/events/lifecycleChanged", "GET, HEAD, OPTIONS"],
      ["POST", "/twins/h1", "GET, HEAD, OPTIONS"],
    ] as const) {
      const res = await raw(method, path, method === "GET" || method === "DELETE" ? undefined : "1");
      expect([res.status, res.headers.get("allow")], `${method} ${path}`).toEqual([405, allow]);
      expect(((await res.json()) as { detail: string }).detail).toContain(`${method} is not an operation`);
    }
    await alive();
  });

  it("refuses query parameters the TD does not declare with 400, and an overlong query with 414", async () => {
    const unknown = await call(gateway.url, "GET", "/twins/h1/properties/history?limit=5");
    expect([unknown.status, unknown.body.detail]).toEqual([
      400,
      'query parameter "limit" is not a uriVariable here (none is declared)',
    ]);
    expect((await raw("GET", `/twins/h1/properties/history?${"a".repeat(10_000)}=1`)).status).toBe(414);
    expect((await raw("POST", "/twins/h1/actions/setRate?x=1", "5")).status).toBe(400);
    expect((await raw("GET", "/twins/h1/properties/history")).status).toBe(200);
  });

  it("refuses a body over the limit with 413", async () => {
    const res = await raw("POST", "/twins/h1/actions/setRate", JSON.stringify("x".repeat(128 * 1024)));
    expect(res.status).toBe(413);
    await alive();
  });

  it("answers a command to a stopped twin with 409 and a refused function with 422", async () => {
    expect((await call(gateway.url, "POST", "/api/instances/h1/stop")).status).toBe(200);
    const detached = await call(gateway.url, "POST", "/twins/h1/actions/setRate", 5);
    expect([detached.status, detached.body.title, detached.body.detail]).toEqual([
      409,
      "Conflict",
      "twin h1 is Done: detached from its physical twin",
    ]);
    expect((await call(gateway.url, "POST", "/api/instances/h1/start")).status).toBe(200);
    for (const source of ["() => { for (;;) {} }", "x => x.a.b", "0)); globalThis.x = 1; ((0"]) {
      const refused = await call(gateway.url, "POST", "/twins/h1/actions/installAugmentation", {
        name: "bad",
        source,
      });
      expect([refused.status, refused.body.title], source).toEqual([422, "Unprocessable Content"]);
      expect(refused.body.detail).toMatch(/^augmentation function "bad": /);
    }
  });

  it("answers a twin caught restarting or moving with 503 and Retry-After, and 404 once it is removed, never another 5xx", async () => {
    await start("r1");
    const answers: { status: number; retryAfter: string | null; detail?: string }[] = [];
    let done = false;
    const reader = async () => {
      while (!done) {
        const res = await raw("GET", "/twins/r1/properties/lifecycleState");
        const body = res.status === 200 ? undefined : ((await res.json()) as { detail: string });
        if (res.status === 200) await res.body?.cancel();
        answers.push({
          status: res.status,
          retryAfter: res.headers.get("retry-after"),
          detail: body?.detail,
        });
      }
    };
    const readers = Array.from({ length: 4 }, reader);
    try {
      for (let round = 0; round < 3; round++) {
        expect((await call(gateway.url, "POST", "/api/instances/r1/restart")).status).toBe(200);
        const node = round % 2 === 0 ? "edge-b" : "local";
        expect((await call(gateway.url, "POST", "/api/instances/r1/move", { node })).status).toBe(200);
      }
    } finally {
      done = true;
      await Promise.all(readers);
    }
    expect(answers.length).toBeGreaterThan(0);
    for (const answer of answers) {
      if (answer.status === 200) continue;
      expect(answer).toEqual({
        status: 503,
        retryAfter: "1",
        detail: 'twin "r1" is being moved or restarted: try again',
      });
    }
    expect((await call(gateway.url, "DELETE", "/api/instances/r1")).status).toBe(204);
    const gone = await call(gateway.url, "GET", "/twins/r1/properties/lifecycleState");
    expect([gone.status, gone.body.detail]).toEqual([404, 'no twin "r1" runs here']);
  });

  it("answers long polls open on a twin that restarts or moves with 503 to subscribe again; a client leaving after hurts nothing", async () => {
    await start("p1");
    const open = (path: string) => {
      const aborter = new AbortController();
      const answer = raw("GET", `/twins/p1/${path}`, undefined, aborter.signal);
      // Aborted on purpose later: the rejection is expected.
      answer.catch(() => {});
      return { answer, abort: () => aborter.abort() };
    };
    const expectResubscribe = async (poll: ReturnType<typeof open>) => {
      const res = await poll.answer;
      expect([res.status, res.headers.get("retry-after")]).toEqual([503, "1"]);
      expect(res.headers.get("content-type")).toBe("application/problem+json");
      await res.body?.cancel();
    };

    // A restart: the long polls on the old copy end with 503, not an hour later (or never).
    const before = [open("events/entanglementChanged"), open("properties/entanglement/observable")];
    await waitFor("the long polls to reach the twin", () => longPolls("local", "p1") === 2);
    expect((await call(gateway.url, "POST", "/api/instances/p1/restart")).status).toBe(200);
    for (const poll of before) await expectResubscribe(poll);
    for (const poll of before) poll.abort();

    // A move to another node: the same, and the consumer subscribes again where the twin is now.
    const moving = open("events/entanglementChanged");
    await waitFor("the long poll to reach the twin", () => longPolls("local", "p1") === 1);
    expect((await call(gateway.url, "POST", "/api/instances/p1/move", { node: "edge-b" })).status).toBe(200);
    await expectResubscribe(moving);
    moving.abort();
    const again = open("events/entanglementChanged");
    await waitFor("the long poll on the new node", () => longPolls("edge-b", "p1") === 1);

    // A client that leaves: its long poll is unsubscribed, and a removal after that is clean too.
    again.abort();
    await waitFor("the long poll to be gone", () => longPolls("edge-b", "p1") === 0);
    const last = open("events/lifecycleChanged");
    await waitFor("the last long poll to reach the twin", () => longPolls("edge-b", "p1") === 1);
    expect((await call(gateway.url, "DELETE", "/api/instances/p1")).status).toBe(204);
    // Told of its Stopped state, or that the twin went: either way answered.
    const res = await last.answer;
    expect([200, 404, 503]).toContain(res.status);
    await res.body?.cancel();
    last.abort();

    // The gateway still serves, and nothing reached the process's last resort (checked after each test).
    await alive();
    expect((await raw("GET", "/twins/h1/properties/lifecycleState")).status).toBe(200);
  });

  it("disables a function that overruns its limit on 3 messages in a row, says why in the augmentations property, until it is installed again", async () => {
    await start("a1");
    const installed = await call(gateway.url, "POST", "/twins/a1/actions/installAugmentation", {
      name: "spin",
      // Passes its check on the empty state, then loops on every message with a temperature.
      source: "(v) => { if (v.temperature !== undefined) for (;;) {} return {}; }",
    });
    expect(installed.status).toBe(200);
    const pt = await mqtt.connectAsync(gateway.brokerUrl);
    try {
      const functions = async () =>
        (await call(gateway.url, "GET", "/twins/a1/properties/augmentations")).body as JsonObject[];
      for (let seq = 1; seq <= 3; seq++) {
        await pt.publishAsync(
          "dtc/iiot/a1/telemetry",
          JSON.stringify({ ts: Date.now(), seq, temperature: 20 + seq }),
          { qos: 1 },
        );
      }
      const spin = await waitFor("the function disabled", async () => {
        const [first] = await functions();
        return first?.disabled === true ? first : undefined;
      });
      expect(spin).toMatchObject({
        name: "spin",
        disabled: true,
        disabledReason: expect.stringMatching(
          /^disabled after 3 overruns in a row \(the last: ran over its 50 ms limit\)/,
        ),
        failures: 3,
      });
      // Disabled, it costs nothing: the next message commits at once.
      const twin = gateway.inProcess.runtimeOf("local")?.get("a1");
      await pt.publishAsync(
        "dtc/iiot/a1/telemetry",
        JSON.stringify({ ts: Date.now(), seq: 4, temperature: 30 }),
        {
          qos: 1,
        },
      );
      await waitFor("the message committed", () => twin?.properties.temperature === 30);
      expect(twin?.augmentations.list()[0]?.failures).toBe(3);
      // Installed again (a fixed source), it runs again.
      const fixed = await call(gateway.url, "POST", "/twins/a1/actions/installAugmentation", {
        name: "spin",
        source: "(v) => ({ spun: true })",
      });
      expect(fixed.body).toEqual({ name: "spin", replaced: true });
      expect((await functions())[0]).toMatchObject({ name: "spin", disabled: false });
    } finally {
      await pt.endAsync();
    }
  });
});

/** iiot-device with one property the schema leaves writable (the state still changes only from the PT). */
const LABELLED = "https://example.test/labelled-device.tm.jsonld";

describe("a twin runtime's MQTT and HTTP handlers", () => {
  let broker: TestBroker;
  let runtime: TwinRuntime;
  const logs: { msg: string; err?: string }[] = [];

  beforeAll(async () => {
    broker = await startBroker("aedes");
    const registry = await sampleRegistry();
    const model = registry.get(IIOT) as JsonObject;
    (model.properties as JsonObject).label = { title: "Label", type: "string" };
    registry.register(LABELLED, model);
    const logger = pino({ level: "warn" }, { write: (line: string) => logs.push(JSON.parse(line)) });
    runtime = await TwinRuntime.start({
      registry,
      brokerUrl: broker.url,
      http: { port: 0, address: "127.0.0.1" },
      pushIntervalMs: 100,
      logger,
    });
    await runtime.create({ id: "w1", schema: LABELLED, placeholders: { DEVICE_ID: "w1" } });
  });
  afterAll(async () => {
    await runtime?.close();
    await broker?.stop();
  });

  it("refuses a write to a property the schema left writable: 405 through the proxy, a marked error from node-wot, and no unhandled rejection over MQTT", async () => {
    const app = new Hono();
    mountTwinsProxy(app, (id) => (runtime.get(id) ? runtime.digital.httpListenUrl : undefined), undefined, {
      description: (id) => (runtime.get(id) ? runtime.description(id) : undefined),
    });
    const proxied = await app.request("/twins/w1/properties/label", {
      method: "PUT",
      headers: { "Content-Type": "application/json" },
      body: '"new"',
    });
    expect([proxied.status, proxied.headers.get("allow")]).toEqual([405, "GET, HEAD, OPTIONS"]);
    expect(((await proxied.json()) as { detail: string }).detail).toMatch(
      /property "label" of twin w1 follows its physical twin and cannot be written/,
    );
    // What a twin container's own port answers: node-wot's 500, marked for the gateway.
    const direct = await fetch(`${runtime.digital.httpListenUrl}/w1/properties/label`, {
      method: "PUT",
      headers: { "Content-Type": "application/json" },
      body: '"new"',
    });
    expect(direct.status).toBe(500);
    expect(parseClientError(await direct.text())?.status).toBe(405);
    // binding-mqtt does not await the write: its refusal was an unhandled rejection (the process ended).
    const client = await mqtt.connectAsync(broker.url);
    try {
      await client.publishAsync("w1/properties/label/writeproperty", '"new"', { qos: 1 });
      await waitFor("the refused write reported", () =>
        logs.some((l) => /writing property label/.test(l.msg)),
      );
    } finally {
      await client.endAsync();
    }
    expect(runtime.get("w1")?.properties.label).toBeUndefined();
  });

  it("keeps what a telemetry message makes the twin throw out of mqtt.js: logged, and the next message commits", async () => {
    const twin = runtime.get("w1") as Twin;
    const unlisten = twin.listen({
      propertiesChanged: () => {
        throw new Error("a listener that breaks");
      },
    });
    const pt = await mqtt.connectAsync(broker.url);
    try {
      await pt.publishAsync(
        "dtc/iiot/w1/telemetry",
        JSON.stringify({ ts: Date.now(), seq: 1, temperature: 21 }),
        {
          qos: 1,
        },
      );
      await waitFor("the failure logged", () =>
        logs.some(
          (l) =>
            l.msg === "the twin failed on a telemetry message; it goes on" &&
            l.err === "a listener that breaks",
        ),
      );
      unlisten();
      await pt.publishAsync(
        "dtc/iiot/w1/telemetry",
        JSON.stringify({ ts: Date.now(), seq: 2, temperature: 22 }),
        {
          qos: 1,
        },
      );
      await waitFor("the next message committed", () => twin.properties.temperature === 22);
    } finally {
      await pt.endAsync();
    }
  });
});

describe("a twin whose broker is down", () => {
  it("answers a command with 503 and Retry-After at once, rather than holding the request until the broker is back", async () => {
    const broker = await startBroker("mosquitto");
    let stopped = false;
    const gateway = await startTestGateway({ DTC_MQTT_URL: broker.url });
    try {
      const started = await call(gateway.url, "POST", "/api/instances", {
        package: "iiot-device",
        node: "local",
        id: "nb1",
        configuration: { DEVICE_ID: "nb1" },
      });
      expect(started.status).toBe(201);
      const setRate = () =>
        fetch(`${gateway.url}/twins/nb1/actions/setRate`, {
          method: "POST",
          headers: { "Content-Type": "application/json" },
          body: "2",
          signal: AbortSignal.timeout(5000),
        });
      expect((await setRate()).status).toBe(204);
      await broker.stop();
      stopped = true;
      const refused = (await waitFor("the command refused while the broker is down", async () => {
        const res = await setRate();
        return res.status === 503 ? res : undefined;
      })) as Response;
      expect(refused.headers.get("retry-after")).toBe("1");
      expect(((await refused.json()) as { detail: string }).detail).toContain("broker is unreachable");
      expect((await fetch(`${gateway.url}/healthz`)).status).toBe(200);
    } finally {
      await gateway.close();
      if (!stopped) await broker.stop();
    }
  });
});

describe("node-wot's HTTP server as dtc runs it", () => {
  it("lets a long poll be unsubscribed after its thing is gone, or twice (its hour's timeout, then its close), without throwing", async () => {
    const servient = new Servient();
    servient.addServer(new StablePathHttpServer({ port: 0, address: "127.0.0.1" }, () => "t1"));
    const wot = (await servient.start()) as unknown as typeof WoT;
    try {
      const thing = (await wot.produce({ title: "T", events: { e: {} } })) as unknown as ExposedThing;
      await thing.expose();
      const listener = () => {};
      await thing.handleSubscribeEvent("e", listener, { formIndex: 0 });
      thing.handleUnsubscribeEvent("e", listener, { formIndex: 0 });
      // node-wot throws "Form not found" here, from a socket's close handler (nothing catches it).
      expect(() => thing.handleUnsubscribeEvent("e", listener, { formIndex: 0 })).not.toThrow();
      await thing.handleSubscribeEvent("e", listener, { formIndex: 0 });
      await thing.destroy();
      // And "Not found" here: destroy() cleared the listeners.
      expect(() => thing.handleUnsubscribeEvent("e", listener, { formIndex: 0 })).not.toThrow();
    } finally {
      await servient.shutdown();
    }
  });
});

describe("node-wot's HTTP server as dtc runs it: observations", () => {
  it("unregisters an observation whose client left before any change (node-wot kept it, and its response, for good)", async () => {
    const server = new StablePathHttpServer({ port: 0, address: "127.0.0.1" }, () => "t2");
    const servient = new Servient();
    servient.addServer(server);
    const wot = (await servient.start()) as unknown as typeof WoT;
    try {
      const thing = (await wot.produce({
        title: "T",
        properties: { p: { type: "number", observable: true, readOnly: true } },
      })) as unknown as ExposedThing;
      thing.setPropertyReadHandler("p", async () => 1);
      await thing.expose();
      const unobserve = thing.handleUnobserveProperty;
      let unobserved = 0;
      thing.handleUnobserveProperty = function (this: ExposedThing, ...args) {
        unobserved++;
        return unobserve.apply(this, args);
      };
      const aborter = new AbortController();
      const observation = fetch(`${server.listenUrl}/t2/properties/p/observable`, { signal: aborter.signal });
      observation.catch(() => {});
      await waitFor("the observation open", () => server.longPollsOf("t2") === 1);
      aborter.abort();
      await waitFor("the observation unregistered", () => unobserved === 1);
      expect(server.longPollsOf("t2")).toBe(0);
      await thing.destroy();
    } finally {
      await servient.shutdown();
    }
  });
});

describe("PT telemetry that would mislead a twin", () => {
  const T0 = Date.UTC(2026, 0, 1);
  const TOPIC = "dtc/iiot/d1/telemetry";
  let td: JsonObject;

  beforeAll(async () => {
    td = await instantiate(await sampleRegistry(), IIOT, {
      placeholders: { DEVICE_ID: "d1" },
      id: "urn:dtc:twin:d1",
    });
    vi.useFakeTimers({ toFake: ["Date"] });
  });
  afterAll(() => vi.useRealTimers());

  /** A twin of d1 with a status topic, connected, subscribed and told the PT is online. */
  function d1(): Twin {
    vi.setSystemTime(T0);
    const fidelity = { expectedUpdateRate: 10, odteWindow: 2, desiredTimeliness: 10 };
    const twin = new Twin(describeTwin(td, fidelity), { id: "d1", schema: IIOT, fidelity });
    twin.attach(async () => {});
    twin.setBrokerConnected(true, T0);
    twin.setSubscribed(true, T0);
    twin.handleStatus("online", T0);
    return twin;
  }
  const deliver = (twin: Twin, at: number, body: Record<string, unknown>) => {
    vi.setSystemTime(at);
    return twin.handleTelemetry(TOPIC, JSON.stringify(body), at);
  };

  it("orders by sequence number when the PT sends one: a smaller one is not committed, whatever its timestamp", () => {
    const twin = d1();
    deliver(twin, T0 + 100, { ts: T0 + 99, seq: 10, temperature: 10 });
    // Stamped later (the PT's clock stepped), numbered earlier: reordered in transit.
    expect(deliver(twin, T0 + 200, { ts: T0 + 199, seq: 9, temperature: 9 })).toBeUndefined();
    // The same number again (a QoS 1 redelivery): not committed twice.
    expect(deliver(twin, T0 + 300, { ts: T0 + 299, seq: 10, temperature: 99 })).toBeUndefined();
    expect(twin.properties.temperature).toBe(10);
    // Numbered later, stamped earlier (the PT's clock stepped back): committed.
    expect(deliver(twin, T0 + 400, { ts: T0 + 50, seq: 11, temperature: 11 })).toBeDefined();
    expect(twin.properties.temperature).toBe(11);
    expect(twin.counters).toMatchObject({ stale: 2, lost: 0 });
  });

  it("is not frozen by a PT whose counter starts over: a drop past the reorder window, or a PT back online, starts a new run", () => {
    const twin = d1();
    deliver(twin, T0 + 100, { ts: T0 + 99, seq: 1000, temperature: 1 });
    // A reboot without a status change (or a wrap): far behind is a new run, committed.
    expect(
      deliver(twin, T0 + 200, { ts: T0 + 199, seq: 1000 - MAX_SEQUENCE_REORDER - 1, temperature: 2 }),
    ).toBeDefined();
    expect(
      deliver(twin, T0 + 300, { ts: T0 + 299, seq: 1000 - MAX_SEQUENCE_REORDER, temperature: 3 }),
    ).toBeDefined();
    // A short run before the reboot: offline, then online again, and it counts from 0.
    twin.handleStatus("offline", T0 + 350);
    twin.handleStatus("online", T0 + 360);
    expect(deliver(twin, T0 + 400, { ts: T0 + 399, seq: 0, temperature: 4 })).toBeDefined();
    expect(deliver(twin, T0 + 500, { ts: T0 + 499, seq: 1, temperature: 5 })).toBeDefined();
    expect(twin.properties.temperature).toBe(5);
    expect(twin.counters).toMatchObject({ stale: 0, lost: 0 });
    // Back online without a restart: the numbers go on, and those missed count as lost.
    twin.handleStatus("offline", T0 + 550);
    twin.handleStatus("online", T0 + 560);
    expect(deliver(twin, T0 + 600, { ts: T0 + 599, seq: 4, temperature: 6 })).toBeDefined();
    expect(deliver(twin, T0 + 700, { ts: T0 + 699, seq: 3, temperature: 7 })).toBeUndefined();
    expect(twin.counters).toMatchObject({ stale: 1, lost: 2 });
  });

  it("refuses a sequence number no counter gives (it would have been counted as lost, and ordered every message after it out)", () => {
    const twin = d1();
    deliver(twin, T0 + 100, { ts: T0 + 99, seq: 1, temperature: 1 });
    expect(deliver(twin, T0 + 200, { ts: T0 + 199, seq: 1e300, temperature: 2 })).toBeUndefined();
    expect(deliver(twin, T0 + 300, { ts: T0 + 299, seq: 2, temperature: 3 })).toBeDefined();
    expect(twin.counters).toMatchObject({ rejected: 1, lost: 0, stale: 0 });
  });

  it("does not count as timely an update stamped in the twin's future (within the skew it accepts)", () => {
    const twin = d1();
    for (let k = 1; k <= 20; k++)
      deliver(twin, T0 + k * 100, { ts: T0 + k * 100 + 5, seq: k, temperature: k });
    expect(twin.evaluate(T0 + 2000)).toMatchObject({ timeliness: 0, entangled: false });
    expect(twin.lifecycleState).not.toBe("Entangled");
    // Its history still shows the times it was given.
    expect(twin.states().at(-1)?.ptTimestamp).toBe(T0 + 2005);
  });

  it("finds deep nesting in one pass, without recursion, and ignores brackets inside strings", () => {
    expect(nestsDeeperThan("[".repeat(1_000_000), 64)).toBe(true);
    expect(nestsDeeperThan(`${"[".repeat(64)}${"]".repeat(64)}`, 64)).toBe(false);
    expect(nestsDeeperThan(JSON.stringify({ a: "[".repeat(100), b: '\\"{{{{' }), 2)).toBe(false);
    expect(nestsDeeperThan('[[["\\\\"]]]', 2)).toBe(true);
  });
});
