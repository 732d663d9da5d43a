import { Option } from "commander";
import type { ApiClient } from "./client.js";
import { enc } from "./client.js";
import { usageError } from "./errors.js";
import { age, type Column, json, outputFormat, print, table, yaml } from "./output.js";
import type { Cli } from "./runtime.js";
import { type Instance, parseDuration } from "./wait.js";

/**
 * dtc get RESOURCE [ID]: a table of the API's objects, or (-o json|yaml) the objects as manifest
 * documents of GET /api/manifest, which dtc apply takes back unchanged. Snapshots are not manifest
 * objects: -o json|yaml shows them as the API answers.
 */

type Row = Record<string, unknown>;

interface Resource {
  path: string;
  /** The manifest kind, for those GET /api/manifest answers. */
  kind?: string;
  columns: Column<Row>[];
}

const get =
  (...path: string[]) =>
  (row: Row): unknown =>
    path.reduce<unknown>((v, k) => (v && typeof v === "object" ? (v as Row)[k] : undefined), row);

export const RESOURCES: Record<string, Resource> = {
  nodes: {
    path: "/api/nodes",
    kind: "Node",
    columns: [
      { header: "ID", value: get("id") },
      { header: "PLATFORM", value: get("platform") },
      { header: "TIER", value: get("tier") },
      { header: "READY", value: (r) => (r.ready ? "yes" : `no${r.reason ? `: ${r.reason}` : ""}`) },
      { header: "INSTANCES", value: get("instances") },
      { header: "FREE CPU", value: get("free", "cpu") },
      { header: "FREE MEMORY", value: get("free", "memory") },
      { header: "LATENCY MS", value: get("latencyMs") },
    ],
  },
  schemas: {
    path: "/api/schemas",
    kind: "Schema",
    columns: [
      { header: "ID", value: get("id") },
      { header: "TITLE", value: get("title") },
      { header: "BUILT-IN", value: (r) => (r.builtIn ? "yes" : "no") },
      { header: "IRI", value: get("iri") },
    ],
  },
  packages: {
    path: "/api/packages",
    kind: "Package",
    columns: [
      { header: "ID", value: get("id") },
      { header: "SCHEMA", value: get("schema") },
      { header: "PLATFORM", value: get("platform") },
      { header: "BUILT-IN", value: (r) => (r.builtIn ? "yes" : "no") },
    ],
  },
  instances: {
    path: "/api/instances",
    kind: "Instance",
    columns: instanceColumns(),
  },
  snapshots: {
    path: "/api/snapshots",
    columns: [
      { header: "ID", value: get("id") },
      { header: "INSTANCE", value: get("instance") },
      { header: "NODE", value: get("node") },
      { header: "LIFECYCLE", value: get("lifecycle") },
      { header: "AGE", value: (r) => age(r.takenAt as string) },
    ],
  },
};

export function instanceColumns(): Column<Row>[] {
  return [
    { header: "ID", value: get("id") },
    { header: "PACKAGE", value: get("package") },
    { header: "NODE", value: get("node") },
    { header: "DESIRED", value: get("desired") },
    { header: "LIFECYCLE", value: get("lifecycle") },
    { header: "ODTE", value: (r) => (get("entanglement", "odte")(r) as number | undefined)?.toFixed(3) },
    { header: "AGE", value: (r) => age(r.createdAt as string) },
  ];
}

/** Singular and short names too: `dtc get instance`, `dtc get inst`. */
export function resourceOf(name: string): [string, Resource] {
  const found = Object.entries(RESOURCES).find(([plural]) => plural === name || plural === `${name}s`);
  if (!found) throw usageError(`unknown resource "${name}": one of ${Object.keys(RESOURCES).join(", ")}`);
  return found;
}

interface ManifestDocument {
  kind: string;
  metadata: { name: string };
}

async function rendered(
  client: ApiClient,
  name: string,
  id: string | undefined,
  format: string,
): Promise<string> {
  const [, resource] = resourceOf(name);
  if (format !== "table" && resource.kind) {
    const { items } = await client.request<{ items: ManifestDocument[] }>("GET", "/api/manifest", {
      query: { kind: resource.kind },
      accept: "application/json",
    });
    const chosen = id === undefined ? items : items.filter((d) => d.metadata?.name === id);
    if (id !== undefined && chosen.length === 0) await client.get(`${resource.path}/${enc(id)}`); // its 404
    return format === "json" ? json({ items: chosen }) : chosen.map((d) => yaml(d)).join("\n---\n");
  }
  if (id !== undefined) {
    // A schema's own answer is its Thing Model; its row is the summary in the list.
    const rows =
      name.startsWith("schema") && format === "table"
        ? (await client.get<Row[]>(resource.path)).filter((r) => r.id === id)
        : [await client.get<Row>(`${resource.path}/${enc(id)}`)];
    if (rows.length === 0) await client.get(`${resource.path}/${enc(id)}`);
    if (format === "json") return json(rows[0]);
    if (format === "yaml") return yaml(rows[0]);
    return table(rows, resource.columns);
  }
  const rows = await client.get<Row[]>(resource.path);
  if (format === "json") return json(rows);
  if (format === "yaml") return yaml(rows);
  return rows.length === 0 ? `No ${name}.` : table(rows, resource.columns);
}

