import sparqljs from "sparqljs";
import { errorMessage } from "../domain/errors.js";
import { XSD } from "../domain/vocabulary.js";
import { sparqlTextLimits } from "./query-limits.js";

/**
 * The query guard: what a user's SPARQL query must satisfy before any store sees it. The store is a
 * general database (Virtuoso runs `bif:` and `sql:` functions that read files, fetch URLs and run
 * SQL; Jena runs `java:` classes), so a query is accepted only when everything it calls is plain
 * SPARQL 1.1, and the text the store gets is regenerated from the checked syntax tree, never the
 * client's own text: comments, pragmas (Virtuoso's `DEFINE ...` preamble, which sparqljs does not
 * parse either) and anything else the parser skipped cannot reach the store.
 *
 * Checked, on the whole tree (subqueries, FILTER, BIND, HAVING, ORDER BY, GROUP BY, aggregates,
 * EXISTS, CONSTRUCT templates alike):
 * - the query is a query (SELECT, ASK, CONSTRUCT, DESCRIBE), not an update;
 * - no SERVICE (the store would fetch any URL a client names);
 * - every operator and aggregate is a SPARQL 1.1 built-in (BUILT_IN_OPERATORS, BUILT_IN_AGGREGATES);
 * - every function called by IRI is an XSD constructor cast (XSD_CASTS) or on ALLOWED_FUNCTIONS;
 * - no predicate (or property path step) is in a namespace that stores read as a property function
 *   / magic predicate (MAGIC_PREDICATE_NAMESPACES: Virtuoso's `bif:contains`, Jena's `apf:` and
 *   `text:query`, Blazegraph's search and query hints, ...). Unlike functions, predicates cannot be
 *   allowlisted (TD vocabularies are open), so this one is a list of known extension namespaces.
 *
 * Bounded, so that neither the guard nor the store's evaluator runs out of stack on it: the text's
 * nesting before parsing (query-limits.ts), then the syntax tree's depth and size (MAX_SYNTAX_DEPTH,
 * MAX_SYNTAX_NODES). Parsing is the costly part (sparqljs: ~10 ms a KiB): callers facing clients run
 * the guard off their main thread (query-pool.ts).
 */

/** SPARQL 1.1 section 17.5 casts, and the XPath date, time and duration constructors stores share. */
export const XSD_CASTS: ReadonlySet<string> = new Set(
  [
    "string",
    "boolean",
    "integer",
    "decimal",
    "double",
    "float",
    "dateTime",
    "date",
    "time",
    "duration",
    "dayTimeDuration",
    "yearMonthDuration",
  ].map((name) => `${XSD}${name}`),
);

/**
 * Extension functions the directory accepts besides the casts, by full IRI. Empty on purpose: an
 * entry here runs on whatever store is configured, so it must be a function known to be free of
 * side effects and of file, network and SQL access on every store the directory supports.
 */
export const ALLOWED_FUNCTIONS: ReadonlySet<string> = new Set<string>();

/** sparqljs's names for the SPARQL 1.1 operators and built-in calls (lower case, but for a few). */
export const BUILT_IN_OPERATORS: ReadonlySet<string> = new Set([
  // Operators.
  "||",
  "&&",
  "=",
  "!=",
  "<",
  ">",
  "<=",
  ">=",
  "in",
  "notin",
  "+",
  "-",
  "*",
  "/",
  "!",
  "UPLUS",
  "UMINUS",
  "exists",
  "notexists",
  // Built-in calls (SPARQL 1.1 section 17.4).
  "str",
  "lang",
  "langmatches",
  "datatype",
  "bound",
  "iri",
  "uri",
  "bnode",
  // BNODE() without an argument keeps its upper case in sparqljs.
  "BNODE",
  "rand",
  "abs",
  "ceil",
  "floor",
  "round",
  "concat",
  "strlen",
  "ucase",
  "lcase",
  "encode_for_uri",
  "contains",
  "strstarts",
  "strends",
  "strbefore",
  "strafter",
  "year",
  "month",
  "day",
  "hours",
  "minutes",
  "seconds",
  "timezone",
  "tz",
  "now",
  "uuid",
  "struuid",
  "md5",
  "sha1",
  "sha256",
  "sha384",
  "sha512",
  "coalesce",
  "if",
  "strlang",
  "strdt",
  "sameterm",
  "isiri",
  "isuri",
  "isblank",
  "isliteral",
  "isnumeric",
  "regex",
  "substr",
  "replace",
]);

