import { Hono } from "hono";
import { cors } from "hono/cors";
import { HTTPException } from "hono/http-exception";
import type { Logger } from "../logger.js";
import { ValidationError } from "../wot/validation.js";
import { problem } from "./problem.js";

export interface AppOptions {
  version: string;
  startedAt: number;
  logger: Logger;
  /** Origins browsers may call the API from (CORS); default any ("*"). */
  corsOrigins?: string[];
}

/** The gateway's Hono app. Each area (directory, manager, twins) mounts its routes here. */
export function createApp({ version, startedAt, logger, corsOrigins }: AppOptions): Hono {
  const app = new Hono();

  // Browser consumers (WoT clients in web pages) read TDs, search and follow events from any origin
  // by default; the headers they need to page and to find created TDs are exposed.
  app.use(
    "*",
    cors({
      origin: corsOrigins === undefined || corsOrigins.includes("*") ? "*" : corsOrigins,
      allowMethods: ["GET", "HEAD", "PUT", "POST", "PATCH", "DELETE", "OPTIONS"],
      exposeHeaders: ["Link", "Location", "Content-Type", "ETag"],
      maxAge: 600,
    }),
  );

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
