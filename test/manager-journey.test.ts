import { readFileSync } from "node:fs";
import { join } from "node:path";
import { HttpClientFactory } from "@node-wot/binding-http";
import { MqttClientFactory } from "@node-wot/binding-mqtt";
import { Servient } from "@node-wot/core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { Gateway } from "../src/gateway.js";
import { thingModelsDir } from "../src/paths.js";
import { IiotDeviceSimulator } from "../src/simulator/index.js";
import type { JsonObject } from "../src/wot/rdf.js";
import { waitFor } from "./helpers.js";
import { type Answer, adminToken, call, FAST, startTestGateway } from "./manager-client.js";

/**
 * The user's journey through the DTC Manager, over HTTP only (and a node-wot consumer over HTTP and
 * MQTT): register a schema, a package and a node; find candidate nodes; start two IIoT twins fed by
 * simulators; find them by SPARQL; consume one; snapshot, move, clone, stop, restart and remove it.
 */

type Json = Record<string, unknown>;

describe("DTC Manager: the user's journey over HTTP", () => {
  let gateway: Gateway;
  let api: (method: string, path: string, body?: unknown) => Promise<Answer>;
  const sims: IiotDeviceSimulator[] = [];
  let servient: Servient;
  let token: string;
  /** fetch with the admin token. */
  const authed = (url: string, init: RequestInit = {}) =>
    fetch(url, {
      ...init,
      headers: { ...(init.headers as Record<string, string>), Authorization: `Bearer ${token}` },
    });
  let wot: typeof WoT;

  beforeAll(async () => {
    gateway = await startTestGateway({ DTC_STATUS_INTERVAL_MS: "200", DTC_AUTH: "on" });
    token = adminToken(gateway);
    api = (method, path, body) => call(gateway.url, method, path, body, token);
    servient = new Servient();
    // What a WoT consumer adds for the TDs it consumes: the token over HTTP, and as the MQTT password.
    const credentials = { token, username: "dtc", password: token };
    servient.addCredentials({
      "urn:dtc:twin:press-1": credentials,
      "urn:dtc:manager": credentials,
    });
    servient.addClientFactory(new HttpClientFactory());
    servient.addClientFactory(new MqttClientFactory());
    wot = (await servient.start()) as unknown as typeof WoT;
  });

  afterAll(async () => {
    await Promise.all(sims.map((s) => s.stop()));
    await servient?.shutdown();
    await gateway?.close();
  });

  const things = async (path: string) => {
    const res = await authed(`${gateway.url}${path}`);
    const body = (await res.json()) as { results: { bindings: { thing: { value: string } }[] } };
    return body.results.bindings.map((b) => b.thing.value);
  };
  const lifecycle = async (id: string) => (await api("GET", `/api/instances/${id}`)).body.lifecycle;

  describe.sequential("registers, deploys, discovers, consumes, snapshots, moves, clones, stops, restarts and removes twins", () => {
    /** The first step that failed: the later ones build on it and are skipped. */
    let failedStep: string | undefined;
    const step = (name: string, run: () => Promise<void>, timeout?: number) =>
      it(name, { timeout }, async (ctx) => {
        if (failedStep !== undefined) ctx.skip(`the earlier step "${failedStep}" failed`);
        ctx.onTestFailed(() => {
          failedStep = name;
        });
        await run();
      });

    // What the steps hand on to the later ones.
    let schemaIri: string;
    let td: JsonObject;
    let bySchema: string;
    let thing: WoT.ConsumedThing;
    let reader: WoT.ConsumedThing;
    const overMqtt: number[] = [];
    let snapshot: Answer;

    step(
      "registers a schema (a Thing Model), a package implementing it in-process and an edge node, all three found by SPARQL",
      async () => {
        const model = JSON.parse(readFileSync(join(thingModelsDir, "iiot-device.tm.jsonld"), "utf8"));
        model.title = "IIoT Press {{DEVICE_ID}}";
        const schema = await api("POST", "/api/schemas?id=iiot-press", model);
        expect(schema.status, JSON.stringify(schema.body)).toBe(201);
        expect(schema.body).toMatchObject({ id: "iiot-press", placeholders: ["DEVICE_ID"], builtIn: false });
        schemaIri = schema.body.iri as string;
        expect((await api("GET", "/api/schemas?q=press")).body.map((s) => s.id)).toEqual(["iiot-press"]);

        const pkg = await api("POST", "/api/packages", {
          id: "press-in-process",
          schema: "iiot-press",
          platform: "in-process",
          parameters: { DEVICE_ID: { type: "string", description: "The press's device id" } },
          requirements: { cpu: 0.25, memory: 64 },
        });
        expect(pkg.status, JSON.stringify(pkg.body)).toBe(201);
        const node = await api("POST", "/api/nodes", {
          id: "edge-1",
          platform: "in-process",
          tier: "edge",
          capabilities: { cpu: 2, memory: 2048, gpu: 0 },
          labels: { site: "plant-a" },
          latencyMs: 1,
        });
        expect(node.status, JSON.stringify(node.body)).toBe(201);
        // The inventory is in the directory too: SPARQL joins schema, package and node.
        const ask = async (pattern: string) => {
          const query = `PREFIX dtc: <https://w3id.org/dtc#> ASK { ${pattern} }`;
          const res = await authed(`${gateway.url}/search/sparql?query=${encodeURIComponent(query)}`);
          return ((await res.json()) as { boolean: boolean }).boolean;
        };
        expect(await ask(`GRAPH ?g { <${schemaIri}> a dtc:DigitalTwinSchema }`)).toBe(true);
        expect(
          await ask(
            `GRAPH ?p { <${gateway.url}/api/packages/press-in-process> dtc:schema <${schemaIri}> ; dtc:platform dtc:InProcess }`,
          ),
        ).toBe(true);
        expect(
          await ask(`GRAPH ?n { <${gateway.url}/api/nodes/edge-1> a dtc:Node ; dtc:tier dtc:Edge }`),
        ).toBe(true);
        expect((await api("GET", "/api/nodes?tier=edge&label=site=plant-a")).body.map((n) => n.id)).toEqual([
          "edge-1",
        ]);
      },
    );

    step(
      "offers both in-process nodes as candidates for the package: platform, requirements and latency under Td = 10 ms fit",
      async () => {
        const candidates = await api("GET", "/api/packages/press-in-process/nodes");
        expect(candidates.body.map((c) => (c.node as Json).id).sort()).toEqual(["edge-1", "local"]);
      },
    );

    step(
      "starts a twin of the package on each node, its TD linked to schema and node, each fed by a press with a device token of its own",
      async () => {
        const request = { package: "press-in-process", node: "local", id: "press-1", fidelity: FAST };
        const first = await api("POST", "/api/instances", {
          ...request,
          configuration: { DEVICE_ID: "press-1" },
        });
        expect(first.status, JSON.stringify(first.body)).toBe(201);
        expect(first.body).toMatchObject({ id: "press-1", node: "local", desired: "running" });
        td = first.body.td as JsonObject;
        expect(td.id).toBe("urn:dtc:twin:press-1");
        const links = td.links as { rel: string; href: string }[];
        expect(links).toContainEqual(expect.objectContaining({ rel: "type", href: schemaIri }));
        expect(links).toContainEqual(
          expect.objectContaining({
            rel: "https://w3id.org/dtc#node",
            href: `${gateway.url}/api/nodes/local`,
          }),
        );
        const second = await api("POST", "/api/instances", {
          ...request,
          node: "edge-1",
          id: "press-2",
          configuration: { DEVICE_ID: "press-2" },
        });
        expect(second.status, JSON.stringify(second.body)).toBe(201);
        // Each twin fed by a simulated press (a device's MQTT rights follow its twin's TD: the twin first).
        for (const id of ["press-1", "press-2"]) {
          // Each PT connects with its own device token: it may publish only its own telemetry and status.
          const device = await api("POST", "/api/tokens", { name: id, role: `device:${id}` });
          const sim = new IiotDeviceSimulator({
            id,
            brokerUrl: gateway.brokerUrl,
            rate: 10,
            mqttOptions: { username: id, password: device.body.token as string },
          });
          sims.push(sim);
          await sim.start();
        }
      },
    );

    step(
      "finds both twins by SPARQL, by schema, as Entangled with ODTE >= 0.9 and by node, and lists them as Entangled",
      async () => {
        bySchema = `/search/named/twins-by-schema?schema=${encodeURIComponent(schemaIri)}`;
        await waitFor("both twins found by schema", async () => (await things(bySchema)).length === 2);
        const entangled = "/search/named/twins-by-entanglement?minOdte=0.9&state=Entangled";
        await waitFor(
          "both twins Entangled with ODTE >= 0.9 in the directory",
          async () => {
            const found = await things(entangled);
            return found.includes("urn:dtc:twin:press-1") && found.includes("urn:dtc:twin:press-2");
          },
          20_000,
        );
        expect(
          await things(
            `/search/named/twins-by-node?node=${encodeURIComponent(`${gateway.url}/api/nodes/edge-1`)}`,
          ),
        ).toEqual(["urn:dtc:twin:press-2"]);
        await waitFor("both listed by the manager as Entangled twins of the schema", async () => {
          const listed = await api("GET", "/api/instances?schema=iiot-press&state=Entangled");
          return (
            listed.body
              .map((i) => i.id)
              .sort()
              .join() === "press-1,press-2"
          );
        });
      },
      60_000,
    );

    step(
      "lets a node-wot consumer of the published DT Description observe a twin over MQTT and read it over HTTP",
      async () => {
        const described = (await (
          await authed(`${gateway.url}/things/urn:dtc:twin:press-1`)
        ).json()) as JsonObject;
        thing = await wot.consume(described as unknown as WoT.ThingDescription);
        const mqttIndex = formIndex(described, "temperature", "mqtt", "observeproperty");
        // node-wot would read over MQTT once it has an MQTT client (and wait for the next value), and
        // node-wot 0.9.2 sets credentials only on the first client it makes for a scheme when a call
        // names a formIndex (later calls get a fresh client without them): reads go through a second
        // consumer of the same TD with its HTTP forms only.
        const httpOnly = structuredClone(described);
        for (const p of Object.values(httpOnly.properties as Record<string, { forms: { href: string }[] }>)) {
          p.forms = p.forms.filter((f) => f.href.startsWith("http"));
        }
        reader = await wot.consume(httpOnly as unknown as WoT.ThingDescription);
        await thing.observeProperty(
          "temperature",
          async (v) => void overMqtt.push((await v.value()) as number),
          undefined,
          {
            formIndex: mqttIndex,
          },
        );
        await waitFor("temperature observed over MQTT", () => overMqtt.length > 0);
        expect(typeof (await (await reader.readProperty("temperature")).value())).toBe("number");
      },
    );

    step("takes a snapshot of a twin with its history, listed under the instance", async () => {
      snapshot = await api("POST", "/api/instances/press-1/snapshots");
      expect(snapshot.status, JSON.stringify(snapshot.body)).toBe(201);
      expect((snapshot.body.history as Json).states).toBeGreaterThan(0);
      expect((await api("GET", "/api/snapshots?instance=press-1")).body.map((s) => s.id)).toEqual([
        snapshot.body.id,
      ]);
    });

    step(
      "moves a twin to edge-1 with the same TD id and URLs, its history and creation time, while the consumer keeps reading over HTTP and MQTT",
      async () => {
        const before = (await api("GET", `/api/instances/press-1`)).body;
        const moved = await api("POST", "/api/instances/press-1/move", { node: "edge-1" });
        expect(moved.status, JSON.stringify(moved.body)).toBe(200);
        expect(moved.body).toMatchObject({ id: "press-1", node: "edge-1" });
        expect((moved.body.td as JsonObject).id).toBe("urn:dtc:twin:press-1");
        expect(JSON.stringify((moved.body.td as JsonObject).properties)).toBe(JSON.stringify(td.properties));
        expect(gateway.inProcess.runtimeOf("local")?.get("press-1")).toBeUndefined();
        const afterMove = overMqtt.length;
        await waitFor("MQTT observations continuing after the move", () => overMqtt.length > afterMove + 3);
        const readings = await reader.readProperty("temperature");
        expect(typeof (await readings.value())).toBe("number");
        await waitFor(
          "Entangled again after the move",
          async () => (await lifecycle("press-1")) === "Entangled",
        );
        const history = (await (await authed(`${gateway.url}/twins/press-1/properties/history`)).json()) as {
          states: unknown[];
        };
        expect(history.states.length).toBeGreaterThanOrEqual(
          ((snapshot.body.history as Json).states as number) - 1,
        );
        expect(before.createdAt).toBe((await api("GET", "/api/instances/press-1")).body.createdAt);
        await waitFor("the directory placing press-1 on edge-1", async () =>
          (
            await things(
              `/search/named/twins-by-node?node=${encodeURIComponent(`${gateway.url}/api/nodes/edge-1`)}`,
            )
          ).includes("urn:dtc:twin:press-1"),
        );
      },
      60_000,
    );

    step(
      "clones a twin onto local as a new instance with a new TD id, in the directory, its state copied",
      async () => {
        const clone = await api("POST", "/api/instances/press-1/clone", {
          node: "local",
          id: "press-1-copy",
        });
        expect(clone.status, JSON.stringify(clone.body)).toBe(201);
        expect(clone.body).toMatchObject({
          id: "press-1-copy",
          node: "local",
          origin: { clonedFrom: "press-1" },
        });
        expect((clone.body.td as JsonObject).id).toBe("urn:dtc:twin:press-1-copy");
        expect((await authed(`${gateway.url}/things/urn:dtc:twin:press-1-copy`)).status).toBe(200);
      },
    );

    step(
      "stops a twin: Done, still readable and in the directory with its state; stopping it again is a 200",
      async () => {
        const stopped = await api("POST", "/api/instances/press-1/stop");
        expect(stopped.status).toBe(200);
        expect(stopped.body.lifecycle).toBe("Done");
        expect(await (await reader.readProperty("lifecycleState")).value()).toBe("Done");
        await waitFor("press-1 Done in the directory", async () =>
          (await things("/search/named/twins-by-lifecycle?state=Done")).includes("urn:dtc:twin:press-1"),
        );
        expect((await api("POST", "/api/instances/press-1/stop")).status).toBe(200);
      },
    );

    step(
      "restarts a stopped twin fresh with its original configuration, Entangled with its press again",
      async () => {
        const restarted = await api("POST", "/api/instances/press-1/restart");
        expect(restarted.status, JSON.stringify(restarted.body)).toBe(200);
        await waitFor(
          "Entangled after the restart",
          async () => (await lifecycle("press-1")) === "Entangled",
        );
      },
    );

    step(
      "removes a twin from the manager, its snapshots, the directory and the gateway's routes, the other twins staying",
      async () => {
        expect((await api("DELETE", "/api/instances/press-1")).status).toBe(204);
        expect((await api("GET", "/api/instances/press-1")).status).toBe(404);
        expect((await authed(`${gateway.url}/things/urn:dtc:twin:press-1`)).status).toBe(404);
        expect((await authed(`${gateway.url}/twins/press-1/properties/temperature`)).status).toBe(404);
        expect((await api("GET", "/api/snapshots?instance=press-1")).body).toEqual([]);
        await waitFor(
          "press-1 gone from SPARQL",
          async () => !(await things(bySchema)).includes("urn:dtc:twin:press-1"),
        );
        expect((await things(bySchema)).sort()).toEqual([
          "urn:dtc:twin:press-1-copy",
          "urn:dtc:twin:press-2",
        ]);
      },
    );
  });

  it("describes itself: a TD of the management interface, linked from /.well-known/wot", async () => {
    const directoryTd = (await (await authed(`${gateway.url}/.well-known/wot`)).json()) as JsonObject;
    const link = (directoryTd.links as { rel: string; href: string }[]).find((l) =>
      l.href.endsWith("/api/td"),
    );
    expect(link).toBeDefined();
    const td = (await (await authed(link?.href as string)).json()) as JsonObject;
    const consumed = await wot.consume(td as unknown as WoT.ThingDescription);
    const nodes = (await (
      await consumed.invokeAction("discoverNodes", undefined, {
        uriVariables: { tier: "edge" },
      })
    )?.value()) as { id: string }[];
    expect(nodes.map((n) => n.id)).toContain("edge-1");
  });

  it("refuses a node-wot consumer without credentials, over HTTP and MQTT", async () => {
    const td = (await (await authed(`${gateway.url}/api/td`)).json()) as JsonObject;
    const stranger = new Servient();
    stranger.addClientFactory(new HttpClientFactory());
    stranger.addClientFactory(new MqttClientFactory());
    const strangerWot = (await stranger.start()) as unknown as typeof WoT;
    try {
      // node-wot itself stops short of sending a request without the credentials the TD asks for;
      // the same request sent anyway is refused by the gateway.
      const consumed = await strangerWot.consume(td as unknown as WoT.ThingDescription);
      await expect(consumed.invokeAction("discoverNodes")).rejects.toThrow();
      const href = String(
        (((td.actions as Record<string, JsonObject>).discoverNodes?.forms ?? []) as JsonObject[])[0]?.href,
      );
      expect((await fetch(new URL(href, String(td.base)))).status).toBe(401);
      // A twin's TD, its MQTT form read as a stranger would: the broker refuses the connection.
      const started = await api("POST", "/api/instances", {
        package: "iiot-device",
        node: "local",
        id: "stranger-test",
        configuration: { DEVICE_ID: "stranger-test" },
      });
      expect(started.status).toBe(201);
      const twin = await strangerWot.consume(started.body.td as unknown as WoT.ThingDescription);
      await expect(twin.readProperty("temperature")).rejects.toThrow();
      await expect(
        twin.observeProperty("temperature", () => undefined, undefined, {
          formIndex: formIndex(started.body.td as JsonObject, "temperature", "mqtt", "observeproperty"),
        }),
      ).rejects.toThrow();
      const mqtt = await import("mqtt");
      const anonymous = mqtt.default.connectAsync(gateway.brokerUrl, { reconnectPeriod: 0 });
      await expect(anonymous).rejects.toThrow(/Not authorized/);
    } finally {
      await stranger.shutdown();
      await api("DELETE", "/api/instances/stranger-test");
    }
  });
});

function formIndex(td: JsonObject, property: string, scheme: string, op: string): number {
  const forms = ((td.properties as Record<string, JsonObject>)[property]?.forms ?? []) as JsonObject[];
  const index = forms.findIndex((f) => String(f.href).startsWith(`${scheme}:`) && [f.op].flat().includes(op));
  if (index < 0) throw new Error(`${property} has no ${scheme} form for ${op}`);
  return index;
}
