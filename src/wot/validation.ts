import { join } from "node:path";
import { Ajv, type ErrorObject, type ValidateFunction } from "ajv";
import ajvFormats from "ajv-formats";
import { DtcError } from "../domain/errors.js";
import { ontologyDir, readJsonFile } from "../paths.js";
import { TD_CONTEXT_1_0, TD_CONTEXT_1_1 } from "./jsonld-loader.js";

/** One problem with a document, in the shape WoT Discovery uses for `validationErrors`. */
export interface ValidationIssue {
  /** Dotted path to the member ("properties.temp.forms.0.href"), "(root)" for the document. */
  field: string;
  description: string;
}

export type ValidationResult = { valid: true } | { valid: false; errors: ValidationIssue[] };

/** Thrown where an invalid document cannot go on; carries every issue found. */
export class ValidationError extends DtcError {
  readonly errors: ValidationIssue[];
  constructor(what: string, errors: ValidationIssue[]) {
    super("invalid", `${what}: ${errors.map((e) => `${e.field}: ${e.description}`).join("; ")}`, {
      validationErrors: errors,
    });
    this.name = "ValidationError";
    this.errors = errors;
  }
}

const SCHEMA_FILES = {
  tm: "w3c/tm-json-schema-validation.json",
  td11: "w3c/td-json-schema-validation.json",
  td10: "w3c/td-1.0/td-json-schema-validation.json",
  discovery: "w3c/td-discovery-extensions-json-schema.json",
  dtc: "dtc-extensions.schema.json",
  /** The dtc schema for a raw Thing Model: members may be partial, the rest inherited (tm:extends). */
  dtcPartial: "dtc-extensions.schema.json",
} as const;

export type SchemaName = keyof typeof SCHEMA_FILES;

