import type { IClientOptions, MqttClient } from "mqtt";
import { noDelay } from "../mqtt/connections.js";
import { connectSimulatorClient } from "./connect.js";
import { checkFaults, checkRate, type Faults } from "./faults.js";
import { PtSimulator, type SetRateCommand, type SimulatorOptions } from "./pt-simulator.js";
import type { Scheduler } from "./scheduler.js";

/** Options of a simulated IIoT device (schema thing-models/iiot-device.tm.jsonld). Default rate: 1 Hz. */
export type IiotDeviceOptions = SimulatorOptions;

/** One telemetry message of the IIoT device, on `dtc/iiot/{id}/telemetry`. */
export interface IiotTelemetry {
  /** When the sample was taken (epoch ms). */
  ts: number;
  /** 1 for the first sample, +1 per sample, lost ones included. */
  seq: number;
  /** °C, a random walk between 20 and 80. */
  temperature: number;
  /** kWh consumed since the device started; never decreases. */
  energy: number;
  /** The rate (Hz) the device samples at. */
  rate: number;
}

const round = (value: number, decimals: number) => {
  const f = 10 ** decimals;
  return Math.round(value * f) / f;
};

/**
 * The IIoT device of the DTC papers: reports temperature and energy at a configurable rate and obeys
 * `{"command":"setRate","rate":hz}` on `dtc/iiot/{id}/commands`.
 *
 * ```ts
 * const dev = new IiotDeviceSimulator({ id: "d1", brokerUrl, rate: 5 });
 * await dev.start();
 * dev.setFaults({ latencyMs: 50, jitterMs: 10, loss: 0.1 });
 * await dev.stop();
 * ```
 */
export class IiotDeviceSimulator extends PtSimulator {
  protected readonly telemetryTopic: string;
  protected readonly statusTopic: string;
  protected readonly commandTopic: string;
  #temperature: number;
  #energy = 0;
  #lastTs: number | undefined;

  constructor(options: IiotDeviceOptions) {
    super(options, 1);
    this.telemetryTopic = `dtc/iiot/${this.id}/telemetry`;
    this.statusTopic = `dtc/iiot/${this.id}/status`;
    this.commandTopic = `dtc/iiot/${this.id}/commands`;
    this.#temperature = 35 + this.random() * 10;
  }

