import { isDeepStrictEqual } from "node:util";
import { parseAllDocuments, stringify } from "yaml";
import { z } from "zod";
import { type FieldIssue, isDtcError } from "../domain/errors.js";
import { isObject } from "../wot/thing-model.js";
import { asManagerError, ManagerError } from "./errors.js";
import { resolveConfiguration } from "./instance-spec.js";
import type { DtcManager } from "./manager.js";
import type { StoredLabels } from "./manager-store.js";
import {
  BUILTIN_TWIN_MODULE,
  DESIRED_STATES,
  type DtPackage,
  idOf,
  nodeInput,
  type PackageParameter,
  packageInput,
  startInput,
  thingModel,
} from "./model.js";

/**
 * Declarative apply ([dt-continuum]'s declarative description, with its idempotency and drift
 * repair): a manifest of documents (Node, Schema, Package, Instance) is checked whole, compared
 * with what the manager has, and carried out in dependency order through the inventory's and the
 * manager's own operations. Applying it again changes nothing; `prune` removes what carries the
 * manifest's label and the manifest no longer names. GET /api/manifest gives the current objects
 * in the same format, so that its output applies back unchanged.
 */

export const MANIFEST_API_VERSION = "dtc/v1";
export const MANIFEST_KINDS = ["Node", "Schema", "Package", "Instance", "Policy"] as const;
export type ManifestKind = (typeof MANIFEST_KINDS)[number];
type ObjectKind = Exclude<ManifestKind, "Policy">;
/** The label naming the manifest an object came from: what prune goes by. */
export const MANIFEST_LABEL = "dtc.apply/manifest";
export const MAX_DOCUMENTS = 10_000;
/** YAML aliases one manifest may expand (a "billion laughs" stays small). */
export const MAX_YAML_ALIASES = 100;
export const YAML_MEDIA_TYPE = "application/yaml";
export const APPLY_MEDIA_TYPES = [YAML_MEDIA_TYPE, "application/x-yaml", "text/yaml", "application/json"];
/** How many instances apply starts (or changes) at once. */
const INSTANCE_CONCURRENCY = 16;
/** Most diff entries told per object. */
const MAX_DIFF = 100;

/** Apply order; prune goes the other way. */
const ORDER: readonly ObjectKind[] = ["Schema", "Node", "Package", "Instance"];

const described = <T extends z.ZodType>(schema: T, description: string): T => schema.meta({ description });

const labels = z
  .record(z.string().min(1).max(253), z.string().max(253))
  .meta({ description: "Labels (name to value); `dtc.apply/manifest` names the manifest (prune)" });

export const manifestDocument = z
  .strictObject({
    apiVersion: described(z.literal(MANIFEST_API_VERSION), "The manifest format: dtc/v1"),
    kind: z
      .enum(MANIFEST_KINDS, { error: `must be one of ${MANIFEST_KINDS.join(", ")}` })
      .meta({ description: "What it describes" }),
    metadata: z
      .strictObject({ name: idOf("object (of its kind)"), labels: labels.default({}) })
      .meta({ description: "Its name and labels" }),
    spec: z.record(z.string(), z.unknown(), { error: "must be an object" }).meta({
      description:
        "Node: a node's registration without id; Schema: { model: Thing Model }; Package: a package's registration without id; Instance: a start request without id, and desired (running, stopped)",
    }),
  })
  .meta({ description: "A manifest document" });
export type ManifestDocument = z.output<typeof manifestDocument>;

const documents = z.array(manifestDocument).max(MAX_DOCUMENTS);

/** What POST /api/apply takes (as JSON, or the same documents as a YAML stream). Describes; checked per document. */
export const manifestInput = z
  .union([manifestDocument, documents, z.strictObject({ items: documents })])
  .meta({ description: "A manifest: one document, an array of them, or { items }; or a YAML stream" });

export const manifestOutput = z
  .looseObject({ items: described(z.array(manifestDocument), "The objects, in apply order") })
  .meta({ description: "The current objects as a manifest (YAML: one document per item)" });

export const APPLY_ACTIONS = ["created", "updated", "unchanged", "pruned"] as const;
export type ApplyAction = (typeof APPLY_ACTIONS)[number];

export interface DiffEntry {
  path: string;
  from: unknown;
  to: unknown;
}

export interface ApplyResult {
  index: number | null;
  kind: ObjectKind;
  name: string;
  action: ApplyAction;
  diff?: DiffEntry[];
}

