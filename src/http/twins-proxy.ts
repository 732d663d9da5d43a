import type { Hono } from "hono";
import { parseClientError } from "../runtime/client-error.js";
import type { JsonObject } from "../wot/rdf.js";
import { problem } from "./problem.js";

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

/**
 * Routes /twins/{id}/... to the node-wot HTTP server of the node the twin runs on now (`target`
 * answers per twin id), so that twins are reached through the gateway's one public address and a
 * twin's URLs do not change when it moves. Bodies are streamed both ways (long-poll observations
 * stay open as long as they need).
 */
export function mountTwinsProxy(
  app: Hono,
  target: (twinId: string) => string | undefined,
  /** Rewrites a twin's TD as served at /twins/{id} (the gateway's security in place of node-wot's). */
  describe: (td: JsonObject) => JsonObject = (td) => td,
): void {
  app.all("/twins/*", async (c) => {
    const url = new URL(c.req.url);
    const path = url.pathname.slice("/twins".length) || "/";
    // A bad percent-escape is the client's error (decodeURIComponent throws on it), and node-wot's
    // server would throw on one in the query outside any handler, taking the process down with it.
    const id = decoded(path.split("/")[1] ?? "");
    const query = url.search.slice(1);
    if (
      id === undefined ||
      !path.split("/").every((segment) => decoded(segment) !== undefined) ||
      !query.split(/[&=]/).every((part) => decoded(part.replace(/\+/g, " ")) !== undefined)
    ) {
      return problem(c, {
        title: "Bad Request",
        status: 400,
        detail: "the path or query has a malformed percent-escape (RFC 3986: % and two hex digits)",
      });
    }
    const base = id === "" ? undefined : target(id);
    if (base === undefined) {
      return problem(c, { title: "Not Found", status: 404, detail: `no twin "${id}" runs here` });
    }
    const method = c.req.method;
    const init: RequestInit & { duplex?: "half" } = {
      method,
      headers: forwardable(c.req.raw.headers),
      redirect: "manual",
      signal: c.req.raw.signal,
    };
    if (method !== "GET" && method !== "HEAD") {
      init.body = c.req.raw.body;
      init.duplex = "half";
    }
    let response: Response;
    try {
      response = await fetch(`${base}${path}${url.search}`, init);
    } catch (err) {
      // The twin went away between lookup and forward (a move's last moment, a removal).
      if (c.req.raw.signal.aborted) throw err;
      return problem(c, {
        title: "Bad Gateway",
        status: 502,
        detail: `twin "${id}" did not answer: ${(err as Error).message}`,
      });
    }
    // node-wot answers 500 for whatever an action handler throws; a twin marks the errors that
    // are the client's (a refused augmentation function), and those become 422.
    if (response.status === 500) {
      const text = await response.text();
      const reason = parseClientError(text);
      if (reason !== undefined) {
        return problem(c, { title: "Unprocessable Content", status: 422, detail: reason });
      }
      return new Response(text, { status: 500, headers: forwardable(response.headers) });
    }
    const isTd = method === "GET" && /^\/[^/]+\/?$/.test(path) && response.status === 200;
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
    return new Response(response.body, { status: response.status, headers: forwardable(response.headers) });
  });
}
