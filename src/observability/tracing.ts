import {
  type Attributes,
  context,
  DiagLogLevel,
  diag,
  type Context as OtelContext,
  propagation,
  type Span,
  SpanKind,
  SpanStatusCode,
  trace,
} from "@opentelemetry/api";
import type { Context, MiddlewareHandler } from "hono";
import { errorMessage } from "../domain/errors.js";
import type { Logger } from "../logger.js";
import { packageVersion } from "../paths.js";

/**
 * Traces with OpenTelemetry, exported over OTLP/HTTP: off (the API's no-op tracer, and nothing of
 * the SDK loaded) unless OTEL_EXPORTER_OTLP_ENDPOINT or OTEL_EXPORTER_OTLP_TRACES_ENDPOINT is set
 * and OTEL_SDK_DISABLED is not true. The SDK reads the other standard variables itself
 * (OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES, OTEL_TRACES_SAMPLER(_ARG), OTEL_BSP_*,
 * OTEL_EXPORTER_OTLP_HEADERS, ...). Code that traces asks `tracingOn()` first, so that a gateway
 * without tracing pays one boolean test per hot-path call.
 */

/** Whether a tracer provider is registered (checked before anything span-related is made). */
let on = false;

export const tracingOn = (): boolean => on;

/** Shortest time between two traced updates of one twin, ms: an update path is sampled, not each. */
export const UPDATE_TRACE_INTERVAL_MS = 10_000;

export interface Tracing {
  /** Whether spans are exported. */
  readonly enabled: boolean;
  /** Exports what is buffered and stops (bounded by SHUTDOWN_DEADLINE_MS); idempotent. */
  shutdown(): Promise<void>;
}

/** Longest shutdown() waits for the last batch to be exported, ms. */
const SHUTDOWN_DEADLINE_MS = 3000;

const OFF: Tracing = { enabled: false, shutdown: async () => {} };

/** Whether `env` asks for traces (an OTLP endpoint, the SDK not disabled, the exporter not "none"). */
export function tracingRequested(env: NodeJS.ProcessEnv = process.env): boolean {
  const value = (name: string) => (env[name] ?? "").trim();
  if (value("OTEL_SDK_DISABLED").toLowerCase() === "true") return false;
  if (value("OTEL_TRACES_EXPORTER").toLowerCase() === "none") return false;
  return value("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") !== "" || value("OTEL_EXPORTER_OTLP_ENDPOINT") !== "";
}

/**
 * Registers the SDK's tracer provider (a BatchSpanProcessor and the OTLP/HTTP exporter, W3C trace
 * context propagation, AsyncLocalStorage context) when the environment asks for traces. Once per
 * process: a second call while one is registered answers the first one's Tracing.
 */
export async function startTracing(options: { serviceName: string; logger?: Logger }): Promise<Tracing> {
  if (!tracingRequested()) return OFF;
  if (current) return current;
  const [{ NodeTracerProvider }, { BatchSpanProcessor }, { OTLPTraceExporter }, resources, core, semconv] =
    await Promise.all([
      import("@opentelemetry/sdk-trace-node"),
      import("@opentelemetry/sdk-trace-base"),
      import("@opentelemetry/exporter-trace-otlp-http"),
      import("@opentelemetry/resources"),
      import("@opentelemetry/core"),
      import("@opentelemetry/semantic-conventions"),
    ]);
  const logger = options.logger;
  // The SDK reports export failures through diag: into the log, once per distinct message.
  if (logger) {
    let last: string | undefined;
    const report = (message: string, ...args: unknown[]) => {
      const text = [message, ...args].map(diagText).join(" ");
      if (text === last) return;
      last = text;
      logger.warn(`tracing: ${text}`);
    };
    diag.setLogger(
      { error: report, warn: report, info: () => {}, debug: () => {}, verbose: () => {} },
      DiagLogLevel.WARN,
    );
  }
  // The service name given here is a default: OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES win.
  const resource = resources
    .defaultResource()
    .merge(
      resources.resourceFromAttributes({
        [semconv.ATTR_SERVICE_NAME]: options.serviceName,
        [semconv.ATTR_SERVICE_VERSION]: packageVersion,
      }),
    )
    .merge(resources.detectResources({ detectors: [resources.envDetector] }));
  const provider = new NodeTracerProvider({
    resource,
    spanProcessors: [new BatchSpanProcessor(new OTLPTraceExporter())],
  });
  provider.register({ propagator: new core.W3CTraceContextPropagator() });
  on = true;
  let stopping: Promise<void> | undefined;
  const tracing: Tracing = {
    enabled: true,
    shutdown: () => {
      stopping ??= (async () => {
        let timer: NodeJS.Timeout | undefined;
        const late = new Promise<void>((resolve) => {
          timer = setTimeout(resolve, SHUTDOWN_DEADLINE_MS);
          timer.unref();
        });
        await Promise.race([
          provider
            .shutdown()
            .catch((err) => logger?.warn({ err: errorMessage(err) }, "tracing: shutdown failed")),
          late,
        ]);
        clearTimeout(timer);
        on = false;
        current = undefined;
        trace.disable();
        context.disable();
        propagation.disable();
      })();
      return stopping;
    },
  };
  current = tracing;
  logger?.info({ service: options.serviceName }, "tracing: exporting spans over OTLP/HTTP");
  return tracing;
}

let current: Tracing | undefined;

/** One line of what the SDK reports (it passes errors, and errors serialised with their stacks). */
function diagText(item: unknown): string {
  let text = item instanceof Error ? item.message : String(item);
  try {
    const parsed = JSON.parse(text) as { message?: unknown; stack?: unknown };
    text = String(parsed.message ?? parsed.stack ?? text);
  } catch {
    // Not JSON: as is.
  }
  return (text.split("\n")[0] ?? "").slice(0, 300);
}

