import mqtt, { type IClientOptions, type MqttClient } from "mqtt";

/** How long closing a connection waits for messages in flight, ms. */
const END_GRACE_MS = 2000;

/** Receives the messages of one subscribed topic. */
export type MessageHandler = (topic: string, payload: Buffer) => void;
/** Told when the connection to the broker comes up or goes down. */
export type ConnectionListener = (connected: boolean, at: number) => void;

/**
 * One MQTT connection to a broker shared by every twin of the process (a thousand twins must not
 * mean a thousand connections). Subscriptions are reference-counted per topic and re-made by
 * mqtt.js after a reconnect; messages are routed to the handlers of the exact topic.
 */
export class SharedMqttConnection {
  readonly url: string;
  readonly #client: MqttClient;
  readonly #handlers = new Map<string, Set<MessageHandler>>();
  /** Wildcard subscriptions (few: one per runtime, not per twin), matched after the exact topics. */
  readonly #patterns = new Map<string, { match: RegExp; handlers: Set<MessageHandler> }>();
  readonly #listeners = new Set<ConnectionListener>();
  #users = 0;
  #onRelease: () => void;

  constructor(url: string, options: IClientOptions, onRelease: () => void) {
    this.url = url;
    this.#onRelease = onRelease;
    this.#client = mqtt.connect(url, { reconnectPeriod: 1000, connectTimeout: 10_000, ...options });
    this.#client.on("message", (topic, payload) => {
      const handlers = this.#handlers.get(topic);
      if (handlers) for (const handler of handlers) handler(topic, payload);
      for (const { match, handlers } of this.#patterns.values()) {
        if (match.test(topic)) for (const handler of handlers) handler(topic, payload);
      }
    });
    this.#client.on("connect", () => {
      noDelay(this.#client);
      this.#notify(true);
    });
    this.#client.on("close", () => this.#notify(false));
    // mqtt.js retries by itself; an error event without a listener would crash the process.
    this.#client.on("error", () => {});
  }

  #notify(connected: boolean): void {
    const at = Date.now();
    for (const listener of this.#listeners) listener(connected, at);
  }

  get connected(): boolean {
    return this.#client.connected;
  }

  onConnection(listener: ConnectionListener): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  /** Subscribes `handler` to `topic` (+ and # allowed); resolves once the broker granted it. */
  async subscribe(topic: string, handler: MessageHandler): Promise<() => void> {
    const wildcard = /[+#]/.test(topic);
    let entry = wildcard ? this.#patterns.get(topic)?.handlers : this.#handlers.get(topic);
    const first = entry === undefined;
    if (!entry) {
      entry = new Set();
      if (wildcard) this.#patterns.set(topic, { match: topicMatcher(topic), handlers: entry });
      else this.#handlers.set(topic, entry);
    }
    entry.add(handler);
    if (first) await this.#client.subscribeAsync(topic, { qos: 0 });
    return () => {
      const set = wildcard ? this.#patterns.get(topic)?.handlers : this.#handlers.get(topic);
      if (!set?.delete(handler) || set.size > 0) return;
      if (wildcard) this.#patterns.delete(topic);
      else this.#handlers.delete(topic);
      if (!this.#client.disconnecting) this.#client.unsubscribe(topic);
    };
  }

  /** Publishes; queued by mqtt.js while disconnected. */
  publish(
    topic: string,
    payload: string | Buffer,
    options: { retain?: boolean; qos?: 0 | 1 | 2 } = {},
  ): Promise<void> {
    return this.#client
      .publishAsync(topic, payload, { qos: options.qos ?? 0, retain: options.retain ?? false })
      .then(() => {});
  }

  acquire(): this {
    this.#users++;
    return this;
  }

  /** One user is done; the last one closes the connection. */
  async release(): Promise<void> {
    if (--this.#users > 0) return;
    this.#onRelease();
    this.#listeners.clear();
    this.#handlers.clear();
    this.#patterns.clear();
    // A graceful end waits for QoS 1 messages still in flight; after a broker restart some may
    // never be acknowledged, and end would wait forever: give them a moment, then force it.
    let timer: NodeJS.Timeout | undefined;
    const ended = await Promise.race([
      this.#client.endAsync().then(() => true),
      new Promise<boolean>((resolve) => {
        timer = setTimeout(() => resolve(false), END_GRACE_MS);
      }),
    ]);
    clearTimeout(timer);
    if (!ended) await this.#client.endAsync(true);
  }
}

/**
 * Turns Nagle off on a client's socket (mqtt.js does not): subscribe/suback and publish/puback are
 * small request/answer exchanges that Nagle plus delayed ACKs would hold back ~40 ms each.
 * Call on every "connect": each reconnect makes a new socket.
 */
export function noDelay(client: MqttClient): void {
  const stream = client.stream as { setNoDelay?: (on: boolean) => void } | undefined;
  stream?.setNoDelay?.(true);
}

/** A matcher for an MQTT topic filter with + (one level) and # (the rest). */
export function topicMatcher(filter: string): RegExp {
  const levels = filter
    .split("/")
    .map((level) =>
      level === "+" ? "[^/]*" : level === "#" ? ".*" : level.replace(/[.*?^${}()|[\]\\]/g, "\\$&"),
    );
  return new RegExp(`^${levels.join("/")}$`);
}

/** The shared connections of a process, one per broker URL. */
export class MqttConnections {
  readonly #connections = new Map<string, SharedMqttConnection>();
  readonly #options: IClientOptions;

  constructor(options: IClientOptions = {}) {
    this.#options = options;
  }

  /** The connection to `url` (opened on first use); call release() on it when done. */
  acquire(url: string): SharedMqttConnection {
    let connection = this.#connections.get(url);
    if (!connection) {
      connection = new SharedMqttConnection(url, this.#options, () => this.#connections.delete(url));
      this.#connections.set(url, connection);
    }
    return connection.acquire();
  }
}