export interface ApplyAnswer {
  dryRun: boolean;
  changed: boolean;
  results: ApplyResult[];
}

export const applyOutput = z
  .looseObject({
    dryRun: described(z.boolean(), "Whether this was a plan only (nothing changed)"),
    changed: described(z.boolean(), "Whether anything was (or would be) changed"),
    results: described(
      z.array(
        z
          .looseObject({
            index: described(z.number().int().nullable(), "The document's index (null: pruned)"),
            kind: described(z.enum(MANIFEST_KINDS), "Its kind"),
            name: described(z.string(), "Its name"),
            action: described(z.enum(APPLY_ACTIONS), "What apply did (or would do) to it"),
            diff: described(
              z.array(
                z
                  .looseObject({
                    path: described(z.string(), "Dotted path of what changes"),
                    from: z.unknown().meta({ description: "Its value now (null: none)" }),
                    to: z.unknown().meta({ description: "Its value in the manifest (null: none)" }),
                  })
                  .meta({ description: "One change" }),
              ),
              "What changes (updated only)",
            ).optional(),
          })
          .meta({ description: "One object" }),
      ),
      "Per object, in the order applied: schemas, nodes, packages, instances, then what was pruned",
    ),
  })
  .meta({ description: "What the apply did" });

// ---- parsing

function manifestInvalid(issues: FieldIssue[]): ManagerError {
  const shown = issues.slice(0, 5).map((i) => `${i.field}: ${i.description}`);
  const more = issues.length > 5 ? `; and ${issues.length - 5} more (see validationErrors)` : "";
  return new ManagerError("invalid", `manifest: ${shown.join("; ")}${more}`, issues);
}

/** A value that holds documents: an array, or { items } (a document has a kind). */
function flatten(value: unknown): unknown[] {
  if (Array.isArray(value)) return value;
  if (isObject(value) && Array.isArray(value.items) && !("kind" in value)) return value.items;
  return [value];
}

const isYaml = (mediaType: string) => mediaType !== "application/json";

/**
 * The documents of a manifest in `mediaType` (YAML stream, or JSON): refused (invalid) naming each
 * document that does not parse, beyond MAX_DOCUMENTS or `maxBytes`, or with too many aliases.
 */
export function parseManifest(text: string, contentType: string, maxBytes: number): unknown[] {
  const mediaType = contentType.split(";", 1)[0]?.trim().toLowerCase() ?? "";
  if (Buffer.byteLength(text) > maxBytes)
    throw manifestInvalid([{ field: "(body)", description: `is larger than ${maxBytes} bytes` }]);
  let values: unknown[];
  if (!isYaml(mediaType)) {
    try {
      values = flatten(JSON.parse(text));
    } catch (err) {
      throw manifestInvalid([
        { field: "(body)", description: `is not JSON: ${(err as SyntaxError).message}` },
      ]);
    }
  } else {
    const stream = parseAllDocuments(text, { uniqueKeys: true });
    const docs = Array.isArray(stream) ? stream : [];
    if (docs.length > MAX_DOCUMENTS) {
      throw manifestInvalid([
        { field: "documents", description: `must be at most ${MAX_DOCUMENTS} (got ${docs.length})` },
      ]);
    }
    const issues: FieldIssue[] = [];
    values = [];
    for (const [i, doc] of docs.entries()) {
      const error = doc.errors[0];
      if (error !== undefined) {
        issues.push({
          field: `documents[${i}]`,
          description: `is not YAML: ${error.message.split("\n")[0]}`,
        });
        continue;
      }
      // An empty document (a trailing ---) is none.
      if (doc.contents === null) continue;
      try {
        values.push(...flatten(doc.toJS({ maxAliasCount: MAX_YAML_ALIASES })));
      } catch (err) {
        issues.push({ field: `documents[${i}]`, description: `cannot be read: ${(err as Error).message}` });
      }
    }
    if (issues.length > 0) throw manifestInvalid(issues);
  }
  if (values.length > MAX_DOCUMENTS) {
    throw manifestInvalid([
      { field: "documents", description: `must be at most ${MAX_DOCUMENTS} (got ${values.length})` },
    ]);
  }
  return values;
}

/** Documents as YAML: a stream of one document per item, lines never folded. */
export function manifestYaml(items: readonly ManifestDocument[]): string {
  return items.map((d) => stringify(d, { lineWidth: 0, aliasDuplicateObjects: false })).join("---\n");
}

