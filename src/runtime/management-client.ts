import { createParser } from "eventsource-parser";
import type { TwinState } from "../domain/twin-state.js";
import { traceHeaders } from "../observability/tracing.js";
import type { JsonObject } from "../wot/rdf.js";
import type { TwinStatus } from "./management-api.js";

/**
 * The client of a twin process's management endpoint (src/runtime/management-api.ts), for the
 * platform drivers that run twins in containers. Global fetch; one timeout per request.
 */

/** A failed management request: `status` is the HTTP status, undefined when the process was unreachable. */
export class TwinManagementError extends Error {
  readonly status?: number;
  constructor(message: string, status?: number) {
    super(message);
    this.name = "TwinManagementError";
    this.status = status;
  }
}

export interface TwinHealth {
  /** A twin runs (status "ok"). */
  ok: boolean;
  /** "ok", or "starting", "awaiting-state", "stopping". */
  status: string;
  id?: string;
  lifecycle?: string;
}

/** A twin's lifecycle state and entanglement figures. */
export type ManagementStatus = TwinStatus;

/** An event of GET /events: `status` first, then changes. */
export type TwinManagementEvent =
  | { type: "status"; data: TwinStatus | { lifecycle: null } }
  | { type: "lifecycle" | "entanglement"; data: TwinStatus }
  | { type: "twin"; data: { id: string; td: JsonObject; status: TwinStatus } };

const EVENT_TYPES: ReadonlySet<string> = new Set(["status", "lifecycle", "entanglement", "twin"]);

export interface TwinManagementClientOptions {
  /** Sent as Authorization: Bearer (DTC_TWIN_TOKEN of the process). */
  token?: string;
  /** Per request, ms (default 10,000); for /events, until the stream's headers arrive. */
  timeoutMs?: number;
}

export class TwinManagementClient {
  readonly baseUrl: string;
  readonly #token: string | undefined;
  readonly #timeoutMs: number;

  constructor(baseUrl: string, options: TwinManagementClientOptions = {}) {
    this.baseUrl = baseUrl.replace(/\/+$/, "");
    this.#token = options.token;
    this.#timeoutMs = options.timeoutMs ?? 10_000;
  }

