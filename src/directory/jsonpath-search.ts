import vm from "node:vm";
import type { Hono } from "hono";
import { type JSONValue, jsonpath } from "json-p3";
import { problem } from "../http/problem.js";
import type { DirectoryStore } from "./store.js";
import { enriched } from "./things-api.js";

/**
 * JSONPath search (WoT Discovery section 7.3.2.4.1, informative): RFC 9535 queries, evaluated by
 * json-p3, over the array of all enriched TDs in id order, answering the array of matched values.
 *
 * The array is never built: TDs are read a page at a time and the query runs on each page, which
 * gives the same result as on the whole array only for queries that do not depend on a TD's
 * position in it or on the array as a whole. Those are answered; the others (`$` alone, an index
 * or slice at the root, several selectors at the root, `..*` or `..[?]` from the root, `$` inside
 * a filter) are refused with a 400 saying so.
 */

export interface JsonPathSearchOptions {
  store: DirectoryStore;
  now?: () => number;
  /** Longest a query may run, ms (default 5,000). */
  timeoutMs?: number;
  /** TDs read from the store at a time (default 500). */
  pageSize?: number;
  /** Largest response body, characters of JSON (default 16 Mi). */
  maxResultChars?: number;
}

const { FilterSelector, IndexSelector, NameSelector, SliceSelector, WildcardSelector } = jsonpath.selectors;
const { FilterQuery, FunctionExtension, InfixExpression, LogicalExpression, PrefixExpression, RootQuery } =
  jsonpath.expressions;
type Query = ReturnType<typeof jsonpath.compile>;
type Expression = InstanceType<typeof LogicalExpression>["expression"];

/** Whether an expression (of a filter) contains an absolute query (`$...`). */
function refersToRoot(expression: Expression): boolean {
  if (expression instanceof RootQuery) return true;
  if (expression instanceof FilterQuery) return queryRefersToRoot(expression.path);
  if (expression instanceof LogicalExpression) return refersToRoot(expression.expression);
  if (expression instanceof PrefixExpression) return refersToRoot(expression.right);
  if (expression instanceof InfixExpression)
    return refersToRoot(expression.left) || refersToRoot(expression.right);
  if (expression instanceof FunctionExtension) return expression.args.some(refersToRoot);
  return false;
}

function queryRefersToRoot(query: Query): boolean {
  return query.segments.some((segment) =>
    segment.selectors.some((s) => s instanceof FilterSelector && refersToRoot(s.expression)),
  );
}

/** Why `query` cannot run page by page (see above), or undefined when it can. */
export function pagewiseRefusal(query: Query): string | undefined {
  const [first] = query.segments;
  if (first === undefined) return "$ alone selects the whole collection; list it with GET /things";
  if (queryRefersToRoot(query)) return "a filter refers to the whole collection ($)";
  // Names select nothing in the root array; only the other selectors matter there.
  const selectors = first.selectors.filter((s) => !(s instanceof NameSelector));
  const descendant = first.token.kind === jsonpath.TokenKind.DDOT;
  if (descendant && selectors.length > 0) {
    return "a descendant segment at the root with other than names (..*, ..[0], ..[?]) selects by position in the collection";
  }
  if (selectors.some((s) => s instanceof IndexSelector || s instanceof SliceSelector)) {
    return "an index or slice at the root selects TDs by position; page with GET /things?offset&limit";
  }
  if (selectors.length > 1) return "several selectors at the root would order results across the collection";
  if (
    selectors.length === 1 &&
    !(selectors[0] instanceof WildcardSelector || selectors[0] instanceof FilterSelector)
  ) {
    return "unsupported selector at the root";
  }
  return undefined;
}

class ResultTooLarge extends Error {}

/**
 * Runs `job` with a hard time limit. The query evaluates synchronously in this thread: a regular
 * expression in match()/search() that backtracks, or nested descendant queries, could otherwise
 * block the event loop for minutes. vm's timeout interrupts any JavaScript running meanwhile,
 * including functions of this realm called from the script.
 */
const runner = new vm.Script("job()");
const sandbox = vm.createContext({ job: undefined as unknown });
function withTimeLimit<T>(job: () => T, ms: number): T {
  // One context for all: jobs run synchronously, so they never overlap.
  sandbox.job = job;
  try {
    return runner.runInContext(sandbox, { timeout: Math.max(1, Math.ceil(ms)) }) as T;
  } finally {
    sandbox.job = undefined;
  }
}
const isTimeout = (err: unknown) => (err as { code?: unknown })?.code === "ERR_SCRIPT_EXECUTION_TIMEOUT";

export function mountJsonPathSearch(app: Hono, options: JsonPathSearchOptions): void {
  const { store } = options;
  const now = options.now ?? Date.now;
  const timeoutMs = options.timeoutMs ?? 5_000;
  const pageSize = options.pageSize ?? 500;
  const maxResultChars = options.maxResultChars ?? 16 * 1024 * 1024;

  app.get("/search/jsonpath", async (c) => {
    const bad = (detail: string, title = "Bad Request") => problem(c, { title, status: 400, detail });
    const text = c.req.query("query");
    if (text === undefined || text.trim() === "") {
      return bad("missing query parameter: /search/jsonpath?query={JSONPath (RFC 9535)}");
    }
    let query: Query;
    try {
      // A fresh environment per request: a query interrupted by the time limit may leave the
      // environment's caches (compiled regular expressions) half updated.
      query = new jsonpath.JSONPathEnvironment({ strict: true }).compile(text);
    } catch (err) {
      if (err instanceof jsonpath.JSONPathError)
        return bad(`the query is not valid JSONPath (RFC 9535): ${err.message}`);
      throw err;
    }
    const refused = pagewiseRefusal(query);
    if (refused !== undefined)
      return bad(`this query is not supported here: ${refused}`, "Unsupported Query");

    const started = performance.now();
    const remaining = () => timeoutMs - (performance.now() - started);
    const timedOut = () =>
      bad(
        `the query ran longer than the ${timeoutMs} ms limit; narrow it (a more specific filter)`,
        "Query Timeout",
      );
    const parts: string[] = [];
    let chars = 2;
    try {
      for (let offset = 0; ; offset += pageSize) {
        if (remaining() <= 0) return timedOut();
        const things = await store.list(offset, pageSize);
        if (things.length === 0) break;
        if (remaining() <= 0) return timedOut();
        const at = now();
        // JsonObject holds unknowns; enriched TDs are JSON all the same.
        const page = things.map((thing) => enriched(thing, at)) as unknown as JSONValue;
        withTimeLimit(() => {
          for (const node of query.lazyQuery(page)) {
            const json = JSON.stringify(node.value);
            chars += json.length + 1;
            if (chars > maxResultChars) throw new ResultTooLarge();
            parts.push(json);
          }
        }, remaining());
        if (things.length < pageSize) break;
      }
    } catch (err) {
      if (isTimeout(err)) return timedOut();
      if (err instanceof ResultTooLarge) {
        return bad(
          `the result is larger than ${maxResultChars} characters; narrow the query`,
          "Result Too Large",
        );
      }
      if (err instanceof jsonpath.JSONPathError) return bad(`the query failed: ${err.message}`);
      throw err;
    }
    return c.body(`[${parts.join(",")}]`, 200, { "Content-Type": "application/json" });
  });
}
