/**
 * The gateway's access table: every route it serves, with the role it needs (src/security). The
 * auth middleware enforces it, the README's roles table is checked against it, and a test fails
 * when a mounted route has no entry here. A request that matches no entry needs `admin` (fail
 * closed): a route added without an entry is never served to the public by mistake. The manager's
 * entries come from its route table (src/manager/routes.ts).
 */
import { MANAGER_API } from "../manager/routes.js";
import type { Access } from "../security/principal.js";

export interface RouteAccess {
  method: "GET" | "POST" | "PUT" | "PATCH" | "DELETE" | "ALL";
  /** Hono-style path: `:name` one segment, `*` the rest. */
  path: string;
  access: Access;
  /** Directory reads: anonymous when DTC_ANONYMOUS_DISCOVERY=true. */
  discovery?: true;
  /** Counted by the write rate limit. */
  write?: true;
  title: string;
}

const read = (path: string, access: Access, title: string, discovery = false): RouteAccess => ({
  method: "GET",
  path,
  access,
  title,
  ...(discovery ? { discovery: true as const } : {}),
});
const write = (method: RouteAccess["method"], path: string, access: Access, title: string): RouteAccess => ({
  method,
  path,
  access,
  title,
  write: true,
});

/** First match wins: specific entries before general ones. */
export const ROUTES: readonly RouteAccess[] = [
  read("/healthz", "public", "liveness"),
  read("/.well-known/wot", "public", "the directory's TD (says how to authenticate)"),
  read("/ui", "public", "the dashboard"),
  read("/ui/*", "public", "the dashboard's files"),
  read("/metrics", "reader", "Prometheus metrics"),

  // The directory (W3C WoT Discovery).
  read("/things", "reader", "list TDs", true),
  read("/things/:id", "reader", "read a TD", true),
  write("PUT", "/things/:id", "admin", "create or replace a TD"),
  write("POST", "/things", "admin", "register an anonymous TD"),
  write("PATCH", "/things/:id", "admin", "merge-patch a TD"),
  write("DELETE", "/things/:id", "admin", "delete a TD"),
  read("/search/sparql", "reader", "SPARQL search", true),
  { method: "POST", path: "/search/sparql", access: "reader", discovery: true, title: "SPARQL search" },
  read("/search/named", "reader", "list named queries", true),
  read("/search/named/:name", "reader", "run a named query", true),
  read("/search/jsonpath", "reader", "JSONPath search", true),
  read("/events", "reader", "directory notifications", true),
  read("/events/:type", "reader", "directory notifications of one type", true),

  // Twins (node-wot's HTTP binding behind the gateway).
  write("POST", "/twins/:id/actions/installAugmentation", "admin", "install a function"),
  write("POST", "/twins/:id/actions/removeAugmentation", "admin", "remove a function"),
  write("POST", "/twins/:id/actions/:action", "operator", "invoke a twin's action"),
  write("PUT", "/twins/:id/properties/:property", "operator", "write a twin's property"),
  write("PUT", "/twins/:id/properties", "operator", "write a twin's properties"),
  read("/twins/:id", "reader", "a twin's TD"),
  read("/twins/:id/*", "reader", "read or observe a twin's properties and events"),
  { method: "ALL", path: "/twins/*", access: "operator", title: "other twin interactions" },

  // The DTC Manager: its route table (src/manager/routes.ts) says what each needs.
  ...MANAGER_API.map(({ method, path, access, title }) =>
    method === "GET" ? read(`/api${path}`, access, title) : write(method, `/api${path}`, access, title),
  ),
  // API tokens and the caller's principal (src/security/tokens-api.ts).
  read("/api/tokens", "admin", "list API tokens"),
  read("/api/tokens/:id", "admin", "read an API token"),
  write("POST", "/api/tokens", "admin", "create an API token"),
  write("DELETE", "/api/tokens/:id", "admin", "revoke an API token"),
  read("/api/whoami", "reader", "the caller's principal"),
];

interface Compiled {
  route: RouteAccess;
  pattern: RegExp;
}

const escapeRegExp = (s: string) => s.replace(/[.+?^${}()|[\]\\]/g, "\\$&");

function compile(path: string): RegExp {
  const source = path
    .split("/")
    .map((segment) => (segment === "*" ? ".*" : segment.startsWith(":") ? "[^/]+" : escapeRegExp(segment)))
    .join("/");
  return new RegExp(`^${source.replace("/.*", "(?:/.*)?")}/?$`);
}

const COMPILED: Compiled[] = ROUTES.map((route) => ({ route, pattern: compile(route.path) }));

/** The entry a request falls under (HEAD as GET); undefined = none (needs admin). */
export function routeFor(method: string, path: string): RouteAccess | undefined {
  const m = method === "HEAD" ? "GET" : method;
  for (const { route, pattern } of COMPILED) {
    if ((route.method === m || route.method === "ALL") && pattern.test(path)) return route;
  }
  return undefined;
}