export function registerGet(cli: Cli): void {
  cli.program
    .command("get")
    .description("List nodes, schemas, packages, instances or snapshots (or one of them)")
    .argument("<resource>", `one of ${Object.keys(RESOURCES).join(", ")}`)
    .argument("[id]", "just this one")
    .addOption(
      new Option("-o, --output <format>", "table, json or yaml")
        .choices(["table", "json", "yaml"])
        .default("table"),
    )
    .option("-w, --watch", "print it again whenever it changes (Ctrl-C ends)")
    .option("--interval <duration>", "how often --watch looks", "2s")
    .addHelpText(
      "after",
      `
-o json and -o yaml print manifest documents (what dtc apply takes) for nodes, schemas, packages
and instances.

Examples:
  dtc get instances
  dtc get nodes -o json
  dtc get instances -o yaml > fleet.yaml
  dtc get instances -w`,
    )
    .action(
      async (
        name: string,
        id: string | undefined,
        opts: { output: string; watch?: boolean; interval: string },
      ) => {
        resourceOf(name);
        const format = outputFormat(opts.output);
        const intervalMs = parseDuration(opts.interval);
        const client = cli.client();
        let last = await rendered(client, name, id, format);
        print(last);
        if (!opts.watch) return;
        for (;;) {
          await new Promise((r) => setTimeout(r, intervalMs));
          const now = await rendered(client, name, id, format);
          if (now === last) continue;
          last = now;
          print(format === "yaml" ? `---\n${now}` : `\n${now}`);
        }
      },
    );

  cli.program
    .command("describe")
    .description("Show an instance in full: its TD, lifecycle timeline, entanglement and recent history")
    .argument("<kind>", "instance")
    .argument("<id>", "the instance's id")
    .option("--events <n>", "how many recent history entries to show", "10")
    .addHelpText("after", "\nExample:\n  dtc describe instance press-1")
    .action(async (kind: string, id: string, opts: { events: string }) => {
      if (!/^instances?$/.test(kind)) throw usageError(`dtc describe takes "instance", not "${kind}"`);
      const n = Number(opts.events);
      if (!Number.isInteger(n) || n < 0) throw usageError("--events must be a whole number");
      print(await describeInstance(cli.client(), id, n));
    });
}

export interface TwinHistory {
  states: { committedAt?: string; values?: Record<string, unknown> }[];
  events: { type: string; at: string | number; data?: Record<string, unknown> }[];
}

/** The twin's own history (its `history` property), or undefined when no twin answers for it. */
export async function twinHistory(client: ApiClient, id: string): Promise<TwinHistory | undefined> {
  const res = await client.fetch("GET", `/twins/${enc(id)}/properties/history`);
  if (!res.ok) {
    await res.body?.cancel();
    return undefined;
  }
  return (await res.json()) as TwinHistory;
}

export const when = (at: string | number | undefined): string =>
  at === undefined ? "-" : new Date(typeof at === "number" ? at : Date.parse(at)).toISOString();

export function lifecycleLines(history: TwinHistory): string[] {
  return history.events
    .filter((e) => e.type === "lifecycleChanged")
    .map((e) => {
      const d = e.data ?? {};
      return `${when(e.at)}  ${String(d.from ?? "?")} -> ${String(d.to ?? "?")}${d.event ? `  (${String(d.event)})` : ""}`;
    });
}

async function describeInstance(client: ApiClient, id: string, recent: number): Promise<string> {
  const instance = await client.get<Instance>(`/api/instances/${enc(id)}`);
  const td = (instance.td ?? {}) as {
    id?: string;
    title?: string;
    properties?: Row;
    actions?: Row;
    events?: Row;
  };
  const names = (o: Row | undefined) => (o ? Object.keys(o).join(", ") || "-" : "-");
  const lines = [
    `Instance:     ${instance.id}`,
    `Package:      ${instance.package}`,
    `Schema:       ${instance.schema}`,
    `Node:         ${instance.node} (${instance.platform})`,
    `Desired:      ${instance.desired}`,
    `Lifecycle:    ${instance.lifecycle}`,
    ...(instance.failed ? [`Failed:       ${instance.failed}`] : []),
    ...(instance.origin?.clonedFrom ? [`Cloned from:  ${instance.origin.clonedFrom}`] : []),
    ...(instance.origin?.restoredFrom ? [`Restored from: ${instance.origin.restoredFrom}`] : []),
    `Created:      ${instance.createdAt}`,
    `Configuration: ${JSON.stringify(instance.configuration)}`,
    "",
    "Thing Description:",
    `  id:         ${td.id ?? "-"}`,
    `  title:      ${td.title ?? "-"}`,
    `  properties: ${names(td.properties)}`,
    `  actions:    ${names(td.actions)}`,
    `  events:     ${names(td.events)}`,
    "",
    "Entanglement:",
  ];
  const e = instance.entanglement;
  if (e) {
    lines.push(
      `  ODTE ${e.odte.toFixed(3)} (threshold ${e.threshold}, ${e.entangled ? "entangled" : "not entangled"})`,
      `  timeliness ${e.timeliness.toFixed(3)}  reliability ${e.reliability.toFixed(3)}  availability ${e.availability.toFixed(3)}`,
      `  ${e.updates} updates in ${e.windowSeconds}s, evaluated ${e.evaluatedAt}`,
    );
  } else lines.push("  (not evaluated yet)");
  const history = await twinHistory(client, id);
  lines.push("", "Lifecycle timeline:");
  if (!history) lines.push("  (no twin runs for it now)");
  else {
    const timeline = lifecycleLines(history);
    lines.push(...(timeline.length ? timeline.map((l) => `  ${l}`) : ["  (no changes recorded)"]));
    lines.push("", "Recent history:");
    const states = history.states.slice(-recent);
    if (states.length === 0) lines.push("  (no states committed)");
    for (const s of states) lines.push(`  ${when(s.committedAt)}  ${JSON.stringify(s.values ?? {})}`);
  }
  return lines.join("\n");
}