const tracer = () => trace.getTracer("dtc", packageVersion);

/** Marks `span` failed with `err` (an exception event and an error status). */
function failed(span: Span, err: unknown): void {
  span.recordException(err instanceof Error ? err : new Error(errorMessage(err)));
  span.setStatus({ code: SpanStatusCode.ERROR, message: errorMessage(err) });
}

/**
 * Runs `fn` in an active span `name` (its children and log lines see it): an exception is
 * recorded and sets the error status; the span ends when `fn`'s promise settles. With tracing
 * off, `fn` runs as is (span undefined).
 */
export function withSpan<T>(
  name: string,
  attributes: Attributes,
  fn: (span: Span | undefined) => Promise<T>,
  options: { kind?: SpanKind; parent?: OtelContext } = {},
): Promise<T> {
  if (!on) return fn(undefined);
  const parent = options.parent ?? context.active();
  return tracer().startActiveSpan(
    name,
    { attributes, kind: options.kind ?? SpanKind.INTERNAL },
    parent,
    async (span) => {
      try {
        return await fn(span);
      } catch (err) {
        failed(span, err);
        throw err;
      } finally {
        span.end();
      }
    },
  );
}

/** Adds attributes to the active span (e.g. an instance's node, once its record is read). */
export function annotateSpan(attributes: Attributes): void {
  if (!on) return;
  trace.getActiveSpan()?.setAttributes(attributes);
}

/** The W3C trace context of the active span as headers (`traceparent`, `tracestate`); empty without one. */
export function traceHeaders(): Record<string, string> {
  const carrier: Record<string, string> = {};
  if (on) propagation.inject(context.active(), carrier);
  return carrier;
}

/**
 * The context a remote caller's `traceparent` names (`header` reads a request's header), or the
 * active one without it: a twin process's spans join the trace of the gateway that called it.
 */
export function remoteContext(header: (name: string) => string | undefined): OtelContext {
  return propagation.extract(context.active(), undefined, {
    keys: () => ["traceparent", "tracestate"],
    get: (_, key) => header(key),
  });
}

/**
 * The active span's trace and span ids, for log lines (pino's mixin); empty without one. A new
 * object each time: pino merges the line's own fields into it.
 */
export function traceIds(): Record<string, string> {
  if (!on) return {};
  const span = trace.getActiveSpan();
  if (!span) return {};
  const { traceId, spanId, traceFlags } = span.spanContext();
  // A span the sampler dropped still has ids, but no exported trace to find them in.
  if ((traceFlags & 1) === 0) return {};
  return { trace_id: traceId, span_id: spanId };
}

/** When each twin's last traced update was (keyed by the twin object: gone with it). */
const lastTracedUpdate = new WeakMap<object, number>();

/**
 * A `dtc.twin.update` span for one telemetry message of `twin`, at most one per twin per
 * UPDATE_TRACE_INTERVAL_MS (and as the SDK's sampler decides); undefined otherwise. The caller
 * adds events at each step and calls endUpdate().
 */
export function startUpdateSpan(twin: object, twinId: string, topic: string, now: number): Span | undefined {
  // The hot path: nothing is allocated unless a span is started.
  if (!on) return undefined;
  const last = lastTracedUpdate.get(twin);
  if (last !== undefined && now - last < UPDATE_TRACE_INTERVAL_MS) return undefined;
  lastTracedUpdate.set(twin, now);
  return tracer().startSpan("dtc.twin.update", {
    attributes: { "dtc.twin": twinId, "messaging.destination.name": topic },
    kind: SpanKind.CONSUMER,
  });
}

/** Ends an update span with its outcome ("committed", "rejected", "stale"); `err`: why it was rejected. */
export function endUpdate(span: Span | undefined, outcome: string, err?: unknown): void {
  if (!span) return;
  span.setAttribute("dtc.update.outcome", outcome);
  if (err !== undefined) failed(span, err);
  span.end();
}

/** Runs `fn` with `span` active (a twin's listeners publishing an update inside its span). */
export function inSpan<T>(span: Span | undefined, fn: () => T): T {
  if (!span) return fn();
  return context.with(trace.setSpan(context.active(), span), fn);
}

export { SpanKind };

/**
 * A Hono middleware running each request in a span `name` (attributes per request: `attributes`),
 * its status code recorded; a 5xx sets the error status. `parent`: the context the span starts in
 * (e.g. a caller's traceparent); the active one by default.
 */
export function spanMiddleware(
  name: string | ((c: Context) => string),
  attributes: (c: Context) => Attributes = () => ({}),
  parent?: (c: Context) => OtelContext,
): MiddlewareHandler {
  return async (c, next) => {
    if (!on) return next();
    const spanName = typeof name === "string" ? name : name(c);
    await withSpan(
      spanName,
      attributes(c),
      async (span) => {
        await next();
        span?.setAttribute("http.response.status_code", c.res.status);
        if (c.res.status >= 500) span?.setStatus({ code: SpanStatusCode.ERROR });
      },
      { kind: SpanKind.SERVER, ...(parent ? { parent: parent(c) } : {}) },
    );
  };
}

/**
 * The OTEL_* variables a twin container gets (tracing on): the gateway's own, so that its twins
 * export to the same place, but not its service name (theirs is dtc-twin).
 */
export function tracingEnvironment(env: NodeJS.ProcessEnv = process.env): string[] {
  if (!on) return [];
  return Object.entries(env)
    .filter(
      ([name, value]) => name.startsWith("OTEL_") && name !== "OTEL_SERVICE_NAME" && value !== undefined,
    )
    .map(([name, value]) => `${name}=${value}`);
}
