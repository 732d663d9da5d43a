/**
 * The gateway's access table: every route it serves, with the role it needs (src/security). The
 * auth middleware enforces it, the README's roles table is checked against it, and a test fails
 * when a mounted route has no entry here. A request that matches no entry needs `admin` (fail
 * closed): a route added without an entry is never served to the public by mistake.
 */
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

  // The DTC Manager.
  read("/api/td", "reader", "the manager's TD"),
  read("/api/nodes", "reader", "discover nodes"),
  read("/api/nodes/:id", "reader", "read a node"),
  write("POST", "/api/nodes", "admin", "register a node"),
  write("DELETE", "/api/nodes/:id", "admin", "remove a node"),
  read("/api/schemas", "reader", "discover schemas"),
  read("/api/schemas/:id", "reader", "read a schema"),
  write("POST", "/api/schemas", "admin", "register a schema"),
  write("DELETE", "/api/schemas/:id", "admin", "remove a schema"),
  read("/api/packages", "reader", "discover packages"),
  read("/api/packages/:id", "reader", "read a package"),
  read("/api/packages/:id/nodes", "reader", "candidate nodes of a package"),
  write("POST", "/api/packages", "admin", "register a package"),
  write("DELETE", "/api/packages/:id", "admin", "remove a package"),
  read("/api/instances", "reader", "running instances"),
  read("/api/instances/:id", "reader", "read an instance"),
  write("POST", "/api/instances", "operator", "start an instance"),
  write("DELETE", "/api/instances/:id", "operator", "remove an instance"),
  write("POST", "/api/instances/:id/stop", "operator", "stop an instance"),
  write("POST", "/api/instances/:id/start", "operator", "start a stopped instance"),
  write("POST", "/api/instances/:id/restart", "operator", "restart an instance"),
  write("POST", "/api/instances/:id/move", "operator", "move an instance"),
  write("POST", "/api/instances/:id/clone", "operator", "clone an instance"),
  write("POST", "/api/instances/:id/snapshots", "operator", "snapshot an instance"),
  read("/api/snapshots", "reader", "list snapshots"),
  read("/api/snapshots/:id", "reader", "read a snapshot"),
  write("DELETE", "/api/snapshots/:id", "operator", "remove a snapshot"),
  write("POST", "/api/snapshots/:id/restore", "operator", "restore a snapshot"),
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
