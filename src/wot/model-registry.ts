import { readdirSync } from "node:fs";
import { join } from "node:path";
import type { Resolver } from "@thingweb/thing-model";
import { ThingModelHelpers } from "@thingweb/thing-model";
import { DtcError, errorMessage } from "../domain/errors.js";
import { readJsonFile } from "../paths.js";
import type { JsonObject } from "./rdf.js";
import {
  AFFORDANCE_KINDS,
  checkDtcConsistency,
  findPlaceholders,
  isObject,
  type ThingModel,
  validateThingModel,
} from "./thing-model.js";
import { ValidationError, type ValidationIssue, validateAgainst } from "./validation.js";

/** Where the sample schemas of thing-models/ are published (their IRIs, and the base of their links). */
export const SAMPLE_SCHEMA_BASE = "https://w3id.org/dtc/thing-models/";

/** Raised when a model refers to one the registry does not hold, or refers to itself through others. */
export class ModelResolutionError extends DtcError {
  constructor(message: string) {
    super("invalid", message);
    this.name = "ModelResolutionError";
  }
}

function clone<T>(value: T): T {
  return structuredClone(value);
}

function absolute(href: string, base: string | undefined, from: string): string {
  if (URL.canParse(href)) return href;
  if (base !== undefined && URL.canParse(href, base)) return new URL(href, base).href;
  throw new ModelResolutionError(`${from}: cannot resolve relative reference "${href}" without a base IRI`);
}

/**
 * Thing Models by IRI. Resolves tm:extends, tm:ref and tm:submodel among registered models only:
 * nothing is ever fetched. Stored models are never handed out uncloned (ThingModelHelpers mutates
 * its input).
 */
export class ThingModelRegistry {
  readonly #models = new Map<string, ThingModel>();

  /** Validates the shape of `tm` and stores it under `iri` (replacing any model there). */
  register(iri: string, tm: unknown): ThingModel {
    if (!URL.canParse(iri))
      throw new ValidationError(`Thing Model IRI "${iri}"`, [
        { field: "(iri)", description: "must be an absolute IRI" },
      ]);
    const result = validateThingModel(tm);
    if (!result.valid) throw new ValidationError(`Thing Model ${iri}`, result.errors);
    const stored = clone(tm as ThingModel);
    this.#models.set(iri, stored);
    return clone(stored);
  }

  get(iri: string): ThingModel | undefined {
    const tm = this.#models.get(iri);
    return tm && clone(tm);
  }

  has(iri: string): boolean {
    return this.#models.has(iri);
  }

  delete(iri: string): boolean {
    return this.#models.delete(iri);
  }

