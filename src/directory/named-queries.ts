import { readdir, readFile } from "node:fs/promises";
import { basename, join } from "node:path";
import oxigraph from "oxigraph";
import sparqljs from "sparqljs";
import { errorMessage } from "../domain/errors.js";
import { LIFECYCLE_STATES, type LifecycleState } from "../domain/lifecycle.js";
import { DTC } from "../domain/vocabulary.js";
import { projectRoot } from "../paths.js";

/**
 * Named SPARQL queries of the directory: `.rq` files whose leading comment documents the query and
 * its parameters. A parameter is a variable of the query; binding it never splices user input
 * into SPARQL text: the value is checked against the parameter's type, made an RDF term, put in a
 * `VALUES` clause of the parsed query, and the text is regenerated from the syntax tree.
 *
 * Header format (comment lines before the first line of SPARQL):
 *
 *     # What the query finds (one or more lines).
 *     # @param name type [optional] description
 *
 * with type one of `iri`, `string`, `number`, `state` (a lifecycle state name).
 */

export const namedQueriesDir = join(projectRoot, "directory", "queries");

const XSD_DOUBLE = "http://www.w3.org/2001/XMLSchema#double";

export const PARAM_TYPES = ["iri", "string", "number", "state"] as const;
export type ParamType = (typeof PARAM_TYPES)[number];

export interface NamedQueryParam {
  name: string;
  type: ParamType;
  optional: boolean;
  description: string;
}

export interface NamedQueryInfo {
  name: string;
  description: string;
  params: NamedQueryParam[];
}

/** A bad call of a named query: unknown query or parameter, missing parameter, or bad value. */
export class NamedQueryError extends Error {
  readonly query: string;
  readonly param: string | undefined;
  constructor(query: string, param: string | undefined, message: string) {
    super(`named query "${query}": ${message}`);
    this.name = "NamedQueryError";
    this.query = query;
    this.param = param;
  }
}

interface NamedQuery extends NamedQueryInfo {
  ast: sparqljs.Query;
}

type BoundTerm = sparqljs.IriTerm | sparqljs.LiteralTerm;

// Longer than any IRI or name a client has reason to send; keeps error messages short too.
const MAX_VALUE_LENGTH = 2048;
const NUMBER = /^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?$/;
const PARAM_LINE = /^@param\s+(\S+)\s+(\S+)(\s+optional)?(?:\s+(.*))?$/;
const VARIABLE_NAME = /^[A-Za-z_][A-Za-z0-9_]*$/;

/** The value as shown in an error message. */
const show = (value: string): string =>
  JSON.stringify(value.length > 100 ? `${value.slice(0, 100)}…` : value);

/** The RDF term for `value`, or why it is not a valid value of a `type` parameter. */
function toTerm(type: ParamType, value: string): BoundTerm | string {
  switch (type) {
    case "iri":
      // Oxigraph's IRI parser (RFC 3987) refuses relative IRIs and the characters that could
      // end an IRIREF (`>`, spaces, braces...), which the generator writes verbatim.
      try {
        return oxigraph.namedNode(value);
      } catch (err) {
        return `an absolute IRI (${errorMessage(err)})`;
      }
    case "number": {
      const number = Number(value);
      if (!NUMBER.test(value.trim()) || !Number.isFinite(number)) return "a finite decimal number";
      return oxigraph.literal(String(number), oxigraph.namedNode(XSD_DOUBLE));
    }
    case "state":
      if (!(LIFECYCLE_STATES as readonly string[]).includes(value)) {
        return `a lifecycle state (${LIFECYCLE_STATES.join(", ")})`;
      }
      return oxigraph.namedNode(`${DTC}${value as LifecycleState}`);
    case "string":
      // The generator escapes quotes, backslashes and line breaks in literals.
      return oxigraph.literal(value);
  }
}

/** Every variable name the query mentions, anywhere in its syntax tree. */
function variablesOf(node: unknown, found = new Set<string>()): Set<string> {
  if (Array.isArray(node)) {
    for (const item of node) variablesOf(item, found);
  } else if (node !== null && typeof node === "object") {
    const term = node as { termType?: unknown; value?: unknown };
    if (term.termType === "Variable" && typeof term.value === "string") found.add(term.value);
    else for (const value of Object.values(node)) variablesOf(value, found);
  }
  return found;
}

