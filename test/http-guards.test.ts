/**
 * The request guards of src/http/guards.ts, each on a tiny Hono app driven in process: media types of
 * bodies (415), Host allowlist against DNS rebinding (421), rate limits (429) and the CORS policy.
 */
import { Hono, type MiddlewareHandler } from "hono";
import { describe, expect, it } from "vitest";
import {
  corsPolicy,
  hostAllowlist,
  isAllowedHost,
  normalizeHost,
  RateLimiter,
  rateLimit,
  requireJsonBody,
} from "../src/http/guards.js";

/** An app with `guard` in front of a route that answers 200 "ok" on every method and path. */
function appWith(guard: MiddlewareHandler): Hono {
  const app = new Hono();
  app.use("*", guard);
  app.all("*", (c) => c.text("ok"));
  return app;
}

/**
 * A request as it arrives off the wire: a body always comes with its Content-Length, and with a
 * Content-Type only when the client sent one (bytes, because fetch would type a string text/plain).
 */
function withBody(method: string, body: string, contentType?: string): RequestInit {
  const bytes = new TextEncoder().encode(body);
  const headers: Record<string, string> = { "Content-Length": String(bytes.byteLength) };
  if (contentType !== undefined) headers["Content-Type"] = contentType;
  return { method, body: bytes, headers };
}

interface ProblemBody {
  type: string;
  title: string;
  status: number;
  detail: string;
  instance: string;
}

async function problemOf(res: Response): Promise<ProblemBody> {
  expect(res.headers.get("content-type")).toBe("application/problem+json");
  return (await res.json()) as ProblemBody;
}

describe("requireJsonBody", () => {
  const app = appWith(requireJsonBody());

  it("refuses a text/plain POST body with 415 problem details naming the accepted and the sent type", async () => {
    const res = await app.request("/api/instances", withBody("POST", '{"package":"p"}', "text/plain"));
    expect(res.status).toBe(415);
    expect(await problemOf(res)).toEqual({
      type: "about:blank",
      title: "Unsupported Media Type",
      status: 415,
      detail: "POST /api/instances accepts application/json; got text/plain",
      instance: "/api/instances",
    });
  });

  it("names the accepted types in Accept-Post on a refused POST", async () => {
    const res = await app.request(
      "/api/instances",
      withBody("POST", "a=b", "application/x-www-form-urlencoded"),
    );
    expect(res.status).toBe(415);
    expect(res.headers.get("accept-post")).toBe("application/json");
    expect(res.headers.get("accept-patch")).toBeNull();
  });

  it("names the accepted types in Accept-Patch on a refused PATCH", async () => {
    const guarded = appWith(requireJsonBody({ types: ["application/merge-patch+json"] }));
    const res = await guarded.request("/things/x", withBody("PATCH", "{}", "application/json"));
    expect(res.status).toBe(415);
    expect(res.headers.get("accept-patch")).toBe("application/merge-patch+json");
    expect(res.headers.get("accept-post")).toBeNull();
  });

  it("refuses PUT and DELETE bodies of other types too", async () => {
    expect((await app.request("/x", withBody("PUT", "{}", "text/plain"))).status).toBe(415);
    expect(
      (await app.request("/x", withBody("DELETE", "{}", "multipart/form-data; boundary=x"))).status,
    ).toBe(415);
  });

  it("refuses a body without Content-Type, saying so", async () => {
    const res = await app.request("/x", withBody("POST", "{}"));
    expect(res.status).toBe(415);
    expect((await problemOf(res)).detail).toBe("POST /x accepts application/json; got no Content-Type");
  });

  it("passes a JSON body, whatever its parameters and the case of the media type", async () => {
    expect((await app.request("/x", withBody("POST", "{}", "application/json"))).status).toBe(200);
    expect((await app.request("/x", withBody("POST", "{}", "application/json; charset=utf-8"))).status).toBe(
      200,
    );
    expect((await app.request("/x", withBody("PUT", "{}", "Application/JSON ;charset=UTF-8"))).status).toBe(
      200,
    );
  });

  it("passes a POST without a body (e.g. /stop), with or without Content-Length: 0", async () => {
    expect((await app.request("/api/instances/d1/stop", { method: "POST" })).status).toBe(200);
    const empty = await app.request("/api/instances/d1/stop", {
      method: "POST",
      headers: { "Content-Length": "0", "Content-Type": "text/plain" },
    });
    expect(empty.status).toBe(200);
  });

  it("treats a chunked body (Transfer-Encoding, no Content-Length) as a body", async () => {
    const res = await app.request("/x", {
      method: "POST",
      body: "{}",
      headers: { "Transfer-Encoding": "chunked", "Content-Type": "text/plain" },
    });
    expect(res.status).toBe(415);
  });

  it("checks an in-process body without Content-Length (app.request, HTTP/2) by its Content-Type", async () => {
    // fetch's Request types a string body text/plain by itself: exactly the browser's simple request.
    expect((await app.request("/x", { method: "POST", body: "{}" })).status).toBe(415);
    const json = await app.request("/x", {
      method: "POST",
      body: "{}",
      headers: { "Content-Type": "application/json" },
    });
    expect(json.status).toBe(200);
  });

  it("leaves GET, HEAD and OPTIONS alone", async () => {
    expect((await app.request("/x")).status).toBe(200);
    expect((await app.request("/x", { method: "HEAD" })).status).toBe(200);
    expect(
      (await app.request("/x", { method: "OPTIONS", headers: { "Content-Type": "text/plain" } })).status,
    ).toBe(200);
  });

  it("accepts every type the caller lists and names them all when refusing", async () => {
    const guarded = appWith(
      requireJsonBody({ types: ["application/sparql-query", "application/x-www-form-urlencoded"] }),
    );
    expect(
      (await guarded.request("/search/sparql", withBody("POST", "ASK {}", "application/sparql-query")))
        .status,
    ).toBe(200);
    expect(
      (
        await guarded.request(
          "/search/sparql",
          withBody("POST", "query=ASK%20%7B%7D", "application/x-www-form-urlencoded"),
        )
      ).status,
    ).toBe(200);
    const refused = await guarded.request("/search/sparql", withBody("POST", "ASK {}", "text/plain"));
    expect(refused.status).toBe(415);
    expect(refused.headers.get("accept-post")).toBe(
      "application/sparql-query, application/x-www-form-urlencoded",
    );
    expect((await problemOf(refused)).detail).toContain(
      "accepts application/sparql-query, application/x-www-form-urlencoded; got text/plain",
    );
  });

  it("refuses to be built without any accepted type", () => {
    expect(() => requireJsonBody({ types: [] })).toThrow(RangeError);
  });
});