export const BUILT_IN_AGGREGATES: ReadonlySet<string> = new Set([
  "count",
  "sum",
  "min",
  "max",
  "avg",
  "sample",
  "group_concat",
]);

/** Namespaces whose predicates some store evaluates as code instead of matching triples. */
export const MAGIC_PREDICATE_NAMESPACES: readonly string[] = [
  // Virtuoso: bif:contains (free text), bif:spatial_*, and SQL procedures.
  "bif:",
  "sql:",
  "http://www.openlinksw.com/schemas/bif#",
  // Jena: property functions by class name, apf:, text:query, spatial:.
  "java:",
  "http://jena.apache.org/ARQ/property#",
  "http://jena.hpl.hp.com/ARQ/property#",
  "http://jena.apache.org/text#",
  "http://jena.apache.org/spatial#",
  // Blazegraph: full-text search, query hints, services by predicate.
  "http://www.bigdata.com/rdf/search#",
  "http://www.bigdata.com/queryHints#",
  "http://www.bigdata.com/rdf#",
  // GraphDB (connectors, Lucene, system predicates), AllegroGraph, Stardog.
  "http://www.ontotext.com/",
  "http://franz.com/ns/allegrograph/",
  "tag:stardog:api:",
];

/** A query the guard refuses; `message` says what and why (the 400's detail). */
export class QueryRefusedError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "QueryRefusedError";
  }
}

/**
 * The deepest and largest syntax tree a query may have, in patterns, triples, expressions and path
 * steps (terms, VALUES rows and IN lists do not count). Chains nest without brackets (`1 - 1 - 1`
 * is `((1 - 1) - 1)`), and Oxigraph's WebAssembly recurses on both depth and length (a thousand
 * triple patterns, path steps or BINDs overflow its stack; 256 nested calls or EXISTS fault it).
 * The named queries use at most 11 levels and 39 nodes.
 */
export const MAX_SYNTAX_DEPTH = 100;
export const MAX_SYNTAX_NODES = 500;

const isRecord = (node: unknown): node is Record<string, unknown> =>
  node !== null && typeof node === "object";

const iriOf = (node: unknown): string | undefined =>
  isRecord(node) && node.termType === "NamedNode" && typeof node.value === "string" ? node.value : undefined;

/** Every IRI a predicate names: itself, or each step of a property path. */
function predicateIris(predicate: unknown, out: string[] = []): string[] {
  const iri = iriOf(predicate);
  if (iri !== undefined) out.push(iri);
  else if (isRecord(predicate) && predicate.type === "path" && Array.isArray(predicate.items)) {
    for (const item of predicate.items) predicateIris(item, out);
  }
  return out;
}

/** Why `node` (a part of a parsed query) may not run, or undefined. */
function offence(node: Record<string, unknown>): string | undefined {
  if (node.type === "service") return "federated queries (SERVICE) are not supported";
  if (node.type === "functionCall") {
    const fn = node.function;
    const iri = typeof fn === "string" ? fn : iriOf(fn);
    if (iri === undefined || !(XSD_CASTS.has(iri) || ALLOWED_FUNCTIONS.has(iri))) {
      return `the function <${iri ?? String(fn)}> is not allowed: only SPARQL 1.1 built-ins and XSD casts (xsd:string, xsd:integer, ...) may be called`;
    }
  }
  if (node.type === "operation" && !BUILT_IN_OPERATORS.has(String(node.operator))) {
    return `the operator ${JSON.stringify(node.operator)} is not a SPARQL 1.1 built-in`;
  }
  if (node.type === "aggregate" && !BUILT_IN_AGGREGATES.has(String(node.aggregation))) {
    return `the aggregate ${JSON.stringify(node.aggregation)} is not a SPARQL 1.1 built-in`;
  }
  if ("predicate" in node) {
    for (const iri of predicateIris(node.predicate)) {
      const namespace = MAGIC_PREDICATE_NAMESPACES.find((ns) => iri.startsWith(ns));
      if (namespace !== undefined) {
        return `the predicate <${iri}> is not allowed: stores read predicates under ${namespace} as functions`;
      }
    }
  }
  return undefined;
}

/** Whether `node` counts towards the syntax tree's size: a pattern, expression, path or triple. */
const counts = (node: Record<string, unknown>) => typeof node.type === "string" || "predicate" in node;

