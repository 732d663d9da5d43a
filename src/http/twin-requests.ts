import { errorMessage } from "../domain/errors.js";
import type { JsonObject } from "../wot/rdf.js";
import { isObject } from "../wot/thing-model.js";
import { DataSchemas, type ValidationIssue } from "../wot/validation.js";

/**
 * A request under /twins/{id}/ checked against the twin's TD before it reaches node-wot, whose
 * HTTP binding trusts what it is sent: it looks affordance names up on plain objects (so
 * `actions/toString` or `properties/constructor` found the prototype's and threw), and validates
 * inputs recursively (a body nested 5,000 deep overflowed its stack). Here the name must be one
 * the TD declares, the method one its operation takes, the query its uriVariables, and the body
 * the affordance's schema. Built once per TD (the proxy keeps it as long as the TD object lives);
 * validators are compiled on first use.
 */

/** Deepest JSON nesting a twin's action input or property value may have (as the directory's TDs). */
export const MAX_TWIN_BODY_DEPTH = 64;

/** Longest query string a twin request may carry, characters. */
export const MAX_TWIN_QUERY_LENGTH = 2048;

/** Why a request is refused: the problem's status, title and detail (and Allow for a 405). */
export interface Refusal {
  status: 400 | 404 | 405 | 414;
  title: string;
  detail: string;
  allow?: string;
  validationErrors?: ValidationIssue[];
}

/** What a request asks for once it passed the path, method and query checks. */
export interface TwinOperation {
  /** The body to check (an action's input, a property's new value), if the method sends one. */
  body: { what: string; schema: object | undefined } | undefined;
}

type Kind = "properties" | "actions" | "events";

const refuse = (status: Refusal["status"], detail: string, extra: Partial<Refusal> = {}): Refusal => {
  const title = { 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed", 414: "URI Too Long" }[
    status
  ];
  return { status, title, detail, ...extra };
};

/** A name as a problem detail quotes it: short (it is the client's). */
const quoted = (name: string) => JSON.stringify(name.length > 64 ? `${name.slice(0, 64)}...` : name);

/** The members of a property affordance that are not its data schema. */
const NOT_SCHEMA = new Set(["forms", "uriVariables"]);

/**
 * Whether `text` nests arrays and objects deeper than `limit`, found in one pass without recursion
 * (brackets inside strings do not count).
 */
export function nestsDeeperThan(text: string, limit: number): boolean {
  let depth = 0;
  let inString = false;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (inString) {
      if (c === 0x5c)
        i++; // a backslash escapes the next character
      else if (c === 0x22) inString = false;
    } else if (c === 0x22) {
      inString = true;
    } else if (c === 0x5b || c === 0x7b) {
      if (++depth > limit) return true;
    } else if (c === 0x5d || c === 0x7d) {
      depth--;
    }
  }
  return false;
}

export class TwinRequestRules {
  readonly #td: JsonObject;
  readonly #schemas = new DataSchemas();
  readonly #queries = new DataSchemas({ coerceTypes: true });
  /** Data schemas derived from affordances (property values, uriVariables), per affordance. */
  readonly #derived = new WeakMap<object, object>();
  readonly #uriSchemas = new WeakMap<object, object>();

  constructor(td: JsonObject) {
    this.#td = td;
  }

