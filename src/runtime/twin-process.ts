import type { Server } from "node:http";
import type { AddressInfo } from "node:net";
import { serve } from "@hono/node-server";
import { collectDefaultMetrics, Registry } from "prom-client";
import { z } from "zod";
import { ConfigError } from "../config.js";
import { errorMessage } from "../domain/errors.js";
import { LIFECYCLE_STATES } from "../domain/lifecycle.js";
import type { TwinState } from "../domain/twin-state.js";
import type { Logger } from "../logger.js";
import { exposition, type TwinLabels, TwinMetrics, type TwinSample } from "../observability/twin-metrics.js";
import { thingModelsDir } from "../paths.js";
import { loadThingModels, ModelResolutionError, ThingModelRegistry } from "../wot/model-registry.js";
import type { JsonObject } from "../wot/rdf.js";
import { ValidationError } from "../wot/validation.js";
import { AugmentationError } from "./augmentation.js";
import {
  createManagementApp,
  type ManagedTwinProcess,
  NoTwinError,
  type ProcessHealth,
  type ProcessPhase,
  ShuttingDownError,
  type TwinProcessEvent,
  type TwinProcessSubscriber,
  type TwinStatus,
} from "./management-api.js";
import { Twin, TwinStateError } from "./twin.js";
import type { TwinProcessSettings } from "./twin-process-config.js";
import { managementTopicOf, TwinConflictError, TwinRuntime } from "./twin-runtime.js";

/**
 * A standalone twin process (src/twin-main.ts), as a container platform runs it: one TwinRuntime
 * holding at most one twin (created at start, or imported through the management endpoint), and
 * the management HTTP server a platform driver steers it through.
 */

export interface TwinProcessOptions {
  /** Keep-alive comment interval of /events, ms (default 15,000). */
  keepAliveMs?: number;
}

/** Grace given to in-flight answers (the one to POST /shutdown) before connections are cut, ms. */
const CLOSE_GRACE_MS = 1000;

const record = z.record(z.string(), z.unknown());
/**
 * The shape of a TwinState, enough for the Twin constructor not to trip over missing members: an
 * ill-formed state is a 400, not a 500. Its meaning (fidelity, functions) the dry run checks.
 */
const stateShape = z.looseObject({
  format: z.literal("dtc-twin-state/1"),
  exportedAt: z.number().finite(),
  config: z.looseObject({ id: z.string(), schema: z.string() }),
  td: record,
  lifecycle: z.looseObject({ state: z.enum(LIFECYCLE_STATES), history: z.array(record) }),
  properties: record,
  augmentations: z.array(z.looseObject({ name: z.string(), source: z.string() })),
  history: z.looseObject({ states: z.array(record), events: z.array(record) }),
  entanglement: z.looseObject({ figures: record, observations: record }),
  counters: record,
});

function checkState(state: unknown): TwinState {
  const parsed = stateShape.safeParse(state);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    throw new TwinStateError(
      `not a twin state: ${issue?.path.join(".") || "(root)"}: ${issue?.message ?? "invalid"}`,
    );
  }
  return state as TwinState;
}

const statusOf = (twin: Twin): TwinStatus => ({
  lifecycle: twin.lifecycleState,
  entanglement: twin.entanglement,
});

/** Errors about what the configuration asks for (a model, the schema, a function): exit 2, not 1. */
const isConfigurationProblem = (err: unknown): err is Error =>
  err instanceof ValidationError ||
  err instanceof ModelResolutionError ||
  err instanceof TwinStateError ||
  err instanceof AugmentationError;

export class TwinProcess implements ManagedTwinProcess {
  /** The configured twin id: the only one this process runs. */
  readonly id: string;
  readonly runtime: TwinRuntime;
  /** Where node-wot's HTTP server listens (the port the TD's forms lead to). */
  readonly httpPort: number;
  #managementPort = 0;
  /** Resolves once POST /shutdown has removed the twin: the process should close and exit. */
  readonly shutdownRequested: Promise<void>;
  #requestShutdown: () => void = () => {};
  readonly #logger: Logger;
  #phase: ProcessPhase = "starting";
  #server: Server | undefined;
  #unlisten: (() => void) | undefined;
  readonly #subscribers = new Set<TwinProcessSubscriber>();
  /** Mutating operations, one at a time (an import must not interleave with a stop). */
  #queue: Promise<unknown> = Promise.resolve();
  #closing: Promise<void> | undefined;
  /** The node and platform labels of the twin's metrics. */
  readonly #placement: { node: string; platform: string };
  /** The registry of GET /metrics, made at the first scrape. */
  #metrics: { registry: Registry; twins: TwinMetrics } | undefined;

