// The PT base class of the simulators: the drift-free sampling loop and the MQTT side (status,
// last will, commands) that the IIoT device and the camera have in common.
import { randomBytes } from "node:crypto";
import { EventEmitter } from "node:events";
import type { IClientOptions, MqttClient } from "mqtt";
import { noDelay } from "../mqtt/connections.js";
import { connectSimulatorClient } from "./connect.js";
import { checkFaults, checkRate, type Faults } from "./faults.js";
import { defaultScheduler, type ScheduledTask, type Scheduler } from "./scheduler.js";

/** A command of the twin to the device, as applied. */
export interface SetRateCommand {
  command: "setRate";
  rate: number;
}

/** Where a simulator is in its life. */
export type SimulatorState = "idle" | "starting" | "online" | "offline" | "stopped" | "crashed";

/** Events of a simulator: `command` after a command from the twin was applied, `state` on every change. */
export interface SimulatorEvents {
  command: [SetRateCommand];
  state: [SimulatorState];
}

/** Options every simulator takes. Exactly one of `brokerUrl` and `client` is required. */
export interface SimulatorOptions extends Partial<Faults> {
  id: string;
  /** Connect on our own, with a retained `{"status":"offline"}` last will on the status topic. */
  brokerUrl?: string;
  /**
   * Share a connected mqtt.js client with other simulators (or a function giving it at start): no last
   * will; `crash()` publishes the will's payload itself.
   */
  client?: MqttClient | (() => MqttClient);
  /** Samples per second, > 0 and <= 1000. */
  rate?: number;
  /** Source of randomness in [0, 1) (default Math.random); `seededRandom(n)` makes a run reproducible. */
  random?: () => number;
  /** Delay (ms) of the first sample after start; a fleet spreads its devices over one period with it. */
  startDelayMs?: number;
  /** Called with a reason for every command ignored and every connection error. */
  onWarning?: (message: string) => void;
  /** Extra mqtt.js options for an own connection (clientId, username, password, ...). */
  mqttOptions?: IClientOptions;
  /**
   * Own connection: `start()` waits for a broker that is not reachable yet, retrying with backoff
   * and telling `onWarning`, instead of rejecting (default false). Refused credentials still reject.
   */
  waitForBroker?: boolean;
  /** Subscribe the command topic in `start()` (default true). A fleet subscribes its devices' topics in batches. */
  subscribe?: boolean;
  scheduler?: Scheduler;
}

/** The message handlers of each client, by exact topic: one `message` listener per client however many devices share it. */
const routes = new WeakMap<MqttClient, Map<string, (payload: Buffer) => void>>();

function route(client: MqttClient, topic: string, handler: (payload: Buffer) => void): void {
  let table = routes.get(client);
  if (table === undefined) {
    const created = new Map<string, (payload: Buffer) => void>();
    client.on("message", (t, payload) => created.get(t)?.(payload));
    routes.set(client, created);
    table = created;
  }
  table.set(topic, handler);
}

/** The payload of the last will, also published by `crash()` on a shared connection. */
export const WILL_PAYLOAD = JSON.stringify({ status: "offline" });

/** Past this lag (ms) a simulator skips the samples it missed instead of sending them in a burst. */
const MAX_CATCH_UP_MS = 1000;

/**
 * A simulated physical twin: samples at `rate` on a drift-free schedule (sample k is due at
 * start + k × period, whatever the timer lateness), passes each sample through the fault knobs and
 * publishes it as JSON, QoS 0, not retained. Subclasses say what a sample contains and where it goes.
 */
export abstract class PtSimulator extends EventEmitter<SimulatorEvents> {
  readonly id: string;
  protected readonly random: () => number;
  readonly #options: SimulatorOptions;
  readonly #scheduler: Scheduler;
  readonly #warn: (message: string) => void;
  #faults: Faults;
  #rate: number;
  #period: number;
  #state: SimulatorState = "idle";
  #client: MqttClient | undefined;
  #seq = 0;
  #sent = 0;
  #dropped = 0;
  #tickTask: ScheduledTask | undefined;
  /** Due time of the next sample and of the last one taken (performance.now() ms). */
  #nextDue = 0;
  #lastDue: number | undefined;
  /** Bumped by stop and crash so that messages still held back by the latency knob are not sent. */
  #epoch = 0;
  /** Aborts a start still waiting for its broker (stop, crash). */
  #connecting: AbortController | undefined;

