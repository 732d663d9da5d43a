import jsonpointer from "jsonpointer";
import { type EntanglementFigures, EntanglementWindow, type FidelityParams } from "../domain/entanglement.js";
import { DtcError, errorMessage } from "../domain/errors.js";
import { isAttached, Lifecycle, type LifecycleChange, type LifecycleState } from "../domain/lifecycle.js";
import {
  type FidelityOverrides,
  type StateRecord,
  TWIN_ID,
  type TwinConfig,
  type TwinCounters,
  type TwinEventRecord,
  type TwinEventType,
  type TwinState,
} from "../domain/twin-state.js";
import { endUpdate, inSpan, startUpdateSpan } from "../observability/tracing.js";
import type { JsonObject } from "../wot/rdf.js";
import { isObject } from "../wot/thing-model.js";
import {
  AugmentationError,
  type AugmentationInput,
  Augmentations,
  type DisabledAugmentation,
} from "./augmentation.js";
import {
  MAX_FUTURE_SKEW_MS,
  normalisePhysicalMessage,
  type PhysicalEvent,
  PhysicalMessageError,
  shadow,
} from "./physical-event.js";
import { type PhysicalInterface, physicalInterfaceOf } from "./physical-interface.js";

/**
 * A twin, without its transports: the shadowing pipeline (physical event -> shadowing ->
 * augmentation -> commit), its lifecycle and its entanglement. The physical adapter feeds it
 * messages and connection changes; the digital interface listens to it. The state changes only
 * from the physical side: actions become commands to the PT, and the state follows its reports.
 */

export interface TwinListener {
  propertiesChanged?(names: string[]): void;
  lifecycleChanged?(change: LifecycleChange): void;
  /** Every evaluation (the runtime evaluates at most once per push interval). */
  entanglementEvaluated?(figures: EntanglementFigures): void;
  /** The twin crossed its ODTE threshold. */
  entanglementChanged?(figures: EntanglementFigures): void;
  /** A function (or the custom shadowing function) overran its limits too often and stopped. */
  augmentationDisabled?(disabled: DisabledAugmentation): void;
}

export type CommandSink = (topic: string, payload: string) => Promise<void>;

/** What the twin's state cannot do now: `invalid` by default. */
export class TwinStateError extends DtcError {
  constructor(message: string, kind: "invalid" | "conflict" | "unavailable" = "invalid") {
    super(kind, message);
    this.name = "TwinStateError";
  }
}

/** The twin's broker is unreachable: a command would wait for it (or be lost), so it is not sent. */
export class PhysicalTwinUnreachableError extends TwinStateError {
  constructor(message: string) {
    super(message, "unavailable");
    this.name = "PhysicalTwinUnreachableError";
  }
}

/** The twin is not attached to its PT (Done, or Stopped): it cannot send commands. */
export class TwinDetachedError extends TwinStateError {
  constructor(message: string) {
    super(message);
    this.name = "TwinDetachedError";
  }
}

/**
 * How far a PT's sequence number may fall behind the last committed one and still be a message
 * reordered (or repeated) in transit, not committed. A larger drop is the PT's counter starting
 * over (a reboot, a wrap): that message is committed and the count goes on from it.
 */
export const MAX_SEQUENCE_REORDER = 64;