/** Whether an Accept header prefers JSON to YAML (YAML is the default). */
export function acceptsJsonFirst(accept: string): boolean {
  const types = accept
    .split(",")
    .map((part) => part.split(";", 1)[0]?.trim().toLowerCase() ?? "")
    .filter((t) => t !== "");
  const json = types.indexOf("application/json");
  const yaml = types.findIndex((t) => APPLY_MEDIA_TYPES.slice(0, 3).includes(t));
  return json >= 0 && (yaml < 0 || json < yaml);
}

// ---- diffs

const absent = (v: unknown) => (v === undefined ? null : v);

/** What differs between `from` and `to`, member by member (arrays whole), at most MAX_DIFF entries. */
export function diffOf(from: unknown, to: unknown, path: string, out: DiffEntry[] = []): DiffEntry[] {
  if (out.length >= MAX_DIFF) return out;
  if (isObject(from) && isObject(to)) {
    const keys = [...new Set([...Object.keys(from), ...Object.keys(to)])].sort();
    for (const key of keys) diffOf(from[key], to[key], `${path}.${key}`, out);
    return out;
  }
  if (!isDeepStrictEqual(absent(from), absent(to))) out.push({ path, from: absent(from), to: absent(to) });
  return out;
}

/** The object as JSON gives it back (no undefined members), to compare stored and desired alike. */
const plain = <T>(value: T): T => JSON.parse(JSON.stringify(value)) as T;

// ---- the canonical specs (what GET gives and apply compares)

function nodeSpec(node: z.output<typeof nodeInput>): Record<string, unknown> {
  return plain({
    platform: node.platform,
    tier: node.tier,
    capabilities: node.capabilities,
    latencyMs: node.latencyMs,
    endpoint: node.endpoint,
  });
}

function packageSpec(pkg: Omit<DtPackage, "registeredAt" | "parameters"> & { parameters?: unknown }) {
  return plain({
    schema: pkg.schema,
    platform: pkg.platform,
    artefact: pkg.artefact,
    parameters: pkg.parameters,
    requirements: pkg.requirements,
    augmentations: pkg.augmentations,
    shadowing: pkg.shadowing,
    historyLimit: pkg.historyLimit,
  }) as Record<string, unknown>;
}

interface InstanceFields {
  package: string;
  node: string;
  configuration: Record<string, unknown>;
  fidelity?: unknown;
  brokerUrl?: string | undefined;
  desired: string;
}

const instanceSpecOf = (i: InstanceFields): Record<string, unknown> =>
  plain({
    package: i.package,
    node: i.node,
    configuration: i.configuration,
    fidelity: i.fidelity,
    brokerUrl: i.brokerUrl,
    desired: i.desired,
  });

const doc = (kind: ObjectKind, name: string, labels: Record<string, string>, spec: unknown) =>
  ({
    apiVersion: MANIFEST_API_VERSION,
    kind,
    metadata: { name, labels },
    spec,
  }) as ManifestDocument;

// ---- the plan

interface Step {
  index: number | null;
  kind: ObjectKind;
  name: string;
  action: ApplyAction;
  diff?: DiffEntry[];
  labels: Record<string, string>;
  /** What to do, through the manager's and the inventory's operations. */
  run: () => Promise<void>;
}

export interface ManifestFilter {
  kinds?: ObjectKind[];
  /** `key=value` or `key` (has the label), all of them. */
  selector?: string[];
}

export const OBJECT_KINDS = ["Node", "Schema", "Package", "Instance"] as const;

/** The kinds of a `kind` query: "Node,Package" (refused naming the unknown ones). */
export function kindsOf(query: string | undefined): ObjectKind[] | undefined {
  if (query === undefined) return undefined;
  const kinds = query.split(",").map((k) => k.trim());
  const unknown = kinds.filter((k) => !(OBJECT_KINDS as readonly string[]).includes(k));
  if (unknown.length > 0) {
    const description = `must be a comma-separated list of ${OBJECT_KINDS.join(", ")} (not ${unknown.join(", ")})`;
    throw new ManagerError("invalid", `kind ${description}`, [{ field: "kind", description }]);
  }
  return kinds as ObjectKind[];
}

function matches(labels: Record<string, string>, selector: string[] = []): boolean {
  return selector.every((s) => {
    const at = s.indexOf("=");
    return at < 0 ? s in labels : labels[s.slice(0, at)] === s.slice(at + 1);
  });
}

