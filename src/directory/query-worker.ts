import { parentPort } from "node:worker_threads";
import { type JSONValue, jsonpath } from "json-p3";
import { compileJsonPath, evaluatePage, type JsonPathQuery, type JsonPathRefusal } from "./jsonpath-query.js";
import { guardQuery, QueryRefusedError } from "./query-guard.js";

/**
 * A query worker (see query-pool.ts): parses and checks users' SPARQL queries (the query guard) and
 * evaluates JSONPath searches, off the main thread. One job at a time; a job that runs past its
 * query's time limit ends with this thread, which the pool replaces.
 */

export type QueryJob =
  /** Answered with GuardedText. */
  | { type: "guard"; text: string; maxResults: number }
  /** Compiles the JSONPath query the next evaluateJsonPath jobs run; answered with null. */
  | { type: "compileJsonPath"; text: string }
  /** `page`: a JSON array of TDs. Answered with the matches as JSON texts, or null past `maxChars`. */
  | { type: "evaluateJsonPath"; page: string; maxChars: number };

/** A guarded SPARQL query as the store is sent it. */
export interface GuardedText {
  queryType: "SELECT" | "ASK" | "CONSTRUCT" | "DESCRIBE";
  sparql: string;
  limit: number | undefined;
}

export type FromQueryWorker =
  | { type: "ready" }
  | { id: number; ok: true; value: unknown }
  /** The query is refused: the client's fault (a 4xx with this title and detail). */
  | { id: number; ok: false; refusal: JsonPathRefusal }
  /** The job failed otherwise: a bug. */
  | { id: number; ok: false; failure: string };

const port = parentPort;
if (port === null) throw new Error("query-worker.ts runs as a worker thread (see query-pool.ts)");

let compiled: JsonPathQuery | undefined;

function run(job: QueryJob): unknown {
  switch (job.type) {
    case "guard": {
      const { query, sparql } = guardQuery(job.text, { maxResults: job.maxResults });
      // sparqljs keeps LIMIT on every query form; its types declare it on SELECT only.
      const { limit } = query as { limit?: number };
      return { queryType: query.queryType, sparql, limit } satisfies GuardedText;
    }
    case "compileJsonPath": {
      compiled = undefined;
      const result = compileJsonPath(job.text);
      if ("title" in result) throw result;
      compiled = result;
      return null;
    }
    case "evaluateJsonPath": {
      if (compiled === undefined) throw new Error("evaluateJsonPath before compileJsonPath");
      return evaluatePage(compiled, JSON.parse(job.page) as JSONValue, job.maxChars) ?? null;
    }
  }
}

port.on("message", ({ id, job }: { id: number; job: QueryJob }) => {
  let reply: FromQueryWorker;
  try {
    reply = { id, ok: true, value: run(job) };
  } catch (err) {
    if (err instanceof QueryRefusedError)
      reply = { id, ok: false, refusal: { title: "Bad Request", detail: err.message } };
    else if (err instanceof jsonpath.JSONPathError) {
      reply = {
        id,
        ok: false,
        refusal: { title: "Bad Request", detail: `the query failed: ${err.message}` },
      };
    } else if (err instanceof RangeError) {
      // The stack ran out (the limits on nesting should keep every query short of this).
      reply = {
        id,
        ok: false,
        refusal: { title: "Bad Request", detail: `the query is too complex: ${err.message}` },
      };
    } else if (typeof err === "object" && err !== null && "title" in err && "detail" in err) {
      reply = { id, ok: false, refusal: err as JsonPathRefusal };
    } else
      reply = { id, ok: false, failure: err instanceof Error ? (err.stack ?? err.message) : String(err) };
  }
  port.postMessage(reply);
});
port.postMessage({ type: "ready" } satisfies FromQueryWorker);
