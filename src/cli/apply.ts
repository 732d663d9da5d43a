import { readdirSync, readFileSync, statSync } from "node:fs";
import { join } from "node:path";
import { Option } from "commander";
import { parseAllDocuments } from "yaml";
import { errorMessage } from "../domain/errors.js";
import { ApiError } from "./client.js";
import { CliError, EXIT, usageError } from "./errors.js";
import { json, print, yaml } from "./output.js";
import type { Cli } from "./runtime.js";
import { parseDuration, type WaitOptions, waitForState, waitState } from "./wait.js";

/** dtc apply -f FILE|DIR|- : POST /api/apply with every document of the files, in order. */

interface ApplyResult {
  index: number | null;
  kind: string;
  name: string;
  action: "created" | "updated" | "unchanged" | "pruned";
  diff?: { path: string; from: unknown; to: unknown }[];
}
interface ApplyAnswer {
  dryRun: boolean;
  changed: boolean;
  results: ApplyResult[];
}

/** Where a document came from, to name it in errors. */
interface Source {
  file: string;
  /** 1-based document number in its file. */
  n: number;
}

const MANIFEST_FILE = /\.(ya?ml|json)$/i;

function readInput(file: string): string {
  try {
    return readFileSync(file === "-" ? 0 : file, "utf8");
  } catch (err) {
    throw usageError(`cannot read ${file === "-" ? "stdin" : file}: ${errorMessage(err)}`);
  }
}

/** The files -f names: a directory's manifests (.yaml, .yml, .json) in name order. */
function filesOf(paths: readonly string[]): string[] {
  const files: string[] = [];
  for (const path of paths) {
    if (path === "-") {
      files.push(path);
      continue;
    }
    let isDir: boolean;
    try {
      isDir = statSync(path).isDirectory();
    } catch (err) {
      throw usageError(`cannot read ${path}: ${errorMessage(err)}`);
    }
    if (!isDir) files.push(path);
    else
      files.push(
        ...readdirSync(path)
          .filter((f) => MANIFEST_FILE.test(f))
          .sort()
          .map((f) => join(path, f)),
      );
  }
  return files;
}

/** Every document of every file; a file that does not parse is refused here, naming it. */
export function readManifests(paths: readonly string[]): { documents: unknown[]; sources: Source[] } {
  const documents: unknown[] = [];
  const sources: Source[] = [];
  const problems: string[] = [];
  for (const file of filesOf(paths)) {
    const name = file === "-" ? "stdin" : file;
    // YAML is a superset of JSON: one parser for both; a JSON array or {items} is its documents.
    for (const [i, doc] of parseAllDocuments(readInput(file)).entries()) {
      if (doc.errors.length > 0) {
        for (const e of doc.errors) problems.push(`  ${name}#${i + 1}: ${e.message.split("\n")[0]}`);
        continue;
      }
      const value = doc.toJS() as unknown;
      if (value === null || value === undefined) continue;
      const items = Array.isArray(value)
        ? value
        : typeof value === "object" && "items" in value && Array.isArray(value.items) && !("kind" in value)
          ? (value.items as unknown[])
          : [value];
      for (const item of items) {
        documents.push(item);
        sources.push({ file: name, n: i + 1 });
      }
    }
  }
  if (problems.length > 0)
    throw new CliError(EXIT.failed, "Bad Request: the manifest does not parse", problems);
  return { documents, sources };
}

export function registerApply(cli: Cli): void {
  cli.program
    .command("apply")
    .description(
      "Make the gateway hold what the manifests say: create, update (and with --prune remove) objects",
    )
    .requiredOption(
      "-f, --filename <path...>",
      "a manifest file, a directory of them, or - for stdin (may repeat)",
    )
    .option("--dry-run", "say what would change, change nothing")
    .option("--prune", "remove objects of this manifest (label dtc.apply/manifest) it no longer names")
    .addOption(
      new Option("-o, --output <format>", "text (default), json or yaml: the gateway's answer").choices([
        "text",
        "json",
        "yaml",
      ]),
    )
    .option(
      "--wait [state]",
      "wait until the manifest's running instances are in this state (default Entangled)",
    )
    .option("--timeout <duration>", "how long --wait waits", "5m")
    .addHelpText(
      "after",
      `
Documents: apiVersion dtc/v1, kind Node | Schema | Package | Instance, metadata.name, metadata.labels, spec.
Nothing is changed unless every document is valid; each invalid one is named.

Examples:
  dtc apply -f plant.yaml
  dtc apply -f manifests/ --prune --dry-run
  dtc get instances -o yaml | dtc apply -f -
  dtc apply -f fleet.yaml --wait --timeout 2m`,
    )
    .action(
      async (
        opts: { filename: string[]; dryRun?: boolean; prune?: boolean; output?: string } & WaitOptions,
      ) => {
        const state = waitState(opts);
        const timeoutMs = parseDuration(opts.timeout ?? "5m");
        const { documents, sources } = readManifests(opts.filename);
        if (documents.length === 0) throw usageError("no documents in the manifest");
        const client = cli.client();
        let answer: ApplyAnswer;
        try {
          answer = await client.post<ApplyAnswer>(
            "/api/apply",
            { items: documents },
            { dryRun: opts.dryRun ? "true" : undefined, prune: opts.prune ? "true" : undefined },
          );
        } catch (err) {
          throw err instanceof ApiError ? withSources(err, sources) : err;
        }
        if (opts.output === "json") print(json(answer));
        else if (opts.output === "yaml") print(yaml(answer));
        else print(describeAnswer(answer));
        if (state && !opts.dryRun) {
          const running = answer.results
            .filter((r) => r.kind === "Instance" && r.action !== "pruned" && r.index !== null)
            .filter((r) => {
              const spec = (documents[r.index as number] as { spec?: { desired?: string } }).spec;
              return (spec?.desired ?? "running") === "running";
            })
            .map((r) => r.name);
          await waitForState(client, running, state, timeoutMs);
        }
      },
    );
}

/** `documents[3].spec.package` also says which file and document that is. */
function withSources(err: ApiError, sources: readonly Source[]): ApiError {
  const errors = err.problem.validationErrors;
  if (!errors) return err;
  return new ApiError(err.status, {
    ...err.problem,
    validationErrors: errors.map((e) => {
      const index = /^documents\[(\d+)\]/.exec(e.field)?.[1];
      const source = index === undefined ? undefined : sources[Number(index)];
      return source ? { ...e, field: `${e.field} (${source.file}#${source.n})` } : e;
    }),
  });
}

const show = (v: unknown) => (v === undefined ? "(none)" : JSON.stringify(v));

function describeAnswer(answer: ApplyAnswer): string {
  const lines = answer.results.map((r) => {
    const line = `${r.kind.toLowerCase()}/${r.name} ${r.action}${answer.dryRun ? " (dry run)" : ""}`;
    const diff = (r.diff ?? []).map((d) => `    ${d.path}: ${show(d.from)} -> ${show(d.to)}`);
    return [line, ...diff].join("\n");
  });
  const counts = new Map<string, number>();
  for (const r of answer.results) counts.set(r.action, (counts.get(r.action) ?? 0) + 1);
  const summary = [...counts].map(([action, n]) => `${n} ${action}`).join(", ");
  lines.push(
    `${answer.dryRun ? "dry run: " : ""}${answer.changed ? (answer.dryRun ? "would change" : "changed") : "no changes"}${summary ? ` (${summary})` : ""}`,
  );
  return lines.join("\n");
}