/** RFC 3987 IRIs: ajv-formats has no IRI formats; reject whitespace and what URL parsing refuses. */
function isIriReference(value: string): boolean {
  if (/[\s<>"{}|\\^`]/u.test(value)) return false;
  if (/^[a-zA-Z][a-zA-Z0-9+.-]*:/.test(value)) return URL.canParse(value);
  return true;
}

// ajv-formats is CommonJS: under NodeNext its default import is the module object.
const addFormats = ajvFormats.default;

const compiled = new Map<SchemaName, ValidateFunction>();

/** Each W3C schema gets its own Ajv: TD 1.0 and 1.1 share an $id. Compiled on first use. */
function validator(name: SchemaName): ValidateFunction {
  let fn = compiled.get(name);
  if (!fn) {
    const ajv = new Ajv({ strict: false, allErrors: true });
    addFormats(ajv);
    ajv.addFormat("iri-reference", isIriReference);
    ajv.addFormat("iri", (v: string) => isIriReference(v) && /^[a-zA-Z][a-zA-Z0-9+.-]*:/.test(v));
    const schema = readJsonFile(join(ontologyDir, SCHEMA_FILES[name])) as {
      $id?: string;
      definitions: Record<string, { required?: string[] }>;
    };
    if (name === "dtcPartial") {
      schema.$id = `${schema.$id}#partial`;
      delete schema.definitions.fidelity?.required;
      delete schema.definitions.physicalInterface?.required;
    }
    fn = ajv.compile(schema);
    compiled.set(name, fn);
  }
  return fn;
}

function fieldOf(e: ErrorObject): string {
  const path = e.instancePath
    .split("/")
    .slice(1)
    .map((p) => p.replace(/~1/g, "/").replace(/~0/g, "~"));
  if (e.keyword === "required") path.push(String(e.params.missingProperty));
  if (e.keyword === "additionalProperties") path.push(String(e.params.additionalProperty));
  return path.length === 0 ? "(root)" : path.join(".");
}

function describe(e: ErrorObject): string {
  switch (e.keyword) {
    case "required":
      return "is required";
    case "enum":
      return `must be one of ${JSON.stringify(e.params.allowedValues)}`;
    case "const":
      return `must be ${JSON.stringify(e.params.allowedValue)}`;
    default:
      return e.message ?? e.keyword;
  }
}

const COMBINATORS = new Set(["oneOf", "anyOf"]);

const within = (path: string, root: string) => path === root || path.startsWith(`${root}/`);

/**
 * Ajv reports a failed oneOf/anyOf as one error per failed branch, then the combinator's own. A user
 * wants one issue per field: branch errors at the combinator's path are folded into it ("must be
 * number, or must match pattern ..."); deeper branch errors stay, being specific. Branch errors come
 * right before their combinator (through $ref their schemaPath is the referenced schema's, so
 * position, not schemaPath, tells them apart); errors of sibling keywords are not branches.
 */
export function toIssues(errors: readonly ErrorObject[] | null | undefined): ValidationIssue[] {
  const all = errors ?? [];
  const owner = new Map<number, number>();
  const folded = new Map<number, string>();
  all.forEach((e, i) => {
    if (!COMBINATORS.has(e.keyword)) return;
    const parent = e.schemaPath.slice(0, e.schemaPath.lastIndexOf("/"));
    const branches: string[] = [];
    for (let j = i - 1; j >= 0 && within((all[j] as ErrorObject).instancePath, e.instancePath); j--) {
      const b = all[j] as ErrorObject;
      const sibling = b.schemaPath === `${parent}/${b.keyword}`;
      if (owner.has(j) || sibling || b.instancePath !== e.instancePath) continue;
      owner.set(j, i);
      branches.unshift(folded.get(j) ?? describe(b));
    }
    if (branches.length > 0) folded.set(i, [...new Set(branches)].join(", or "));
  });
  const seen = new Set<string>();
  const issues: ValidationIssue[] = [];
  all.forEach((e, i) => {
    if (owner.has(i)) return;
    const issue = { field: fieldOf(e), description: folded.get(i) ?? describe(e) };
    const key = `${issue.field}\u0000${issue.description}`;
    if (!seen.has(key)) {
      seen.add(key);
      issues.push(issue);
    }
  });
  return issues;
}

export function validateAgainst(name: SchemaName, doc: unknown): ValidationResult {
  const fn = validator(name);
  return fn(doc) ? { valid: true } : { valid: false, errors: toIssues(fn.errors) };
}

function contexts(doc: unknown): unknown[] {
  const ctx = (doc as { "@context"?: unknown } | null)?.["@context"];
  return Array.isArray(ctx) ? ctx : [ctx];
}

/** Which TD version a document declares through its @context (1.1 wins when both appear). */
export function tdVersionOf(doc: unknown): "1.1" | "1.0" | undefined {
  const urls = contexts(doc).filter((c): c is string => typeof c === "string");
  if (urls.includes(TD_CONTEXT_1_1)) return "1.1";
  if (urls.includes(TD_CONTEXT_1_0)) return "1.0";
  return undefined;
}

function merge(...results: ValidationResult[]): ValidationResult {
  const errors = results.flatMap((r) => (r.valid ? [] : r.errors));
  return errors.length === 0 ? { valid: true } : { valid: false, errors };
}

/**
 * Validates a Thing Description against the TD JSON Schema its @context names (1.1 or 1.0),
 * the discovery extensions (`registration`) and the dtc extensions.
 */
export function validateThingDescription(doc: unknown): ValidationResult {
  if (typeof doc !== "object" || doc === null || Array.isArray(doc)) {
    return { valid: false, errors: [{ field: "(root)", description: "must be a JSON object" }] };
  }
  const version = tdVersionOf(doc);
  if (version === undefined) {
    return {
      valid: false,
      errors: [
        {
          field: "@context",
          description: `must contain "${TD_CONTEXT_1_1}" (TD 1.1) or "${TD_CONTEXT_1_0}" (TD 1.0)`,
        },
      ],
    };
  }
  return merge(
    validateAgainst(version === "1.1" ? "td11" : "td10", doc),
    validateAgainst("discovery", doc),
    validateAgainst("dtc", doc),
  );
}

/**
 * Validators for the data schemas of one Thing Description (action inputs, property values,
 * uriVariables), compiled on first use and kept as long as the schema object lives. Each reports
 * the first error only: enough to say what is wrong, and cheap on a large, wrong body. A schema
 * ajv cannot compile yields no validator (the Thing decides alone).
 */
export class DataSchemas {
  readonly #ajv: Ajv;
  readonly #compiled = new WeakMap<object, ValidateFunction | null>();

  /** `coerceTypes`: values arrive as strings (a query's uriVariables) and are read as the schema's type. */
  constructor(options: { coerceTypes?: boolean } = {}) {
    // addUsedSchema: false, so that two affordances with the same $id do not clash.
    this.#ajv = new Ajv({
      strict: false,
      allErrors: false,
      addUsedSchema: false,
      logger: false,
      coerceTypes: options.coerceTypes ?? false,
    });
    addFormats(this.#ajv);
  }

  validator(schema: object): ((value: unknown) => ValidationResult) | undefined {
    let fn = this.#compiled.get(schema);
    if (fn === undefined) {
      try {
        fn = this.#ajv.compile(schema);
      } catch {
        fn = null;
      }
      this.#compiled.set(schema, fn);
    }
    const validate = fn;
    if (validate === null) return undefined;
    return (value) =>
      validate(value) ? { valid: true } : { valid: false, errors: toIssues(validate.errors) };
  }
}
