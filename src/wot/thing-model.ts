import type { JsonObject } from "./rdf.js";
import { type ValidationIssue, type ValidationResult, validateAgainst } from "./validation.js";

/** A TD/TM link. */
export interface Link {
  rel?: string;
  href: string;
  type?: string;
  [member: string]: unknown;
}

/** A W3C WoT Thing Model, as JSON. Only the members dtc reads are typed. */
export interface ThingModel extends JsonObject {
  "@context": unknown;
  "@type": string | string[];
  title?: string;
  links?: Link[];
  properties?: Record<string, JsonObject>;
  actions?: Record<string, JsonObject>;
  events?: Record<string, JsonObject>;
}

export const AFFORDANCE_KINDS = ["properties", "actions", "events"] as const;
export type AffordanceKind = (typeof AFFORDANCE_KINDS)[number];

export const TM_TYPE = "tm:ThingModel";
export const DT_SCHEMA_TYPE = "dtc:DigitalTwinSchema";
export const DT_INSTANCE_TYPE = "dtc:DigitalTwin";

export function isObject(value: unknown): value is JsonObject {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

export function typesOf(doc: JsonObject): string[] {
  const t = doc["@type"];
  if (Array.isArray(t)) return t.filter((x): x is string => typeof x === "string");
  return typeof t === "string" ? [t] : [];
}

/**
 * Checks a Thing Model's shape: the W3C TM JSON Schema, `@type` naming tm:ThingModel, and the
 * shape of its dtc: members (placeholders allowed; members may be partial, completed by tm:extends).
 * Reference resolution and the checks of the complete model need the registry: see
 * ThingModelRegistry.check().
 */
export function validateThingModel(doc: unknown): ValidationResult {
  if (!isObject(doc))
    return { valid: false, errors: [{ field: "(root)", description: "must be a JSON object" }] };
  const errors: ValidationIssue[] = [];
  const tm = validateAgainst("tm", doc);
  if (!tm.valid) errors.push(...tm.errors);
  if (!typesOf(doc).includes(TM_TYPE) && !errors.some((e) => e.field === "@type")) {
    errors.push({ field: "@type", description: `must include "${TM_TYPE}"` });
  }
  const dtc = validateAgainst("dtcPartial", doc);
  if (!dtc.valid) errors.push(...dtc.errors);
  return errors.length === 0 ? { valid: true } : { valid: false, errors };
}

const PLACEHOLDER = /\{\{([^{}]+)\}\}/g;

/** Every {{PLACEHOLDER}} in a document, with the dotted paths where it is used. */
export function findPlaceholders(doc: unknown): Map<string, string[]> {
  const found = new Map<string, string[]>();
  const visit = (value: unknown, path: string[]): void => {
    if (typeof value === "string") {
      for (const m of value.matchAll(PLACEHOLDER)) {
        const name = m[1] as string;
        const uses = found.get(name) ?? [];
        uses.push(path.length === 0 ? "(root)" : path.join("."));
        found.set(name, uses);
      }
    } else if (Array.isArray(value)) {
      value.forEach((v, i) => {
        visit(v, [...path, String(i)]);
      });
    } else if (isObject(value)) {
      for (const [k, v] of Object.entries(value)) visit(v, [...path, k]);
    }
  };
  visit(doc, []);
  return found;
}

function asArray(value: unknown): JsonObject[] {
  if (Array.isArray(value)) return value.filter(isObject);
  return isObject(value) ? [value] : [];
}

/**
 * Cross-member checks of a resolved DT Schema or TD (after tm:extends): a DT Schema states its
 * fidelity, every mapping names an affordance the model has, actions have a command topic to go to,
 * and aggregation counts are consistent. The shape of each member is the dtc JSON Schema's job.
 */
export function checkDtcConsistency(doc: JsonObject): ValidationIssue[] {
  const issues: ValidationIssue[] = [];
  const types = typesOf(doc);
  if (
    (types.includes(DT_SCHEMA_TYPE) || types.includes(DT_INSTANCE_TYPE)) &&
    !isObject(doc["dtc:fidelity"])
  ) {
    issues.push({ field: "dtc:fidelity", description: "is required for a DT Schema" });
  }
  const pi = doc["dtc:physicalInterface"];
  if (isObject(pi)) {
    const base = "dtc:physicalInterface";
    const check = (key: string, kind: AffordanceKind): void => {
      asArray(pi[key]).forEach((m, i) => {
        const name = m["dtc:affordance"];
        const affordances = doc[kind];
        if (typeof name === "string" && !(isObject(affordances) && name in affordances)) {
          issues.push({
            field: `${base}.${key}.${i}.dtc:affordance`,
            description: `names "${name}", which is not one of the model's ${kind}`,
          });
        }
      });
    };
    check("dtc:propertyMapping", "properties");
    check("dtc:actionMapping", "actions");
    if (asArray(pi["dtc:actionMapping"]).length > 0 && typeof pi["dtc:commandTopic"] !== "string") {
      issues.push({ field: `${base}.dtc:commandTopic`, description: "is required when actions are mapped" });
    }
  }
  asArray(doc["dtc:aggregation"]).forEach((a, i) => {
    const min = a["dtc:minCount"];
    const max = a["dtc:maxCount"];
    if (typeof min === "number" && typeof max === "number" && min > max) {
      issues.push({
        field: `dtc:aggregation.${i}`,
        description: "dtc:minCount must not exceed dtc:maxCount",
      });
    }
  });
  return issues;
}

/** The aggregations a composed schema declares, with defaults applied. */
export function aggregationsOf(
  doc: JsonObject,
): { schema: string; rel: string; min: number; max: number | undefined }[] {
  return asArray(doc["dtc:aggregation"]).map((a) => ({
    schema: String(a["dtc:schema"]),
    rel: typeof a["dtc:linkRelation"] === "string" ? a["dtc:linkRelation"] : "item",
    min: typeof a["dtc:minCount"] === "number" ? a["dtc:minCount"] : 0,
    max: typeof a["dtc:maxCount"] === "number" ? a["dtc:maxCount"] : undefined,
  }));
}