  private constructor(
    id: string,
    runtime: TwinRuntime,
    logger: Logger,
    placement: { node: string; platform: string },
  ) {
    this.id = id;
    this.runtime = runtime;
    this.#logger = logger;
    this.#placement = placement;
    this.httpPort = Number(new URL(runtime.digital.httpListenUrl).port);
    this.shutdownRequested = new Promise((resolve) => {
      this.#requestShutdown = resolve;
    });
  }

  get managementPort(): number {
    return this.#managementPort;
  }

  get phase(): ProcessPhase {
    return this.#phase;
  }

  /** The running twin, if any. */
  get twin(): Twin | undefined {
    return this.runtime.get(this.id);
  }

  /**
   * Starts the process: models, runtime, management server, then the twin (unless it awaits its
   * state). Problems with what the configuration asks for are ConfigErrors naming its variable.
   */
  static async start(
    settings: TwinProcessSettings,
    logger: Logger,
    options: TwinProcessOptions = {},
  ): Promise<TwinProcess> {
    const { config, configSource } = settings;
    const asConfigError = (err: unknown): unknown =>
      isConfigurationProblem(err) ? new ConfigError([{ variable: configSource, message: err.message }]) : err;

    const registry = new ThingModelRegistry();
    await loadThingModels(registry, thingModelsDir);
    try {
      for (const [iri, model] of Object.entries(config.models ?? {})) registry.register(iri, model);
    } catch (err) {
      throw asConfigError(err);
    }

    const runtime = await TwinRuntime.start({
      registry,
      brokerUrl: settings.mqttUrl,
      brokerCredentials: settings.mqttCredentials,
      managementTopic: managementTopicOf(config.twin.id),
      http: { port: settings.httpPort, address: settings.host, baseUri: settings.baseUri },
      pushIntervalMs: settings.entanglementIntervalMs,
      ptClockSkewMs: settings.ptClockSkewMs,
      logger,
    });
    const proc = new TwinProcess(config.twin.id, runtime, logger, {
      node: settings.node,
      platform: settings.platform,
    });
    try {
      await proc.#listen(settings, options);
      if (config.awaitState) {
        proc.#phase = "awaiting-state";
      } else {
        try {
          await proc.#createFresh(config.twin, config.augmentations ?? []);
        } catch (err) {
          throw asConfigError(err);
        }
      }
    } catch (err) {
      await proc
        .close()
        .catch((closeError: unknown) =>
          logger.debug(
            { err: closeError, twin: config.twin.id },
            "could not close the process after a failed start",
          ),
        );
      throw err;
    }
    logger.info(
      { httpPort: proc.httpPort, managementPort: proc.managementPort, twin: proc.twin?.id ?? null },
      "twin process ready",
    );
    return proc;
  }