  #headers(extra: Record<string, string> = {}): Record<string, string> {
    return this.#token === undefined ? extra : { ...extra, Authorization: `Bearer ${this.#token}` };
  }

  /** One request; the answer's body parsed as JSON. Error answers become TwinManagementErrors. */
  async #request(
    method: string,
    path: string,
    options: { body?: unknown; timeoutMs?: number; accept?: (status: number) => boolean } = {},
  ): Promise<{ status: number; body: unknown }> {
    const timeoutMs = options.timeoutMs ?? this.#timeoutMs;
    const url = `${this.baseUrl}${path}`;
    let response: Response;
    let text: string;
    try {
      response = await fetch(url, {
        method,
        // traceparent (tracing on, a span active): the twin process's spans join the caller's trace.
        headers: this.#headers({
          ...traceHeaders(),
          ...(options.body === undefined ? {} : { "Content-Type": "application/json" }),
        }),
        body: options.body === undefined ? undefined : JSON.stringify(options.body),
        signal: AbortSignal.timeout(timeoutMs),
      });
      text = await response.text();
    } catch (err) {
      throw unreachable(method, url, err, timeoutMs);
    }
    let body: unknown;
    try {
      body = text === "" ? undefined : JSON.parse(text);
    } catch {
      body = undefined;
    }
    if (!response.ok && !options.accept?.(response.status)) throw answerError(method, url, response, body);
    return { status: response.status, body };
  }

  /** Whether a twin runs. A 503 (starting, awaiting its state, stopping) is an answer, not an error. */
  async health(options: { timeoutMs?: number } = {}): Promise<TwinHealth> {
    const { status, body } = await this.#request("GET", "/health", {
      timeoutMs: options.timeoutMs,
      accept: (s) => s === 503,
    });
    const health = (body ?? {}) as { status?: unknown; id?: unknown; lifecycle?: unknown };
    return {
      ok: status === 200 && health.status === "ok",
      status: typeof health.status === "string" ? health.status : `HTTP ${status}`,
      ...(typeof health.id === "string" ? { id: health.id } : {}),
      ...(typeof health.lifecycle === "string" ? { lifecycle: health.lifecycle } : {}),
    };
  }

  /**
   * Polls /health every 50 ms until a twin runs, for at most `deadlineMs` (a duration). `abort()`
   * is asked before each poll: a reason (e.g. "the container exited with 2") stops the wait with it.
   */
  async waitReady(deadlineMs: number, abort?: () => string | undefined): Promise<void> {
    const until = Date.now() + deadlineMs;
    let last = "no answer yet";
    // The last answer, kept apart: the request cut by the deadline would otherwise hide it.
    let answered: string | undefined;
    for (;;) {
      const reason = abort?.();
      if (reason !== undefined) throw new TwinManagementError(`the twin process is not ready: ${reason}`);
      const remaining = until - Date.now();
      if (remaining <= 0) {
        throw new TwinManagementError(
          `the twin process at ${this.baseUrl} was not ready within ${deadlineMs} ms (last: ${last}${answered !== undefined && answered !== last ? `; last answer: ${answered}` : ""})`,
        );
      }
      try {
        const health = await this.health({ timeoutMs: Math.max(1, Math.min(this.#timeoutMs, remaining)) });
        if (health.ok) return;
        last = `health ${health.status}`;
        answered = last;
      } catch (err) {
        // Unreachable while the container starts; an error answer (e.g. 401 from a proxy) is kept.
        if (!(err instanceof TwinManagementError)) throw err;
        last = err.message;
      }
      await new Promise((resolve) => setTimeout(resolve, Math.min(50, Math.max(0, until - Date.now()))));
    }
  }

  async td(): Promise<JsonObject> {
    return (await this.#request("GET", "/td")).body as JsonObject;
  }

  async status(): Promise<ManagementStatus> {
    return (await this.#request("GET", "/status")).body as ManagementStatus;
  }

  async exportState(): Promise<TwinState> {
    return (await this.#request("GET", "/state")).body as TwinState;
  }

  /** Replaces the process's twin (if any) by one restored from `state`; resolves once it is exposed. */
  async importState(state: TwinState): Promise<{ td: JsonObject; status: ManagementStatus }> {
    return (await this.#request("PUT", "/state", { body: state })).body as {
      td: JsonObject;
      status: ManagementStatus;
    };
  }

  async stop(): Promise<void> {
    await this.#request("POST", "/stop");
  }

  async resume(): Promise<void> {
    await this.#request("POST", "/resume");
  }

  /**
   * Removes the twin (its retained TD cleared unless `handover`) and makes the process exit.
   * Resolves with the twin's final state, or undefined when none ran.
   */
  async shutdown(options: { handover?: boolean } = {}): Promise<TwinState | undefined> {
    const { body } = await this.#request("POST", "/shutdown", {
      body: options.handover === undefined ? {} : { handover: options.handover },
    });
    return ((body as { state?: TwinState | null } | undefined)?.state ?? undefined) as TwinState | undefined;
  }

  /**
   * Subscribes to /events: `onEvent` for each event (a `status` first), `onClose(err?)` once when
   * the stream ends (the process shut down: no error; refused, cut or unreachable: with one). No
   * automatic reconnect. The returned function closes the stream; onClose is not called then.
   */
  events(onEvent: (event: TwinManagementEvent) => void, onClose: (err?: Error) => void): () => void {
    const controller = new AbortController();
    let done = false;
    const finish = (err?: Error) => {
      if (done) return;
      done = true;
      onClose(err);
    };
    const url = `${this.baseUrl}/events`;
    const parser = createParser({
      onEvent: (message) => {
        if (done || message.event === undefined || !EVENT_TYPES.has(message.event)) return;
        let data: unknown;
        try {
          data = JSON.parse(message.data);
        } catch {
          return;
        }
        try {
          onEvent({ type: message.event, data } as TwinManagementEvent);
        } catch {
          // The caller's handler failing must not end the stream.
        }
      },
    });
    (async () => {
      // The timeout guards the connection and headers only: the stream itself stays open.
      const headersTimer = setTimeout(
        () => controller.abort(new DOMException("timed out", "TimeoutError")),
        this.#timeoutMs,
      );
      let response: Response;
      try {
        response = await fetch(url, {
          headers: this.#headers({ Accept: "text/event-stream" }),
          signal: controller.signal,
        });
      } catch (err) {
        throw unreachable("GET", url, err, this.#timeoutMs);
      } finally {
        clearTimeout(headersTimer);
      }
      if (!response.ok || response.body === null) {
        let body: unknown;
        try {
          body = JSON.parse(await response.text());
        } catch {
          body = undefined;
        }
        throw answerError("GET", url, response, body);
      }
      const decoder = new TextDecoder();
      try {
        for await (const chunk of response.body)
          parser.feed(decoder.decode(chunk as Uint8Array, { stream: true }));
      } catch (err) {
        throw unreachable("GET", url, err, this.#timeoutMs);
      }
    })().then(
      () => finish(),
      // Closed by the caller: `done` is set already, nothing is reported.
      (err: Error) => finish(err),
    );
    return () => {
      done = true;
      controller.abort();
    };
  }
}

/** The process did not answer (refused, reset, timed out). */
function unreachable(method: string, url: string, err: unknown, timeoutMs: number): TwinManagementError {
  const e = err as Error & { cause?: { code?: string; message?: string } };
  const reason =
    e?.name === "TimeoutError"
      ? `timed out after ${timeoutMs} ms`
      : (e?.cause?.code ?? e?.cause?.message ?? e?.message ?? String(err));
  return new TwinManagementError(`${method} ${url}: unreachable: ${reason}`);
}

/** An error answer: the problem's detail (or title) and the status. */
function answerError(method: string, url: string, response: Response, body: unknown): TwinManagementError {
  const problem = (body ?? {}) as { detail?: unknown; title?: unknown };
  const detail =
    typeof problem.detail === "string"
      ? problem.detail
      : typeof problem.title === "string"
        ? problem.title
        : `${method} ${url}: HTTP ${response.status}`;
  return new TwinManagementError(detail, response.status);
}
