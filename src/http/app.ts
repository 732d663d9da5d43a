import { type Context, Hono } from "hono";
import { HTTPException } from "hono/http-exception";
import { matchedRoutes } from "hono/route";
import { METHOD_NAME_ALL } from "hono/router";
import type { RouterRoute } from "hono/types";
import type { Logger } from "../logger.js";
import { APPLY_MEDIA_TYPES } from "../manager/apply.js";
import type { Authenticator } from "../security/authenticator.js";
import { ValidationError } from "../wot/validation.js";
import { authenticate, principalOf } from "./auth.js";
import { corsPolicy, hostAllowlist, rateLimit, requireJsonBody } from "./guards.js";
import { problem } from "./problem.js";
import { routeFor } from "./routes.js";

export interface AppOptions {
  version: string;
  startedAt: number;
  logger: Logger;
  /** Origins browsers may call the API from (CORS); default none, ["*"] any. */
  corsOrigins?: string[];
  /** undefined = authentication off. */
  authenticator?: Authenticator | undefined;
  /** Directory reads without credentials. */
  anonymousDiscovery?: boolean;
  /** Host names answered besides loopback (DNS rebinding). */
  allowedHosts?: string[];
  /** Writes per minute per principal before 429. */
  writesPerMinute?: number;
  /** Told of every response (the gateway's metrics): `route` is the matched route's template. */
  observeRequest?: (method: string, route: string, status: number, durationMs: number) => void;
}

/**
 * The template of the route that answered (`/api/instances/:id`), never the path a client sent: a
 * label value from a bounded set. The last matched route of the request's method, else the last
 * `all` or middleware path matched (`/twins/*`, `/api/*`); "unmatched" when the not-found handler
 * answered, or only the global middleware matched.
 */
export function routeTemplate(c: Context): string {
  if (c.get(UNMATCHED)) return "unmatched";
  const routes = matchedRoutes(c);
  for (let i = routes.length - 1; i >= 0; i--) {
    const route = routes[i] as RouterRoute;
    if (route.method !== METHOD_NAME_ALL) return route.path;
  }
  const last = routes.at(-1)?.path;
  return last === undefined || last === "*" || last === "/*" ? "unmatched" : last;
}

const UNMATCHED = "unmatchedRoute";

declare module "hono" {
  interface ContextVariableMap {
    /** Set by the not-found handler: no route answered. */
    unmatchedRoute: boolean;
  }
}

/** The gateway's Hono app. Each area (directory, manager, twins) mounts its routes here. */
export function createApp({
  version,
  startedAt,
  logger,
  corsOrigins,
  authenticator,
  anonymousDiscovery = false,
  allowedHosts = [],
  writesPerMinute = 1200,
  observeRequest,
}: AppOptions): Hono {
  const app = new Hono();

  // First, so that it sees every answer: those of the guards below too.
  if (observeRequest) {
    app.use("*", async (c, next) => {
      const started = performance.now();
      try {
        await next();
      } finally {
        observeRequest(c.req.method, routeTemplate(c), c.res.status, performance.now() - started);
      }
    });
  }

  // Browsers: no other origin unless configured (CORS), and no other host name than ours (DNS
  // rebinding: a page whose name resolves to 127.0.0.1 would otherwise be same-origin with us).
  app.use("*", corsPolicy(corsOrigins ?? []));
  app.use("*", hostAllowlist({ allowed: allowedHosts }));
  app.use("*", authenticate({ authenticator, anonymousDiscovery }));
  // Per principal, writes only; none without authentication (nobody to tell apart).
  if (authenticator) {
    app.use(
      "*",
      rateLimit({
        limit: writesPerMinute,
        windowMs: 60_000,
        key: (c) => (routeFor(c.req.method, c.req.path)?.write ? principalOf(c)?.id : undefined),
      }),
    );
  }
  // A body only in the media types each area speaks: a page's "simple" text/plain POST, which a
  // browser sends without a CORS preflight, never reaches a route.
  const bodies = (types: string[]) => requireJsonBody({ types });
  app.use(
    "/things/*",
    bodies([
      "application/td+json",
      "application/json",
      "application/ld+json",
      "application/merge-patch+json",
    ]),
  );
  app.use("/things", bodies(["application/td+json", "application/json", "application/ld+json"]));
  app.use(
    "/search/*",
    bodies(["application/sparql-query", "application/x-www-form-urlencoded", "application/sparql-update"]),
  );
  app.use("/api/schemas", bodies(["application/json", "application/tm+json", "application/ld+json"]));
  // A manifest comes as YAML too (src/manager/apply.ts).
  const manifests = bodies(APPLY_MEDIA_TYPES);
  app.use("/api/*", async (c, next) =>
    c.req.path === "/api/schemas"
      ? next()
      : c.req.path === "/api/apply"
        ? manifests(c, next)
        : bodies(["application/json"])(c, next),
  );
  app.use("/twins/*", bodies(["application/json"]));

  app.get("/healthz", (c) =>
    c.json({
      status: "ok",
      name: "dtc",
      version,
      uptime: Math.round((Date.now() - startedAt) / 1000),
    }),
  );

  app.notFound((c) => {
    c.set(UNMATCHED, true);
    return problem(c, { title: "Not Found", status: 404, detail: `No resource at ${c.req.path}` });
  });

  app.onError((err, c) => {
    if (err instanceof ValidationError) {
      return problem(c, {
        title: "Bad Request",
        status: 400,
        detail: err.message,
        validationErrors: err.errors,
      });
    }
    if (err instanceof HTTPException) {
      return problem(c, { title: err.message || "Error", status: err.status });
    }
    logger.error({ err, path: c.req.path }, "unhandled error");
    return problem(c, { title: "Internal Server Error", status: 500 });
  });

  return app;
}