describe("isAllowedHost", () => {
  it("allows loopback names and addresses, with or without port", () => {
    for (const host of [
      "localhost",
      "localhost:8080",
      "LOCALHOST.",
      "twin.localhost:8080",
      "127.0.0.1",
      "127.0.0.5",
      "127.255.255.254:80",
      "[::1]",
      "[::1]:8080",
      "::1",
      "[0:0:0:0:0:0:0:1]:8080",
    ]) {
      expect(isAllowedHost(host, []), host).toBe(true);
    }
  });

  it("refuses other hosts when nothing else is allowed", () => {
    for (const host of [
      "evil.example",
      "evil.example:8080",
      "localhost.evil.example",
      "evillocalhost",
      "128.0.0.1",
      "10.0.0.1",
      "0.0.0.0",
      "[::2]:8080",
      "[::ffff:7f00:1]",
    ]) {
      expect(isAllowedHost(host, []), host).toBe(false);
    }
  });

  it("allows listed names and addresses, case-insensitively and whatever the port", () => {
    const allowed = ["gw.example.com", "10.0.0.7", "[fd00::7]", "GW2.Example.Org:8443"];
    expect(isAllowedHost("gw.example.com", allowed)).toBe(true);
    expect(isAllowedHost("GW.EXAMPLE.COM:8443", allowed)).toBe(true);
    expect(isAllowedHost("10.0.0.7:8080", allowed)).toBe(true);
    expect(isAllowedHost("[fd00::7]:8080", allowed)).toBe(true);
    expect(isAllowedHost("gw2.example.org", allowed)).toBe(true);
    expect(isAllowedHost("other.example.com", allowed)).toBe(false);
    expect(isAllowedHost("gw.example.com.evil.example", allowed)).toBe(false);
  });

  it("lets *.example.com cover every subdomain but not example.com itself", () => {
    const allowed = ["*.example.com"];
    expect(isAllowedHost("gw.example.com", allowed)).toBe(true);
    expect(isAllowedHost("a.b.example.com:8080", allowed)).toBe(true);
    expect(isAllowedHost("example.com", allowed)).toBe(false);
    expect(isAllowedHost("evilexample.com", allowed)).toBe(false);
  });

  it("refuses malformed hosts, including ones a URL parser would read as userinfo or path", () => {
    for (const host of ["", " ", "evil.example@localhost", "localhost/x", "localhost:port", "[::1", "a b"]) {
      expect(isAllowedHost(host, ["*"]), host).toBe(false);
    }
  });

  it("normalises hosts to what browsers send: lowercase, no port, brackets or trailing dot", () => {
    expect(normalizeHost("GW.Example.COM.:8080")).toBe("gw.example.com");
    expect(normalizeHost("[0:0:0:0:0:0:0:1]:80")).toBe("::1");
    expect(normalizeHost("evil@localhost")).toBeUndefined();
  });
});

