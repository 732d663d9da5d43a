/**
 * The MQTT connections of a process: one per broker (and credentials), shared by every twin, plus
 * the socket tuning and topic matching the other MQTT clients use. Credentials are client options,
 * never part of the URL: URLs reach TDs and logs.
 */
import { createHash } from "node:crypto";
import mqtt, { type IClientOptions, type MqttClient } from "mqtt";
import type { Logger } from "../logger.js";

/** How long closing a connection waits for messages in flight, ms. */
const END_GRACE_MS = 2000;

/**
 * Most messages a connection keeps for the broker while it is unreachable. mqtt.js would keep them
 * all: a twin publishing its properties at 10 Hz through a broker outage of an hour is 36,000.
 * Past it a QoS 0 publish drops the oldest QoS 0 one kept (what counts is the latest value); a
 * QoS 1 or 2 publish is refused (its sender learns it was not sent).
 */
export const MAX_OFFLINE_MESSAGES = 1000;

/** A publish was not kept for the broker: it is unreachable and as many messages as kept wait already. */
export class MqttOfflineQueueFullError extends Error {
  constructor(url: string, limit: number, what: "dropped" | "refused") {
    super(
      `the MQTT broker ${url} is unreachable and ${limit} messages wait for it: ${what === "dropped" ? "the oldest QoS 0 message was dropped" : "the message was not sent"}`,
    );
    this.name = "MqttOfflineQueueFullError";
  }
}

type PublishPacket = { cmd?: string; qos?: number };

/**
 * Bounds what `client` keeps while disconnected to `limit` messages (see MAX_OFFLINE_MESSAGES). For
 * any mqtt.js client of the process: node-wot's binding clients too.
 */
export function boundOfflineQueue(client: MqttClient, url: string, limit = MAX_OFFLINE_MESSAGES): void {
  const publish = client.publish.bind(client) as (...args: unknown[]) => MqttClient;
  client.publish = ((topic: string, message: string | Buffer, opts?: unknown, callback?: unknown) => {
    const options = typeof opts === "function" ? undefined : (opts as { qos?: number } | undefined);
    const done = (typeof opts === "function" ? opts : callback) as ((err?: Error) => void) | undefined;
    if (!client.connected) {
      const queue = client.queue as { packet: PublishPacket; cb?: (err?: Error) => void }[];
      if ((options?.qos ?? 0) === 0) {
        while (queue.length >= limit) {
          const oldest = queue.findIndex((q) => q.packet.cmd === "publish" && (q.packet.qos ?? 0) === 0);
          if (oldest < 0) break;
          const [dropped] = queue.splice(oldest, 1);
          dropped?.cb?.(new MqttOfflineQueueFullError(url, limit, "dropped"));
        }
      } else if (Object.keys(client.outgoing).length >= limit) {
        done?.(new MqttOfflineQueueFullError(url, limit, "refused"));
        return client;
      }
    }
    return publish(topic, message, opts, callback);
  }) as MqttClient["publish"];
}

/** Receives the messages of one subscribed topic. */
export type MessageHandler = (topic: string, payload: Buffer) => void;
/** Told when the connection to the broker comes up or goes down. */
export type ConnectionListener = (connected: boolean, at: number) => void;

/** What a client presents in CONNECT: an internal user and its password, or any name and a token. */
export interface MqttCredentials {
  username: string;
  password: string;
}

