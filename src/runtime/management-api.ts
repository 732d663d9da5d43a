import { createHash, timingSafeEqual } from "node:crypto";
import { type Context, Hono } from "hono";
import { streamSSE } from "hono/streaming";
import type { EntanglementFigures } from "../domain/entanglement.js";
import { errorMessage } from "../domain/errors.js";
import type { LifecycleState } from "../domain/lifecycle.js";
import type { TwinState } from "../domain/twin-state.js";
import { limitBody, problem } from "../http/problem.js";
import type { Logger } from "../logger.js";
import { remoteContext, spanMiddleware } from "../observability/tracing.js";
import type { JsonObject } from "../wot/rdf.js";
import { isObject } from "../wot/thing-model.js";
import { AugmentationError } from "./augmentation.js";
import { TwinStateError } from "./twin.js";
import { TwinConflictError, TwinNotFoundError } from "./twin-runtime.js";

/**
 * The management endpoint of a standalone twin process (src/twin-main.ts): what a container
 * platform driver uses to watch and steer the one twin in the container. JSON; errors are RFC
 * 9457 problem details. Thin: parse, call the process, answer. The wire types live here so that
 * the client (management-client.ts) shares them without importing the server.
 */

/** A twin's status as the routes and events report it. */
export interface TwinStatus {
  lifecycle: LifecycleState;
  entanglement?: EntanglementFigures;
}

/** Where the process is: a twin runs only in `running`. */
export type ProcessPhase = "starting" | "awaiting-state" | "running" | "stopping";

export type ProcessHealth =
  | { status: "ok"; id: string; lifecycle: LifecycleState }
  | { status: Exclude<ProcessPhase, "running">; id: string };

/** What the process pushes to /events subscribers (besides the first `status`). */
export type TwinProcessEvent =
  | { type: "lifecycle" | "entanglement"; data: TwinStatus }
  | { type: "twin"; data: { id: string; td: JsonObject; status: TwinStatus } };

export interface TwinProcessSubscriber {
  event(event: TwinProcessEvent): void;
  /** The process is shutting down: no more events. */
  closed(): void;
}

/** The operations the routes call (implemented by TwinProcess). */
export interface ManagedTwinProcess {
  health(): ProcessHealth;
  /** The current status; throws NoTwinError when no twin runs. */
  status(): TwinStatus;
  /** The status, or a null lifecycle while no twin runs (the first event of /events). */
  currentStatus(): TwinStatus | { lifecycle: null };
  td(): JsonObject;
  exportState(): TwinState;
  importState(state: unknown): Promise<{ td: JsonObject; status: TwinStatus }>;
  stop(): Promise<TwinStatus>;
  resume(): Promise<TwinStatus>;
  shutdown(options: { handover?: boolean }): Promise<TwinState | undefined>;
  subscribe(subscriber: TwinProcessSubscriber): () => void;
}

/** No twin runs (awaiting its state, or being replaced): 409. */
export class NoTwinError extends Error {
  constructor(message = "no twin runs in this process (it awaits PUT /state)") {
    super(message);
    this.name = "NoTwinError";
  }
}

/** The process is shutting down: 503. */
export class ShuttingDownError extends Error {
  constructor() {
    super("the twin process is shutting down");
    this.name = "ShuttingDownError";
  }
}

/** A request the routes cannot read: 400. */
class BadRequestError extends Error {}

export interface ManagementApiOptions {
  process: ManagedTwinProcess;
  /** Bearer token for every route but GET /health; undefined = open. */
  token?: string;
  /** GET /metrics accepts this bearer token too (DTC_METRICS_TOKEN: Prometheus's, not the gateway's). */
  metricsToken?: string;
  /** The Prometheus text exposition GET /metrics answers; absent: no /metrics route. */
  metrics?: () => Promise<{ contentType: string; body: string }>;
  /** Largest request body (a state with its history can be large), bytes (default 32 MiB). */
  maxBodyBytes?: number;
  /** How often an idle event stream gets a comment line, ms (default 15,000). */
  keepAliveMs?: number;
  logger?: Logger;
}

const SSE_HEADERS = {
  "Content-Type": "text/event-stream",
  "Cache-Control": "no-cache",
  "X-Accel-Buffering": "no",
};

/** Events queued for a stream that does not read before it is dropped (it can reconnect). */
const MAX_PENDING_EVENTS = 1000;

/** Constant-time comparison of any two strings (timingSafeEqual needs equal lengths: hash first). */
function sameSecret(given: string, expected: string): boolean {
  const digest = (s: string) => createHash("sha256").update(s).digest();
  return timingSafeEqual(digest(given), digest(expected));
}

async function jsonBody(c: Context): Promise<unknown> {
  const text = await c.req.text();
  if (text.trim() === "") return undefined;
  try {
    return JSON.parse(text);
  } catch (err) {
    throw new BadRequestError(`the body is not JSON: ${errorMessage(err)}`);
  }
}

