import type { Context, Hono } from "hono";
import type { ContentfulStatusCode } from "hono/utils/http-status";
import { errorMessage } from "../domain/errors.js";
import { parseClientError } from "../runtime/client-error.js";
import type { JsonObject } from "../wot/rdf.js";
import { limitBody, problem } from "./problem.js";
import { type Refusal, TwinRequestRules } from "./twin-requests.js";

// Hop-by-hop headers (RFC 9110 section 7.6.1) and those fetch computes itself.
const NOT_FORWARDED = new Set([
  "connection",
  "keep-alive",
  "transfer-encoding",
  "upgrade",
  "proxy-connection",
  "te",
  "trailer",
  "host",
  "content-length",
  // The client's credentials are the gateway's to check, never passed on to a twin (a container of
  // a user's image could replay them).
  "authorization",
  "cookie",
]);

/** Largest body a twin request may carry by default, bytes (the gateway passes DTC_MAX_BODY_BYTES). */
export const DEFAULT_TWIN_BODY_BYTES = 1024 * 1024;

/** Problem titles of the statuses a twin marks its errors with (src/runtime/client-error.ts). */
const TITLES: Record<number, string> = {
  400: "Bad Request",
  404: "Not Found",
  405: "Method Not Allowed",
  409: "Conflict",
  422: "Unprocessable Content",
  503: "Service Unavailable",
};

/** Seconds a client is asked to wait before trying a twin that is moving or restarting again. */
const RETRY_AFTER_SECONDS = 1;

function forwardable(headers: Headers): Headers {
  const out = new Headers();
  headers.forEach((value, name) => {
    if (!NOT_FORWARDED.has(name.toLowerCase())) out.set(name, value);
  });
  return out;
}

/** decodeURIComponent, or undefined for a malformed escape. */
function decoded(text: string): string | undefined {
  try {
    return decodeURIComponent(text);
  } catch {
    return undefined;
  }
}

export interface TwinsProxyOptions {
  /**
   * The TD of a running twin, which requests are checked against before they are forwarded
   * (src/http/twin-requests.ts); without it they pass unchecked. May throw while the twin is being
   * replaced (a restart, a move). A new TD object is a new copy of the twin.
   */
  description?: (twinId: string) => JsonObject | undefined;
  /** Largest request body, bytes (default DEFAULT_TWIN_BODY_BYTES); larger ones get 413. */
  maxBodyBytes?: number;
}

/** Where a twin is now: running at `base` (as `td`), gone, or between two copies of itself. */
type Location =
  | { kind: "running"; base: string; td: JsonObject | undefined }
  | { kind: "gone" }
  | { kind: "busy" };

const unavailable = (c: Context, id: string) => {
  c.header("Retry-After", String(RETRY_AFTER_SECONDS));
  return problem(c, {
    title: "Service Unavailable",
    status: 503,
    detail: `twin "${id}" is being moved or restarted: try again`,
  });
};

const refused = (c: Context, refusal: Refusal) => {
  if (refusal.allow !== undefined) c.header("Allow", refusal.allow);
  const { allow: _, ...p } = refusal;
  return problem(c, p);
};

/**
 * Routes /twins/{id}/... to the node-wot HTTP server of the node the twin runs on now (`target`
 * answers per twin id), so that twins are reached through the gateway's one public address and a
 * twin's URLs do not change when it moves. Requests are checked against the twin's TD first
 * (`options.description`); response bodies are streamed (long-poll observations stay open as long
 * as they need). Nothing a client sends is answered 5xx: node-wot's 500s for the client's faults
 * come marked from the twin, and a twin caught moving or restarting is a 503 to retry.
 */