describe("hostAllowlist", () => {
  const app = appWith(hostAllowlist({ allowed: ["gw.example.com", "*.dtc.example"] }));
  const get = (host: string) => app.request("/things", { headers: { Host: host } });

  it("answers a rebinding Host (evil.example) with 421 naming the host and DTC_ALLOWED_HOSTS", async () => {
    const res = await get("evil.example");
    expect(res.status).toBe(421);
    const body = await problemOf(res);
    expect(body.title).toBe("Misdirected Request");
    expect(body.status).toBe(421);
    expect(body.instance).toBe("/things");
    expect(body.detail).toContain('"evil.example"');
    expect(body.detail).toContain("DTC_ALLOWED_HOSTS");
  });

  it("serves loopback hosts: localhost:8080, 127.0.0.5, [::1]:8080", async () => {
    for (const host of ["localhost:8080", "127.0.0.5", "[::1]:8080"]) {
      expect((await get(host)).status, host).toBe(200);
    }
  });

  it("serves an allowed host (gw.example.com) and wildcard subdomains (*.dtc.example)", async () => {
    expect((await get("gw.example.com")).status).toBe(200);
    expect((await get("GW.example.com:443")).status).toBe(200);
    expect((await get("edge-1.dtc.example:8080")).status).toBe(200);
    expect((await get("dtc.example")).status).toBe(421);
  });

  it("answers a request with an empty Host header with 400, and judges one without by its URL", async () => {
    expect((await app.request("/things")).status).toBe(200);
    expect((await app.request("http://evil.example/things")).status).toBe(421);
    const res = await app.request("/things", { headers: { Host: " " } });
    expect(res.status).toBe(400);
    expect((await problemOf(res)).detail).toBe("The Host header is required");
  });

  it("answers a malformed Host header with 400", async () => {
    const res = await get("evil.example@localhost");
    expect(res.status).toBe(400);
    expect((await problemOf(res)).title).toBe("Bad Request");
  });

  it("refuses to be built with an entry that is no host, rather than silently never matching it", () => {
    expect(() => hostAllowlist({ allowed: ["https://gw.example.com/"] })).toThrow(RangeError);
    expect(() => hostAllowlist({ allowed: ["*."] })).toThrow(RangeError);
    expect(() => hostAllowlist({ allowed: ["*"] })).toThrow(RangeError); // would disable the guard: not a host
  });
});

