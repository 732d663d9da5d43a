import { readFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { parse, parseAllDocuments } from "yaml";
import type { Gateway } from "../src/gateway.js";
import { projectRoot } from "../src/paths.js";
import { adminToken, call, startTestGateway } from "./manager-client.js";

/**
 * Declarative apply (POST /api/apply, GET /api/manifest) against a real gateway: order,
 * idempotency, diffs, dry run, prune, a manifest refused whole, and the round trip of GET.
 */

type Json = Record<string, unknown>;
interface Result {
  index: number | null;
  kind: string;
  name: string;
  action: string;
  diff?: { path: string; from: unknown; to: unknown }[];
}

const FLEET = readFileSync(join(projectRoot, "examples", "iiot-fleet.yaml"), "utf8");
const LABEL = "dtc.apply/manifest";

describe("declarative apply", () => {
  let gateway: Gateway;
  let admin: string;
  let reader: string;

  const post = async (body: string, query = "", type = "application/yaml", token = admin) => {
    const res = await fetch(`${gateway.url}/api/apply${query}`, {
      method: "POST",
      headers: { "Content-Type": type, Authorization: `Bearer ${token}` },
      body,
    });
    return { status: res.status, body: (await res.json()) as Json };
  };
  const results = (body: Json) => body.results as Result[];
  const actions = (body: Json) => results(body).map((r) => `${r.kind}/${r.name}:${r.action}`);
  const fields = (body: Json) => (body.validationErrors as { field: string }[]).map((e) => e.field);
  const manifest = async (query = "", accept = "application/yaml") => {
    const res = await fetch(`${gateway.url}/api/manifest${query}`, {
      headers: { Accept: accept, Authorization: `Bearer ${admin}` },
    });
    return { status: res.status, type: res.headers.get("content-type"), text: await res.text() };
  };
  const get = (path: string) => call(gateway.url, "GET", path, undefined, admin);
  /** What a client sees of the inventory and instances (to check nothing changed). */
  const world = async () => {
    const instances = (await get("/api/instances")).body as unknown as Json[];
    return {
      nodes: ((await get("/api/nodes")).body as unknown as Json[]).map((n) => [n.id, n.registeredAt]),
      packages: ((await get("/api/packages")).body as unknown as Json[]).map((p) => [p.id, p.registeredAt]),
      schemas: ((await get("/api/schemas")).body as unknown as Json[]).map((s) => s.id),
      instances: instances.map((i) => [i.id, i.updatedAt, i.desired]),
    };
  };
  const docs = (yaml: string) => parseAllDocuments(yaml).map((d) => d.toJS() as Json);
  const yamlOf = (documents: unknown[]) => documents.map((d) => JSON.stringify(d)).join("\n---\n");

  beforeAll(async () => {
    gateway = await startTestGateway({ DTC_AUTH: "on" });
    admin = adminToken(gateway);
    const made = await call(gateway.url, "POST", "/api/tokens", { name: "r", role: "reader" }, admin);
    reader = made.body.token as string;
  });
  afterAll(async () => {
    await gateway?.close();
  });

  it("refuses a reader (403) and no token (401), and lets a reader GET the manifest", async () => {
    expect((await post(FLEET, "", "application/yaml", reader)).status).toBe(403);
    const anonymous = await fetch(`${gateway.url}/api/apply`, {
      method: "POST",
      headers: { "Content-Type": "application/yaml" },
      body: FLEET,
    });
    expect(anonymous.status).toBe(401);
    const read = await fetch(`${gateway.url}/api/manifest`, {
      headers: { Authorization: `Bearer ${reader}` },
    });
    expect(read.status).toBe(200);
    expect((await post(FLEET, "", "text/plain")).status).toBe(415);
  });

  it("answers a dry run with the plan and changes nothing", async () => {
    const before = await world();
    const plan = await post(FLEET, "?dryRun=true");
    expect(plan.status).toBe(200);
    expect(plan.body.dryRun).toBe(true);
    expect(plan.body.changed).toBe(true);
    expect(actions(plan.body)).toEqual([
      "Node/edge-1:created",
      "Package/iiot-device-edge:created",
      "Instance/press-1:created",
      "Instance/press-2:created",
      "Instance/spare-press:created",
    ]);
    expect(await world()).toEqual(before);
  });

  it("creates everything in dependency order, then a second apply changes nothing and says so", async () => {
    // Instances first in the file: apply orders them after what they need.
    const documents = docs(FLEET).reverse();
    const first = await post(yamlOf(documents));
    expect(first.status, JSON.stringify(first.body)).toBe(200);
    expect(first.body.changed).toBe(true);
    expect(actions(first.body)).toEqual([
      "Node/edge-1:created",
      "Package/iiot-device-edge:created",
      "Instance/spare-press:created",
      "Instance/press-2:created",
      "Instance/press-1:created",
    ]);
    expect(results(first.body).map((r) => r.index)).toEqual([4, 3, 0, 1, 2]);
    const press = (await get("/api/instances/press-1")).body;
    expect(press).toMatchObject({ node: "edge-1", package: "iiot-device-edge", desired: "running" });
    expect((await get("/api/instances/spare-press")).body).toMatchObject({
      desired: "stopped",
      lifecycle: "Done",
    });
    expect((await get("/api/nodes/edge-1")).body.labels).toEqual({ [LABEL]: "iiot-fleet", site: "plant-a" });

    const before = await world();
    const second = await post(FLEET);
    expect(second.status).toBe(200);
    expect(second.body.changed).toBe(false);
    expect(results(second.body).every((r) => r.action === "unchanged")).toBe(true);
    expect(await world()).toEqual(before);
  });

  it("updates a changed field with its diff: a node's capacity, an instance's configuration and desired state", async () => {
    const changed = FLEET.replace(
      "capabilities: { cpu: 4, memory: 4096 }",
      "capabilities: { cpu: 8, memory: 4096 }",
    )
      .replace("configuration: { DEVICE_ID: press-2 }", "configuration: { DEVICE_ID: press-2b }")
      .replace("desired: stopped", "desired: running")
      .replace("site: plant-a", "site: plant-b");
    const plan = await post(changed, "?dryRun=true");
    const byName = (body: Json, name: string) => results(body).find((r) => r.name === name) as Result;
    expect(byName(plan.body, "edge-1")).toMatchObject({
      action: "updated",
      diff: [
        { path: "spec.capabilities.cpu", from: 4, to: 8 },
        { path: "metadata.labels.site", from: "plant-a", to: "plant-b" },
      ],
    });
    expect((await get("/api/nodes/edge-1")).body.capabilities).toMatchObject({ cpu: 4 });

    const applied = await post(changed);
    expect(applied.status, JSON.stringify(applied.body)).toBe(200);
    expect(byName(applied.body, "press-2")).toMatchObject({
      action: "updated",
      diff: [{ path: "spec.configuration.DEVICE_ID", from: "press-2", to: "press-2b" }],
    });
    expect(byName(applied.body, "spare-press")).toMatchObject({
      action: "updated",
      diff: [{ path: "spec.desired", from: "stopped", to: "running" }],
    });
    expect(byName(applied.body, "press-1").action).toBe("unchanged");
    expect((await get("/api/nodes/edge-1")).body.capabilities).toMatchObject({ cpu: 8 });
    expect((await get("/api/instances/press-2")).body.configuration).toEqual({ DEVICE_ID: "press-2b" });
    expect((await get("/api/instances/spare-press")).body.desired).toBe("running");
    expect((await post(changed)).body.changed).toBe(false);
    // Back as the file says.
    expect((await post(FLEET)).status).toBe(200);
  });

  it("round-trips GET /api/manifest as YAML and as JSON to all unchanged", async () => {
    const yaml = await manifest();
    expect(yaml.status).toBe(200);
    expect(yaml.type).toMatch(/^application\/yaml/);
    const names = docs(yaml.text).map((d) => `${d.kind}/${(d.metadata as Json).name}`);
    expect(names).toEqual([
      "Node/edge-1",
      "Package/iiot-device-edge",
      "Instance/press-1",
      "Instance/press-2",
      "Instance/spare-press",
    ]);
    const again = await post(yaml.text);
    expect(again.status, JSON.stringify(again.body)).toBe(200);
    expect(again.body.changed).toBe(false);
    expect(results(again.body)).toHaveLength(5);

    const json = await manifest("", "application/json");
    expect(json.type).toMatch(/^application\/json/);
    const back = await post(json.text, "", "application/json");
    expect(back.status).toBe(200);
    expect(back.body.changed).toBe(false);

    // Filtered by kind and label.
    const onlyNodes = parse((await manifest("?kind=Node")).text) as Json;
    expect(onlyNodes.kind).toBe("Node");
    const line1 = docs((await manifest("?selector=line=1")).text).map((d) => (d.metadata as Json).name);
    expect(line1).toEqual(["press-1", "press-2"]);
    expect((await manifest("?kind=Policy")).status).toBe(400);
  });

  it("registers a schema from a manifest and round-trips it", async () => {
    const model = JSON.parse(
      readFileSync(join(projectRoot, "thing-models", "iiot-device.tm.jsonld"), "utf8"),
    );
    delete model.id;
    const manifestDocs = [
      {
        apiVersion: "dtc/v1",
        kind: "Schema",
        metadata: { name: "my-device" },
        spec: { model: { ...model, title: "My device {{DEVICE_ID}}" } },
      },
      {
        apiVersion: "dtc/v1",
        kind: "Package",
        metadata: { name: "my-device-pkg" },
        spec: { schema: "my-device", platform: "in-process" },
      },
    ];
    const applied = await post(JSON.stringify(manifestDocs), "", "application/json");
    expect(applied.status, JSON.stringify(applied.body)).toBe(200);
    expect(actions(applied.body)).toEqual(["Schema/my-device:created", "Package/my-device-pkg:created"]);
    expect((await post(JSON.stringify({ items: manifestDocs }), "", "application/json")).body.changed).toBe(
      false,
    );
    const yaml = (await manifest("?kind=Schema,Package")).text;
    expect((await post(yaml)).body.changed).toBe(false);
  });

  it("prunes what the manifest no longer names, only objects with its label", async () => {
    // An object of another manifest and one without a label: prune leaves them.
    const other = `apiVersion: dtc/v1\nkind: Instance\nmetadata: { name: other-1, labels: { ${LABEL}: other } }\nspec: { package: iiot-device, node: local, configuration: { DEVICE_ID: o1 } }\n`;
    expect((await post(other)).status).toBe(200);
    const unlabelled = await call(
      gateway.url,
      "POST",
      "/api/instances",
      {
        id: "hand-made",
        package: "iiot-device",
        node: "local",
        configuration: { DEVICE_ID: "h1" },
      },
      admin,
    );
    expect(unlabelled.status).toBe(201);

    const smaller = FLEET.split("---\n")
      .filter((d) => !d.includes("name: press-2") && !d.includes("name: spare-press"))
      .join("---\n");
    const withoutPrune = await post(smaller);
    expect(withoutPrune.body.changed).toBe(false);

    const plan = await post(smaller, "?prune=true&dryRun=true");
    expect(actions(plan.body).filter((a) => a.endsWith(":pruned"))).toEqual([
      "Instance/press-2:pruned",
      "Instance/spare-press:pruned",
    ]);
    expect((await get("/api/instances/press-2")).status).toBe(200);

    const pruned = await post(smaller, "?prune=true");
    expect(pruned.status).toBe(200);
    expect(results(pruned.body).filter((r) => r.action === "pruned")).toEqual([
      { index: null, kind: "Instance", name: "press-2", action: "pruned" },
      { index: null, kind: "Instance", name: "spare-press", action: "pruned" },
    ]);
    expect((await get("/api/instances/press-2")).status).toBe(404);
    expect((await get("/api/instances/other-1")).status).toBe(200);
    expect((await get("/api/instances/hand-made")).status).toBe(200);

    // Prune needs the label on every document.
    const unnamed = await post(smaller.replace(`${LABEL}: iiot-fleet\n    site`, "site"), "?prune=true");
    expect(unnamed.status).toBe(400);
    expect(fields(unnamed.body)).toEqual([`documents[0].metadata.labels.${LABEL}`]);

    // Everything of the manifest gone: instances first, then the package, then the node.
    const last = `apiVersion: dtc/v1\nkind: Node\nmetadata: { name: spare-node, labels: { ${LABEL}: iiot-fleet } }\nspec: { platform: in-process, tier: edge, capabilities: { cpu: 1, memory: 512 } }\n`;
    const all = await post(last, "?prune=true");
    expect(all.status, JSON.stringify(all.body)).toBe(200);
    expect(actions(all.body)).toEqual([
      "Node/spare-node:created",
      "Instance/press-1:pruned",
      "Package/iiot-device-edge:pruned",
      "Node/edge-1:pruned",
    ]);
    expect((await get("/api/nodes/edge-1")).status).toBe(404);
  });

  it("refuses a bad manifest whole, naming every error by document index and field, and changes nothing", async () => {
    const before = await world();
    const bad = [
      // 0: fine, but must not be created.
      `apiVersion: dtc/v1\nkind: Node\nmetadata: { name: new-node }\nspec: { platform: in-process, tier: edge, capabilities: { cpu: 1, memory: 512 } }`,
      // 1: two errors in one document.
      `apiVersion: dtc/v1\nkind: Node\nmetadata: { name: bad-node }\nspec: { platform: moon, tier: edge, capabilities: { cpu: -1, memory: 512 } }`,
      // 2: a missing package and node.
      `apiVersion: dtc/v1\nkind: Instance\nmetadata: { name: lost }\nspec: { package: no-such-package, node: no-such-node }`,
      // 3: a Policy.
      `apiVersion: dtc/v1\nkind: Policy\nmetadata: { name: p }\nspec: {}`,
      // 4: not an object.
      `just a string`,
      // 5: wrong version, bad name.
      `apiVersion: dtc/v2\nkind: Node\nmetadata: { name: "Not An Id" }\nspec: {}`,
      // 6: a configuration the package does not take.
      `apiVersion: dtc/v1\nkind: Instance\nmetadata: { name: typo }\nspec: { package: iiot-device, node: local, configuration: { DEVICE_ID: x, COLOUR: red } }`,
    ].join("\n---\n");
    const refused = await post(bad);
    expect(refused.status).toBe(400);
    const f = fields(refused.body);
    for (const expected of [
      "documents[1].spec.platform",
      "documents[1].spec.capabilities.cpu",
      "documents[2].spec.package",
      "documents[2].spec.node",
      "documents[3].kind",
      "documents[4]",
      "documents[5].apiVersion",
      "documents[5].metadata.name",
      "documents[6].spec.configuration.COLOUR",
    ])
      expect(f, JSON.stringify(refused.body)).toContain(expected);
    expect(f.some((x) => x.startsWith("documents[0]"))).toBe(false);
    expect(JSON.stringify(refused.body)).toContain("kind Policy needs the orchestrator (not built yet)");

    const syntax = await post("apiVersion: dtc/v1\nkind: [Node\n---\nkind: : :\n");
    expect(syntax.status).toBe(400);
    expect(fields(syntax.body)).toContain("documents[0]");

    const tooMany = await post(
      JSON.stringify(Array.from({ length: 10_001 }, () => ({}))),
      "",
      "application/json",
    );
    expect(tooMany.status).toBe(400);
    expect(fields(tooMany.body)).toEqual(["documents"]);
    expect((await post("{not json", "", "application/json")).status).toBe(400);

    // A billion laughs stays small.
    const laughs = ["a: &a [x, x, x, x, x, x, x, x, x, x]"];
    for (let i = 0; i < 12; i++)
      laughs.push(
        `${"b".repeat(i + 1)}: &${"b".repeat(i + 1)} [${Array(10)
          .fill(i === 0 ? "*a" : `*${"b".repeat(i)}`)
          .join(", ")}]`,
      );
    const bomb = await post(laughs.join("\n"));
    expect(bomb.status).toBe(400);

    expect(await world()).toEqual(before);
    expect((await get("/api/nodes/new-node")).status).toBe(404);
  });
});