/** A bounded log, oldest first. */
class BoundedLog<T> {
  readonly #items: T[] = [];
  constructor(readonly limit: number) {}
  push(item: T): void {
    this.#items.push(item);
    if (this.#items.length > this.limit) this.#items.shift();
  }
  toArray(): T[] {
    return [...this.#items];
  }
}

const num = (v: unknown): number | undefined => (typeof v === "number" && Number.isFinite(v) ? v : undefined);

/** The fidelity of a TD (its dtc:fidelity), with per-instance overrides applied. */
export function fidelityOf(td: JsonObject, overrides: FidelityOverrides = {}): FidelityParams {
  const f = isObject(td["dtc:fidelity"]) ? td["dtc:fidelity"] : {};
  const params = {
    desiredTimelinessMs: overrides.desiredTimeliness ?? num(f["dtc:desiredTimeliness"]),
    expectedUpdateRateHz: overrides.expectedUpdateRate ?? num(f["dtc:expectedUpdateRate"]),
    threshold: overrides.odteThreshold ?? num(f["dtc:odteThreshold"]),
    windowSeconds: overrides.odteWindow ?? num(f["dtc:odteWindow"]),
  };
  for (const [name, value] of Object.entries(params)) {
    if (value === undefined) throw new TwinStateError(`the twin's fidelity has no ${name}`);
  }
  return params as FidelityParams;
}

/** PT status payloads: "online"/"offline", {"status": "online"}, or {"online": true}. */
export function parseStatus(payload: Buffer | string): boolean | undefined {
  const text = String(payload).trim();
  if (text === "") return undefined;
  let value: unknown = text;
  try {
    value = JSON.parse(text);
  } catch {
    // a bare word
  }
  if (isObject(value)) value = value.online ?? value.status;
  if (value === true || value === "online") return true;
  if (value === false || value === "offline") return false;
  return undefined;
}

export class Twin {
  readonly config: TwinConfig;
  readonly td: JsonObject;
  readonly iface: PhysicalInterface | undefined;
  readonly fidelity: FidelityParams;
  readonly augmentations = new Augmentations();
  readonly counters: TwinCounters = {
    messages: 0,
    rejected: 0,
    stale: 0,
    lost: 0,
    augmentationErrors: 0,
    commands: 0,
  };
  readonly #lifecycle: Lifecycle;
  #window: EntanglementWindow;
  #properties: Record<string, unknown> = {};
  #lastUpdate: StateRecord | undefined;
  readonly #states: BoundedLog<StateRecord>;
  readonly #events: BoundedLog<TwinEventRecord>;
  readonly #listeners = new Set<TwinListener>();
  readonly #shadowing: Augmentations | undefined;
  /** Why a restored twin's custom shadowing function was refused (its messages are then rejected). */
  #shadowingRefused: string | undefined;
  readonly #dropped: { name: string; reason: string }[] = [];
  #figures: EntanglementFigures;
  #subscribed = false;
  #brokerConnected = false;
  /** PT status: unknown until it reports one (or always, without a status topic). */
  #ptOnline: boolean | undefined;
  #heard = false;
  #bound = false;
  /** The sequence number of the committed state, which the next messages are ordered against. */
  #sequence: number | undefined;
  /** The PT went offline or silent since: it may have restarted, and its sequence numbers with it. */
  #mayHaveRestarted = false;
  #commandSink: CommandSink | undefined;

  constructor(td: JsonObject, config: TwinConfig, restored?: TwinState) {
    if (!TWIN_ID.test(config.id)) {
      throw new TwinStateError(
        `twin id "${config.id}" must be 1-63 lowercase letters, digits, - or _, starting with a letter or digit`,
      );
    }
    this.config = config;
    this.td = td;
    this.iface = physicalInterfaceOf(td);
    this.fidelity = fidelityOf(td, config.fidelity);
    const limit = config.historyLimit ?? 100;
    this.#states = new BoundedLog(limit);
    this.#events = new BoundedLog(limit);
    const heartbeat = { heartbeat: this.iface?.statusTopic === undefined };
    if (config.shadowing !== undefined) this.#shadowing = new Augmentations();
    if (restored) {
      // Attached twins come back Unbound: they must bind again where they now run.
      const state = isAttached(restored.lifecycle.state) ? "Unbound" : restored.lifecycle.state;
      this.#lifecycle = new Lifecycle(state, limit, restored.lifecycle.history);
      this.#properties = { ...restored.properties };
      this.#lastUpdate = restored.lastUpdate;
      this.#sequence = restored.lastUpdate?.sequence ?? undefined;
      for (const s of restored.history.states) this.#states.push(s);
      for (const e of restored.history.events) this.#events.push(e);
      Object.assign(this.counters, restored.counters);
      this.#window = EntanglementWindow.restore(this.fidelity, restored.entanglement.observations, heartbeat);
      // The time it was not running here, the PT was not reachable from it.
      if (this.#window.started) this.#window.setReachable(restored.exportedAt, false);
      this.#figures = restored.entanglement.figures;
      this.#restoreFunctions(restored);
    } else {
      this.#lifecycle = new Lifecycle("Unbound", limit);
      this.#window = new EntanglementWindow(this.fidelity, heartbeat);
      this.#figures = this.#window.evaluate(Date.now());
      // A fresh twin refuses a bad shadowing function: its configuration is at fault.
      try {
        this.#shadowing?.install("shadowing", config.shadowing as string);
      } catch (err) {
        this.#shadowing?.dispose();
        throw err;
      }
    }
  }

  /**
   * A restored state's functions go through the checks of an install (a saved source is trusted no
   * more than a client's); one that fails them is dropped and recorded, so that a bad function
   * never keeps its twin from starting again. A refused shadowing function leaves the twin
   * rejecting its messages rather than committing them unmapped.
   */
  #restoreFunctions(restored: TwinState): void {
    const at = Date.now();
    const drop = (name: unknown, err: unknown) => {
      const reason = errorMessage(err);
      this.#dropped.push({ name: String(name), reason });
      this.#record("augmentationDropped", at, { name: String(name), error: reason });
    };
    if (this.#shadowing) {
      try {
        this.#shadowing.install("shadowing", this.config.shadowing as string);
      } catch (err) {
        this.#shadowingRefused = err instanceof AugmentationError ? err.reason : String(err);
        drop("shadowing", err);
      }
    }
    const functions: unknown[] = Array.isArray(restored.augmentations) ? restored.augmentations : [];
    for (const fn of functions) {
      const { name, source, disabled } = (fn ?? {}) as {
        name?: unknown;
        source?: unknown;
        disabled?: unknown;
      };
      try {
        if (typeof disabled === "string") {
          this.augmentations.installDisabled(name as string, source as string, disabled);
        } else {
          this.augmentations.install(name as string, source as string, this.#probe());
        }
      } catch (err) {
        drop(name, err);
      }
    }
  }

  /** The functions of the restored state that failed their checks and were left out. */
  get droppedAugmentations(): readonly { name: string; reason: string }[] {
    return this.#dropped;
  }

  get id(): string {
    return this.config.id;
  }

  get lifecycleState(): LifecycleState {
    return this.#lifecycle.state;
  }

  get properties(): Readonly<Record<string, unknown>> {
    return this.#properties;
  }

  get lastUpdate(): StateRecord | undefined {
    return this.#lastUpdate;
  }

  /** The latest evaluation. */
  get entanglement(): EntanglementFigures {
    return this.#figures;
  }

  lifecycleHistory(): readonly LifecycleChange[] {
    return this.#lifecycle.history();
  }

  events(): TwinEventRecord[] {
    return this.#events.toArray();
  }

  states(): StateRecord[] {
    return this.#states.toArray();
  }

  listen(listener: TwinListener): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  #record(type: TwinEventType, at: number, data: unknown): void {
    this.#events.push({ type, at, data });
  }

  #transition(event: Parameters<Lifecycle["apply"]>[0], at: number): LifecycleChange | undefined {
    const change = this.#lifecycle.apply(event, at);
    if (change) {
      this.#record("lifecycleChanged", at, change);
      for (const l of this.#listeners) l.lifecycleChanged?.(change);
    }
    return change;
  }

  get attached(): boolean {
    return isAttached(this.#lifecycle.state);
  }

  // --- the physical side --------------------------------------------------------------------

  /** The physical adapter is (re)attached and tells the twin where commands go. */
  attach(commandSink: CommandSink): void {
    this.#commandSink = commandSink;
  }

  /** Subscribed to the PT's topics (true), or unsubscribed (false). */
  setSubscribed(subscribed: boolean, at: number): void {
    this.#subscribed = subscribed;
    this.#updateBinding(at);
  }

  setBrokerConnected(connected: boolean, at: number): void {
    this.#brokerConnected = connected;
    this.#updateBinding(at);
  }

  /** A message on the PT's status topic. */
  handleStatus(payload: Buffer | string, at: number): void {
    const online = parseStatus(payload);
    if (online === undefined) return;
    // A PT back online may have restarted, and its sequence numbers with it.
    if (online && this.#ptOnline === false) this.#mayHaveRestarted = true;
    this.#ptOnline = online;
    this.#updateBinding(at);
  }

  #reachable(): boolean {
    return this.#brokerConnected && this.#ptOnline !== false;
  }

  /** Binds when subscribed and the PT was heard from or reported online; loses binding otherwise. */
  #updateBinding(at: number): void {
    if (!this.attached) return;
    if (this.#window.started) this.#window.setReachable(at, this.#reachable());
    const canBind = this.#subscribed && this.#reachable() && (this.#heard || this.#ptOnline === true);
    if (canBind && !this.#bound) {
      this.#bound = true;
      this.#window.start(at);
      this.#window.setReachable(at, true);
      this.#transition("bind", at);
    } else if (!canBind && this.#bound) {
      this.#bound = false;
      this.#transition("bindingLost", at);
    }
  }

  /**
   * One raw telemetry message: normalise, shadow, augment, commit. Returns the committed update,
   * or undefined when the message was rejected (counted and recorded) or stale.
   */
  /** How far ahead of this twin's clock a PT timestamp may be (its runtime sets DTC_PT_CLOCK_SKEW_MS). */
  maxFutureSkewMs = MAX_FUTURE_SKEW_MS;
  /**
   * Told of each committed update: PT timestamp -> commit and receipt -> commit, ms (the metrics'
   * histograms). Set by the runtime when metrics are on; unset, it costs one property read.
   */
  onCommit: ((delayMs: number, processingMs: number) => void) | undefined;

  handleTelemetry(topic: string, payload: Uint8Array | string, receivedAt: number): StateRecord | undefined {
    const iface = this.iface;
    if (!iface || !this.attached) return undefined;
    this.counters.messages++;
    // One update in a while is traced (tracing on): its steps are the span's events.
    const span = startUpdateSpan(this, this.id, topic, receivedAt);
    let event: PhysicalEvent;
    let values: Record<string, unknown>;
    try {
      event = normalisePhysicalMessage(topic, payload, iface, receivedAt, this.maxFutureSkewMs);
      values = this.#shadow(event);
      span?.addEvent("shadowing");
    } catch (err) {
      this.counters.rejected++;
      this.#record("messageRejected", receivedAt, { topic, reason: errorMessage(err) });
      endUpdate(span, "rejected", err);
      return undefined;
    }
    if (!this.#heard) {
      this.#heard = true;
      this.#updateBinding(receivedAt);
    }
    const augmented = this.augmentations.run({
      values,
      state: this.#properties,
      event: { ptTimestamp: event.ptTimestamp, receivedAt, sequence: event.sequence },
    });
    for (const error of augmented.errors) this.#augmentationFailed(error, receivedAt);
    for (const disabled of augmented.disabled) this.#augmentationDisabled(disabled, receivedAt);
    span?.addEvent("functions", { "dtc.functions.errors": augmented.errors.length });
    const last = this.#lastUpdate;
    const base = this.#sequence;
    if (event.sequence !== undefined && base !== undefined && event.sequence > base + 1) {
      this.counters.lost += event.sequence - base - 1;
    }
    // The commit: the moment the state is the PT's state. Timeliness is measured up to here.
    const committedAt = Date.now();
    this.#window.recordUpdate(committedAt, event.ptTimestamp);
    if (this.#isStale(event, last)) {
      this.counters.stale++;
      endUpdate(span, "stale");
      return undefined;
    }
    this.onCommit?.(committedAt - event.ptTimestamp, committedAt - receivedAt);
    this.#sequence = event.sequence;
    this.#mayHaveRestarted = false;
    const record: StateRecord = {
      committedAt,
      ptTimestamp: event.ptTimestamp,
      sequence: event.sequence,
      values: augmented.values,
    };
    // Consumers are told about values that changed (objects and arrays always count as changed).
    const names: string[] = [];
    for (const [name, value] of Object.entries(augmented.values)) {
      if (typeof value === "object" || this.#properties[name] !== value) names.push(name);
      this.#properties[name] = value;
    }
    this.#lastUpdate = record;
    this.#states.push(record);
    span?.addEvent("commit", { "dtc.update.properties": names.length });
    // The listeners publish the update (MQTT, node-wot's observers): inside the update's span.
    if (names.length > 0) {
      if (span) inSpan(span, () => this.#propertiesChanged(names));
      else this.#propertiesChanged(names);
    }
    span?.addEvent("publish");
    // A Bound twin is judged on each update, not only when the runtime's timer comes round to it
    // (once per push interval, 1 s by default): otherwise a freshly bound twin whose ODTE already
    // reaches the threshold would wait up to a whole interval to be Entangled. Only while Bound, so
    // it costs nothing in the steady state: the first evaluation that reaches the threshold (or, once
    // a whole window has been seen, falls short of it) moves the twin on, and the timer takes over.
    // The update that bound the twin counts too: whether the PT's status or its first message
    // arrives first is up to the broker, and the window judges both cases alike.
    if (this.#lifecycle.state === "Bound") this.evaluate(committedAt);
    endUpdate(span, "committed");
    return record;
  }

  /**
   * Whether `event` is not after the committed state. By sequence number when the PT sends one:
   * a clock can step back or run ahead (a timestamp up to MAX_FUTURE_SKEW_MS ahead would hide the
   * messages after it), a counter does not, short of starting over: after a drop of more than
   * MAX_SEQUENCE_REORDER, or the first message after the PT was offline or silent. By PT timestamp
   * otherwise.
   */
  #isStale(event: PhysicalEvent, last: StateRecord | undefined): boolean {
    const base = this.#sequence;
    if (event.sequence !== undefined) {
      if (base === undefined || this.#mayHaveRestarted) return false;
      return event.sequence <= base && base - event.sequence <= MAX_SEQUENCE_REORDER;
    }
    return last !== undefined && event.ptTimestamp < last.ptTimestamp;
  }

  #shadow(event: PhysicalEvent): Record<string, unknown> {
    const shadowing = this.#shadowing;
    if (!shadowing) return shadow(event, this.iface as PhysicalInterface);
    const refused = this.#shadowingRefused ?? shadowing.disabledReason("shadowing");
    if (refused !== undefined) {
      throw new PhysicalMessageError(event.topic, `the custom shadowing function does not run: ${refused}`);
    }
    if (Array.isArray(event.message)) {
      throw new PhysicalMessageError(event.topic, "a custom shadowing function takes JSON objects only");
    }
    const { values, errors, disabled } = shadowing.run({
      values: event.message as Record<string, unknown>,
      state: this.#properties,
      event: { ptTimestamp: event.ptTimestamp, receivedAt: event.receivedAt, sequence: event.sequence },
    });
    for (const d of disabled) this.#augmentationDisabled(d, event.receivedAt);
    if (errors[0]) throw errors[0];
    return values;
  }

  #propertiesChanged(names: string[]): void {
    for (const l of this.#listeners) l.propertiesChanged?.(names);
  }

  #augmentationFailed(error: AugmentationError, at: number): void {
    this.counters.augmentationErrors++;
    this.#record("augmentationFailed", at, { name: error.functionName, error: error.message });
  }

  #augmentationDisabled(disabled: DisabledAugmentation, at: number): void {
    this.#record("augmentationDisabled", at, { name: disabled.name, reason: disabled.reason });
    for (const l of this.#listeners) l.augmentationDisabled?.(disabled);
  }

  /**
   * Evaluates entanglement at `now` and moves the lifecycle: Bound -> Entangled as soon as ODTE
   * reaches the threshold, Bound -> Disentangled only once a whole window has been seen, and
   * Entangled <-> Disentangled on each crossing. Detached twins keep their last figures.
   */
  evaluate(now: number): EntanglementFigures {
    if (!this.attached) return this.#figures;
    // Without a status topic the PT is judged by its heartbeat; long silence loses the binding.
    if (this.#bound && this.iface?.statusTopic === undefined && this.#lastUpdate !== undefined) {
      if (now - this.#lastUpdate.committedAt > 2000 / this.fidelity.expectedUpdateRateHz) {
        this.#heard = false;
        // Silent this long, it may have restarted, and its sequence numbers with it.
        this.#mayHaveRestarted = true;
        this.#updateBinding(now);
      }
    }
    const previous = this.#figures;
    const figures = this.#window.evaluate(now);
    this.#figures = figures;
    const state = this.#lifecycle.state;
    if (state === "Bound") {
      if (figures.entangled) this.#transition("entangle", now);
      else if (figures.windowFilled) this.#transition("disentangle", now);
    } else if (state === "Entangled" && !figures.entangled) {
      this.#transition("disentangle", now);
    } else if (state === "Disentangled" && figures.entangled) {
      this.#transition("entangle", now);
    }
    // Pushed when the figures moved: a steady twin does not repeat itself every interval.
    if (
      figures.odte !== previous.odte ||
      figures.timeliness !== previous.timeliness ||
      figures.reliability !== previous.reliability ||
      figures.availability !== previous.availability ||
      figures.updates !== previous.updates
    ) {
      for (const l of this.#listeners) l.entanglementEvaluated?.(figures);
    }
    if (figures.entangled !== previous.entangled && this.#window.started) {
      this.#record("entanglementChanged", now, figures);
      for (const l of this.#listeners) l.entanglementChanged?.(figures);
    }
    return figures;
  }

  // --- the digital side ---------------------------------------------------------------------

  /** The command a TD action becomes (paper 002 Fig. 6), as topic and JSON payload. */
  commandFor(action: string, input: unknown): { topic: string; payload: Record<string, unknown> } {
    const mapping = this.iface?.actions.get(action);
    const topic = this.iface?.commandTopic;
    if (!mapping || topic === undefined) {
      throw new TwinStateError(`action "${action}" has no command mapping to the physical twin`);
    }
    const payload: Record<string, unknown> = { command: mapping.commandName };
    if (mapping.inputPointer !== undefined) {
      if (input !== undefined) jsonpointer.set(payload, mapping.inputPointer, input);
    } else if (isObject(input)) {
      Object.assign(payload, input, { command: mapping.commandName });
    } else if (input !== undefined) {
      payload.input = input;
    }
    payload.ts = Date.now();
    return { topic, payload };
  }

  /** Sends the command of `action` to the PT. The state changes only when the PT reports back. */
  async invoke(action: string, input: unknown): Promise<void> {
    if (!this.attached || !this.#commandSink) {
      throw new TwinDetachedError(
        `twin ${this.id} is ${this.lifecycleState}: detached from its physical twin`,
      );
    }
    const { topic, payload } = this.commandFor(action, input);
    await this.#commandSink(topic, JSON.stringify(payload));
    this.counters.commands++;
    this.#record("commandSent", Date.now(), { action, topic, payload });
  }

  /** What a new function is tried on first, so that one that cannot run is refused up front. */
  #probe(): AugmentationInput {
    return {
      values: { ...this.#properties },
      state: this.#properties,
      event: {
        ptTimestamp: this.#lastUpdate?.ptTimestamp ?? Date.now(),
        receivedAt: Date.now(),
        sequence: this.#lastUpdate?.sequence,
      },
    };
  }

  installAugmentation(name: string, source: string): { replaced: boolean } {
    const result = this.augmentations.install(name, source, this.#probe());
    this.#record("augmentationInstalled", Date.now(), { name, replaced: result.replaced });
    return result;
  }

  removeAugmentation(name: string): boolean {
    const removed = this.augmentations.remove(name);
    if (removed) this.#record("augmentationRemoved", Date.now(), { name });
    return removed;
  }

  // --- lifecycle commands from the manager ---------------------------------------------------

  /** Detaches from the PT: Done, still answering with its last state. */
  detach(at: number): void {
    if (!this.attached) return;
    this.#figures = this.#window.evaluate(at);
    this.#bound = false;
    this.#subscribed = false;
    this.#commandSink = undefined;
    this.#transition("stop", at);
  }

  /** A Done twin starts again (Unbound until it binds). */
  resume(at: number): void {
    if (this.#lifecycle.state !== "Done") return;
    this.#heard = false;
    this.#ptOnline = undefined;
    if (this.#window.started) this.#window.setReachable(at, false);
    this.#transition("resume", at);
  }

  /** Gone for good: Stopped, and the isolates of its functions are freed. */
  dismiss(at: number): void {
    this.#bound = false;
    this.#commandSink = undefined;
    this.#transition("dismiss", at);
    this.dispose();
  }

  /**
   * Frees the sandboxes (isolated-vm isolates) of the twin's functions; it runs none any more. For
   * a twin that is thrown away without being dismissed (a dry run of a restore, a closing runtime):
   * the isolates would otherwise wait for the garbage collector.
   */
  dispose(): void {
    this.augmentations.dispose();
    this.#shadowing?.dispose();
  }

  exportState(now = Date.now()): TwinState {
    return structuredClone({
      format: "dtc-twin-state/1",
      exportedAt: now,
      config: this.config,
      td: this.td,
      lifecycle: { state: this.#lifecycle.state, history: [...this.#lifecycle.history()] },
      properties: this.#properties,
      lastUpdate: this.#lastUpdate,
      augmentations: this.augmentations
        .list()
        .map(({ name, source, disabledReason }) =>
          disabledReason === undefined ? { name, source } : { name, source, disabled: disabledReason },
        ),
      history: { states: this.#states.toArray(), events: this.#events.toArray() },
      entanglement: { figures: this.#figures, observations: this.#window.observations(now) },
      counters: this.counters,
    });
  }
}