/** The subscription was refused by the broker (SUBACK 0x80: its ACL does not allow the filter). */
export class MqttSubscriptionRefusedError extends Error {
  constructor(
    readonly topic: string,
    url: string,
  ) {
    super(`the MQTT broker ${url} refused the subscription to ${JSON.stringify(topic)} (not authorized)`);
    this.name = "MqttSubscriptionRefusedError";
  }
}

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

  constructor(url: string, options: IClientOptions, onRelease: () => void, logger?: Logger) {
    this.url = url;
    this.#onRelease = onRelease;
    this.#client = mqtt.connect(url, {
      reconnectPeriod: 1000,
      connectTimeout: 10_000,
      // A refused CONNECT (e.g. a broker restarting with its authentication not ready yet) is retried
      // like a lost connection: mqtt.js would otherwise give up for good.
      reconnectOnConnackError: true,
      ...options,
    });
    boundOfflineQueue(this.#client, url);
    this.#client.on("message", (topic, payload) => {
      const handlers = this.#handlers.get(topic);
      if (handlers) for (const handler of handlers) handler(topic, payload);
      for (const { match, handlers } of this.#patterns.values()) {
        if (match.test(topic)) for (const handler of handlers) handler(topic, payload);
      }
    });
    // Each distinct failure is logged once until the connection is up again (retries are every second).
    let lastError: string | undefined;
    const user = options.username;
    this.#client.on("connect", () => {
      noDelay(this.#client);
      if (lastError !== undefined) logger?.info({ broker: url, user }, "MQTT connection up again");
      lastError = undefined;
      this.#notify(true);
    });
    this.#client.on("close", () => this.#notify(false));
    // mqtt.js retries by itself; an error event without a listener would crash the process.
    this.#client.on("error", (err) => {
      if (err.message === lastError) return;
      lastError = err.message;
      logger?.warn({ broker: url, user, err: err.message }, "MQTT connection failed; retrying");
    });
  }

  #notify(connected: boolean): void {
    const at = Date.now();
    for (const listener of this.#listeners) listener(connected, at);
  }

  get connected(): boolean {
    return this.#client.connected;
  }

  /** Messages kept for the broker while it is unreachable (at most MAX_OFFLINE_MESSAGES of each QoS kind). */
  get waiting(): number {
    return this.#client.queue.length + Object.keys(this.#client.outgoing).length;
  }

  onConnection(listener: ConnectionListener): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  /**
   * Subscribes `handler` to `topic` (+ and # allowed); resolves once the broker granted it, rejects
   * with MqttSubscriptionRefusedError when its ACL refused it.
   */
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
    const forget = () => {
      const set = wildcard ? this.#patterns.get(topic)?.handlers : this.#handlers.get(topic);
      if (!set?.delete(handler) || set.size > 0) return false;
      if (wildcard) this.#patterns.delete(topic);
      else this.#handlers.delete(topic);
      return true;
    };
    if (first) {
      try {
        await this.#client.subscribeAsync(topic, { qos: 0 });
      } catch (err) {
        forget();
        if (refusedBySuback(err)) throw new MqttSubscriptionRefusedError(topic, this.url);
        throw err;
      }
    }
    return () => {
      if (forget() && !this.#client.disconnecting) this.#client.unsubscribe(topic);
    };
  }

  /** Whether the connection speaks MQTT 5 (user properties, e.g. a traceparent, go with messages). */
  get v5(): boolean {
    return this.#client.options.protocolVersion === 5;
  }

  /**
   * Publishes; kept while disconnected, up to MAX_OFFLINE_MESSAGES (see boundOfflineQueue).
   * `userProperties` go with the message over MQTT 5 and are left out over 3.1.1.
   */
  publish(
    topic: string,
    payload: string | Buffer,
    options: { retain?: boolean; qos?: 0 | 1 | 2; userProperties?: Record<string, string> } = {},
  ): Promise<void> {
    const properties =
      this.v5 && options.userProperties && Object.keys(options.userProperties).length > 0
        ? { properties: { userProperties: options.userProperties } }
        : {};
    return this.#client
      .publishAsync(topic, payload, { qos: options.qos ?? 0, retain: options.retain ?? false, ...properties })
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

/** Whether mqtt.js failed a subscribe because the SUBACK said 0x80 or more (its ErrorWithSubackPacket). */
function refusedBySuback(err: unknown): boolean {
  const granted = (err as { packet?: { granted?: unknown } }).packet?.granted;
  return Array.isArray(granted) && granted.some((code) => typeof code === "number" && code >= 0x80);
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

/**
 * The key of a connection: the URL and who connects. The password enters only as a short hash, so
 * that a key printed while debugging shows no secret.
 */
function poolKey(url: string, credentials: MqttCredentials | undefined): string {
  if (credentials === undefined) return url;
  const secret = createHash("sha256").update(credentials.password).digest("base64url").slice(0, 16);
  return `${url} ${credentials.username} ${secret}`;
}

/** The shared connections of a process, one per broker URL and credentials. */
export class MqttConnections {
  readonly #connections = new Map<string, SharedMqttConnection>();
  readonly #options: IClientOptions;
  readonly #logger: Logger | undefined;

  /** `logger`: told about failed connections and refused credentials (once per distinct failure). */
  constructor(options: IClientOptions = {}, logger?: Logger) {
    this.#options = options;
    this.#logger = logger;
  }

  /** The connection to `url` as `credentials` (opened on first use); call release() on it when done. */
  acquire(url: string, credentials?: MqttCredentials): SharedMqttConnection {
    const key = poolKey(url, credentials);
    let connection = this.#connections.get(key);
    if (!connection) {
      const options = credentials
        ? { ...this.#options, username: credentials.username, password: credentials.password }
        : this.#options;
      connection = new SharedMqttConnection(url, options, () => this.#connections.delete(key), this.#logger);
      this.#connections.set(key, connection);
    }
    return connection.acquire();
  }
}