  async #listen(settings: TwinProcessSettings, options: TwinProcessOptions): Promise<void> {
    const app = createManagementApp({
      process: this,
      token: settings.token,
      metricsToken: settings.metricsToken,
      metrics: () => this.#scrape(),
      keepAliveMs: options.keepAliveMs,
      logger: this.#logger,
    });
    // Plain HTTP/1.1 (serve's default): an http.Server.
    const server = serve({
      fetch: app.fetch,
      port: settings.managementPort,
      hostname: settings.host,
    }) as Server;
    this.#server = server;
    await new Promise<void>((resolve, reject) => {
      server.once("listening", resolve);
      server.once("error", reject);
    });
    this.#managementPort = (server.address() as AddressInfo).port;
  }

  /** Creates the twin and installs the configured functions; nothing is left running on failure. */
  async #createFresh(
    config: TwinProcessSettings["config"]["twin"],
    augmentations: { name: string; source: string }[],
  ): Promise<void> {
    const twin = await this.runtime.create(config);
    try {
      for (const { name, source } of augmentations) twin.installAugmentation(name, source);
    } catch (err) {
      await this.runtime
        .remove(twin.id)
        .catch((removeError: unknown) =>
          this.#logger.debug(
            { err: removeError, twin: twin.id },
            "could not remove the twin whose functions were refused",
          ),
        );
      throw err;
    }
    this.#running(twin);
  }

  /** `twin` now runs: listened to, announced. */
  #running(twin: Twin): void {
    twin.onCommit = this.#metricsRegistry().twins.updateObserver(this.#labels(twin));
    this.#unlisten = twin.listen({
      lifecycleChanged: () => this.#emit({ type: "lifecycle", data: statusOf(twin) }),
      entanglementEvaluated: () => this.#emit({ type: "entanglement", data: statusOf(twin) }),
    });
    this.#setPhase("running");
    this.#emit({
      type: "twin",
      data: { id: twin.id, td: this.runtime.description(twin.id), status: statusOf(twin) },
    });
  }

  /** Once closing, the process stays "stopping" whatever an operation in progress ends with. */
  #setPhase(phase: ProcessPhase): void {
    if (!this.#closing) this.#phase = phase;
  }

  #stopListening(): void {
    this.#unlisten?.();
    this.#unlisten = undefined;
  }

  #emit(event: TwinProcessEvent): void {
    for (const subscriber of this.#subscribers) subscriber.event(event);
  }

  #live(): Twin {
    const twin = this.twin;
    if (!twin)
      throw new NoTwinError(this.#phase === "awaiting-state" ? undefined : `no twin runs (${this.#phase})`);
    return twin;
  }

  /** Runs `op` after every earlier mutation; refused once the process is shutting down. */
  #serial<T>(op: () => Promise<T>): Promise<T> {
    const run = this.#queue.then(() => {
      if (this.#phase === "stopping") throw new ShuttingDownError();
      return op();
    });
    // The caller gets `run`'s rejection; the queue only orders, and must not stop at a failure.
    this.#queue = run.catch(() => {});
    return run;
  }

  /** The Prometheus exposition of the process and its twin (the same per-twin series as the gateway's). */
  async #scrape(): Promise<{ contentType: string; body: string }> {
    const { registry, twins } = this.#metricsRegistry();
    return { contentType: registry.contentType, body: await exposition(registry, twins) };
  }

  #metricsRegistry(): { registry: Registry; twins: TwinMetrics } {
    if (!this.#metrics) {
      const registry = new Registry();
      collectDefaultMetrics({ register: registry });
      this.#metrics = { registry, twins: new TwinMetrics(registry, () => this.#samples()) };
    }
    return this.#metrics;
  }

  #samples(): TwinSample[] {
    const twin = this.twin;
    if (!twin) return [];
    return [
      {
        ...this.#labels(twin),
        status: statusOf(twin),
        counters: twin.counters,
      },
    ];
  }

  #labels(twin: Twin): TwinLabels {
    return { twin: twin.id, schema: twin.config.schema, ...this.#placement };
  }

  // --- what the management routes call ------------------------------------------------------

  health(): ProcessHealth {
    const twin = this.twin;
    if (this.#phase === "running" && twin)
      return { status: "ok", id: this.id, lifecycle: twin.lifecycleState };
    return { status: this.#phase === "running" ? "starting" : this.#phase, id: this.id };
  }

  status(): TwinStatus {
    return statusOf(this.#live());
  }

  currentStatus(): TwinStatus | { lifecycle: null } {
    const twin = this.twin;
    return twin ? statusOf(twin) : { lifecycle: null };
  }

  td(): JsonObject {
    this.#live();
    return this.runtime.description(this.id);
  }

  exportState(): TwinState {
    this.#live();
    return this.runtime.exportState(this.id);
  }

  /**
   * Replaces the twin (if any) by one restored from `input`. The state is checked first (shape,
   * id, and a dry run of the Twin constructor: fidelity, functions), so that a bad state leaves the
   * running twin alone; should exposing the new one still fail, the previous twin comes back.
   */
  importState(input: unknown): Promise<{ td: JsonObject; status: TwinStatus }> {
    return this.#serial(async () => {
      const state = checkState(input);
      if (state.config.id !== this.id) {
        throw new TwinConflictError(
          `the state is of twin "${state.config.id}"; this process runs twin "${this.id}"`,
        );
      }
      // A dry run, without side effects: the constructor checks the fidelity and compiles the functions.
      const dry = new Twin(structuredClone(state.td), structuredClone(state.config), structuredClone(state));
      const dropped = dry.droppedAugmentations;
      dry.dispose();
      // A twin started from it would drop these: refuse the state rather than lose them quietly.
      if (dropped.length > 0) {
        throw new TwinStateError(
          `the state's functions are refused: ${dropped.map((d) => `${d.name}: ${d.reason}`).join("; ")}`,
        );
      }
      let previous: TwinState | undefined;
      if (this.twin) {
        previous = this.runtime.exportState(this.id);
        // Subscribers hear of the replacement (a `twin` event), not of the old twin's dismissal.
        this.#stopListening();
        // Handover: the restored twin has the same id and topics, so the retained TD is not
        // cleared only to be published again a moment later.
        await this.runtime.remove(this.id, { handover: true });
      }
      this.#setPhase("starting");
      let twin: Twin;
      try {
        twin = await this.runtime.restore(state);
      } catch (err) {
        // Half started (exposed, but attaching failed): out of the way of the previous twin.
        if (this.twin) {
          await this.runtime
            .remove(this.id, { handover: true })
            .catch((removeError: unknown) =>
              this.#logger.debug(
                { err: removeError, twin: this.id },
                "could not remove the half-started twin",
              ),
            );
        }
        this.#setPhase("awaiting-state");
        if (previous) {
          try {
            this.#running(await this.runtime.restore(previous));
            this.#logger.warn({ err: errorMessage(err) }, "import failed: the previous twin runs again");
          } catch (again) {
            this.#logger.error({ err: errorMessage(again) }, "import failed, and the previous twin too");
          }
        }
        throw err;
      }
      this.#running(twin);
      this.#logger.info({ twin: twin.id, lifecycle: twin.lifecycleState }, "twin state imported");
      return { td: this.runtime.description(twin.id), status: statusOf(twin) };
    });
  }

  stop(): Promise<TwinStatus> {
    return this.#serial(async () => {
      this.#live();
      this.runtime.stop(this.id);
      return this.status();
    });
  }

  resume(): Promise<TwinStatus> {
    return this.#serial(async () => {
      this.#live();
      await this.runtime.resume(this.id);
      return this.status();
    });
  }

  /**
   * Removes the twin (its retained TD cleared unless `handover`: a copy runs elsewhere on the same
   * broker now) and asks the process to exit (shutdownRequested). Answers the final state.
   */
  shutdown(options: { handover?: boolean }): Promise<TwinState | undefined> {
    return this.#serial(async () => {
      this.#phase = "stopping";
      let state: TwinState | undefined;
      if (this.twin) {
        state = await this.runtime.remove(this.id, { handover: options.handover });
        this.#stopListening();
      }
      this.#logger.info({ handover: options.handover === true }, "shutdown requested");
      this.#requestShutdown();
      return state;
    });
  }

  subscribe(subscriber: TwinProcessSubscriber): () => void {
    if (this.#closing) {
      subscriber.closed();
      return () => {};
    }
    this.#subscribers.add(subscriber);
    return () => this.#subscribers.delete(subscriber);
  }

  /**
   * Removes the twin if it still runs (its retained TD cleared), ends the event streams and closes
   * both servers. Waits for a mutation in progress. Idempotent.
   */
  close(): Promise<void> {
    this.#closing ??= (async () => {
      this.#phase = "stopping";
      await this.#queue;
      if (this.twin) {
        await this.runtime.remove(this.id).catch((err: unknown) => {
          this.#logger.warn({ err: errorMessage(err) }, "removing the twin failed");
        });
      }
      this.#stopListening();
      for (const subscriber of this.#subscribers) subscriber.closed();
      this.#subscribers.clear();
      await this.#closeServer();
      await this.runtime.close();
    })();
    return this.#closing;
  }

  #closeServer(): Promise<void> {
    const server = this.#server;
    if (!server) return Promise.resolve();
    return new Promise<void>((resolve) => {
      // Streams were ended above; what is left are keep-alive connections and answers in flight
      // (POST /shutdown's). Each connection is closed as soon as it is idle (close() closes only
      // those idle at the time); whatever is still busy after the grace is cut.
      const idle = setInterval(() => server.closeIdleConnections(), 20);
      const cut = setTimeout(() => server.closeAllConnections(), CLOSE_GRACE_MS);
      server.close(() => {
        clearInterval(idle);
        clearTimeout(cut);
        resolve();
      });
    });
  }
}

/** Starts a twin process from its settings (see TwinProcess.start). */
export function startTwinProcess(
  settings: TwinProcessSettings,
  logger: Logger,
  options?: TwinProcessOptions,
): Promise<TwinProcess> {
  return TwinProcess.start(settings, logger, options);
}