describe("RateLimiter", () => {
  it("allows limit requests per window, then refuses until the window ends", () => {
    const limiter = new RateLimiter(3, 60_000);
    expect(limiter.take("a", 0)).toEqual({ allowed: true, limit: 3, remaining: 2, resetMs: 60_000 });
    expect(limiter.take("a", 1_000).remaining).toBe(1);
    expect(limiter.take("a", 2_000).remaining).toBe(0);
    expect(limiter.take("a", 30_000)).toEqual({ allowed: false, limit: 3, remaining: 0, resetMs: 30_000 });
    expect(limiter.take("a", 59_999).allowed).toBe(false);
    expect(limiter.take("a", 60_000)).toEqual({ allowed: true, limit: 3, remaining: 2, resetMs: 60_000 });
  });

  it("counts keys independently", () => {
    const limiter = new RateLimiter(1, 1_000);
    expect(limiter.take("a", 0).allowed).toBe(true);
    expect(limiter.take("a", 1).allowed).toBe(false);
    expect(limiter.take("b", 2).allowed).toBe(true);
  });

  it("forgets keys idle for a whole window", () => {
    const limiter = new RateLimiter(5, 1_000);
    for (let i = 0; i < 100; i += 1) limiter.take(`k${i}`, i);
    expect(limiter.size()).toBe(100);
    limiter.take("late", 1_050);
    expect(limiter.size()).toBe(50); // k0…k50 idle since ≥ 1 s, k51…k99 and "late" still tracked
  });

  it("tracks at most maxKeys keys (20,000 distinct keys, cap 10,000), evicting the least recently used", () => {
    const limiter = new RateLimiter(1, 60_000);
    expect(limiter.maxKeys).toBe(10_000);
    for (let i = 0; i < 20_000; i += 1) {
      limiter.take(`k${i}`, 0);
      expect(limiter.size()).toBeLessThanOrEqual(10_000);
    }
    expect(limiter.size()).toBe(10_000);
    expect(limiter.take("k19999", 1).allowed).toBe(false); // recent: still counted
    expect(limiter.take("k0", 1).allowed).toBe(true); // evicted: starts afresh
  });

  it("keeps a key that is in use even when the cap evicts", () => {
    const limiter = new RateLimiter(1, 60_000, 2);
    limiter.take("busy", 0);
    limiter.take("other", 1);
    limiter.take("busy", 2); // refused, but touched: now the most recently used
    limiter.take("third", 3); // evicts "other"
    expect(limiter.take("busy", 4).allowed).toBe(false);
    expect(limiter.take("other", 5).allowed).toBe(true);
  });

  it("does not block a key for long when the clock is set back", () => {
    const limiter = new RateLimiter(1, 60_000);
    limiter.take("a", 1_000_000);
    expect(limiter.take("a", 0).allowed).toBe(true);
  });

  it("refuses nonsensical settings", () => {
    expect(() => new RateLimiter(0, 1_000)).toThrow(RangeError);
    expect(() => new RateLimiter(1.5, 1_000)).toThrow(RangeError);
    expect(() => new RateLimiter(1, 0)).toThrow(RangeError);
    expect(() => new RateLimiter(1, 1_000, 0)).toThrow(RangeError);
  });
});

describe("rateLimit", () => {
  function limitedApp(limit = 2, windowMs = 60_000) {
    let clock = 0;
    const guard = rateLimit({
      limit,
      windowMs,
      key: (c) => c.req.header("x-principal"),
      now: () => clock,
    });
    const app = appWith(guard);
    const send = (principal?: string) =>
      app.request("/x", {
        method: "POST",
        headers: principal === undefined ? {} : { "X-Principal": principal },
      });
    return {
      guard,
      send,
      advance: (ms: number) => {
        clock += ms;
      },
    };
  }

  it("lets limit requests through, then answers 429 problem details with Retry-After", async () => {
    const { send, advance } = limitedApp(2, 60_000);
    expect((await send("alice")).status).toBe(200);
    expect((await send("alice")).status).toBe(200);
    advance(15_500);
    const res = await send("alice");
    expect(res.status).toBe(429);
    expect(res.headers.get("retry-after")).toBe("45");
    const body = await problemOf(res);
    expect(body.title).toBe("Too Many Requests");
    expect(body.status).toBe(429);
    expect(body.instance).toBe("/x");
  });

  it("puts RateLimit-Limit, -Remaining and -Reset on every limited answer, allowed or refused", async () => {
    const { send, advance } = limitedApp(2, 60_000);
    const first = await send("alice");
    expect(await first.text()).toBe("ok");
    expect(first.headers.get("ratelimit-limit")).toBe("2");
    expect(first.headers.get("ratelimit-remaining")).toBe("1");
    expect(first.headers.get("ratelimit-reset")).toBe("60");
    expect(first.headers.get("retry-after")).toBeNull();
    await send("alice");
    advance(59_999);
    const refused = await send("alice");
    expect(refused.status).toBe(429);
    expect(refused.headers.get("ratelimit-limit")).toBe("2");
    expect(refused.headers.get("ratelimit-remaining")).toBe("0");
    expect(refused.headers.get("ratelimit-reset")).toBe("1");
    expect(refused.headers.get("retry-after")).toBe("1"); // whole seconds, never 0
  });

  it("allows again once the window has rolled over (injected clock)", async () => {
    const { send, advance } = limitedApp(1, 10_000);
    expect((await send("alice")).status).toBe(200);
    expect((await send("alice")).status).toBe(429);
    advance(10_000);
    expect((await send("alice")).status).toBe(200);
    expect((await send("alice")).status).toBe(429);
  });

  it("limits separate keys independently", async () => {
    const { send } = limitedApp(1);
    expect((await send("alice")).status).toBe(200);
    expect((await send("alice")).status).toBe(429);
    expect((await send("bob")).status).toBe(200);
  });

  it("does not limit requests whose key is undefined, nor label them", async () => {
    const { send, guard } = limitedApp(1);
    for (let i = 0; i < 5; i += 1) {
      const res = await send();
      expect(res.status).toBe(200);
      expect(res.headers.get("ratelimit-limit")).toBeNull();
    }
    expect(guard.limiter.size()).toBe(0);
  });

  it("keeps the headers on a Response the handler builds itself", async () => {
    const app = new Hono();
    app.use("*", rateLimit({ limit: 5, windowMs: 1_000, key: () => "k", now: () => 0 }));
    app.get("/raw", () => new Response("raw", { status: 202 }));
    const res = await app.request("/raw");
    expect(res.status).toBe(202);
    expect(res.headers.get("ratelimit-remaining")).toBe("4");
  });

  it("bounds the keys it tracks (20,000 principals, at most maxKeys tracked)", async () => {
    const guard = rateLimit({
      limit: 1,
      windowMs: 60_000,
      key: (c) => c.req.query("p"),
      now: () => 0,
      maxKeys: 500,
    });
    const app = appWith(guard);
    for (let i = 0; i < 20_000; i += 1) await app.request(`/x?p=${i}`);
    expect(guard.limiter.size()).toBe(500);
  });
});