  protected abstract readonly telemetryTopic: string;
  protected abstract readonly statusTopic: string;
  /** Undefined for a device that takes no commands. */
  protected abstract readonly commandTopic: string | undefined;
  /** The JSON body of sample `seq` taken at `ts` (epoch ms); called for lost samples too. */
  protected abstract sample(seq: number, ts: number): object;
  /** Applies a command message (parsed JSON) or throws an Error saying why it is ignored. */
  protected abstract applyCommand(message: unknown): SetRateCommand;

  constructor(options: SimulatorOptions, defaultRate: number) {
    super();
    if (typeof options.id !== "string" || options.id === "" || /[+#/]/.test(options.id)) {
      throw new RangeError(
        `id must be a non-empty string without "/", "+" or "#" (got ${JSON.stringify(options.id)})`,
      );
    }
    if ((options.brokerUrl === undefined) === (options.client === undefined)) {
      throw new TypeError("exactly one of brokerUrl and client is required");
    }
    const rate = options.rate ?? defaultRate;
    checkRate(rate);
    const faults = {
      latencyMs: options.latencyMs ?? 0,
      jitterMs: options.jitterMs ?? 0,
      loss: options.loss ?? 0,
    };
    checkFaults(faults);
    if (options.startDelayMs !== undefined && !(options.startDelayMs >= 0)) {
      throw new RangeError(`startDelayMs must be >= 0 (got ${options.startDelayMs})`);
    }
    this.id = options.id;
    this.#options = options;
    this.random = options.random ?? Math.random;
    this.#scheduler = options.scheduler ?? defaultScheduler;
    this.#warn = options.onWarning ?? (() => {});
    this.#faults = faults;
    this.#rate = rate;
    this.#period = 1000 / rate;
  }

  /** Current sampling rate (Hz). */
  get rate(): number {
    return this.#rate;
  }
  get faults(): Faults {
    return { ...this.#faults };
  }
  get state(): SimulatorState {
    return this.#state;
  }
  /** Sequence number of the last sample taken (0 before the first). */
  get seq(): number {
    return this.#seq;
  }
  /** Telemetry messages handed to the MQTT client. */
  get sent(): number {
    return this.#sent;
  }
  /** Samples never published: lost by the `loss` knob, or taken while the connection was down. */
  get dropped(): number {
    return this.#dropped;
  }
  /** The MQTT client in use (own or shared); undefined before start. */
  get client(): MqttClient | undefined {
    return this.#client;
  }

  /**
   * Connects (own connection) or joins the shared client, subscribes the command topic, publishes the
   * retained online status and starts sampling. Rejects when the broker cannot be reached. Callable
   * again after `stop()` or `crash()` (a reboot: the sequence numbers go on).
   */
  async start(): Promise<void> {
    if (this.#state === "starting" || this.#state === "online" || this.#state === "offline") {
      throw new Error(`simulator ${this.id} is already started`);
    }
    this.#setState("starting");
    const { brokerUrl, mqttOptions } = this.#options;
    const shared = this.#options.client;
    let client = typeof shared === "function" ? undefined : shared;
    try {
      if (typeof shared === "function") client = shared();
      if (brokerUrl !== undefined) {
        this.#connecting = new AbortController();
        client = await connectSimulatorClient(
          brokerUrl,
          {
            clientId: `dtc-sim-${this.id}-${randomBytes(4).toString("hex")}`,
            reconnectPeriod: 1000,
            connectTimeout: 10_000,
            // Telemetry taken while disconnected is lost, as on a device without a buffer.
            queueQoSZero: false,
            ...mqttOptions,
            will: { topic: this.statusTopic, payload: Buffer.from(WILL_PAYLOAD), qos: 1, retain: true },
          },
          this.#options.waitForBroker
            ? { onRetry: (message) => this.#warn(`${this.id}: ${message}`), signal: this.#connecting.signal }
            : undefined,
        );
        this.#connecting = undefined;
        const own = client;
        noDelay(own);
        own.on("error", (err) => this.#warn(`${this.id}: MQTT: ${err.message}`));
        // The will may have replaced the retained status while we were away.
        own.on("connect", () => {
          noDelay(own);
          if (this.#client === own && (this.#state === "online" || this.#state === "offline")) {
            this.#publishStatus(this.#state).catch(() => {});
          }
        });
      }
      if (client === undefined) throw new TypeError("no MQTT client");
      this.#client = client;
      const commandTopic = this.commandTopic;
      if (commandTopic !== undefined) {
        route(client, commandTopic, (payload) => this.#onCommand(payload));
        if (this.#options.subscribe !== false) await client.subscribeAsync(commandTopic, { qos: 1 });
      }
      // Announce first, then sample: a broker may forward a QoS 0 sample before a QoS 1 status it is
      // still storing as retained, and a twin should hear "online" before the data.
      await this.#publishStatus("online");
      this.#setState("online");
      this.#startSampling(performance.now() + (this.#options.startDelayMs ?? 0));
    } catch (err) {
      this.#connecting = undefined;
      this.#cancelSampling();
      this.#detach(client);
      if (brokerUrl !== undefined) client?.end(true);
      this.#client = undefined;
      this.#setState("idle");
      const where = brokerUrl === undefined ? "" : ` at ${brokerUrl}`;
      throw new Error(
        `simulator ${this.id}: cannot start with the MQTT broker${where}: ${(err as Error).message}`,
        {
          cause: err,
        },
      );
    }
  }

  /** Changes the sampling rate (Hz) without telling the twin; it shows in the next sample's `rate`. */
  setRate(hz: number): void {
    checkRate(hz);
    this.#rate = hz;
    this.#period = 1000 / hz;
    if (this.#state !== "online" || this.#lastDue === undefined) return;
    // Re-anchor the schedule: one new period after the last sample, or now if that is past.
    this.#scheduler.cancel(this.#tickTask);
    this.#startSampling(Math.max(performance.now(), this.#lastDue + this.#period));
  }

  /** Changes some fault knobs; the others keep their values. Applies to samples taken from now on. */
  setFaults(faults: Partial<Faults>): void {
    checkFaults(faults);
    const defined = Object.fromEntries(Object.entries(faults).filter(([, v]) => v !== undefined));
    this.#faults = { ...this.#faults, ...defined };
  }

  /**
   * Publishes the retained offline status and stops sampling while staying connected. The sequence
   * numbers do not advance while offline. Messages already held back by the latency knob still arrive.
   */
  async goOffline(): Promise<void> {
    if (this.#state !== "online") return;
    this.#cancelSampling();
    this.#setState("offline");
    await this.#publishStatus("offline");
  }

  /** Publishes the retained online status and resumes sampling at once. */
  async goOnline(): Promise<void> {
    if (this.#state !== "offline") return;
    const online = this.#publishStatus("online");
    this.#setState("online");
    this.#startSampling(performance.now());
    await online;
  }

  /**
   * Graceful stop: publishes the retained offline status, unsubscribes, and disconnects an own
   * connection cleanly (so the broker discards the will). Messages held back by latency are dropped.
   */
  async stop(): Promise<void> {
    // A start still waiting for its broker gives up (and rejects).
    this.#connecting?.abort();
    if (this.#state !== "online" && this.#state !== "offline") return;
    const client = this.#client;
    this.#epoch++;
    this.#cancelSampling();
    this.#setState("stopped");
    if (client === undefined) return;
    this.#detach(client);
    const own = this.#options.brokerUrl !== undefined;
    if (client.connected) {
      await this.#publishStatus("offline");
      const topic = this.commandTopic;
      if (!own && topic !== undefined && this.#options.subscribe !== false)
        await client.unsubscribeAsync(topic);
    }
    if (own) await client.endAsync(!client.connected);
    this.#client = undefined;
  }

  /**
   * Dies abruptly. On an own connection the socket is destroyed without a DISCONNECT, so the broker
   * publishes the last will. On a shared connection (which other devices still use) the simulator
   * publishes the will's payload itself, as the broker would, and goes silent.
   */
  crash(): void {
    this.#connecting?.abort();
    if (this.#state !== "online" && this.#state !== "offline") return;
    const client = this.#client;
    this.#epoch++;
    this.#cancelSampling();
    this.#setState("crashed");
    if (client === undefined) return;
    this.#detach(client);
    if (this.#options.brokerUrl !== undefined) {
      client.end(true); // end(true) destroys the stream without a DISCONNECT packet
    } else {
      client.publish(this.statusTopic, WILL_PAYLOAD, { qos: 1, retain: true });
      const topic = this.commandTopic;
      if (topic !== undefined && this.#options.subscribe !== false) client.unsubscribe(topic);
    }
    this.#client = undefined;
  }

  #setState(state: SimulatorState): void {
    this.#state = state;
    this.emit("state", state);
  }

  #detach(client: MqttClient | undefined): void {
    const topic = this.commandTopic;
    if (client !== undefined && topic !== undefined) routes.get(client)?.delete(topic);
  }

  async #publishStatus(status: "online" | "offline"): Promise<void> {
    const client = this.#client;
    if (client === undefined) return;
    await client.publishAsync(this.statusTopic, JSON.stringify({ status, ts: Date.now() }), {
      qos: 1,
      retain: true,
    });
  }

  #startSampling(firstDue: number): void {
    this.#nextDue = firstDue;
    this.#tickTask = this.#scheduler.at(firstDue, this.#tick);
  }

  #cancelSampling(): void {
    this.#scheduler.cancel(this.#tickTask);
    this.#tickTask = undefined;
  }

  readonly #tick = (): void => {
    this.#tickTask = undefined;
    this.#lastDue = this.#nextDue;
    this.#takeSample();
    const now = performance.now();
    let next = this.#nextDue + this.#period;
    // A process stalled for long skips what it missed rather than flooding the twin with a burst.
    if (next < now - MAX_CATCH_UP_MS) next = now;
    this.#startSampling(next);
  };

  #takeSample(): void {
    const seq = ++this.#seq;
    const ts = Date.now();
    // Computed for lost samples too, so that the random walks and a seeded run do not depend on losses.
    const body = this.sample(seq, ts);
    const { latencyMs, jitterMs, loss } = this.#faults;
    if (loss > 0 && this.random() < loss) {
      this.#dropped++;
      return;
    }
    const payload = JSON.stringify(body);
    const delay = latencyMs + (jitterMs > 0 ? (this.random() * 2 - 1) * jitterMs : 0);
    if (delay <= 0) {
      this.#publish(payload);
      return;
    }
    const epoch = this.#epoch;
    this.#scheduler.at(performance.now() + delay, () => {
      if (epoch === this.#epoch) this.#publish(payload);
    });
  }

  #publish(payload: string): void {
    const client = this.#client;
    if (client === undefined || !client.connected) {
      this.#dropped++;
      return;
    }
    client.publish(this.telemetryTopic, payload, { qos: 0, retain: false });
    this.#sent++;
  }

  #onCommand(payload: Buffer): void {
    let message: unknown;
    try {
      message = JSON.parse(payload.toString("utf8"));
    } catch {
      this.#warn(`${this.id}: ignored a command that is not JSON: ${truncate(payload.toString("utf8"))}`);
      return;
    }
    let command: SetRateCommand;
    try {
      command = this.applyCommand(message);
    } catch (err) {
      this.#warn(
        `${this.id}: ignored command ${truncate(JSON.stringify(message))}: ${(err as Error).message}`,
      );
      return;
    }
    this.emit("command", command);
  }
}

function truncate(text: string): string {
  return text.length > 200 ? `${text.slice(0, 200)}…` : text;
}
