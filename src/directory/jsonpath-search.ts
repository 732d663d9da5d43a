import type { Hono } from "hono";
import { problem } from "../http/problem.js";
import { spanMiddleware } from "../observability/tracing.js";
import { jsonPathTextLimits } from "./query-limits.js";
import { BUSY_RETRY_AFTER_SECONDS, type QueryPool, QueryRefusal, sharedQueryPool } from "./query-pool.js";
import { type DirectoryStore, QueryError } from "./store.js";
import { enriched } from "./things-api.js";

/**
 * JSONPath search (WoT Discovery section 7.3.2.4.1, informative): RFC 9535 queries, evaluated by
 * json-p3, over the array of all enriched TDs in id order, answering the array of matched values.
 * The array is never built: TDs are read a page at a time here, and the query (jsonpath-query.ts)
 * runs on each page in a query worker (query-pool.ts), which the time limit can end wherever the
 * query is (a regular expression backtracking in match() or search(), nested descendant segments).
 * The text is first checked for its nesting and runs of `!` (query-limits.ts), which json-p3's
 * parser would recurse on until the stack runs out.
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
  /** Where queries run (default: the process's shared pool). */
  pool?: QueryPool;
}

/** Longest JSONPath query, characters (a query string; HTTP servers cap URLs near 16 KiB anyway). */
export const MAX_JSONPATH_CHARS = 8 * 1024;

class ResultTooLarge extends Error {}

export function mountJsonPathSearch(app: Hono, options: JsonPathSearchOptions): void {
  const { store } = options;
  const now = options.now ?? Date.now;
  const timeoutMs = options.timeoutMs ?? 5_000;
  const pageSize = options.pageSize ?? 500;
  const maxResultChars = options.maxResultChars ?? 16 * 1024 * 1024;
  const pool = options.pool ?? sharedQueryPool();

  app.use(
    "/search/jsonpath",
    spanMiddleware("dtc.directory.search", () => ({ "dtc.search.kind": "jsonpath" })),
  );
  app.get("/search/jsonpath", async (c) => {
    const bad = (detail: string, title = "Bad Request") => problem(c, { title, status: 400, detail });
    const text = c.req.query("query");
    if (text === undefined || text.trim() === "") {
      return bad("missing query parameter: /search/jsonpath?query={JSONPath (RFC 9535)}");
    }
    if (text.length > MAX_JSONPATH_CHARS) {
      return bad(`the query is longer than the limit of ${MAX_JSONPATH_CHARS} characters`);
    }
    const beyond = jsonPathTextLimits(text);
    if (beyond !== undefined) return bad(beyond);

    const parts: string[] = [];
    try {
      await pool.run(timeoutMs, async (session) => {
        await session.call({ type: "compileJsonPath", text });
        let chars = 2;
        for (let offset = 0; ; offset += pageSize) {
          const things = await store.list(offset, pageSize);
          if (things.length === 0) break;
          const at = now();
          const page = JSON.stringify(things.map((thing) => enriched(thing, at)));
          const matches = await session.call<string[] | null>({
            type: "evaluateJsonPath",
            page,
            maxChars: maxResultChars - chars,
          });
          if (matches === null) throw new ResultTooLarge();
          for (const json of matches) {
            chars += json.length + 1;
            parts.push(json);
          }
          if (things.length < pageSize) break;
        }
      });
    } catch (err) {
      if (err instanceof QueryRefusal) return bad(err.message, err.title);
      if (err instanceof ResultTooLarge) {
        return bad(
          `the result is larger than ${maxResultChars} characters; narrow the query`,
          "Result Too Large",
        );
      }
      if (err instanceof QueryError && err.kind === "timeout") {
        return bad(
          `the query ran longer than the ${timeoutMs} ms limit; narrow it (a more specific filter)`,
          "Query Timeout",
        );
      }
      if (err instanceof QueryError && err.kind === "busy") {
        c.header("Retry-After", String(BUSY_RETRY_AFTER_SECONDS));
        return problem(c, { title: "Service Unavailable", status: 503, detail: `${err.message}; try again` });
      }
      throw err;
    }
    return c.body(`[${parts.join(",")}]`, 200, { "Content-Type": "application/json" });
  });
}