export function createManagementApp(options: ManagementApiOptions): Hono {
  const { process: proc, token, logger } = options;
  const keepAliveMs = options.keepAliveMs ?? 15_000;
  const app = new Hono();

  const managementTokens = token !== undefined ? [token] : [];
  // Prometheus scrapes with its own token, which opens /metrics only.
  const metricsTokens = [
    ...managementTokens,
    ...(options.metricsToken !== undefined ? [options.metricsToken] : []),
  ];
  if (metricsTokens.length > 0) {
    app.use("*", async (c, next) => {
      // Health stays open: Docker's HEALTHCHECK and readiness probes carry no credentials.
      if (c.req.path === "/health" && (c.req.method === "GET" || c.req.method === "HEAD")) return next();
      const metrics = c.req.path === "/metrics";
      const accepted = metrics ? metricsTokens : managementTokens;
      if (accepted.length === 0) return next();
      const match = /^Bearer +(\S+) *$/i.exec(c.req.header("authorization") ?? "");
      const given = match?.[1];
      if (given === undefined || !accepted.some((t) => sameSecret(given, t))) {
        c.header("WWW-Authenticate", 'Bearer realm="dtc-twin"');
        return problem(c, {
          title: "Unauthorized",
          status: 401,
          detail: `the management endpoint needs Authorization: Bearer <${metrics && options.metricsToken !== undefined ? "DTC_METRICS_TOKEN" : "DTC_TWIN_TOKEN"}>`,
        });
      }
      return next();
    });
  }
  app.use("*", limitBody(options.maxBodyBytes ?? 32 * 1024 * 1024, "management requests"));
  // The operations a driver asks for are spans in the trace its traceparent names (tracing on).
  const parent = (c: Context) => remoteContext((name) => c.req.header(name));
  const twin = () => ({ "dtc.twin": proc.health().id });
  app.use(
    "/state",
    spanMiddleware((c) => (c.req.method === "PUT" ? "dtc.twin.import" : "dtc.twin.export"), twin, parent),
  );
  for (const operation of ["stop", "resume", "shutdown"]) {
    app.use(`/${operation}`, spanMiddleware(`dtc.twin.${operation}`, twin, parent));
  }

  app.onError((err, c) => {
    if (err instanceof BadRequestError || err instanceof TwinStateError || err instanceof AugmentationError) {
      return problem(c, { title: "Bad Request", status: 400, detail: err.message });
    }
    if (err instanceof TwinConflictError || err instanceof NoTwinError || err instanceof TwinNotFoundError) {
      return problem(c, { title: "Conflict", status: 409, detail: err.message });
    }
    if (err instanceof ShuttingDownError) {
      return problem(c, { title: "Service Unavailable", status: 503, detail: err.message });
    }
    logger?.error({ err, path: c.req.path }, "management: unhandled error");
    return problem(c, { title: "Internal Server Error", status: 500, detail: errorMessage(err) });
  });
  app.notFound((c) =>
    problem(c, {
      title: "Not Found",
      status: 404,
      detail: `no management route ${c.req.method} ${c.req.path}`,
    }),
  );

  app.get("/health", (c) => {
    const health = proc.health();
    return c.json(health, health.status === "ok" ? 200 : 503);
  });

  app.get("/td", (c) => c.body(JSON.stringify(proc.td()), 200, { "Content-Type": "application/td+json" }));

  app.get("/status", (c) => c.json(proc.status()));

  const metrics = options.metrics;
  if (metrics) {
    app.get("/metrics", async (c) => {
      const { contentType, body } = await metrics();
      return c.body(body, 200, { "Content-Type": contentType });
    });
  }

  app.get("/state", (c) => c.json(proc.exportState()));

  app.put("/state", async (c) => c.json(await proc.importState(await jsonBody(c))));

  app.post("/stop", async (c) => c.json(await proc.stop()));

  app.post("/resume", async (c) => c.json(await proc.resume()));

  app.post("/shutdown", async (c) => {
    const body = await jsonBody(c);
    if (body !== undefined && !isObject(body))
      throw new BadRequestError('the body must be {"handover": boolean}');
    const handover = body?.handover;
    if (handover !== undefined && typeof handover !== "boolean") {
      throw new BadRequestError("handover must be true or false");
    }
    const state = await proc.shutdown({ handover });
    return c.json({ state: state ?? null });
  });

  app.get("/events", (c) => {
    // Hono answers HEAD with the GET route and drops the body unread: nothing would end the stream.
    if (c.req.method === "HEAD") return c.body(null, 200, SSE_HEADERS);
    for (const [name, value] of Object.entries(SSE_HEADERS)) c.header(name, value);
    return streamSSE(c, async (stream) => {
      const pending: TwinProcessEvent[] = [];
      let ended = false;
      let wake: (() => void) | undefined;
      const end = () => {
        ended = true;
        wake?.();
      };
      // Subscribed before the first status is read, so that no change falls in between.
      const unsubscribe = proc.subscribe({
        event: (event) => {
          // A consumer this far behind is dropped rather than buffered without bound (aborting
          // also releases a write stuck behind a client that stopped reading).
          if (pending.length >= MAX_PENDING_EVENTS) {
            pending.length = 0;
            end();
            stream.abort();
          } else {
            pending.push(event);
            wake?.();
          }
        },
        closed: end,
      });
      stream.onAbort(end);
      try {
        await stream.writeSSE({ event: "status", data: JSON.stringify(proc.currentStatus()) });
        // Events queued before the end (a twin's last lifecycle change at shutdown) still go out.
        for (;;) {
          const next = pending.shift();
          if (next !== undefined) {
            await stream.writeSSE({ event: next.type, data: JSON.stringify(next.data) });
            continue;
          }
          if (ended) break;
          let timer: NodeJS.Timeout | undefined;
          const idle = await new Promise<boolean>((resolve) => {
            wake = () => resolve(false);
            timer = setTimeout(() => resolve(true), keepAliveMs);
          });
          clearTimeout(timer);
          wake = undefined;
          if (idle) await stream.write(": keep-alive\n\n");
        }
      } finally {
        unsubscribe();
      }
    });
  });

  return app;
}
