import { Hono } from "hono";
import { HTTPException } from "hono/http-exception";
import type { Logger } from "../logger.js";
import { ValidationError } from "../wot/validation.js";
import { problem } from "./problem.js";

export interface AppOptions {
  version: string;
  startedAt: number;
  logger: Logger;
}

/** The gateway's Hono app. Each area (directory, manager, twins) mounts its routes here. */
export function createApp({ version, startedAt, logger }: AppOptions): Hono {
  const app = new Hono();

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
