import { DtcError, errorMessage } from "../domain/errors.js";
import { TWIN_ID, type TwinConfig, type TwinState } from "../domain/twin-state.js";
import { twinTdId } from "../domain/vocabulary.js";
import type { Logger } from "../logger.js";
import {
  MqttConnections,
  type MqttCredentials,
  MqttSubscriptionRefusedError,
  type SharedMqttConnection,
} from "../mqtt/connections.js";
import { instantiate } from "../wot/instantiate.js";
import type { ThingModelRegistry } from "../wot/model-registry.js";
import type { JsonObject } from "../wot/rdf.js";
import { isObject } from "../wot/thing-model.js";
import { AugmentationError } from "./augmentation.js";
import { DigitalInterface } from "./digital-interface.js";
import { attachToPhysicalTwin, type PhysicalAttachment } from "./mqtt-physical-adapter.js";
import { Twin, TwinStateError } from "./twin.js";
import { describeTwin } from "./twin-description.js";

/**
 * The twins of one process: creates them from a schema and a configuration (or from an exported
 * state), attaches them to their PTs on shared MQTT connections, exposes them on one node-wot
 * Servient, and evaluates their entanglement on one timer.
 */

export interface TwinRuntimeOptions {
  registry: ThingModelRegistry;
  /** Default broker of the PTs, and the broker the twins' MQTT forms point at. */
  brokerUrl: string;
  /**
   * Who the runtime's clients connect to `brokerUrl` as (client options, never in the URL). Only to
   * that broker: a twin whose PT is on a broker of its own (`brokerUrl` in its configuration)
   * connects there without them, so that the gateway's credentials never reach a third party.
   */
  brokerCredentials?: MqttCredentials;
  http: { port: number; address?: string; baseUri?: string };
  /** Expose the twins over MQTT too (default true). */
  mqttDigital?: boolean;
  /**
   * The functions topic filter this runtime subscribes (default every twin's, MANAGEMENT_TOPIC); a
   * twin process subscribes its own twin's only, all its broker user may read.
   */
  managementTopic?: string;
  /** How often entanglement is evaluated and pushed to consumers, ms (default 1000). */
  pushIntervalMs?: number;
  /** How far ahead of the twin's clock a PT timestamp may be, ms (default MAX_FUTURE_SKEW_MS). */
  ptClockSkewMs?: number;
  /** The commit hook each twin started here gets (Twin.onCommit: the metrics' histograms); none: unset. */
  commitObserver?: (twin: Twin) => Twin["onCommit"];
  logger?: Logger;
}

/** Management messages: {"name", "source"} installs or replaces, {"name", "remove": true} removes. */
export const MANAGEMENT_TOPIC = "dtc/twins/+/augmentations";
export const managementTopicOf = (id: string) => `dtc/twins/${id}/augmentations`;

export class TwinNotFoundError extends DtcError {
  constructor(id: string) {
    super("notFound", `no twin with id "${id}"`);
    this.name = "TwinNotFoundError";
  }
}

export class TwinConflictError extends DtcError {
  constructor(message: string) {
    super("conflict", message);
    this.name = "TwinConflictError";
  }
}

/** Evaluation slices per push interval. */
const SLICES = 20;

interface Running {
  twin: Twin;
  connection: SharedMqttConnection;
  attachment: PhysicalAttachment | undefined;
  td: JsonObject;
}

export class TwinRuntime {
  readonly options: TwinRuntimeOptions;
  readonly digital: DigitalInterface;
  readonly #connections: MqttConnections;
  readonly #management: SharedMqttConnection;
  readonly #twins = new Map<string, Running>();
  readonly #timer: NodeJS.Timeout;
  /** The twins in evaluation order (rebuilt when twins come or go), and where the next slice starts. */
  #order: Twin[] | undefined;
  #cursor = 0;
  #unsubscribeManagement: (() => void) | undefined;

