import type { Hono } from "hono";

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
]);

function forwardable(headers: Headers): Headers {
  const out = new Headers();
  headers.forEach((value, name) => {
    if (!NOT_FORWARDED.has(name.toLowerCase())) out.set(name, value);
  });
  return out;
}

/**
 * Routes /twins/{id}/... to the node-wot HTTP server the twins are exposed on, so that twins are
 * reached through the gateway's one public address, and a twin's URLs do not depend on where it
 * runs. Bodies are streamed both ways (long-poll observations stay open as long as they need).
 */
export function mountTwinsProxy(app: Hono, target: () => string): void {
  app.all("/twins/*", async (c) => {
    const url = new URL(c.req.url);
    const path = url.pathname.slice("/twins".length) || "/";
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
    const response = await fetch(`${target()}${path}${url.search}`, init);
    return new Response(response.body, { status: response.status, headers: forwardable(response.headers) });
  });
}
