import { Option } from "commander";
import type { ApiClient } from "./client.js";
import { usageError } from "./errors.js";
import { json, outputFormat, print, table, yaml } from "./output.js";
import type { Cli } from "./runtime.js";

/**
 * dtc find: the directory's named queries (directory/queries/*.rq) from flags; dtc query: SPARQL.
 * Flags that map to different queries are each asked, and the twins found by all of them shown.
 */

interface Bindings {
  head: { vars: string[] };
  results: { bindings: Record<string, { value: string }>[] };
}
type Row = Record<string, string>;

const rowsOf = (answer: Bindings): Row[] =>
  answer.results.bindings.map((b) => Object.fromEntries(Object.entries(b).map(([k, v]) => [k, v.value])));

async function named(
  client: ApiClient,
  name: string,
  params: Record<string, string | undefined>,
): Promise<Row[]> {
  return rowsOf(
    await client.request<Bindings>("GET", `/search/named/${encodeURIComponent(name)}`, {
      query: params,
      accept: "application/sparql-results+json",
    }),
  );
}

/** A schema's IRI from its id (an absolute IRI is taken as is). */
async function schemaIri(client: ApiClient, schema: string): Promise<string> {
  if (/^[a-z][a-z0-9+.-]*:/i.test(schema)) return schema;
  const schemas = await client.get<{ id: string; iri: string }[]>("/api/schemas");
  const found = schemas.find((s) => s.id === schema);
  if (!found) throw usageError(`no schema "${schema}" (dtc get schemas lists them)`);
  return found.iri;
}

const TWIN_PREFIX = "urn:dtc:twin:";

function show(rows: Row[], format: string): string {
  if (format === "json") return json(rows);
  if (format === "yaml") return yaml(rows);
  if (rows.length === 0) return "No twins found.";
  const vars = [...new Set(rows.flatMap((r) => Object.keys(r)))];
  return table(rows, [
    ...(vars.includes("thing")
      ? [{ header: "INSTANCE", value: (r: Row) => r.thing?.replace(TWIN_PREFIX, "") }]
      : []),
    ...vars.map((v) => ({
      header: v.toUpperCase(),
      value: (r: Row) => (v === "state" ? r[v]?.replace(/^.*#/, "") : r[v]),
    })),
  ]);
}

export function registerFind(cli: Cli): void {
  cli.program
    .command("find")
    .description("Find twins with the directory's named queries")
    .option("--schema <id|iri>", "twins of this DT Schema (twins-by-schema)")
    .option("--min-odte <n>", "twins with ODTE at least n (twins-by-entanglement)")
    .option("--state <state>", "twins in this lifecycle state (twins-by-lifecycle)")
    .option("--node <id|iri>", "twins on this node (twins-by-node)")
    .option("--platform <name>", "twins on this platform (twins-by-node)")
    .option("--type <iri>", "twins with a capability of this semantic type (twins-by-capability)")
    .option("--query <name>", "another named query, with --param")
    .option("--param <name=value...>", "a parameter of --query (may repeat)")
    .addOption(
      new Option("-o, --output <format>", "table, json or yaml")
        .choices(["table", "json", "yaml"])
        .default("table"),
    )
    .addHelpText(
      "after",
      `
Examples:
  dtc find --schema iiot-device --min-odte 0.9 --state Entangled
  dtc find --state Disentangled
  dtc find --node edge-1
  dtc find --query twins-by-capability --param type=https://saref.etsi.org/core/Temperature`,
    )
    .action(
      async (opts: {
        schema?: string;
        minOdte?: string;
        state?: string;
        node?: string;
        platform?: string;
        type?: string;
        query?: string;
        param?: string[];
        output: string;
      }) => {
        const format = outputFormat(opts.output);
        const client = cli.client();
        if (opts.query !== undefined) {
          const params: Record<string, string> = {};
          for (const pair of opts.param ?? []) {
            const eq = pair.indexOf("=");
            if (eq < 1) throw usageError(`--param takes name=value, not ${JSON.stringify(pair)}`);
            params[pair.slice(0, eq)] = pair.slice(eq + 1);
          }
          return print(show(await named(client, opts.query, params), format));
        }
        if (opts.param) throw usageError("--param goes with --query");
        const schema = opts.schema === undefined ? undefined : await schemaIri(client, opts.schema);
        const asked: Row[][] = [];
        if (opts.minOdte !== undefined) {
          asked.push(
            await named(client, "twins-by-entanglement", {
              minOdte: opts.minOdte,
              schema,
              state: opts.state,
            }),
          );
        } else {
          if (opts.state !== undefined)
            asked.push(await named(client, "twins-by-lifecycle", { state: opts.state }));
          if (schema !== undefined) asked.push(await named(client, "twins-by-schema", { schema }));
        }
        if (opts.node !== undefined || opts.platform !== undefined) {
          const node =
            opts.node === undefined || /^[a-z][a-z0-9+.-]*:/i.test(opts.node)
              ? opts.node
              : `${client.server}/api/nodes/${encodeURIComponent(opts.node)}`;
          asked.push(await named(client, "twins-by-node", { node, platform: opts.platform }));
        }
        if (opts.type !== undefined)
          asked.push(await named(client, "twins-by-capability", { type: opts.type }));
        if (asked.length === 0) {
          throw usageError(
            "dtc find needs a filter: --schema, --min-odte, --state, --node, --platform, --type or --query",
          );
        }
        // Twins every query found, with what each said of them.
        const [first = [], ...rest] = asked;
        const found = first
          .filter((r) => rest.every((rows) => rows.some((o) => o.thing === r.thing)))
          .map(
            (r) => Object.assign({}, r, ...rest.map((rows) => rows.find((o) => o.thing === r.thing))) as Row,
          );
        print(show(found, format));
      },
    );

  cli.program
    .command("query")
    .description("Run a SPARQL query over the directory (TDs, status, inventory)")
    .argument("<sparql>", "the query (SELECT or ASK), or - to read it from stdin")
    .addOption(
      new Option("-o, --output <format>", "table, json or yaml")
        .choices(["table", "json", "yaml"])
        .default("table"),
    )
    .addHelpText(
      "after",
      `
Example:
  dtc query 'SELECT ?t ?title WHERE { GRAPH ?t { ?t <https://www.w3.org/2019/wot/td#title> ?title } }'`,
    )
    .action(async (sparql: string, opts: { output: string }) => {
      const format = outputFormat(opts.output);
      const text = sparql === "-" ? (await import("node:fs")).readFileSync(0, "utf8") : sparql;
      const answer = await cli
        .client()
        .request<Bindings | { boolean: boolean } | string>("POST", "/search/sparql", {
          body: text,
          contentType: "application/sparql-query",
          accept: "application/sparql-results+json",
        });
      if (typeof answer === "string") return print(answer);
      if ("boolean" in answer) return print(format === "table" ? String(answer.boolean) : json(answer));
      if (format === "json") return print(json(answer));
      const rows = rowsOf(answer);
      if (format === "yaml") return print(yaml(rows));
      const vars = answer.head.vars;
      print(
        rows.length === 0
          ? "No results."
          : table(
              rows,
              vars.map((v) => ({ header: v.toUpperCase(), value: (r: Row) => r[v] })),
            ),
      );
    });
}