  private constructor(options: TwinRuntimeOptions, digital: DigitalInterface) {
    this.options = options;
    this.digital = digital;
    this.#connections = new MqttConnections({}, options.logger);
    this.#management = this.#acquire(options.brokerUrl);
    // Each twin is evaluated once per interval, but in slices spread over it: evaluating (and pushing)
    // thousands at once would hold the event loop for tens of ms, and telemetry waiting behind it
    // would count as late.
    this.#timer = setInterval(
      () => this.#evaluateSlice(Date.now()),
      (options.pushIntervalMs ?? 1000) / SLICES,
    );
  }

  /** The shared connection to `url`, with the runtime's credentials when it is the runtime's broker. */
  #acquire(url: string): SharedMqttConnection {
    const own = url === this.options.brokerUrl;
    return this.#connections.acquire(url, own ? this.options.brokerCredentials : undefined);
  }

  // The twins, and the evaluation order derived from them (rebuilt on the next slice).
  #track(running: Running): void {
    this.#twins.set(running.twin.id, running);
    this.#order = undefined;
  }

  #untrack(id: string): void {
    this.#twins.delete(id);
    this.#order = undefined;
  }

  #evaluateSlice(now: number): void {
    this.#order ??= [...this.#twins.values()].map((r) => r.twin);
    const twins = this.#order;
    const count = Math.ceil(twins.length / SLICES);
    for (let k = 0; k < count; k++) {
      this.#evaluate(twins[this.#cursor % twins.length] as Twin, now);
      this.#cursor = (this.#cursor + 1) % twins.length;
    }
  }

  #evaluate(twin: Twin, now: number): void {
    try {
      twin.evaluate(now);
    } catch (err) {
      this.options.logger?.error({ twin: twin.id, err: errorMessage(err) }, "evaluation failed");
    }
  }

  static async start(options: TwinRuntimeOptions): Promise<TwinRuntime> {
    const logger = options.logger;
    // The credentials travel beside the URL (DigitalInterface hands them to StablePathMqttBrokerServer).
    const mqtt: { url: string } & Partial<MqttCredentials> = {
      url: options.brokerUrl,
      ...options.brokerCredentials,
    };
    const digital = await DigitalInterface.start({
      http: options.http,
      mqtt: options.mqttDigital === false ? undefined : mqtt,
      onError: (err, context) => logger?.warn({ err: err.message }, `digital interface: ${context}`),
    });
    const runtime = new TwinRuntime(options, digital);
    const filter = options.managementTopic ?? MANAGEMENT_TOPIC;
    runtime.#unsubscribeManagement = await runtime.#management.subscribe(filter, (topic, payload) =>
      runtime.#manage(topic, payload),
    );
    return runtime;
  }

  /** Creates a twin from its schema and configuration, exposes it and attaches it to its PT. */
  async create(config: TwinConfig): Promise<Twin> {
    this.#checkNew(config.id);
    if (!isObject(config.placeholders ?? {})) throw new TwinStateError("placeholders must be an object");
    const td = await instantiate(this.options.registry, config.schema, {
      placeholders: config.placeholders ?? {},
      id: twinTdId(config.id),
    });
    const description = describeTwin(td, config.fidelity);
    return this.#start(new Twin(description, structuredClone(config)), description);
  }

  /**
   * A twin from an exported state (restore, move, clone): same TD, state, functions, history and
   * entanglement observations. `id` gives the copy a new id (a clone); the TD id follows it.
   */
  async restore(state: TwinState, options: { id?: string } = {}): Promise<Twin> {
    if (state?.format !== "dtc-twin-state/1") {
      throw new TwinStateError(
        `not a twin state (format must be "dtc-twin-state/1", got ${JSON.stringify(state?.format)})`,
      );
    }
    const config = { ...structuredClone(state.config), id: options.id ?? state.config.id };
    this.#checkNew(config.id);
    const description = structuredClone(state.td);
    if (options.id !== undefined) description.id = twinTdId(config.id);
    return this.#start(new Twin(description, config, state), description);
  }

  #checkNew(id: string): void {
    if (typeof id !== "string" || !TWIN_ID.test(id)) {
      throw new TwinStateError(
        `twin id ${JSON.stringify(id)} must be 1-63 lowercase letters, digits, - or _`,
      );
    }
    if (this.#twins.has(id)) throw new TwinConflictError(`a twin with id "${id}" already runs here`);
  }

  async #start(twin: Twin, description: JsonObject): Promise<Twin> {
    if (this.options.ptClockSkewMs !== undefined) twin.maxFutureSkewMs = this.options.ptClockSkewMs;
    if (this.options.commitObserver) twin.onCommit = this.options.commitObserver(twin);
    const connection = this.#acquire(twin.config.brokerUrl ?? this.options.brokerUrl);
    const running: Running = { twin, connection, attachment: undefined, td: description };
    this.#track(running);
    try {
      running.td = await this.digital.expose(twin, description);
    } catch (err) {
      this.#untrack(twin.id);
      await connection.release();
      throw err;
    }
    if (twin.attached) await this.#attach(running);
    // Said once, when a function is stopped for good (it overran its limit too often).
    twin.listen({
      augmentationDisabled: ({ name, reason }) =>
        this.options.logger?.warn({ twin: twin.id, function: name, reason }, "twin function disabled"),
    });
    for (const { name, reason } of twin.droppedAugmentations) {
      this.options.logger?.warn(
        { twin: twin.id, function: name, reason },
        "twin function in the state refused",
      );
    }
    this.options.logger?.info({ twin: twin.id, schema: twin.config.schema }, "twin started");
    return twin;
  }

  async #attach(running: Running): Promise<void> {
    running.attachment = attachToPhysicalTwin(running.twin, running.connection, (err, context) =>
      this.options.logger?.error(
        { twin: running.twin.id, err: errorMessage(err) },
        `the twin failed on ${context}; it goes on`,
      ),
    );
    // A broker whose ACL refuses the PT's topics (credentials without the rights) leaves the twin
    // Unbound, said in the log, rather than failing a start half done.
    const subscribed = running.attachment.subscribed.catch((err: unknown) => {
      if (!(err instanceof MqttSubscriptionRefusedError)) throw err;
      this.options.logger?.error(
        { twin: running.twin.id, broker: running.connection.url, err: err.message },
        "the broker refused the twin's PT topics: it stays Unbound",
      );
    });
    // While the broker is unreachable the twin stays Unbound; it binds once the broker is back.
    if (running.connection.connected) await subscribed;
    else
      subscribed.catch((err: unknown) =>
        this.options.logger?.debug({ err, twin: running.twin.id }, "subscribing the twin's PT topics failed"),
      );
  }

  #get(id: string): Running {
    const running = this.#twins.get(id);
    if (!running) throw new TwinNotFoundError(id);
    return running;
  }

  get(id: string): Twin | undefined {
    return this.#twins.get(id)?.twin;
  }

  list(): Twin[] {
    return [...this.#twins.values()].map((r) => r.twin);
  }

  /** The twin's TD as exposed (with its HTTP and MQTT forms). */
  description(id: string): JsonObject {
    return this.#get(id).td;
  }

  /** Detaches a twin from its PT: Done, still exposed with its last state. */
  stop(id: string): void {
    const running = this.#get(id);
    running.twin.detach(Date.now());
    running.attachment?.detach();
    running.attachment = undefined;
  }

  /** A Done twin attaches to its PT again. */
  async resume(id: string): Promise<void> {
    const running = this.#get(id);
    if (running.twin.lifecycleState !== "Done") {
      throw new TwinConflictError(
        `twin ${id} is ${running.twin.lifecycleState}; only a Done twin can resume`,
      );
    }
    running.twin.resume(Date.now());
    await this.#attach(running);
  }

  exportState(id: string): TwinState {
    return this.#get(id).twin.exportState();
  }

  /**
   * Dismisses a twin (Stopped) and removes it: no longer exposed, its retained TD cleared.
   * `handover`: a copy of it (same id) runs on another runtime on the same broker now (a move),
   * and the retained TD on the shared topic is that copy's: it is left in place.
   */
  async remove(id: string, options: { handover?: boolean } = {}): Promise<TwinState> {
    const running = this.#get(id);
    running.attachment?.detach();
    running.twin.dismiss(Date.now());
    const state = running.twin.exportState();
    this.#untrack(id);
    await this.digital.destroy(id, { handover: options.handover });
    await running.connection.release();
    return state;
  }

  async close(): Promise<void> {
    clearInterval(this.#timer);
    for (const id of [...this.#twins.keys()]) {
      const running = this.#get(id);
      running.attachment?.detach();
      this.#untrack(id);
      await this.digital.destroy(id);
      await running.connection.release();
      // Its isolate (functions) is freed now rather than by the garbage collector.
      running.twin.dispose();
    }
    this.#unsubscribeManagement?.();
    await this.#management.release();
    await this.digital.close();
  }

  /**
   * The MQTT management topic: install or remove a function, answered on {topic}/result. Runs in
   * mqtt.js's message handler, where an error would take the process down: whatever goes wrong
   * (malformed request, refused function, a bug) is caught and answered with {ok: false, error}.
   */
  #manage(topic: string, payload: Buffer): void {
    const id = topic.split("/")[2] ?? "";
    const reply = (body: Record<string, unknown>) => {
      try {
        this.#management
          .publish(`${managementTopicOf(id)}/result`, JSON.stringify(body), { qos: 1 })
          .catch((err: unknown) =>
            this.options.logger?.debug({ err, twin: id }, "answering a management request failed"),
          );
      } catch {
        // No answer possible (the connection is closing); the request changed nothing it reports.
      }
    };
    let name: string | undefined;
    try {
      // Every runtime on the broker hears every request (one per in-process node): only the one
      // hosting the twin answers.
      const twin = this.#twins.get(id)?.twin;
      if (!twin) return;
      let request: unknown;
      try {
        request = JSON.parse(String(payload));
      } catch {
        reply({ ok: false, error: "payload is not JSON" });
        return;
      }
      if (!isObject(request) || typeof request.name !== "string") {
        reply({ ok: false, error: 'expected {"name", "source"} or {"name", "remove": true}' });
        return;
      }
      name = request.name;
      if (request.remove === true) {
        reply({ ok: true, name, removed: twin.removeAugmentation(name) });
      } else if (typeof request.source === "string") {
        reply({ ok: true, name, ...twin.installAugmentation(name, request.source) });
      } else {
        reply({ ok: false, name, error: '"source" must be a string of JavaScript' });
      }
    } catch (err) {
      const error = errorMessage(err);
      if (!(err instanceof AugmentationError)) {
        this.options.logger?.error({ twin: id, err: error }, "augmentation management request failed");
      }
      reply({ ok: false, ...(name !== undefined ? { name } : {}), error });
    }
  }
}
