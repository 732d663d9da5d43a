import { Hono } from "hono";
import { HTTPException } from "hono/http-exception";
import type { Logger } from "../logger.js";
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
}: AppOptions): Hono {
  const app = new Hono();

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
  app.use("/api/*", async (c, next) =>
    c.req.path === "/api/schemas" ? next() : bodies(["application/json"])(c, next),
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

  app.notFound((c) =>
    problem(c, { title: "Not Found", status: 404, detail: `No resource at ${c.req.path}` }),
  );

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
