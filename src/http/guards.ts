/**
 * Middleware against browser-borne and abusive requests, for the gateway to mount in front of its routes:
 *
 * - `requireJsonBody`: bodies must declare an accepted media type (415 otherwise), so a web page cannot
 *   drive the API with a "simple" `text/plain` or form request that skips the CORS preflight;
 * - `hostAllowlist`: the Host header must name loopback or a configured host (421 otherwise), so a
 *   DNS-rebound page cannot reach the gateway under the attacker's name;
 * - `rateLimit` (with its in-memory `RateLimiter`): requests per key and window, 429 past the limit;
 * - `corsPolicy`: which origins browsers may call the API from.
 *
 * Every refusal is RFC 9457 problem details.
 */
import type { Context, MiddlewareHandler } from "hono";
import { cors } from "hono/cors";
import { problem } from "./problem.js";

// ---------------------------------------------------------------------------------------------------------
// Media types of request bodies
// ---------------------------------------------------------------------------------------------------------

export interface RequireJsonBodyOptions {
  /** Accepted media types (without parameters); default `["application/json"]`. */
  types?: string[];
}

const BODY_METHODS = new Set(["POST", "PUT", "PATCH", "DELETE"]);

/** The media type of a Content-Type value: without parameters, lowercased; "" when absent. */
function mediaTypeOf(contentType: string | undefined): string {
  return (contentType ?? "").split(";", 1)[0]?.trim().toLowerCase() ?? "";
}

function carriesBody(c: Context): boolean {
  const length = c.req.header("content-length");
  if (length !== undefined) return !/^\s*0+\s*$/.test(length);
  if (c.req.header("transfer-encoding") !== undefined) return true;
  // Neither header: over HTTP/1.1 that means no body, but an HTTP/2 or in-process request (app.request)
  // may still carry one; a declared Content-Type with a body stream is taken as one so those are checked too.
  return c.req.header("content-type") !== undefined && c.req.raw.body !== null;
}

/**
 * Refuses POST, PUT, PATCH and DELETE requests whose body is not of one of `types` with 415 problem
 * details and `Accept-Post` (POST) or `Accept-Patch` (PATCH) naming the accepted types. Requests without a
 * body pass, whatever their Content-Type.
 */
export function requireJsonBody(options: RequireJsonBodyOptions = {}): MiddlewareHandler {
  const types = (options.types ?? ["application/json"]).map((t) => mediaTypeOf(t)).filter((t) => t !== "");
  if (types.length === 0) throw new RangeError("requireJsonBody needs at least one media type");
  const accepted = new Set(types);
  const list = types.join(", ");
  return async (c, next) => {
    const method = c.req.method.toUpperCase();
    if (!BODY_METHODS.has(method) || !carriesBody(c)) return next();
    const contentType = c.req.header("content-type");
    const type = mediaTypeOf(contentType);
    if (accepted.has(type)) return next();
    if (method === "POST") c.header("Accept-Post", list);
    else if (method === "PATCH") c.header("Accept-Patch", list);
    return problem(c, {
      title: "Unsupported Media Type",
      status: 415,
      detail: `${method} ${c.req.path} accepts ${list}; got ${type === "" ? "no Content-Type" : type}`,
    });
  };
}

// ---------------------------------------------------------------------------------------------------------
// Host header (DNS rebinding)
// ---------------------------------------------------------------------------------------------------------

export interface HostAllowlistOptions {
  /** Host names or IP addresses served besides loopback; `*.example.com` covers the subdomains. */
  allowed: string[];
}

/**
 * The host of a Host header value (or a bare host name, IPv4 or IPv6 address) in the form browsers send:
 * lowercase, without port, brackets or trailing dot, IPv4 and IPv6 literals normalised by the WHATWG URL
 * parser. Undefined when malformed.
 */