/** Runs `tasks` with at most `limit` at once; the first failure is thrown once all have settled. */
async function pool(tasks: (() => Promise<void>)[], limit: number): Promise<void> {
  let next = 0;
  let failure: { err: unknown } | undefined;
  const worker = async () => {
    while (next < tasks.length && failure === undefined) {
      const task = tasks[next++] as () => Promise<void>;
      try {
        await task();
      } catch (err) {
        failure ??= { err };
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, tasks.length) }, worker));
  if (failure) throw failure.err;
}

export class Applier {
  readonly #manager: DtcManager;
  readonly #publicBase: () => string;
  /** One apply at a time: each plans against what the one before it left. */
  #last: Promise<unknown> = Promise.resolve();

  constructor(manager: DtcManager, publicBase: () => string) {
    this.#manager = manager;
    this.#publicBase = publicBase;
  }

  /** The current objects (not the built-in ones) as manifest documents, in apply order. */
  manifest(filter: ManifestFilter = {}): ManifestDocument[] {
    const inventory = this.#manager.inventory;
    const wanted = (kind: ObjectKind) => filter.kinds === undefined || filter.kinds.includes(kind);
    const out: ManifestDocument[] = [];
    const add = (kind: ObjectKind, name: string, labels: Record<string, string>, spec: unknown) => {
      if (wanted(kind) && matches(labels, filter.selector)) out.push(doc(kind, name, labels, spec));
    };
    for (const s of inventory.schemas()) {
      if (!s.builtIn)
        add("Schema", s.id, inventory.labelsOf("Schema", s.id), { model: inventory.schema(s.id).model });
    }
    for (const n of inventory.nodes()) if (!n.builtIn) add("Node", n.id, n.labels, nodeSpec(n));
    for (const p of inventory.packages())
      if (!p.builtIn) add("Package", p.id, inventory.labelsOf("Package", p.id), packageSpec(p));
    for (const i of this.#manager.instances())
      add("Instance", i.id, inventory.labelsOf("Instance", i.id), instanceSpecOf(i));
    return out;
  }

  /** Checks the whole manifest, then (unless `dryRun`) carries it out; one apply at a time. */
  apply(values: unknown[], options: { dryRun?: boolean; prune?: boolean } = {}): Promise<ApplyAnswer> {
    const run = this.#last.then(() => this.#apply(values, options));
    this.#last = run.catch(() => {});
    return run;
  }

  async #apply(values: unknown[], options: { dryRun?: boolean; prune?: boolean }): Promise<ApplyAnswer> {
    const steps = this.#plan(values, options.prune === true);
    const answer: ApplyAnswer = {
      dryRun: options.dryRun === true,
      changed: steps.some((s) => s.action !== "unchanged"),
      results: steps.map(({ index, kind, name, action, diff }) => ({
        index,
        kind,
        name,
        action,
        ...(diff ? { diff } : {}),
      })),
    };
    if (options.dryRun) return answer;
    const inventory = this.#manager.inventory;
    const carry = async (step: Step) => {
      try {
        if (step.action !== "unchanged") await step.run();
        if (step.action !== "pruned" && step.kind !== "Node")
          inventory.setLabels(step.kind, step.name, step.labels);
      } catch (err) {
        const mapped = asManagerError(err);
        if (!(mapped instanceof ManagerError)) throw err;
        const at = step.index === null ? "pruning" : `documents[${step.index}]`;
        throw new ManagerError(
          mapped.kind,
          `${at} (${step.kind} ${step.name}): ${mapped.message}; what came before it in apply order was applied: apply again once fixed`,
          { cause: err, ...(mapped.validationErrors ? { validationErrors: mapped.validationErrors } : {}) },
        );
      }
    };
    // In order, kind by kind; instances (and pruned instances) several at a time.
    let i = 0;
    while (i < steps.length) {
      const step = steps[i] as Step;
      if (step.kind !== "Instance") {
        await carry(step);
        i++;
        continue;
      }
      let j = i;
      while (j < steps.length && steps[j]?.kind === "Instance" && steps[j]?.action === step.action) j++;
      const batch = steps.slice(i, j);
      await pool(
        batch.map((s) => () => carry(s)),
        INSTANCE_CONCURRENCY,
      );
      i = j;
    }
    return answer;
  }