  iris(): string[] {
    return [...this.#models.keys()].sort();
  }

  /**
   * A copy of `tm` ready for ThingModelHelpers: its references made absolute against `iri`, and the
   * dtc: members it inherits through tm:extends merged in (the helper merges only top-level members,
   * so a child's physical interface would otherwise replace its parent's mappings wholesale).
   */
  prepare(tm: ThingModel, iri: string | undefined, chain: string[] = []): ThingModel {
    const from = iri ?? tm.title ?? "Thing Model";
    const prepared = clone(tm);
    for (const link of prepared.links ?? []) {
      if (link.rel === "tm:extends" || link.rel === "tm:submodel") link.href = absolute(link.href, iri, from);
    }
    for (const kind of AFFORDANCE_KINDS) {
      for (const affordance of Object.values(prepared[kind] ?? {})) {
        const ref = affordance["tm:ref"];
        if (typeof ref === "string") {
          const [uri = "", pointer = ""] = ref.split("#");
          affordance["tm:ref"] = `${absolute(uri, iri, from)}#${pointer}`;
        }
      }
    }
    for (const agg of [prepared["dtc:aggregation"]].flat()) {
      if (isObject(agg) && typeof agg["dtc:schema"] === "string") {
        agg["dtc:schema"] = absolute(agg["dtc:schema"], iri, from);
      }
    }
    for (const link of prepared.links ?? []) {
      if (link.rel !== "tm:extends") continue;
      const parent = this.prepare(this.#lookup(link.href, from, chain), link.href, [...chain, from]);
      inheritDtcMembers(parent, prepared);
    }
    return prepared;
  }

  #lookup(iri: string, from: string, chain: string[]): ThingModel {
    if (chain.includes(iri) || iri === from) {
      throw new ModelResolutionError(`circular reference: ${[...chain, from, iri].join(" -> ")}`);
    }
    const tm = this.#models.get(iri);
    if (!tm) {
      throw new ModelResolutionError(
        `${from} refers to "${iri}", which is not a registered Thing Model (registered: ${this.iris().join(", ") || "none"})`,
      );
    }
    return tm;
  }

  /** The ThingModelHelpers resolver: registered models only, prepared the same way. */
  resolver(): Resolver {
    return {
      fetch: async (uri: string) => this.prepare(this.#lookup(uri, "tm:extends/tm:ref", []), uri),
    };
  }

  /**
   * The placeholders a model uses, with where each is used. `prepared` is a model from prepare(). `required`: its own, its tm:extends
   * ancestors' and those inside the affordances it imports with tm:ref. `reachable`: also the rest
   * of every model it refers to, which ThingModelHelpers insists on seeing in its map.
   */
  placeholders(prepared: ThingModel, scope: "required" | "reachable" = "required") {
    const all = new Map<string, string[]>();
    const seen = new Set<string>();
    const record = (doc: unknown, at: string | undefined): void => {
      for (const [name, uses] of findPlaceholders(doc)) {
        all.set(name, [...(all.get(name) ?? []), ...uses.map((u) => (at ? `${at} ${u}` : u))]);
      }
    };
    const visit = (model: ThingModel, at: string | undefined): void => {
      record(model, at);
      for (const link of model.links ?? []) {
        if ((link.rel !== "tm:extends" && link.rel !== "tm:submodel") || seen.has(link.href)) continue;
        seen.add(link.href);
        const target = this.#models.get(link.href);
        if (target) visit(this.prepare(target, link.href), link.href);
      }
      for (const kind of AFFORDANCE_KINDS) {
        for (const affordance of Object.values(model[kind] ?? {})) {
          const ref = affordance["tm:ref"];
          if (typeof ref !== "string") continue;
          const [uri = "", pointer = ""] = ref.split("#");
          const target = this.#models.get(uri);
          if (!target) continue;
          const prepared = this.prepare(target, uri);
          if (scope === "reachable" && !seen.has(uri)) {
            seen.add(uri);
            visit(prepared, uri);
          } else {
            const [, refKind = "", name = ""] = pointer.split("/");
            record((prepared[refKind as keyof ThingModel] as JsonObject | undefined)?.[name], ref);
          }
        }
      }
    };
    visit(prepared, undefined);
    return all;
  }

  /**
   * `iri`'s model and every registered model it refers to, transitively (tm:extends, tm:submodel,
   * tm:ref, dtc:aggregation), as registered: what another process needs to instantiate it (a
   * twin in a container has only the built-in models).
   */
  closure(iri: string): Record<string, ThingModel> {
    const out: Record<string, ThingModel> = {};
    const pending = [iri];
    for (let next = pending.pop(); next !== undefined; next = pending.pop()) {
      const tm = this.#models.get(next);
      if (!tm || next in out) continue;
      out[next] = clone(tm);
      const prepared = this.prepare(tm, next);
      for (const link of prepared.links ?? []) {
        if (link.rel === "tm:extends" || link.rel === "tm:submodel") pending.push(link.href);
      }
      for (const kind of AFFORDANCE_KINDS) {
        for (const affordance of Object.values(prepared[kind] ?? {})) {
          const ref = affordance["tm:ref"];
          if (typeof ref === "string") pending.push(ref.split("#")[0] ?? "");
        }
      }
      for (const agg of [prepared["dtc:aggregation"]].flat()) {
        if (isObject(agg) && typeof agg["dtc:schema"] === "string") pending.push(agg["dtc:schema"]);
      }
    }
    return out;
  }

  /**
   * The map to hand ThingModelHelpers: the given values, and every other placeholder of the models
   * reached mapped to itself (left for the caller to report if it reaches the result).
   */
  helperMap(prepared: ThingModel, values: Record<string, unknown> = {}) {
    const identity = [...this.placeholders(prepared, "reachable").keys()].map((k) => [k, `{{${k}}}`]);
    return { ...Object.fromEntries(identity), ...values };
  }

  /**
   * Resolves a registered model (extends, refs) with its placeholders left in place, and checks the
   * result as a whole: the complete dtc schema (members may come from ancestors) and the
   * cross-member dtc checks. Returns the problems found; empty when the model is usable.
   */
  async check(iri: string): Promise<ValidationIssue[]> {
    const tm = this.#models.get(iri);
    if (!tm) return [{ field: "(iri)", description: `no Thing Model is registered as ${iri}` }];
    try {
      const helper = new ThingModelHelpers(this.resolver());
      const prepared = this.prepare(tm, iri);
      const map = this.helperMap(prepared);
      const [resolved] = await helper.getPartialTDs(prepared, { map });
      const complete = validateAgainst("dtc", resolved);
      return [
        ...(complete.valid ? [] : complete.errors),
        ...checkDtcConsistency(resolved as unknown as JsonObject),
      ];
    } catch (err) {
      return [{ field: "links", description: errorMessage(err) }];
    }
  }
}

/** Mapping arrays merge by affordance name, the child's entry winning. */
function mergeMappings(parent: unknown, child: unknown): unknown {
  if (!Array.isArray(parent) || !Array.isArray(child)) return child ?? parent;
  const name = (m: unknown) => (isObject(m) ? m["dtc:affordance"] : undefined);
  const overridden = new Set(child.map(name));
  return [...parent.filter((m) => !overridden.has(name(m))), ...child];
}

function inheritDtcMembers(parent: JsonObject, child: JsonObject): void {
  for (const [key, value] of Object.entries(parent)) {
    if (!key.startsWith("dtc:")) continue;
    const own = child[key];
    if (own === undefined) {
      child[key] = clone(value);
    } else if (isObject(own) && isObject(value)) {
      const merged: JsonObject = { ...value, ...own };
      for (const k of ["dtc:propertyMapping", "dtc:actionMapping"]) {
        if (k in value || k in own) merged[k] = mergeMappings(value[k], own[k]);
      }
      child[key] = merged;
    }
  }
}

/** Thing Model files in a folder: *.tm.json and *.tm.jsonld. */
export function thingModelFiles(dir: string): string[] {
  return readdirSync(dir)
    .filter((f) => f.endsWith(".tm.jsonld") || f.endsWith(".tm.json"))
    .sort();
}

/**
 * Registers every Thing Model file of `dir` under `base` + file name, then checks that each one
 * resolves. Fails naming the file(s) at fault.
 */
export async function loadThingModels(
  registry: ThingModelRegistry,
  dir: string,
  base: string = SAMPLE_SCHEMA_BASE,
): Promise<string[]> {
  const iris: string[] = [];
  const problems: ValidationIssue[] = [];
  for (const file of thingModelFiles(dir)) {
    const iri = new URL(file, base).href;
    try {
      registry.register(iri, readJsonFile(join(dir, file)));
      iris.push(iri);
    } catch (err) {
      const issues =
        err instanceof ValidationError ? err.errors : [{ field: "(root)", description: String(err) }];
      problems.push(...issues.map((i) => ({ field: `${file}: ${i.field}`, description: i.description })));
    }
  }
  for (const iri of iris) {
    const file = iri.slice(iri.lastIndexOf("/") + 1);
    problems.push(...(await registry.check(iri)).map((i) => ({ ...i, field: `${file}: ${i.field}` })));
  }
  if (problems.length > 0) throw new ValidationError(`Thing Models in ${dir}`, problems);
  return iris;
}