/** Throws QueryRefusedError when `query`'s syntax tree is deeper or larger than the limits. Iterative. */
export function assertWithinSize(query: sparqljs.SparqlQuery): void {
  const stack: [unknown, number][] = [[query, 0]];
  let nodes = 0;
  while (stack.length > 0) {
    const [node, depth] = stack.pop() as [unknown, number];
    if (Array.isArray(node)) {
      for (const item of node) stack.push([item, depth]);
      continue;
    }
    if (!isRecord(node) || "termType" in node) continue;
    let below = depth;
    if (counts(node)) {
      below = depth + 1;
      // A path's steps are terms, each a step of the evaluator all the same.
      nodes += 1 + (node.type === "path" && Array.isArray(node.items) ? node.items.length : 0);
      if (below > MAX_SYNTAX_DEPTH) {
        throw new QueryRefusedError(
          `the query nests patterns and expressions more than ${MAX_SYNTAX_DEPTH} deep (chains such as a || b || c nest too)`,
        );
      }
      if (nodes > MAX_SYNTAX_NODES) {
        throw new QueryRefusedError(
          `the query has more than ${MAX_SYNTAX_NODES} patterns, triples, expressions and path steps; the limit is ${MAX_SYNTAX_NODES}`,
        );
      }
    }
    for (const value of Object.values(node)) stack.push([value, below]);
  }
}

/** Throws QueryRefusedError for the first part of `query` that may not run. */
export function assertAllowed(query: sparqljs.SparqlQuery): void {
  if (query.type === "update") {
    throw new QueryRefusedError(
      "SPARQL updates are not accepted here: the directory is written through /things",
    );
  }
  const visit = (node: unknown): void => {
    if (Array.isArray(node)) {
      for (const item of node) visit(item);
      return;
    }
    if (!isRecord(node)) return;
    const why = offence(node);
    if (why !== undefined) throw new QueryRefusedError(why);
    for (const value of Object.values(node)) visit(value);
  };
  visit(query);
}

/** Virtuoso's pragma preamble, which sparqljs refuses with a bare parse error: said plainly. */
const PRAGMA = /^\s*(?:#[^\n]*\n\s*)*define\s/i;

export interface GuardedQuery {
  /** The parsed, checked query, its LIMIT lowered to the cap. */
  query: sparqljs.Query;
  /** The text to send to the store: generated from `query`, full IRIs, no prefixes, no base. */
  sparql: string;
}

/**
 * Checks `text`'s nesting, parses it, checks the tree (assertWithinSize, assertAllowed), lowers a
 * missing or larger LIMIT of SELECT, CONSTRUCT and DESCRIBE to `maxResults`, and regenerates the
 * text. Throws QueryRefusedError.
 */
export function guardQuery(text: string, options: { maxResults: number }): GuardedQuery {
  const beyond = sparqlTextLimits(text);
  if (beyond !== undefined) throw new QueryRefusedError(beyond);
  let parsed: sparqljs.SparqlQuery;
  try {
    parsed = new sparqljs.Parser().parse(text);
  } catch (err) {
    if (err instanceof RangeError)
      throw new QueryRefusedError(`the query is too complex to parse: ${err.message}`);
    const why = PRAGMA.test(text)
      ? "DEFINE pragmas (a Virtuoso extension) are not accepted"
      : errorMessage(err);
    throw new QueryRefusedError(`the query is not valid SPARQL 1.1: ${why}`);
  }
  assertWithinSize(parsed);
  assertAllowed(parsed);
  const query = parsed as sparqljs.Query;
  // Prefixes and base are dropped: every IRI was resolved by the parser, and the store must not
  // read a prefix (bif:, sql:) or base differently from sparqljs.
  const { prefixes: _prefixes, base: _base, ...rest } = query;
  const capped: sparqljs.Query = { ...rest, prefixes: {} } as sparqljs.Query;
  // sparqljs keeps LIMIT on every query form; its types declare it on SELECT only.
  const { limit } = capped as { limit?: number };
  if (capped.queryType !== "ASK" && (limit === undefined || limit > options.maxResults)) {
    (capped as { limit?: number }).limit = options.maxResults;
  }
  const sparql = new sparqljs.Generator().stringify(capped);
  // What is sent is checked as sent: the generated text, parsed again, must pass too.
  try {
    assertAllowed(new sparqljs.Parser().parse(sparql));
  } catch (err) {
    throw new QueryRefusedError(
      err instanceof QueryRefusedError
        ? err.message
        : `the query cannot be passed on to the store unchanged: ${errorMessage(err)}`,
    );
  }
  return { query: capped, sparql };
}