  /** Every check first, naming every problem (document index, field); then the steps in apply order. */
  #plan(values: unknown[], prune: boolean): Step[] {
    const inventory = this.#manager.inventory;
    const manager = this.#manager;
    const issues: FieldIssue[] = [];
    const issue = (index: number, field: string, description: string) =>
      issues.push({ field: `documents[${index}]${field === "" ? "" : `.${field}`}`, description });
    const zodIssues = (index: number, error: z.ZodError, field: (path: string[]) => string) => {
      for (const zi of error.issues) issue(index, field(zi.path.map(String)), zi.message);
    };
    const specField = (path: string[]) => ["spec", ...path].join(".");

    // 1. Shape, per kind.
    type Parsed =
      | { kind: "Node"; node: z.output<typeof nodeInput> }
      | { kind: "Schema"; model: Record<string, unknown> }
      | { kind: "Package"; pkg: z.output<typeof packageInput> }
      | { kind: "Instance"; start: z.output<typeof startInput>; desired: (typeof DESIRED_STATES)[number] };
    const parsed: { index: number; doc: ManifestDocument; spec: Parsed }[] = [];
    const seen = new Map<string, number>();
    const specSchema = z.strictObject({ model: thingModel });
    const desiredSchema = z.enum(DESIRED_STATES, { error: `must be one of ${DESIRED_STATES.join(", ")}` });
    for (const [index, value] of values.entries()) {
      const shape = manifestDocument.safeParse(value);
      if (!shape.success) {
        zodIssues(index, shape.error, (p) => p.join("."));
        continue;
      }
      const d = shape.data;
      const { name } = d.metadata;
      if (d.kind === "Policy") {
        issue(index, "kind", "kind Policy needs the orchestrator (not built yet)");
        continue;
      }
      const key = `${d.kind}/${name}`;
      const first = seen.get(key);
      if (first !== undefined)
        issue(index, "metadata.name", `names the same ${d.kind} as documents[${first}]`);
      else seen.set(key, index);
      if ("id" in d.spec) issue(index, "spec.id", "is not given: the id is metadata.name");
      const spec = { ...d.spec };
      delete spec.id;
      switch (d.kind) {
        case "Node": {
          if ("labels" in spec)
            issue(index, "spec.labels", "is not given: a node's labels are metadata.labels");
          delete spec.labels;
          const node = nodeInput.safeParse({ ...spec, id: name, labels: d.metadata.labels });
          if (node.success) parsed.push({ index, doc: d, spec: { kind: "Node", node: node.data } });
          else
            zodIssues(index, node.error, (p) =>
              p[0] === "labels" ? ["metadata", ...p].join(".") : specField(p),
            );
          break;
        }
        case "Schema": {
          if ("url" in spec && !("model" in spec)) {
            issue(index, "spec.url", "is not supported (the gateway fetches nothing): give spec.model");
            break;
          }
          const schema = specSchema.safeParse(spec);
          if (schema.success)
            parsed.push({ index, doc: d, spec: { kind: "Schema", model: schema.data.model } });
          else zodIssues(index, schema.error, specField);
          break;
        }
        case "Package": {
          const pkg = packageInput.safeParse({ ...spec, id: name });
          if (pkg.success) parsed.push({ index, doc: d, spec: { kind: "Package", pkg: pkg.data } });
          else zodIssues(index, pkg.error, specField);
          break;
        }
        case "Instance": {
          const { desired = "running", ...rest } = spec;
          const state = desiredSchema.safeParse(desired);
          if (!state.success) issue(index, "spec.desired", state.error.issues[0]?.message ?? "is invalid");
          const start = startInput.safeParse({ ...rest, id: name });
          if (!start.success) zodIssues(index, start.error, specField);
          if (start.success && state.success)
            parsed.push({
              index,
              doc: d,
              spec: { kind: "Instance", start: start.data, desired: state.data },
            });
          break;
        }
      }
    }
    const label = prune ? this.#manifestLabel(parsed, issue) : undefined;
    // On with the documents that have their shape: every problem is named at once.