describe("corsPolicy", () => {
  const preflight = (app: Hono, origin: string) =>
    app.request("/api/instances", {
      method: "OPTIONS",
      headers: {
        Origin: origin,
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type,authorization",
      },
    });

  it("sends no CORS headers at all for an empty list, not even on a preflight", async () => {
    const app = appWith(corsPolicy([]));
    const res = await preflight(app, "https://app.example");
    expect(res.headers.get("access-control-allow-origin")).toBeNull();
    expect(res.headers.get("access-control-allow-methods")).toBeNull();
    const get = await app.request("/things", { headers: { Origin: "https://app.example" } });
    expect(get.headers.get("access-control-allow-origin")).toBeNull();
    expect(get.headers.get("access-control-expose-headers")).toBeNull();
  });

  it("answers a preflight from an allowlisted origin with that origin, the methods, headers and max age", async () => {
    const app = appWith(corsPolicy(["https://app.example", "http://localhost:5173"]));
    const res = await preflight(app, "http://localhost:5173");
    expect(res.status).toBe(204);
    expect(res.headers.get("access-control-allow-origin")).toBe("http://localhost:5173");
    expect(res.headers.get("access-control-allow-methods")).toBe("GET,HEAD,PUT,POST,PATCH,DELETE,OPTIONS");
    expect(res.headers.get("access-control-allow-headers")).toBe(
      "Content-Type,Authorization,If-Match,Last-Event-ID",
    );
    expect(res.headers.get("access-control-max-age")).toBe("600");
    expect(res.headers.get("access-control-allow-credentials")).toBeNull();
    expect(res.headers.get("vary")).toContain("Origin");
  });

  it("gives a preflight from any other origin no Access-Control-Allow-Origin", async () => {
    const app = appWith(corsPolicy(["https://app.example"]));
    expect(
      (await preflight(app, "https://evil.example")).headers.get("access-control-allow-origin"),
    ).toBeNull();
    expect(
      (await preflight(app, "https://app.example.evil.example")).headers.get("access-control-allow-origin"),
    ).toBeNull();
    expect((await preflight(app, "null")).headers.get("access-control-allow-origin")).toBeNull();
  });

  it("matches listed origins as browsers serialise them (case, trailing slash, default port)", async () => {
    const app = appWith(corsPolicy(["HTTPS://App.Example:443/"]));
    expect((await preflight(app, "https://app.example")).headers.get("access-control-allow-origin")).toBe(
      "https://app.example",
    );
  });

  it("exposes Link, Location, Content-Type, ETag, Retry-After and WWW-Authenticate on actual requests", async () => {
    const app = appWith(corsPolicy(["https://app.example"]));
    const res = await app.request("/things", { headers: { Origin: "https://app.example" } });
    expect(res.headers.get("access-control-allow-origin")).toBe("https://app.example");
    expect(res.headers.get("access-control-expose-headers")).toBe(
      "Link,Location,Content-Type,ETag,Retry-After,WWW-Authenticate",
    );
  });

  it("allows any origin without credentials for ['*']", async () => {
    const app = appWith(corsPolicy(["*"]));
    const res = await preflight(app, "https://anyone.example");
    expect(res.headers.get("access-control-allow-origin")).toBe("*");
    expect(res.headers.get("access-control-allow-credentials")).toBeNull();
  });
});
