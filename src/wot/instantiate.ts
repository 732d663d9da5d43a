import { randomUUID } from "node:crypto";
import { ThingModelHelpers } from "@thingweb/thing-model";
import type { ThingModelRegistry } from "./model-registry.js";
import type { JsonObject } from "./rdf.js";
import {
  AFFORDANCE_KINDS,
  type AffordanceKind,
  aggregationsOf,
  checkDtcConsistency,
  DT_INSTANCE_TYPE,
  DT_SCHEMA_TYPE,
  findPlaceholders,
  type Link,
  type ThingModel,
  TM_TYPE,
  validateThingModel,
} from "./thing-model.js";
import { ValidationError, type ValidationIssue, validateThingDescription } from "./validation.js";

export const TM_MEDIA_TYPE = "application/tm+json";
export const TD_MEDIA_TYPE = "application/td+json";

export interface InstantiateOptions {
  /** Values for the model's {{PLACEHOLDERS}}; every placeholder the model uses must have one. */
  placeholders?: Record<string, unknown>;
  /** The TD's `id`; a fresh `urn:uuid:` when absent. */
  id?: string;
  /** The TD's `base`: where its relative form hrefs point (e.g. the twin's gateway URL). */
  base?: string;
  /** Extra links, e.g. the twins a composed schema aggregates (checked against its dtc:aggregation). */
  links?: Link[];
}

/** A model given by IRI (registered) or inline with the IRI it is known by. */
export type ModelSource = string | { iri: string; model: unknown };

/** The op values of a default form, by affordance kind. */
function formOps(kind: AffordanceKind, affordance: JsonObject): string[] {
  if (kind === "actions") return ["invokeaction"];
  if (kind === "events") return ["subscribeevent", "unsubscribeevent"];
  const ops: string[] = [];
  if (affordance.writeOnly !== true) ops.push("readproperty");
  if (affordance.readOnly !== true) ops.push("writeproperty");
  if (affordance.observable === true) ops.push("observeproperty", "unobserveproperty");
  return ops;
}

/**
 * A TD must have forms and security. A twin's real forms come from the runtime that exposes it;
 * until then each affordance gets one relative form under `base`, and security defaults to nosec.
 */
function completeDescription(td: JsonObject): void {
  for (const kind of AFFORDANCE_KINDS) {
    const affordances = td[kind] as Record<string, JsonObject> | undefined;
    for (const [name, affordance] of Object.entries(affordances ?? {})) {
      delete affordance["tm:optional"];
      if (!Array.isArray(affordance.forms) || affordance.forms.length === 0) {
        affordance.forms = [{ href: `${kind}/${encodeURIComponent(name)}`, op: formOps(kind, affordance) }];
      }
    }
  }
  delete td["tm:optional"];
  if (td.securityDefinitions === undefined) {
    td.securityDefinitions = { nosec_sc: { scheme: "nosec" } };
    td.security = "nosec_sc";
  }
}

function checkAggregationLinks(td: JsonObject, links: Link[]): ValidationIssue[] {
  const issues: ValidationIssue[] = [];
  for (const agg of aggregationsOf(td)) {
    const count = links.filter((l) => l.rel === agg.rel).length;
    if (count < agg.min || (agg.max !== undefined && count > agg.max)) {
      const range = agg.max === undefined ? `at least ${agg.min}` : `${agg.min} to ${agg.max}`;
      issues.push({
        field: "links",
        description: `needs ${range} links with rel "${agg.rel}" to twins of ${agg.schema}; got ${count}`,
      });
    }
  }
  return issues;
}

/**
 * Produces a Thing Description from a Thing Model: fills placeholders, resolves tm:extends and
 * tm:ref against the registry (never the network), links the schema with rel "type", and
 * validates the result as a TD. Throws ValidationError listing field and reason.
 */
export async function instantiate(
  registry: ThingModelRegistry,
  source: ModelSource,
  options: InstantiateOptions = {},
): Promise<JsonObject> {
  const schemaIri = typeof source === "string" ? source : source.iri;
  let model: ThingModel | undefined;
  if (typeof source === "string") {
    model = registry.get(source);
    if (!model) {
      throw new ValidationError(`Thing Model ${source}`, [
        { field: "(iri)", description: "is not a registered Thing Model" },
      ]);
    }
  } else {
    const shape = validateThingModel(source.model);
    if (!shape.valid) throw new ValidationError(`Thing Model ${schemaIri}`, shape.errors);
    model = structuredClone(source.model as ThingModel);
  }

  const map = options.placeholders ?? {};
  const prepared = registry.prepare(model, schemaIri);
  const missing = [...registry.placeholders(prepared)].filter(([name]) => !(name in map));
  if (missing.length > 0) {
    throw new ValidationError(
      `Thing Model ${schemaIri}`,
      missing.map(([name, uses]) => ({
        field: `placeholders.${name}`,
        description: `is required (used at ${uses.slice(0, 3).join(", ")}${uses.length > 3 ? ", ..." : ""})`,
      })),
    );
  }

  // One helper per call: it keeps a dependency stack and is not re-entrant.
  const helper = new ThingModelHelpers(registry.resolver());
  // helperMap() reads `prepared` before getPartialTDs() consumes (mutates) it.
  const [partial] = await helper.getPartialTDs(prepared, { map: registry.helperMap(prepared, map) });
  const td = partial as unknown as JsonObject;

  const types = Array.isArray(td["@type"]) ? (td["@type"] as string[]) : [];
  td["@type"] = types.map((t) => (t === DT_SCHEMA_TYPE ? DT_INSTANCE_TYPE : t === TM_TYPE ? "Thing" : t));
  const extraLinks = (options.links ?? []).map((l) => ({ type: TD_MEDIA_TYPE, ...l }));
  const ownLinks = ((td.links as Link[] | undefined) ?? []).filter(
    (l) => !(l.rel === "type" && l.type === TM_MEDIA_TYPE),
  );
  td.links = [{ rel: "type", href: schemaIri, type: TM_MEDIA_TYPE }, ...ownLinks, ...extraLinks];
  td.id = options.id ?? `urn:uuid:${randomUUID()}`;
  if (options.base !== undefined) td.base = options.base;
  completeDescription(td);

  const issues = [...checkDtcConsistency(td), ...checkAggregationLinks(td, extraLinks)];
  for (const [name, uses] of findPlaceholders(td)) {
    issues.push({ field: uses[0] ?? "(root)", description: `placeholder {{${name}}} left unfilled` });
  }
  const result = validateThingDescription(td);
  if (!result.valid) issues.push(...result.errors);
  if (issues.length > 0) throw new ValidationError(`Thing Description produced from ${schemaIri}`, issues);
  return td;
}

/** A TD without forms, as node-wot's produce() takes it (its servers add their own forms). */
export function toExposedThingInit(td: JsonObject): JsonObject {
  const init = structuredClone(td);
  for (const kind of AFFORDANCE_KINDS) {
    for (const affordance of Object.values((init[kind] as Record<string, JsonObject> | undefined) ?? {})) {
      delete affordance.forms;
    }
  }
  delete init.base;
  return init;
}