    // 2. References and what each changes, against what exists.
    const tryGet = <T>(get: () => T): T | undefined => {
      try {
        return get();
      } catch {
        return undefined;
      }
    };
    const named = <K extends Parsed["kind"]>(kind: K) =>
      parsed.filter(
        (p): p is (typeof parsed)[number] & { spec: Extract<Parsed, { kind: K }> } => p.spec.kind === kind,
      );
    const schemaIriOf = (name: string, model: Record<string, unknown>) =>
      typeof model.id === "string" && URL.canParse(model.id)
        ? model.id
        : `${this.#publicBase()}/api/schemas/${name}`;
    const manifestSchemas = new Map(
      named("Schema").map((p) => [p.doc.metadata.name, schemaIriOf(p.doc.metadata.name, p.spec.model)]),
    );
    const changedSchemas = new Set<string>();
    const steps: Step[] = [];
    const step = (
      s: Omit<Step, "action" | "diff">,
      current: unknown,
      desired: unknown,
      currentLabels?: Record<string, string>,
    ): void => {
      if (current === undefined) {
        steps.push({ ...s, action: "created" });
        return;
      }
      const diff = diffOf(current, desired, "spec");
      diffOf(currentLabels ?? {}, s.labels, "metadata.labels", diff);
      steps.push(diff.length > 0 ? { ...s, action: "updated", diff } : { ...s, action: "unchanged" });
    };

    for (const { index, doc: d, spec } of named("Schema")) {
      const name = d.metadata.name;
      const iri = manifestSchemas.get(name) as string;
      const existing = tryGet(() => inventory.schema(name));
      const other = inventory.schemas().find((s) => s.iri === iri && s.id !== name);
      if (other) issue(index, "spec.model.id", `IRI ${iri} is that of registered DT Schema "${other.id}"`);
      const model = plain(spec.model);
      const changed = existing !== undefined && !isDeepStrictEqual(plain(existing.model), model);
      if (existing && changed) {
        changedSchemas.add(name);
        if (existing.summary.builtIn)
          issue(index, "spec.model", `DT Schema "${name}" is built in and cannot be changed`);
        const users = inventory.packages({ schema: existing.summary.iri }).map((p) => p.id);
        if (users.length > 0)
          issue(
            index,
            "spec.model",
            `cannot change DT Schema "${name}": package(s) ${users.join(", ")} use it (a schema is replaced, not edited)`,
          );
      }
      step(
        {
          index,
          kind: "Schema",
          name,
          labels: d.metadata.labels,
          run: async () => {
            if (existing) await inventory.removeSchema(name);
            await inventory.registerSchema(model, { id: name });
          },
        },
        existing && { model: plain(existing.model) },
        { model },
        existing && inventory.labelsOf("Schema", name),
      );
    }

    const manifestNodes = new Map(named("Node").map((p) => [p.doc.metadata.name, p.spec.node]));
    for (const { index, doc: d, spec } of named("Node")) {
      const name = d.metadata.name;
      const existing = tryGet(() => inventory.node(name));
      const desired = nodeSpec(spec.node);
      if (existing && !isDeepStrictEqual(nodeSpec(existing), desired)) {
        if (existing.builtIn)
          issue(index, "metadata.name", `node "${name}" is the gateway's own and cannot be changed`);
        if (existing.platform !== spec.node.platform && manager.countOn(name) > 0)
          issue(index, "spec.platform", `instances are placed on node "${name}": its platform cannot change`);
      }
      const body = { ...spec.node };
      step(
        {
          index,
          kind: "Node",
          name,
          labels: d.metadata.labels,
          run: async () => {
            await inventory.registerNode(body, { replace: existing !== undefined });
          },
        },
        existing && nodeSpec(existing),
        desired,
        existing?.labels,
      );
    }