export function mountTwinsProxy(
  app: Hono,
  target: (twinId: string) => string | undefined,
  /** Rewrites a twin's TD as served at /twins/{id} (the gateway's security in place of node-wot's). */
  describe: (td: JsonObject) => JsonObject = (td) => td,
  options: TwinsProxyOptions = {},
): void {
  /** Per TD object: dropped with it when the twin is replaced. */
  const rules = new WeakMap<JsonObject, TwinRequestRules>();
  const rulesOf = (td: JsonObject) => {
    let found = rules.get(td);
    if (!found) {
      found = new TwinRequestRules(td);
      rules.set(td, found);
    }
    return found;
  };
  /** `target` and `description` throw while the twin is between two copies (a restart, a move). */
  const locate = (id: string): Location => {
    try {
      const base = target(id);
      if (base === undefined) return { kind: "gone" };
      return { kind: "running", base, td: options.description?.(id) };
    } catch {
      return { kind: "busy" };
    }
  };
  /** Whether the twin is still the copy at `at` (same node, same TD object). */
  const same = (id: string, at: Extract<Location, { kind: "running" }>): Location | undefined => {
    const now = locate(id);
    return now.kind === "running" && now.base === at.base && now.td === at.td ? undefined : now;
  };
  /** The answer for a twin that is no longer the copy a request went to. */
  const replaced = (c: Context, id: string, now: Location) =>
    now.kind === "gone"
      ? problem(c, { title: "Not Found", status: 404, detail: `twin "${id}" was removed` })
      : unavailable(c, id);

  app.use("/twins/*", limitBody(options.maxBodyBytes ?? DEFAULT_TWIN_BODY_BYTES, "twin requests"));
  app.all("/twins/*", async (c) => {
    const url = new URL(c.req.url);
    const path = url.pathname.slice("/twins".length) || "/";
    // A bad percent-escape is the client's error (decodeURIComponent throws on it), and node-wot's
    // server would throw on one in the query outside any handler, taking the process down with it.
    const segments = path.split("/").slice(1).map(decoded);
    const query = url.search.slice(1);
    if (
      segments.some((segment) => segment === undefined) ||
      !query.split(/[&=]/).every((part) => decoded(part.replace(/\+/g, " ")) !== undefined)
    ) {
      return problem(c, {
        title: "Bad Request",
        status: 400,
        detail: "the path or query has a malformed percent-escape (RFC 3986: % and two hex digits)",
      });
    }
    const [id = "", ...rest] = segments as string[];
    const at = id === "" ? ({ kind: "gone" } as const) : locate(id);
    if (at.kind === "busy") return unavailable(c, id);
    if (at.kind === "gone") {
      return problem(c, { title: "Not Found", status: 404, detail: `no twin "${id}" runs here` });
    }
    const method = c.req.method;
    const init: RequestInit & { duplex?: "half" } = {
      method,
      headers: forwardable(c.req.raw.headers),
      redirect: "manual",
      signal: c.req.raw.signal,
    };
    if (at.td !== undefined) {
      const twinRules = rulesOf(at.td);
      const operation = twinRules.check(method, rest, query);
      if ("status" in operation) return refused(c, operation);
      if (operation.body) {
        const text = await c.req.text();
        const refusal = twinRules.checkBody(operation, text);
        if (refusal) return refused(c, refusal);
        init.body = text;
      }
    }
    if (init.body === undefined && method !== "GET" && method !== "HEAD") {
      init.body = c.req.raw.body;
      init.duplex = "half";
    }
    let response: Response;
    try {
      response = await fetch(`${at.base}${path}${url.search}`, init);
    } catch (err) {
      if (c.req.raw.signal.aborted) throw err;
      // The twin went away between lookup and forward (a move's last moment, a restart, a removal).
      const now = same(id, at);
      if (now) return replaced(c, id, now);
      return problem(c, {
        title: "Bad Gateway",
        status: 502,
        detail: `twin "${id}" did not answer: ${errorMessage(err)}`,
      });
    }
    const status = response.status;
    // node-wot answers 500 with the message of whatever a handler threw; the twin marks the errors
    // that are the client's (a refused function, a command to a stopped twin) with their status.
    const text = status === 500 || status === 503 ? await response.text() : undefined;
    const marked = text === undefined || status !== 500 ? undefined : parseClientError(text);
    // A twin replaced while a request was on its way answers as a copy that is going: node-wot's
    // 404 for a thing it no longer exposes (the TD said the affordance exists), the 503 that ends
    // its long polls, a dismissed twin's 409, a 500. The client should try the copy that runs now.
    const transient =
      (status === 404 && at.td !== undefined) ||
      status === 503 ||
      (status === 500 && (marked === undefined || marked.status === 409));
    if (transient) {
      const now = same(id, at);
      if (now) {
        if (text === undefined) await response.body?.cancel();
        return replaced(c, id, now);
      }
    }
    if (marked) {
      // The twin refuses writes (the only 405 it marks): reading is what its properties take.
      if (marked.status === 405) c.header("Allow", "GET, HEAD, OPTIONS");
      if (marked.status === 503) c.header("Retry-After", String(RETRY_AFTER_SECONDS));
      return problem(c, {
        title: TITLES[marked.status] ?? "Bad Request",
        status: marked.status as ContentfulStatusCode,
        detail: marked.reason,
      });
    }
    if (status === 503) {
      c.header("Retry-After", response.headers.get("retry-after") ?? String(RETRY_AFTER_SECONDS));
      return problem(c, {
        title: "Service Unavailable",
        status: 503,
        detail: `twin "${id}" could not serve it now (${text?.slice(0, 200)}): try again`,
      });
    }
    if (text !== undefined) return new Response(text, { status, headers: forwardable(response.headers) });
    const isTd = method === "GET" && rest.length <= 1 && (rest[0] ?? "") === "" && status === 200;
    if (isTd) {
      const text = await response.text();
      let body = text;
      try {
        body = JSON.stringify(describe(JSON.parse(text) as JsonObject));
      } catch {
        // Not a TD after all: as the twin said it.
      }
      return new Response(body, { status: 200, headers: forwardable(response.headers) });
    }
    return new Response(response.body, { status, headers: forwardable(response.headers) });
  });
}
