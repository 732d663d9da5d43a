import { once } from "node:events";
import { Agent as HttpAgent } from "node:http";
import { Agent as HttpsAgent } from "node:https";
import { Readable, Writable } from "node:stream";
import type Docker from "dockerode";
import { errorMessage } from "../../domain/errors.js";
import type { Logger } from "../../logger.js";
import { PlatformError } from "../driver.js";
import { type DockerEndpoint, dockerClient, engineAddress, engineProtocol } from "./endpoint.js";

/**
 * One Docker engine as the driver uses it: the dockerode client and the engine's event stream,
 * through which a container's death reaches its instance at once (a killed container is reported
 * within milliseconds, not at the next poll). Nodes on the same engine share one.
 *
 * dockerode has no deadline of its own: an engine that accepts connections and never answers
 * would hold every caller forever. So every request goes through call(), which gives it one, and
 * the client has an agent of its own, so that close() ends every connection to the engine.
 */

/** Longest one engine API request may take by default, ms (DTC_PLATFORM_TIMEOUT_MS). */
export const DEFAULT_ENGINE_TIMEOUT_MS = 10_000;

/** Why a container stopped running, as the engine tells it. */
export interface ContainerExit {
  exitCode: number;
  oomKilled: boolean;
}

type ExitListener = (exit: ContainerExit) => void;

/** Labels of every container the driver creates. */
export const LABEL = {
  gateway: "dtc.gateway",
  node: "dtc.node",
  instance: "dtc.instance",
  package: "dtc.package",
  schema: "dtc.schema",
  httpPort: "dtc.http-port",
  managementPort: "dtc.management-port",
} as const;

const RECONNECT_MS = 1000;

export interface DockerEngineOptions {
  /** Longest one request may take, ms (default DEFAULT_ENGINE_TIMEOUT_MS). */
  timeoutMs?: number;
  logger?: Logger;
}

export class DockerEngine {
  readonly docker: Docker;
  readonly address: string;
  /** Longest one request may take, ms. */
  readonly timeoutMs: number;
  readonly #gatewayId: string;
  readonly #logger: Logger | undefined;
  readonly #agent: HttpAgent;
  /** Aborted by close(): requests still waiting for the engine end at once. */
  readonly #closing = new AbortController();
  readonly #listeners = new Map<string, ExitListener>();
  /** Containers the engine said ran out of memory (the `oom` event comes before `die`). */
  readonly #oom = new Set<string>();
  #stream: NodeJS.ReadableStream | undefined;
  /** Ends the event stream's request (before its answer, or the stream itself). */
  #streamAbort: AbortController | undefined;
  #following: Promise<void> | undefined;
  #reconnect: NodeJS.Timeout | undefined;
  #closed = false;

  /** The engine of `endpoint` (a remote engine's TLS files read, asynchronously). */
  static async connect(
    endpoint: DockerEndpoint,
    gatewayId: string,
    options: DockerEngineOptions = {},
  ): Promise<DockerEngine> {
    const agent =
      engineProtocol(endpoint) === "https" && endpoint.host !== undefined
        ? new HttpsAgent({ keepAlive: true })
        : new HttpAgent({ keepAlive: true });
    return new DockerEngine(
      await dockerClient(endpoint, agent),
      agent,
      engineAddress(endpoint),
      gatewayId,
      options,
    );
  }

  private constructor(
    docker: Docker,
    agent: HttpAgent,
    address: string,
    gatewayId: string,
    options: DockerEngineOptions,
  ) {
    this.docker = docker;
    this.#agent = agent;
    this.address = address;
    this.timeoutMs = options.timeoutMs ?? DEFAULT_ENGINE_TIMEOUT_MS;
    this.#gatewayId = gatewayId;
    this.#logger = options.logger;
  }