export function normalizeHost(value: string): string | undefined {
  let host = value.trim();
  // The URL parser would read "evil@localhost" as userinfo and "localhost/x" as a path, and take "*" as a
  // name: none is a host.
  if (host === "" || /[\s@/\\?#*]/.test(host)) return undefined;
  if (!host.startsWith("[") && host.indexOf(":") !== host.lastIndexOf(":")) host = `[${host}]`;
  let hostname: string;
  try {
    hostname = new URL(`http://${host}`).hostname;
  } catch {
    return undefined;
  }
  if (hostname.startsWith("[")) return hostname.slice(1, -1);
  hostname = hostname.endsWith(".") ? hostname.slice(0, -1) : hostname;
  return hostname === "" ? undefined : hostname;
}

function isLoopback(host: string): boolean {
  return (
    host === "localhost" ||
    host.endsWith(".localhost") || // RFC 6761: always resolves to loopback
    host === "::1" ||
    /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(host)
  );
}

type HostMatcher = (host: string) => boolean;

function matcherOf(entry: string): HostMatcher | undefined {
  const trimmed = entry.trim();
  if (trimmed.startsWith("*.")) {
    const suffix = normalizeHost(trimmed.slice(2));
    return suffix === undefined ? undefined : (host) => host.endsWith(`.${suffix}`);
  }
  const exact = normalizeHost(trimmed);
  return exact === undefined ? undefined : (host) => host === exact;
}

function hostAllowed(host: string, matchers: HostMatcher[]): boolean {
  return isLoopback(host) || matchers.some((matches) => matches(host));
}

/**
 * Whether a Host header value (port and IPv6 brackets allowed) names loopback (`localhost`,
 * `*.localhost`, 127.0.0.0/8, `::1`) or one of `allowed` (names or addresses, `*.example.com` for
 * subdomains; case-insensitive). Malformed hosts and entries match nothing.
 */
export function isAllowedHost(host: string, allowed: string[]): boolean {
  const normalized = normalizeHost(host);
  if (normalized === undefined) return false;
  return hostAllowed(
    normalized,
    allowed.map(matcherOf).filter((m) => m !== undefined),
  );
}

/**
 * Answers requests whose Host header (else the URL's host) is not loopback or one of `allowed` with
 * 421 Misdirected Request, and requests without a (well-formed) host with 400. A rebinding page's requests carry the
 * attacker's host name, so they never reach the routes.
 */
export function hostAllowlist({ allowed }: HostAllowlistOptions): MiddlewareHandler {
  const matchers = allowed.map((entry) => {
    const matcher = matcherOf(entry);
    // A typo here would silently lock out the host it meant: refuse it at start-up instead.
    if (matcher === undefined) throw new RangeError(`not a host name, address or *.domain: "${entry}"`);
    return matcher;
  });
  return async (c, next) => {
    // In-process requests (app.request, fetch handlers) may carry no Host: their URL's host is
    // what the server was asked for. Node's HTTP/1.1 server refuses requests without one itself.
    const header = c.req.header("host") ?? new URL(c.req.url).host;
    if (header.trim() === "") {
      return problem(c, { title: "Bad Request", status: 400, detail: "The Host header is required" });
    }
    const host = normalizeHost(header);
    if (host === undefined) {
      return problem(c, { title: "Bad Request", status: 400, detail: `Malformed Host header "${header}"` });
    }
    if (hostAllowed(host, matchers)) return next();
    return problem(c, {
      title: "Misdirected Request",
      status: 421,
      detail:
        `This gateway does not answer to the host "${host}" (a DNS rebinding guard). If it is one of the ` +
        "gateway's names, add it to DTC_ALLOWED_HOSTS (comma-separated; *.example.com covers subdomains).",
    });
  };
}

// ---------------------------------------------------------------------------------------------------------
// Rate limits
// ---------------------------------------------------------------------------------------------------------

/** Keys tracked at most by default: bounds the limiter's memory whatever clients do. */
export const DEFAULT_MAX_KEYS = 10_000;

export interface RateLimitDecision {
  allowed: boolean;
  limit: number;
  /** Requests left in the current window after this one. */
  remaining: number;
  /** Milliseconds until the current window ends (> 0). */
  resetMs: number;
}

interface Window {
  start: number;
  count: number;
  lastSeen: number;
}

/**
 * Fixed windows per key, each starting at the key's first request after the previous one ended. The map
 * is kept in least-recently-used order (a key is re-inserted on each use), so both idle keys (unseen for a
 * whole window, hence with an ended window) and, at the cap, the least recently used key are at its front:
 * `take` is O(1) amortised and memory is bounded by `maxKeys`.
 */
export class RateLimiter {
  readonly #windows = new Map<string, Window>();

  constructor(
    readonly limit: number,
    readonly windowMs: number,
    readonly maxKeys: number = DEFAULT_MAX_KEYS,
  ) {
    if (!Number.isInteger(limit) || limit < 1) throw new RangeError(`limit must be an integer ≥ 1: ${limit}`);
    if (!Number.isFinite(windowMs) || windowMs <= 0)
      throw new RangeError(`windowMs must be > 0: ${windowMs}`);
    if (!Number.isInteger(maxKeys) || maxKeys < 1)
      throw new RangeError(`maxKeys must be an integer ≥ 1: ${maxKeys}`);
  }

  /** Counts one request of `key` at `now` (ms) if the window has room. */
  take(key: string, now: number): RateLimitDecision {
    this.#evictIdle(now);
    let window = this.#windows.get(key);
    if (window === undefined) {
      if (this.#windows.size >= this.maxKeys) this.#evictOldest();
      window = { start: now, count: 0, lastSeen: now };
    } else {
      this.#windows.delete(key); // re-inserted below, at the most recently used end
      // A clock set back must not block the key until it catches up with the old window.
      if (now >= window.start + this.windowMs || now < window.start) {
        window.start = now;
        window.count = 0;
      }
    }
    window.lastSeen = now;
    this.#windows.set(key, window);
    const allowed = window.count < this.limit;
    if (allowed) window.count += 1;
    return {
      allowed,
      limit: this.limit,
      remaining: this.limit - window.count,
      resetMs: window.start + this.windowMs - now,
    };
  }

  /** Keys tracked now. */
  size(): number {
    return this.#windows.size;
  }

  #evictIdle(now: number): void {
    for (const [key, window] of this.#windows) {
      if (window.lastSeen + this.windowMs > now) return;
      this.#windows.delete(key);
    }
  }

  #evictOldest(): void {
    for (const key of this.#windows.keys()) {
      this.#windows.delete(key);
      return;
    }
  }
}

export interface RateLimitOptions {
  /** Requests allowed per key and window. */
  limit: number;
  windowMs: number;
  /** The principal id or client address the request counts against; undefined = not limited. */
  key: (c: Context) => string | undefined;
  /** The clock, in ms; default `Date.now`. */
  now?: () => number;
  /** Keys tracked at most; default {@link DEFAULT_MAX_KEYS}. */
  maxKeys?: number;
}

export type RateLimitMiddleware = MiddlewareHandler & { readonly limiter: RateLimiter };

/**
 * Limits requests per `key(c)`: past `limit` in a window, 429 problem details with `Retry-After`. Every
 * answer to a limited request carries `RateLimit-Limit`, `RateLimit-Remaining` and `RateLimit-Reset`
 * (seconds; draft-ietf-httpapi-ratelimit-headers) so well-behaved clients can pace themselves.
 */
export function rateLimit(options: RateLimitOptions): RateLimitMiddleware {
  const limiter = new RateLimiter(options.limit, options.windowMs, options.maxKeys);
  const now = options.now ?? Date.now;
  const middleware: MiddlewareHandler = async (c, next) => {
    const key = options.key(c);
    if (key === undefined) return next();
    const decision = limiter.take(key, now());
    const resetSeconds = String(Math.max(1, Math.ceil(decision.resetMs / 1000)));
    const setHeaders = () => {
      c.header("RateLimit-Limit", String(decision.limit));
      c.header("RateLimit-Remaining", String(decision.remaining));
      c.header("RateLimit-Reset", resetSeconds);
    };
    if (!decision.allowed) {
      setHeaders();
      c.header("Retry-After", resetSeconds);
      return problem(c, {
        title: "Too Many Requests",
        status: 429,
        detail: `At most ${decision.limit} requests per ${options.windowMs / 1000} s; retry in ${resetSeconds} s`,
      });
    }
    await next();
    // After the handler: its own Response replaces whatever was prepared before.
    setHeaders();
  };
  return Object.assign(middleware, { limiter });
}

// ---------------------------------------------------------------------------------------------------------
// CORS
// ---------------------------------------------------------------------------------------------------------

const CORS_METHODS = ["GET", "HEAD", "PUT", "POST", "PATCH", "DELETE", "OPTIONS"];
const CORS_ALLOW_HEADERS = ["Content-Type", "Authorization", "If-Match", "Last-Event-ID"];
const CORS_EXPOSE_HEADERS = ["Link", "Location", "Content-Type", "ETag", "Retry-After", "WWW-Authenticate"];

/** An origin as browsers serialise it in the Origin header (so `https://App.example/` still matches). */
function serializedOrigin(origin: string): string {
  try {
    const url = new URL(origin);
    return url.origin === "null" ? origin : url.origin;
  } catch {
    return origin;
  }
}

/**
 * CORS for the API: `[]` = no CORS headers at all (the browser refuses other origins' pages), `["*"]` (or
 * any list with `*`) = every origin, without credentials; otherwise exactly the listed origins. Credentials
 * mode is never enabled: API clients send bearer tokens in Authorization, which needs no cookies.
 */
export function corsPolicy(origins: string[]): MiddlewareHandler {
  if (origins.length === 0) return async (_c, next) => next();
  const any = origins.includes("*");
  return cors({
    origin: any ? "*" : origins.map(serializedOrigin),
    allowMethods: CORS_METHODS,
    allowHeaders: CORS_ALLOW_HEADERS,
    exposeHeaders: CORS_EXPOSE_HEADERS,
    maxAge: 600,
  });
}
