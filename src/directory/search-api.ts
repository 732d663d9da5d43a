import type { Context, Hono } from "hono";
import Negotiator from "negotiator";
import { limitBody, problem } from "../http/problem.js";
import { spanMiddleware } from "../observability/tracing.js";
import { type NamedQueries, NamedQueryError } from "./named-queries.js";
import { sparqlTextLimits } from "./query-limits.js";
import { BUSY_RETRY_AFTER_SECONDS, type QueryPool, QueryRefusal, sharedQueryPool } from "./query-pool.js";
import type { GuardedText } from "./query-worker.js";
import { type DirectoryStore, QueryError } from "./store.js";

/**
 * SPARQL search of W3C WoT Discovery (section 7.3.2.4.3) over the SPARQL 1.1 Protocol, and the
 * directory's named queries. Every query, named ones too, goes through the query guard
 * (query-guard.ts) before it reaches the store: only SELECT, ASK, CONSTRUCT and DESCRIBE of plain
 * SPARQL 1.1 pass (no SERVICE, no extension functions or magic predicates), the number of results is
 * capped, and the store is sent the text regenerated from the checked syntax tree. A query's text is
 * first checked for its nesting (query-limits.ts, on this thread: one linear pass), then parsed and
 * checked in a query worker (query-pool.ts): parsing takes ~10 ms a KiB. The time limit covers both
 * the guard and the store's evaluation, counted while the query runs, not while it waits.
 */

export const SPARQL_QUERY = "application/sparql-query";
const FORM = "application/x-www-form-urlencoded";

/** Media types served, the default first (WoT Discovery: JSON for SELECT/ASK, JSON-LD for graphs). */
const SOLUTION_TYPES = [
  "application/sparql-results+json",
  "application/json",
  "application/sparql-results+xml",
  "text/csv",
  "text/tab-separated-values",
];
const GRAPH_TYPES = ["application/ld+json", "application/json", "text/turtle", "application/n-triples"];

export interface SearchApiOptions {
  store: DirectoryStore;
  named: NamedQueries;
  /** Longest a query may run, ms (default 5,000). */
  timeoutMs?: number;
  /** Most solutions a query may return; a larger or missing LIMIT is lowered to it (default 10,000). */
  maxResults?: number;
  /** Largest query, bytes (default 64 KiB). */
  maxQueryBytes?: number;
  /** Where queries are parsed and checked (default: the process's shared pool). */
  pool?: QueryPool;
}