  /**
   * Runs one request to the engine (`request` gets the signal to pass to dockerode as
   * `abortSignal`) with a deadline: no answer within `timeoutMs` is a 504 naming the engine and
   * what was being done, and the request is aborted. Also ends when the engine is closed.
   */
  call<T>(
    doing: string,
    request: (signal: AbortSignal) => Promise<T>,
    timeoutMs = this.timeoutMs,
  ): Promise<T> {
    const timeout = AbortSignal.timeout(timeoutMs);
    const signal = AbortSignal.any([timeout, this.#closing.signal]);
    const aborted = () =>
      timeout.aborted
        ? new PlatformError(
            `${doing}: the Docker engine at ${this.address} did not answer within ${timeoutMs} ms`,
            "timeout",
          )
        : new PlatformError(
            `${doing}: the gateway let go of the Docker engine at ${this.address}`,
            "unavailable",
          );
    if (signal.aborted) return Promise.reject(aborted());
    return new Promise<T>((resolve, reject) => {
      // Settles on the deadline even if the request does not heed its signal.
      const onAbort = () => reject(aborted());
      signal.addEventListener("abort", onAbort, { once: true });
      request(signal)
        .then(resolve, (err: unknown) => reject(signal.aborted ? aborted() : err))
        .finally(() => signal.removeEventListener("abort", onAbort));
    });
  }

  /** Calls `listener` once when container `id` stops running; returns the function that stops listening. */
  async onExit(id: string, listener: ExitListener): Promise<() => void> {
    this.#listeners.set(id, listener);
    await this.#follow();
    return () => {
      if (this.#listeners.get(id) === listener) this.#listeners.delete(id);
      this.#oom.delete(id);
    };
  }

  /** Ends the event stream, every request in flight and every connection to the engine. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    clearTimeout(this.#reconnect);
    this.#listeners.clear();
    this.#destroyStream();
    this.#closing.abort();
    this.#agent.destroy();
  }

  #follow(): Promise<void> {
    if (this.#closed) return Promise.resolve();
    this.#following ??= this.#open().catch((err: unknown) => {
      this.#following = undefined;
      this.#retry(err);
    });
    return this.#following;
  }

  async #open(): Promise<void> {
    // The deadline covers the answer's headers only: the stream itself stays open, quiet or not.
    const abort = new AbortController();
    this.#streamAbort = abort;
    const headers = setTimeout(() => abort.abort(), this.timeoutMs);
    let stream: NodeJS.ReadableStream;
    try {
      stream = await this.docker.getEvents({
        filters: JSON.stringify({
          type: ["container"],
          event: ["die", "oom"],
          label: [`${LABEL.gateway}=${this.#gatewayId}`],
        }),
        abortSignal: abort.signal,
      });
    } catch (err) {
      if (abort.signal.aborted && !this.#closed) {
        throw new Error(`the Docker engine at ${this.address} did not answer within ${this.timeoutMs} ms`);
      }
      throw err;
    } finally {
      clearTimeout(headers);
    }
    if (this.#closed) {
      (stream as unknown as { destroy?: () => void }).destroy?.();
      return;
    }
    this.#stream = stream;
    this.docker.modem.followProgress(
      stream,
      (err: Error | null) => {
        if (this.#stream !== stream) return;
        this.#stream = undefined;
        this.#following = undefined;
        this.#retry(err ?? new Error("the event stream ended"));
      },
      (event: { Action?: string; Actor?: { ID?: string; Attributes?: Record<string, string> } }) =>
        this.#event(event),
    );
    // Deaths while the stream was down (the engine restarted, the connection dropped) were missed.
    await this.#checkListeners();
  }

  #event(event: { Action?: string; Actor?: { ID?: string; Attributes?: Record<string, string> } }): void {
    const id = event.Actor?.ID;
    if (id === undefined) return;
    if (event.Action === "oom") {
      this.#oom.add(id);
      return;
    }
    if (event.Action !== "die") return;
    this.#exited(id, {
      exitCode: Number(event.Actor?.Attributes?.exitCode ?? Number.NaN),
      oomKilled: this.#oom.has(id),
    });
  }

  #exited(id: string, exit: ContainerExit): void {
    const listener = this.#listeners.get(id);
    this.#listeners.delete(id);
    this.#oom.delete(id);
    listener?.(exit);
  }

  async #checkListeners(): Promise<void> {
    for (const id of [...this.#listeners.keys()]) {
      try {
        const info = await this.call("inspecting a container", (abortSignal) =>
          this.docker.getContainer(id).inspect({ abortSignal }),
        );
        if (!info.State.Running) {
          this.#exited(id, { exitCode: info.State.ExitCode, oomKilled: info.State.OOMKilled });
        }
      } catch (err) {
        if ((err as { statusCode?: number }).statusCode === 404) {
          this.#exited(id, { exitCode: Number.NaN, oomKilled: false });
        }
      }
    }
  }

  #retry(err: unknown): void {
    if (this.#closed) return;
    this.#logger?.warn(
      { engine: this.address, err: errorMessage(err) },
      "docker event stream lost; reconnecting",
    );
    clearTimeout(this.#reconnect);
    this.#reconnect = setTimeout(() => void this.#follow(), RECONNECT_MS);
    this.#reconnect.unref();
  }

  #destroyStream(): void {
    const stream = this.#stream as unknown as { destroy?: () => void } | undefined;
    this.#stream = undefined;
    this.#following = undefined;
    this.#streamAbort?.abort();
    this.#streamAbort = undefined;
    stream?.destroy?.();
  }
}

/** Log lines of a container that failed at start, quoted in the error. */
const LOG_TAIL = 20;

/** An engine's failure as the port's error: no answer is `unavailable`, a refusal `failed`. */
export function engineError(engine: DockerEngine, err: unknown, doing?: string): PlatformError {
  if (err instanceof PlatformError) return err;
  const status = (err as { statusCode?: number }).statusCode;
  const message = (err as { json?: { message?: string } }).json?.message ?? errorMessage(err);
  const what = `${doing ? `${doing}: ` : ""}the Docker engine at ${engine.address}`;
  return status === undefined
    ? new PlatformError(`${what} does not answer: ${message}`, "unavailable", { cause: err })
    : new PlatformError(`${what} refused: ${message}`, "failed", { cause: err });
}

/** Image.inspect() of dockerode drops its abortSignal: the same request, abortable. */
export function inspectImage(docker: Docker, image: string, abortSignal: AbortSignal): Promise<unknown> {
  return new Promise((resolve, reject) =>
    docker.modem.dial(
      {
        path: `/images/${image}/json`,
        method: "GET",
        abortSignal,
        statusCodes: { 200: true, 404: "no such image", 500: "server error" },
      },
      (err, data) => (err ? reject(err) : resolve(data)),
    ),
  );
}

/** The last lines a container wrote (stdout and stderr, demultiplexed by docker-modem); "" if unreadable. */
export async function containerLogs(engine: DockerEngine, container: Docker.Container): Promise<string> {
  try {
    const framed = (await engine.call("reading a container's logs", (abortSignal) =>
      container.logs({ stdout: true, stderr: true, tail: LOG_TAIL, abortSignal }),
    )) as unknown as Buffer;
    const chunks: Buffer[] = [];
    const sink = new Writable({
      write(chunk: Buffer, _encoding, done) {
        chunks.push(chunk);
        done();
      },
    });
    const source = Readable.from([framed]);
    engine.docker.modem.demuxStream(source, sink, sink);
    await once(source, "end");
    return Buffer.concat(chunks).toString("utf8").trim();
  } catch {
    return ""; // the logs only add to an error already being reported
  }
}

/** Removes a container, forcibly; one already gone (or being removed) is not an error. */
export async function removeContainer(engine: DockerEngine, id: string): Promise<void> {
  try {
    await engine.call("removing a container", (abortSignal) =>
      engine.docker.getContainer(id).remove({ force: true, abortSignal }),
    );
  } catch (err) {
    const status = (err as { statusCode?: number }).statusCode;
    if (status !== 404 && status !== 409) throw err;
  }
}