  /** The affordance `name` of `kind`, only if the TD declares it itself (never a prototype's). */
  #affordance(kind: Kind, name: string): JsonObject | undefined {
    const map = this.#td[kind];
    if (!isObject(map) || !Object.hasOwn(map, name)) return undefined;
    const affordance = map[name];
    return isObject(affordance) ? affordance : undefined;
  }

  /**
   * Checks `method` on `segments` (the path after /twins/{id}, split at "/", decoded) with the
   * query `search` (without "?"): a refusal, or what the body must be.
   */
  check(method: string, segments: string[], search: string): Refusal | TwinOperation {
    const [kind, name, sub, ...rest] = segments;
    let allowed: string[];
    let affordance: JsonObject | undefined;
    let body: TwinOperation["body"];
    if (kind === undefined || (kind === "" && segments.length === 1)) {
      allowed = ["GET"];
    } else if (kind === "properties" && name === undefined) {
      allowed = ["GET"];
    } else if (kind === "properties" && name !== undefined && rest.length === 0) {
      affordance = this.#affordance("properties", name);
      if (!affordance) return refuse(404, `the twin has no property ${quoted(name)}`);
      if (sub === "observable") {
        if (affordance.observable !== true) {
          return refuse(404, `property ${quoted(name)} of the twin is not observable`);
        }
        allowed = ["GET"];
      } else if (sub !== undefined) {
        return refuse(404, `no resource of property ${quoted(name)} at ${quoted(sub)}`);
      } else {
        allowed = [
          ...(affordance.writeOnly === true ? [] : ["GET"]),
          ...(affordance.readOnly === true ? [] : ["PUT"]),
        ];
        body =
          method === "PUT"
            ? { what: `property ${quoted(name)}`, schema: this.#valueSchema(affordance) }
            : undefined;
      }
    } else if ((kind === "actions" || kind === "events") && name !== undefined && sub === undefined) {
      const noun = kind === "actions" ? "action" : "event";
      affordance = this.#affordance(kind, name);
      if (!affordance) return refuse(404, `the twin has no ${noun} ${quoted(name)}`);
      allowed = kind === "actions" ? ["POST"] : ["GET"];
      if (kind === "actions") {
        const input = affordance.input;
        body = { what: `the input of action ${quoted(name)}`, schema: isObject(input) ? input : undefined };
      }
    } else {
      return refuse(
        404,
        "a twin serves its TD, properties, properties/{name}[/observable], actions/{name} and events/{name}",
      );
    }
    // HEAD goes with GET; OPTIONS (CORS preflights) to the twin's server, which answers them.
    const methods = allowed.includes("GET") ? [...allowed, "HEAD"] : allowed;
    if (method !== "OPTIONS" && !methods.includes(method)) {
      const allow = [...methods, "OPTIONS"].join(", ");
      return refuse(
        405,
        `${method} is not an operation of ${segments.join("") === "" ? "the twin's TD" : quoted(segments.join("/"))}; allowed: ${allow}`,
        { allow },
      );
    }
    const query = this.#checkQuery(search, affordance);
    if (query) return query;
    return { body: method === "PUT" || method === "POST" ? body : undefined };
  }

  /** The body `text` for `operation`: undefined when it may go on, else the refusal. */
  checkBody(operation: TwinOperation, text: string): Refusal | undefined {
    const body = operation.body;
    // No body (an action without input) is the twin's to judge.
    if (!body || text.trim() === "") return undefined;
    if (nestsDeeperThan(text, MAX_TWIN_BODY_DEPTH)) {
      return refuse(400, `the body nests deeper than ${MAX_TWIN_BODY_DEPTH} levels`);
    }
    let value: unknown;
    try {
      value = JSON.parse(text);
    } catch (err) {
      return refuse(400, `the body is not JSON: ${errorMessage(err)}`);
    }
    const validate = body.schema && this.#schemas.validator(body.schema);
    const result = validate?.(value);
    if (!result || result.valid) return undefined;
    const issues = result.errors.map((e) => `${e.field}: ${e.description}`).join("; ");
    return refuse(400, `${body.what} does not fit its schema: ${issues}`, {
      validationErrors: result.errors,
    });
  }

  /** A property affordance as the data schema of its value (its forms and the like left out). */
  #valueSchema(property: JsonObject): object {
    let schema = this.#derived.get(property);
    if (!schema) {
      schema = Object.fromEntries(Object.entries(property).filter(([key]) => !NOT_SCHEMA.has(key)));
      this.#derived.set(property, schema);
    }
    return schema;
  }

  /** Query parameters must be uriVariables of the affordance (or the Thing), and fit their schemas. */
  #checkQuery(search: string, affordance: JsonObject | undefined): Refusal | undefined {
    if (search === "") return undefined;
    if (search.length > MAX_TWIN_QUERY_LENGTH) {
      return refuse(414, `the query is limited to ${MAX_TWIN_QUERY_LENGTH} characters`);
    }
    const declared: Record<string, unknown> = {
      ...(isObject(this.#td.uriVariables) ? this.#td.uriVariables : {}),
      ...(isObject(affordance?.uriVariables) ? affordance.uriVariables : {}),
    };
    const values: Record<string, string> = {};
    for (const [name, value] of new URLSearchParams(search)) {
      if (!Object.hasOwn(declared, name)) {
        const known = Object.keys(declared);
        return refuse(
          400,
          `query parameter ${quoted(name)} is not a uriVariable here (${known.length === 0 ? "none is declared" : `declared: ${known.join(", ")}`})`,
        );
      }
      if (Object.hasOwn(values, name)) return refuse(400, `query parameter ${quoted(name)} is repeated`);
      values[name] = value;
    }
    const owner = affordance ?? this.#td;
    let schema = this.#uriSchemas.get(owner);
    if (!schema) {
      schema = { type: "object", properties: declared };
      this.#uriSchemas.set(owner, schema);
    }
    const result = this.#queries.validator(schema)?.(values);
    if (!result || result.valid) return undefined;
    const issues = result.errors.map((e) => `${e.field}: ${e.description}`).join("; ");
    return refuse(400, `the query does not fit the uriVariables: ${issues}`, {
      validationErrors: result.errors,
    });
  }
}