export function mountSearchApi(app: Hono, options: SearchApiOptions): void {
  const { store, named } = options;
  const timeoutMs = options.timeoutMs ?? 5_000;
  const maxResults = options.maxResults ?? 10_000;
  const maxQueryBytes = options.maxQueryBytes ?? 64 * 1024;
  const pool = options.pool ?? sharedQueryPool();
  const limited = limitBody(maxQueryBytes, "queries");
  const badRequest = (c: Context, detail: string, title = "Bad Request") =>
    problem(c, { title, status: 400, detail });

  /** Guards, caps and runs `text` (never sent as given), answering in the media type the client accepts. */
  async function run(c: Context, text: string): Promise<Response> {
    // A query string or a named query's bound text has no body limit of its own.
    if (Buffer.byteLength(text) > maxQueryBytes) {
      return badRequest(c, `the query is longer than the limit of ${maxQueryBytes} bytes`);
    }
    const beyond = sparqlTextLimits(text);
    if (beyond !== undefined) return badRequest(c, beyond);
    let guarded: GuardedText;
    let leftMs: number;
    try {
      ({ guarded, leftMs } = await pool.run(timeoutMs, async (session) => ({
        guarded: await session.call<GuardedText>({ type: "guard", text, maxResults }),
        leftMs: session.remainingMs(),
      })));
    } catch (err) {
      return refused(c, err);
    }
    const { queryType, sparql, limit } = guarded;

    const offered = queryType === "SELECT" || queryType === "ASK" ? SOLUTION_TYPES : GRAPH_TYPES;
    const accept = c.req.header("accept");
    const chosen = new Negotiator({ headers: { accept: accept || "*/*" } }).mediaType(offered);
    if (chosen === undefined) {
      return problem(c, {
        title: "Not Acceptable",
        status: 406,
        detail: `${queryType} results are served as ${offered.join(", ")}; the request accepts ${accept}`,
      });
    }
    // application/json is the same serialisation as the default of its kind.
    const format = chosen === "application/json" ? (offered[0] as string) : chosen;

    try {
      // The rest of the time limit: the guard took its part.
      const result = await store.query(sparql, format, {
        timeoutMs: Math.max(1, Math.floor(leftMs)),
        form: { queryType, limit },
      });
      return c.body(result.body, 200, {
        "Content-Type": chosen === "application/json" ? chosen : result.contentType,
      });
    } catch (err) {
      return refused(c, err);
    }
  }

  /** The answer to a query that did not run to its end: the client's (4xx), or busy (503). */
  function refused(c: Context, err: unknown): Response {
    if (err instanceof QueryRefusal) return badRequest(c, err.message, err.title);
    if (!(err instanceof QueryError)) throw err;
    if (err.kind === "timeout") {
      return badRequest(
        c,
        `the query ran longer than the ${timeoutMs} ms limit; narrow it (more specific patterns, a LIMIT)`,
        "Query Timeout",
      );
    }
    if (err.kind === "busy") {
      c.header("Retry-After", String(BUSY_RETRY_AFTER_SECONDS));
      return problem(c, { title: "Service Unavailable", status: 503, detail: `${err.message}; try again` });
    }
    return badRequest(c, `the store refused the query: ${err.message}`);
  }

  /** SPARQL 1.1 Protocol: the dataset is the directory's, not the client's to choose. */
  const datasetGiven = (params: URLSearchParams) =>
    params.has("default-graph-uri") || params.has("named-graph-uri");
  const noDataset = "default-graph-uri and named-graph-uri are not supported: every query runs over all TDs";

  // One span per search (tracing on): before the routes, which answer without calling on.
  app.use(
    "/search/sparql",
    spanMiddleware("dtc.directory.search", () => ({ "dtc.search.kind": "sparql" })),
  );
  app.use(
    "/search/named/:name",
    spanMiddleware("dtc.directory.search", (c) => ({
      "dtc.search.kind": "named",
      "dtc.search.query": c.req.param("name") ?? "",
    })),
  );

  app.get("/search/sparql", async (c) => {
    const url = new URL(c.req.url);
    if (datasetGiven(url.searchParams)) return badRequest(c, noDataset);
    const text = url.searchParams.get("query");
    if (text === null || text.trim() === "")
      return badRequest(c, "missing query parameter: /search/sparql?query={SPARQL}");
    return run(c, text);
  });

  app.post("/search/sparql", limited, async (c) => {
    const type = (c.req.header("content-type") ?? "").split(";")[0]?.trim().toLowerCase() ?? "";
    if (type === SPARQL_QUERY) {
      const text = await c.req.text();
      if (text.trim() === "") return badRequest(c, "the request body holds no query");
      return run(c, text);
    }
    if (type === "application/sparql-update") {
      return badRequest(c, "SPARQL updates are not accepted here: the directory is written through /things");
    }
    if (type === FORM) {
      const form = new URLSearchParams(await c.req.text());
      if (form.has("update"))
        return badRequest(
          c,
          "SPARQL updates are not accepted here: the directory is written through /things",
        );
      if (datasetGiven(form)) return badRequest(c, noDataset);
      const text = form.get("query");
      if (text === null || text.trim() === "") return badRequest(c, "missing form field query");
      return run(c, text);
    }
    return problem(c, {
      title: "Unsupported Media Type",
      status: 415,
      detail: `POST a query as ${SPARQL_QUERY} or as a ${FORM} form with a query field; got ${type || "no content type"}`,
    });
  });

  app.get("/search/named", (c) => c.json(named.list()));

  app.get("/search/named/:name", async (c) => {
    const name = c.req.param("name");
    if (!named.has(name)) {
      return problem(c, {
        title: "Not Found",
        status: 404,
        detail: `no named query ${JSON.stringify(name)}; GET /search/named lists them`,
      });
    }
    let text: string;
    try {
      text = named.bind(name, c.req.query());
    } catch (err) {
      if (err instanceof NamedQueryError) return badRequest(c, err.message);
      throw err;
    }
    return run(c, text);
  });
}