    /** The IRI of a schema reference (id or IRI), in the manifest or registered. */
    const schemaRef = (ref: string): { iri: string; placeholders?: string[] } | undefined => {
      const inManifest = manifestSchemas.get(ref) ?? [...manifestSchemas.values()].find((iri) => iri === ref);
      const registered = tryGet(() => inventory.schema(ref));
      if (inManifest !== undefined) {
        const id = [...manifestSchemas].find(([, iri]) => iri === inManifest)?.[0] as string;
        // Placeholders known only of a registered schema the manifest leaves as it is.
        const same = registered && !changedSchemas.has(id) && registered.summary.iri === inManifest;
        return { iri: inManifest, ...(same ? { placeholders: registered.summary.placeholders } : {}) };
      }
      return registered && { iri: registered.summary.iri, placeholders: registered.summary.placeholders };
    };
    const manifestPackages = new Map<
      string,
      { platform: string; parameters?: Record<string, PackageParameter> }
    >();
    for (const { index, doc: d, spec } of named("Package")) {
      const name = d.metadata.name;
      const existing = tryGet(() => inventory.package(name));
      const schema = schemaRef(spec.pkg.schema);
      if (schema === undefined)
        issue(index, "spec.schema", `no DT Schema "${spec.pkg.schema}" in the manifest or registered`);
      const parameters =
        spec.pkg.parameters ??
        (schema?.placeholders
          ? Object.fromEntries(schema.placeholders.map((p) => [p, { type: "string" as const }]))
          : existing?.parameters);
      const artefact =
        spec.pkg.platform === "in-process"
          ? { ...spec.pkg.artefact, module: spec.pkg.artefact.module ?? BUILTIN_TWIN_MODULE }
          : spec.pkg.artefact;
      const desired = packageSpec({
        ...spec.pkg,
        artefact,
        schema: schema?.iri ?? spec.pkg.schema,
        parameters,
      });
      if (existing?.builtIn && !isDeepStrictEqual(packageSpec(existing), desired))
        issue(index, "metadata.name", `package "${name}" comes with a built-in schema and cannot be changed`);
      manifestPackages.set(name, { platform: spec.pkg.platform, ...(parameters ? { parameters } : {}) });
      const body = { ...spec.pkg };
      step(
        {
          index,
          kind: "Package",
          name,
          labels: d.metadata.labels,
          run: async () => {
            await inventory.registerPackage(body, { replace: existing !== undefined });
          },
        },
        existing && packageSpec(existing),
        desired,
        existing && inventory.labelsOf("Package", name),
      );
    }

    const current = new Map(manager.instances().map((v) => [v.id, v]));
    for (const { index, doc: d, spec } of named("Instance")) {
      const name = d.metadata.name;
      const { start, desired: state } = spec;
      const existing = current.get(name);
      const registered = tryGet(() => inventory.package(start.package));
      const pkg = manifestPackages.get(start.package) ?? registered;
      if (pkg === undefined)
        issue(index, "spec.package", `no DT Package "${start.package}" in the manifest or registered`);
      const node: { platform: string } | undefined =
        manifestNodes.get(start.node) ?? tryGet(() => inventory.node(start.node));
      if (node === undefined)
        issue(index, "spec.node", `no DTC Node "${start.node}" in the manifest or registered`);
      if (pkg && node && pkg.platform !== node.platform)
        issue(
          index,
          "spec.node",
          `is a ${node.platform} node; package "${start.package}" is for ${pkg.platform}`,
        );
      try {
        inventory.checkBrokerUrl(start.brokerUrl);
      } catch (err) {
        for (const i of (isDtcError(err) && err.validationErrors) || [])
          issue(index, `spec.${i.field}`, i.description);
      }
      let configuration: Record<string, unknown> = start.configuration;
      if (pkg?.parameters) {
        try {
          configuration = resolveConfiguration(
            { id: start.package, parameters: pkg.parameters } as DtPackage,
            start.configuration,
          );
        } catch (err) {
          for (const i of (isDtcError(err) && err.validationErrors) || [])
            issue(index, `spec.${i.field}`, i.description);
        }
      }
      const desired = instanceSpecOf({ ...start, configuration, desired: state });
      const now = existing && instanceSpecOf(existing);
      const body = { ...start };
      step(
        {
          index,
          kind: "Instance",
          name,
          labels: d.metadata.labels,
          run: () => this.#instance(name, body, state, now, desired),
        },
        now,
        desired,
        existing && inventory.labelsOf("Instance", name),
      );
    }