/** Description and parameters from the comment lines that open the file. */
function readHeader(file: string, text: string): { description: string; params: NamedQueryParam[] } {
  const description: string[] = [];
  const params: NamedQueryParam[] = [];
  const lines = text.split(/\r?\n/);
  for (const [index, raw] of lines.entries()) {
    const line = raw.trim();
    if (line === "") continue;
    if (!line.startsWith("#")) break;
    const comment = line.replace(/^#+\s?/, "").trim();
    if (!comment.startsWith("@")) {
      // A plain line continues the last parameter's description, or the query's before any.
      const last = params.at(-1);
      if (last) last.description = `${last.description} ${comment}`.trim();
      else if (comment) description.push(comment);
      continue;
    }
    const where = `${file}:${index + 1}`;
    const match = PARAM_LINE.exec(comment);
    if (!match) {
      throw new Error(`${where}: expected "# @param name type [optional] description", got "${comment}"`);
    }
    const [, name = "", type = "", optional, text = ""] = match;
    if (!VARIABLE_NAME.test(name))
      throw new Error(`${where}: parameter name "${name}" is not a variable name`);
    if (!(PARAM_TYPES as readonly string[]).includes(type)) {
      throw new Error(
        `${where}: parameter "${name}" has type "${type}"; expected one of ${PARAM_TYPES.join(", ")}`,
      );
    }
    if (params.some((p) => p.name === name)) throw new Error(`${where}: parameter "${name}" declared twice`);
    params.push({
      name,
      type: type as ParamType,
      optional: optional !== undefined,
      description: text.trim(),
    });
  }
  if (description.length === 0)
    throw new Error(`${file}: no description (leading comment lines) before the query`);
  return { description: description.join(" "), params };
}

function parseQuery(path: string, text: string): NamedQuery {
  const file = basename(path);
  let parsed: sparqljs.SparqlQuery;
  try {
    parsed = new sparqljs.Parser().parse(text);
  } catch (err) {
    throw new Error(`${path}: not a valid SPARQL query: ${errorMessage(err)}`);
  }
  if (parsed.type !== "query") throw new Error(`${path}: a SPARQL update, not a query`);
  if (!parsed.where) throw new Error(`${path}: the query has no WHERE clause to bind parameters in`);
  const { description, params } = readHeader(path, text);
  const variables = variablesOf(parsed);
  for (const param of params) {
    if (!variables.has(param.name))
      throw new Error(`${path}: parameter "${param.name}" is not a variable of the query`);
  }
  return { name: file.replace(/\.rq$/, ""), description, params, ast: parsed };
}

/** A set of named queries, loaded and parsed once. */
export class NamedQueries {
  readonly #queries: ReadonlyMap<string, NamedQuery>;

  private constructor(queries: NamedQuery[]) {
    this.#queries = new Map(queries.map((q) => [q.name, q]));
  }

  /** Loads and parses every `.rq` file of `dir`; fails on the first that is not a documented query. */
  static async load(dir: string = namedQueriesDir): Promise<NamedQueries> {
    const files = (await readdir(dir)).filter((f) => f.endsWith(".rq")).sort();
    const queries: NamedQuery[] = [];
    for (const file of files) {
      const path = join(dir, file);
      queries.push(parseQuery(path, await readFile(path, "utf8")));
    }
    return new NamedQueries(queries);
  }

  has(name: string): boolean {
    return this.#queries.has(name);
  }

  /** Each query's name, description and parameters (e.g. for an API listing), by name. */
  list(): NamedQueryInfo[] {
    return [...this.#queries.values()]
      .sort((a, b) => a.name.localeCompare(b.name))
      .map(({ name, description, params }) => ({ name, description, params: params.map((p) => ({ ...p })) }));
  }

  /**
   * The SPARQL text of query `name` with `params` bound. Absent optional parameters stay unbound.
   * Throws a NamedQueryError for an unknown query or parameter, a missing required parameter, or a
   * value that is not of the parameter's type.
   */
  bind(name: string, params: Record<string, string | undefined>): string {
    const query = this.#queries.get(name);
    if (!query) {
      throw new NamedQueryError(
        name,
        undefined,
        `no such query; known: ${[...this.#queries.keys()].join(", ")}`,
      );
    }
    const declared = new Map(query.params.map((p) => [p.name, p]));
    for (const given of Object.keys(params)) {
      if (!declared.has(given)) {
        const expected = query.params.map((p) => p.name).join(", ") || "none";
        throw new NamedQueryError(name, given, `unknown parameter "${given}"; parameters: ${expected}`);
      }
    }
    const row: sparqljs.ValuePatternRow = {};
    for (const param of query.params) {
      const value = Object.hasOwn(params, param.name) ? params[param.name] : undefined;
      if (value === undefined) {
        if (param.optional) continue;
        throw new NamedQueryError(name, param.name, `missing parameter "${param.name}" (${param.type})`);
      }
      const term =
        typeof value !== "string"
          ? `a ${param.type} given as a string`
          : value.length > MAX_VALUE_LENGTH
            ? `at most ${MAX_VALUE_LENGTH} characters`
            : toTerm(param.type, value);
      if (typeof term === "string") {
        const got = typeof value === "string" ? show(value) : typeof value;
        throw new NamedQueryError(name, param.name, `parameter "${param.name}" must be ${term}; got ${got}`);
      }
      row[`?${param.name}`] = term;
    }
    const where = query.ast.where ?? [];
    const bound: sparqljs.Query =
      Object.keys(row).length === 0
        ? query.ast
        : { ...query.ast, where: [{ type: "values", values: [row] }, ...where] };
    return new sparqljs.Generator().stringify(bound);
  }
}

/** Loads and parses every `.rq` file of `dir` (default: directory/queries). */
export function loadNamedQueries(dir: string = namedQueriesDir): Promise<NamedQueries> {
  return NamedQueries.load(dir);
}
