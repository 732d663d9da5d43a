import type { Context, Hono } from "hono";
import Negotiator from "negotiator";
import { limitBody, problem } from "../http/problem.js";
import { type NamedQueries, NamedQueryError } from "./named-queries.js";
import { type GuardedQuery, guardQuery, QueryRefusedError } from "./query-guard.js";
import { type DirectoryStore, QueryError } from "./store.js";

/**
 * SPARQL search of W3C WoT Discovery (section 7.3.2.4.3) over the SPARQL 1.1 Protocol, and the
 * directory's named queries. Every query, named ones too, goes through the query guard
 * (query-guard.ts) before it reaches the store: only SELECT, ASK, CONSTRUCT and DESCRIBE of plain
 * SPARQL 1.1 pass (no SERVICE, no extension functions or magic predicates), the number of results is
 * capped, and the store is sent the text regenerated from the checked syntax tree.
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
  /** Largest POSTed query, bytes (default 64 KiB). */
  maxQueryBytes?: number;
}

export function mountSearchApi(app: Hono, options: SearchApiOptions): void {
  const { store, named } = options;
  const timeoutMs = options.timeoutMs ?? 5_000;
  const maxResults = options.maxResults ?? 10_000;
  const maxQueryBytes = options.maxQueryBytes ?? 64 * 1024;
  const limited = limitBody(maxQueryBytes, "queries");
  const badRequest = (c: Context, detail: string, title = "Bad Request") =>
    problem(c, { title, status: 400, detail });

  /** Guards, caps and runs `text` (never sent as given), answering in the media type the client accepts. */
  async function run(c: Context, text: string): Promise<Response> {
    let guarded: GuardedQuery;
    try {
      guarded = guardQuery(text, { maxResults });
    } catch (err) {
      if (err instanceof QueryRefusedError) return badRequest(c, err.message);
      throw err;
    }
    const { query, sparql } = guarded;

    const offered = query.queryType === "SELECT" || query.queryType === "ASK" ? SOLUTION_TYPES : GRAPH_TYPES;
    const accept = c.req.header("accept");
    const chosen = new Negotiator({ headers: { accept: accept || "*/*" } }).mediaType(offered);
    if (chosen === undefined) {
      return problem(c, {
        title: "Not Acceptable",
        status: 406,
        detail: `${query.queryType} results are served as ${offered.join(", ")}; the request accepts ${accept}`,
      });
    }
    // application/json is the same serialisation as the default of its kind.
    const format = chosen === "application/json" ? (offered[0] as string) : chosen;

    try {
      const result = await store.query(sparql, format, { timeoutMs });
      return c.body(result.body, 200, {
        "Content-Type": chosen === "application/json" ? chosen : result.contentType,
      });
    } catch (err) {
      if (err instanceof QueryError && err.kind === "timeout") {
        return badRequest(
          c,
          `the query ran longer than the ${timeoutMs} ms limit; narrow it (more specific patterns, a LIMIT)`,
          "Query Timeout",
        );
      }
      if (err instanceof QueryError) return badRequest(c, `the store refused the query: ${err.message}`);
      throw err;
    }
  }

  /** SPARQL 1.1 Protocol: the dataset is the directory's, not the client's to choose. */
  const datasetGiven = (params: URLSearchParams) =>
    params.has("default-graph-uri") || params.has("named-graph-uri");
  const noDataset = "default-graph-uri and named-graph-uri are not supported: every query runs over all TDs";

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