    // 3. Prune: what carries the manifest's label and the manifest does not name, instances first.
    if (label !== undefined) this.#prunes(label, seen, parsed, steps, issues);
    if (issues.length > 0) throw manifestInvalid(issues);
    const rank = (s: Step) =>
      s.action === "pruned" ? 4 + (3 - ORDER.indexOf(s.kind)) : ORDER.indexOf(s.kind);
    return steps
      .map((s, n) => ({ s, n }))
      .sort((a, b) => rank(a.s) - rank(b.s) || a.n - b.n)
      .map(({ s }) => s);
  }

  /** The manifest's name (prune): the same label `dtc.apply/manifest` on every document. */
  #manifestLabel(
    parsed: { index: number; doc: ManifestDocument }[],
    issue: (index: number, field: string, description: string) => void,
  ): string | undefined {
    const field = `metadata.labels.${MANIFEST_LABEL}`;
    const first = parsed.find((p) => (p.doc.metadata.labels[MANIFEST_LABEL] ?? "") !== "");
    const name = first?.doc.metadata.labels[MANIFEST_LABEL];
    for (const { index, doc: d } of parsed) {
      const own = d.metadata.labels[MANIFEST_LABEL];
      if (own === undefined || own === "")
        issue(index, field, "is required with prune=true (the manifest's name)");
      else if (own !== name)
        issue(
          index,
          field,
          `must be the same in every document with prune=true ("${name}" in documents[${first?.index}])`,
        );
    }
    return name;
  }

  #prunes(
    label: string,
    named: Map<string, number>,
    parsed: { index: number; doc: ManifestDocument; spec: { kind: string } & Record<string, unknown> }[],
    steps: Step[],
    issues: FieldIssue[],
  ): void {
    const inventory = this.#manager.inventory;
    const manager = this.#manager;
    const ours = (labels: Record<string, string>) => labels[MANIFEST_LABEL] === label;
    const gone = (kind: ObjectKind, name: string) => !named.has(`${kind}/${name}`);
    const pruned = new Set<string>();
    const add = (kind: ObjectKind, name: string, run: () => Promise<void>) => {
      pruned.add(`${kind}/${name}`);
      steps.push({ index: null, kind, name, action: "pruned", labels: {}, run });
    };
    const labelled = inventory.labelled().filter((l) => ours(l.labels) && gone(l.kind, l.name));
    const exists = (l: StoredLabels) => {
      try {
        if (l.kind === "Schema") return !inventory.schema(l.name).summary.builtIn;
        if (l.kind === "Package") return !inventory.package(l.name).builtIn;
        manager.instance(l.name);
        return true;
      } catch {
        return false;
      }
    };
    for (const l of labelled.filter(exists)) {
      const { kind, name } = l;
      if (kind === "Instance") add(kind, name, () => manager.remove(name));
      else if (kind === "Package")
        add(kind, name, () => inventory.removePackage(name, manager.instances({ package: name }).length));
      else add(kind, name, () => inventory.removeSchema(name));
    }
    for (const node of inventory.nodes())
      if (!node.builtIn && ours(node.labels) && gone("Node", node.id))
        add("Node", node.id, () => manager.removeNode(node.id));

    // What stays must not need what goes.
    const refused = (what: string, user: string) =>
      issues.push({ field: "prune", description: `${what} would be pruned, but ${user} uses it` });
    const instances = manager.instances().filter((i) => !pruned.has(`Instance/${i.id}`));
    for (const i of instances) {
      if (pruned.has(`Package/${i.package}`)) refused(`package "${i.package}"`, `instance "${i.id}"`);
      if (pruned.has(`Node/${i.node}`)) refused(`node "${i.node}"`, `instance "${i.id}"`);
    }
    for (const p of inventory.packages().filter((p) => !pruned.has(`Package/${p.id}`))) {
      const schema = inventory.schema(p.schema).summary.id;
      if (pruned.has(`Schema/${schema}`)) refused(`DT Schema "${schema}"`, `package "${p.id}"`);
    }
    for (const { index, doc: d, spec } of parsed) {
      const refs: [string, string][] =
        d.kind === "Instance"
          ? [
              ["package", `Package/${(spec.start as { package: string }).package}`],
              ["node", `Node/${(spec.start as { node: string }).node}`],
            ]
          : d.kind === "Package"
            ? [["schema", `Schema/${(spec.pkg as { schema: string }).schema}`]]
            : [];
      for (const [field, ref] of refs)
        if (pruned.has(ref))
          issues.push({
            field: `documents[${index}].spec.${field}`,
            description: `refers to ${ref}, which prune would remove`,
          });
    }
  }

  /** Brings instance `id` to `desired`: started; moved (only its node differs); stopped or started; or started afresh. */
  async #instance(
    id: string,
    body: z.output<typeof startInput>,
    state: "running" | "stopped",
    now: Record<string, unknown> | undefined,
    desired: Record<string, unknown>,
  ): Promise<void> {
    const manager = this.#manager;
    if (now !== undefined) {
      const differs = Object.keys({ ...now, ...desired }).filter(
        (k) => !isDeepStrictEqual(now[k], desired[k]),
      );
      if (differs.every((k) => k === "node" || k === "desired")) {
        if (differs.includes("node")) await manager.move(id, { node: body.node });
        if (differs.includes("desired")) {
          if (state === "stopped") await manager.stop(id);
          else await manager.resume(id);
        }
        return;
      }
      await manager.remove(id);
    }
    await manager.start(body);
    if (state === "stopped") await manager.stop(id);
  }
}