  protected sample(seq: number, ts: number): IiotTelemetry {
    const random = this.random;
    // A random walk pulled gently towards 50 °C and kept in [20, 80].
    const t = this.#temperature + (random() - 0.5) + (50 - this.#temperature) * 0.002;
    this.#temperature = Math.min(80, Math.max(20, t));
    const powerKw = 1 + random();
    const hours = this.#lastTs === undefined ? 0 : Math.max(0, ts - this.#lastTs) / 3_600_000;
    this.#lastTs = ts;
    this.#energy += powerKw * hours;
    return {
      ts,
      seq,
      temperature: round(this.#temperature, 2),
      energy: round(this.#energy, 6),
      rate: this.rate,
    };
  }

  protected applyCommand(message: unknown): SetRateCommand {
    if (typeof message !== "object" || message === null || Array.isArray(message)) {
      throw new Error("not a JSON object");
    }
    const { command, rate } = message as { command?: unknown; rate?: unknown };
    if (command !== "setRate") throw new Error(`unknown command ${JSON.stringify(command)}`);
    if (typeof rate !== "number") throw new Error(`rate is ${JSON.stringify(rate)}, not a number`);
    this.setRate(rate); // throws the RangeError naming the limits
    return { command, rate };
  }
}

/** Options of a fleet of IIoT devices on one MQTT connection. */
export interface IiotFleetOptions extends Partial<Faults> {
  /** Number of devices; their ids are `${prefix}1` … `${prefix}${count}`. */
  count: number;
  /** Id prefix (default "d"). */
  prefix?: string;
  /** Connect once on our own (no last will: it would be one for the whole fleet). */
  brokerUrl?: string;
  /** Or share this connected client. */
  client?: MqttClient;
  /** Every device's rate (Hz, default 1). */
  rate?: number;
  random?: () => number;
  onWarning?: (message: string) => void;
  mqttOptions?: IClientOptions;
  /** With brokerUrl: `start()` waits for a broker not reachable yet (see SimulatorOptions.waitForBroker). */
  waitForBroker?: boolean;
  scheduler?: Scheduler;
}

/** Topics per SUBSCRIBE packet: thousands of devices subscribe in a few round trips. */
const SUBSCRIBE_BATCH = 1000;

/**
 * N IIoT devices sharing one MQTT connection and one timer, for benchmarks. Each device has its own
 * sequence numbers, rate and random walks; their first samples are spread evenly over one period so
 * that the fleet publishes smoothly rather than in bursts.
 */
export class IiotFleet {
  readonly devices: readonly IiotDeviceSimulator[];
  readonly #options: IiotFleetOptions;
  readonly #byId = new Map<string, IiotDeviceSimulator>();
  #client: MqttClient | undefined;
  /** Aborts a start still waiting for its broker. */
  #connecting: AbortController | undefined;

  constructor(options: IiotFleetOptions) {
    if (!(Number.isInteger(options.count) && options.count >= 1)) {
      throw new RangeError(`count must be an integer >= 1 (got ${options.count})`);
    }
    if ((options.brokerUrl === undefined) === (options.client === undefined)) {
      throw new TypeError("exactly one of brokerUrl and client is required");
    }
    const rate = options.rate ?? 1;
    checkRate(rate);
    checkFaults(options);
    this.#options = options;
    const prefix = options.prefix ?? "d";
    const devices: IiotDeviceSimulator[] = [];
    for (let i = 1; i <= options.count; i++) {
      const device = new IiotDeviceSimulator({
        id: `${prefix}${i}`,
        // Read when the device starts: the fleet's own client only exists after its start().
        client: () => this.#clientOrThrow(),
        rate,
        latencyMs: options.latencyMs,
        jitterMs: options.jitterMs,
        loss: options.loss,
        random: options.random,
        onWarning: options.onWarning,
        scheduler: options.scheduler,
        startDelayMs: ((i - 1) / options.count) * (1000 / rate),
        subscribe: false,
      });
      devices.push(device);
      this.#byId.set(device.id, device);
    }
    this.devices = devices;
  }

  #clientOrThrow(): MqttClient {
    if (this.#client === undefined) throw new Error("the fleet is not started");
    return this.#client;
  }

  /** The shared client; undefined before start. */
  get client(): MqttClient | undefined {
    return this.#client;
  }
  get size(): number {
    return this.devices.length;
  }
  device(id: string): IiotDeviceSimulator | undefined {
    return this.#byId.get(id);
  }
  /** Telemetry messages sent by all devices. */
  get sent(): number {
    return this.devices.reduce((n, d) => n + d.sent, 0);
  }
  get dropped(): number {
    return this.devices.reduce((n, d) => n + d.dropped, 0);
  }

  /** Connects (with brokerUrl), subscribes every command topic in batches and starts every device. */
  async start(): Promise<void> {
    const { brokerUrl, mqttOptions } = this.#options;
    let client = this.#options.client;
    if (brokerUrl !== undefined) {
      this.#connecting = new AbortController();
      try {
        client = await connectSimulatorClient(
          brokerUrl,
          { reconnectPeriod: 1000, queueQoSZero: false, ...mqttOptions },
          this.#options.waitForBroker
            ? {
                onRetry: (message) => this.#options.onWarning?.(`fleet: ${message}`),
                signal: this.#connecting.signal,
              }
            : undefined,
        );
        const own = client;
        noDelay(own);
        own.on("connect", () => noDelay(own));
      } catch (err) {
        throw new Error(
          `fleet: cannot connect to the MQTT broker at ${brokerUrl}: ${(err as Error).message}`,
          {
            cause: err,
          },
        );
      } finally {
        this.#connecting = undefined;
      }
      client.on("error", (err) => this.#options.onWarning?.(`fleet: MQTT: ${err.message}`));
    }
    if (client === undefined) throw new TypeError("no MQTT client");
    this.#client = client;
    const topics = this.devices.map((d) => `dtc/iiot/${d.id}/commands`);
    for (let i = 0; i < topics.length; i += SUBSCRIBE_BATCH) {
      await client.subscribeAsync(topics.slice(i, i + SUBSCRIBE_BATCH), { qos: 1 });
    }
    await Promise.all(this.devices.map((d) => d.start()));
  }

  /** Every device's rate (Hz). */
  setRate(hz: number): void {
    checkRate(hz);
    for (const d of this.devices) d.setRate(hz);
  }
  setFaults(faults: Partial<Faults>): void {
    checkFaults(faults);
    for (const d of this.devices) d.setFaults(faults);
  }
  async goOffline(): Promise<void> {
    await Promise.all(this.devices.map((d) => d.goOffline()));
  }
  async goOnline(): Promise<void> {
    await Promise.all(this.devices.map((d) => d.goOnline()));
  }

  /** Stops every device (retained offline statuses), unsubscribes, and disconnects an own client. */
  async stop(): Promise<void> {
    this.#connecting?.abort();
    const client = this.#client;
    await Promise.all(this.devices.map((d) => d.stop()));
    if (client === undefined) return;
    if (client.connected) {
      const topics = this.devices.map((d) => `dtc/iiot/${d.id}/commands`);
      for (let i = 0; i < topics.length; i += SUBSCRIBE_BATCH) {
        await client.unsubscribeAsync(topics.slice(i, i + SUBSCRIBE_BATCH));
      }
    }
    if (this.#options.brokerUrl !== undefined) await client.endAsync(!client.connected);
    this.#client = undefined;
  }

  /** Every device crashes (publishing its will's payload); an own connection is then destroyed. */
  crash(): void {
    this.#connecting?.abort();
    const client = this.#client;
    for (const d of this.devices) d.crash();
    if (client !== undefined && this.#options.brokerUrl !== undefined) {
      // Let the wills leave before the socket goes.
      client.end(false);
    }
    this.#client = undefined;
  }
}
