import type { IncomingMessage, ServerResponse } from "node:http";
import bindingHttp, { type HttpConfig } from "@node-wot/binding-http";
import bindingMqtt from "@node-wot/binding-mqtt";
import type { ExposedThing, Servient } from "@node-wot/core";
import { boundOfflineQueue, noDelay } from "../mqtt/connections.js";

/**
 * node-wot's protocol servers with the fixes a fleet of twins needs. Each exposed thing is
 * addressed by a stable, caller-chosen path (the twin id) instead of its title: titles are for
 * people, may repeat, and node-wot de-duplicates them by exposure order ("_2"), so URLs and
 * topics would change from one run to the next.
 */

// CommonJS packages whose named exports Node's ESM loader cannot detect: take them from the default.
const { HttpServer } = bindingHttp;
const { MqttBrokerServer } = bindingMqtt;

/** The path (HTTP) and topic level (MQTT) of a thing. Must be URL- and topic-safe: [a-z0-9_-]. */
export type PathOf = (thing: ExposedThing) => string;

const SAFE_PATH = /^[a-z0-9][a-z0-9_-]*$/;

function checkedPath(pathOf: PathOf, thing: ExposedThing, taken: boolean): string {
  const path = pathOf(thing);
  if (!SAFE_PATH.test(path)) throw new Error(`path "${path}" of "${thing.title}" must match ${SAFE_PATH}`);
  if (taken) throw new Error(`path "${path}" is already exposed`);
  return path;
}

/**
 * node-wot's HTTP routes unregister a long poll's listener from its response's close and timeout
 * events, where a throw has no catcher and ends the process. Once the thing is destroyed (its
 * listeners cleared), or the second time (a close after the hour's timeout), the listener is gone
 * already and unregistering throws ("Not found"): there is nothing left to undo then.
 */
function tolerateGoneListeners(thing: ExposedThing): void {
  const unsubscribe = thing.handleUnsubscribeEvent;
  const unobserve = thing.handleUnobserveProperty;
  thing.handleUnsubscribeEvent = function (this: ExposedThing, ...args) {
    try {
      unsubscribe.apply(this, args);
    } catch {
      // gone already
    }
  };
  thing.handleUnobserveProperty = function (this: ExposedThing, ...args) {
    try {
      unobserve.apply(this, args);
    } catch {
      // gone already
    }
  };
}

/** The thing path of a long-poll request (an event, or a property's observable), else undefined. */
function longPollPath(method: string | undefined, url: string | undefined): string | undefined {
  if (method !== "GET" || url === undefined) return undefined;
  const segments = (url.split("?")[0] ?? "").split("/");
  const isEvent = segments.length === 4 && segments[2] === "events";
  const isObservation = segments.length === 5 && segments[2] === "properties" && segments[4] === "observable";
  return isEvent || isObservation ? segments[1] : undefined;
}

export class StablePathHttpServer extends HttpServer {
  readonly #pathOf: PathOf;
  /** Thing id -> path, and the paths taken. */
  readonly #paths = new Map<string, string>();
  readonly #taken = new Set<string>();
  readonly #configured: HttpConfig;
  /** Path -> its long polls still waiting (answered when the thing goes). */
  readonly #longPolls = new Map<string, Set<ServerResponse>>();
  /** The response of the request being routed, while its route runs (see #observeUntilClosed). */
  #routing: ServerResponse | undefined;

  static {
    // HttpServer's request listener calls this.handleRequest (private in its typings).
    const proto = HttpServer.prototype as unknown as {
      handleRequest(req: IncomingMessage, res: ServerResponse): Promise<void>;
    };
    const handleRequest = proto.handleRequest;
    Object.defineProperty(StablePathHttpServer.prototype, "handleRequest", {
      value: function (this: StablePathHttpServer, req: IncomingMessage, res: ServerResponse) {
        this.#routing = res;
        try {
          return handleRequest.call(this, req, res);
        } finally {
          this.#routing = undefined;
        }
      },
    });
  }

  /**
   * `config.port` 0 picks a free port. Without `config.baseUri`, forms point at
   * http://{address or localhost}:{port}, known once started.
   */
  constructor(config: HttpConfig, pathOf: PathOf) {
    // Only the path we choose, not also one per thing id.
    super({ ...config, devFriendlyUri: true });
    this.#pathOf = pathOf;
    this.#configured = config;
  }

  override async start(servient: Servient): Promise<void> {
    await super.start(servient);
    this.getServer().on("request", (req, res: ServerResponse) => {
      const path = longPollPath(req.method, req.url);
      if (path === undefined) return;
      let open = this.#longPolls.get(path);
      if (!open) {
        open = new Set();
        this.#longPolls.set(path, open);
      }
      open.add(res);
      res.once("close", () => {
        open.delete(res);
        if (open.size === 0 && this.#longPolls.get(path) === open) this.#longPolls.delete(path);
      });
    });
    if (this.#configured.baseUri === undefined) {
      const address = this.#configured.address;
      const host = address === undefined || address === "0.0.0.0" || address === "::" ? "localhost" : address;
      (this as unknown as { baseUri: string }).baseUri =
        `http://${host.includes(":") ? `[${host}]` : host}:${this.getPort()}`;
    }
  }

  /** Stops even while long polls are waiting (server.close() alone would wait for them). */
  override stop(): Promise<void> {
    const stopped = super.stop();
    const server = this.getServer();
    if ("closeAllConnections" in server) server.closeAllConnections();
    return stopped;
  }

  /** Where this server listens, e.g. for a gateway that routes to it. */
  get listenUrl(): string {
    const address = this.#configured.address ?? "localhost";
    const host = address === "0.0.0.0" ? "127.0.0.1" : address === "::" ? "::1" : address;
    return `http://${host.includes(":") ? `[${host}]` : host}:${this.getPort()}`;
  }

  /** Where forms point: {baseUri}/{path}/... */
  get formBase(): string | undefined {
    return (this as unknown as { baseUri?: string }).baseUri;
  }

  override expose(thing: ExposedThing, tdTemplate?: WoT.ExposedThingInit): Promise<void> {
    const path = checkedPath(this.#pathOf, thing, this.#taken.has(this.#pathOf(thing)));
    const { title, id } = thing;
    // HttpServer derives the path from slugify(title), or adds the id as a second path: hand it
    // the path as title and no id for the synchronous part of expose() that reads them.
    thing.title = path;
    (thing as { id?: string }).id = undefined;
    let exposed: Promise<void>;
    try {
      exposed = super.expose(thing, tdTemplate);
    } finally {
      thing.title = title;
      thing.id = id;
    }
    this.#paths.set(id, path);
    this.#taken.add(path);
    tolerateGoneListeners(thing);
    this.#observeUntilClosed(thing);
    return exposed;
  }

  /**
   * node-wot's observe route unregisters an observation when its response finishes, not when the
   * client leaves: each observation a client abandoned stayed registered, its response held and
   * written to on every change, without bound. Here it is unregistered when its response closes
   * unfinished. The route registers it while it is being routed (synchronously: node-wot's HTTP
   * server supports nosec only, so no credential check is awaited first), which is how the
   * response is known.
   */
  #observeUntilClosed(thing: ExposedThing): void {
    const observe = thing.handleObserveProperty;
    const server = this;
    thing.handleObserveProperty = function (this: ExposedThing, name, listener, options) {
      const res = server.#routing;
      const observed = observe.call(this, name, listener, options);
      res?.once("close", () => {
        if (!res.writableFinished) this.handleUnobserveProperty(name, listener, options);
      });
      return observed;
    };
  }

  override async destroy(thingId: string): Promise<boolean> {
    const path = this.#paths.get(thingId);
    if (path !== undefined) this.#taken.delete(path);
    this.#paths.delete(thingId);
    const destroyed = await super.destroy(thingId);
    if (path !== undefined) this.#endLongPolls(path);
    return destroyed;
  }

  /**
   * Answers the long polls of a thing that is no longer exposed here (moved, restarted, removed),
   * which would otherwise wait for an event that never comes, for up to an hour: 503 with
   * Retry-After, so that the consumer subscribes again (and reaches the thing where it runs now).
   */
  #endLongPolls(path: string): void {
    const open = this.#longPolls.get(path);
    if (!open) return;
    this.#longPolls.delete(path);
    for (const res of open) {
      // One with its headers sent is being answered (an event on its way ends it).
      if (res.headersSent || res.writableEnded) continue;
      res.writeHead(503, { "Content-Type": "text/plain", "Retry-After": "1" });
      res.end(`"${path}" is no longer exposed here: subscribe again`);
    }
  }

  /** How many long polls (events, observations) of the thing at `path` are waiting. */
  longPollsOf(path: string): number {
    return this.#longPolls.get(path)?.size ?? 0;
  }
}

// HttpServer takes its port from the WOT_PORT or PORT variables when set, over the configured one:
// a gateway must listen where its configuration says.
Object.defineProperty(StablePathHttpServer.prototype, "obtainEnvironmentPortNumber", {
  value: () => undefined,
});

interface MqttInternals {
  broker?: import("mqtt").MqttClient;
  things: Map<string, ExposedThing>;
  exposeProperty(name: string, property: string, thing: ExposedThing): void;
  exposeAction(name: string, action: string, thing: ExposedThing): void;
  exposeEvent(name: string, event: string, thing: ExposedThing): void;
  handleMessage(topic: string, payload: Buffer, packet: unknown): void;
}

/** binding-mqtt's broker server configuration, with the credentials mqtt.js takes. */
export type StablePathMqttConfig = ConstructorParameters<typeof MqttBrokerServer>[0] & {
  username?: string;
  password?: string;
};

/** A refused CONNECT after a broker restart is retried like a lost connection (mqtt.js gives up). */
const retryingRefusals = (config: StablePathMqttConfig) => ({ ...config, reconnectOnConnackError: true });

/**
 * binding-mqtt 0.8.16's MqttBrokerServer, fixed:
 * - expose() added one more broker "message" listener per thing, so with N things every action or
 *   write ran its handler N times: here the listener is added once, at start;
 * - topics are built with encodeURIComponent(title) but matched against the raw title, so a title
 *   with a space never matched: here the topic level is the thing's safe path;
 * - destroy() left the thing's retained TD on the broker: here it is cleared (unless handed over).
 */
export class StablePathMqttBrokerServer extends MqttBrokerServer {
  readonly #pathOf: PathOf;
  readonly #onError: (err: Error, context: string) => void;
  readonly #names = new Map<string, string>();
  /** Thing ids whose next destroy() leaves their retained TD (see handOver). */
  readonly #handedOver = new Set<string>();

  /**
   * `config.username`/`password`: the credentials of its broker connection. binding-mqtt hands its
   * whole config to mqtt.connect, which reads these (its own `user`/`psw` only change a debug line);
   * they stay out of `uri`, which the forms are made from.
   */
  constructor(
    config: StablePathMqttConfig,
    pathOf: PathOf,
    onError: (err: Error, context: string) => void = () => {},
  ) {
    super(retryingRefusals(config));
    this.#pathOf = pathOf;
    this.#onError = onError;
  }

  get #internals(): MqttInternals {
    return this as unknown as MqttInternals;
  }

  override async start(servient: Servient): Promise<void> {
    await super.start(servient);
    const self = this.#internals;
    const broker = self.broker;
    if (!broker) return;
    noDelay(broker);
    // While the broker is down mqtt.js would queue every property publish without limit.
    boundOfflineQueue(broker, "the twins' broker");
    // After a reconnect the broker may have restarted without persistence: publish the TDs again.
    broker.on("connect", () => {
      try {
        noDelay(broker);
        for (const [name, thing] of self.things) {
          broker.publish(name, JSON.stringify(thing.getThingDescription()), { retain: true });
        }
      } catch (err) {
        this.#onError(err instanceof Error ? err : new Error(String(err)), "publishing the TDs again");
      }
    });
    // Inside mqtt.js's message handler a throw would end the process: whatever a message sets off
    // is caught and reported.
    broker.on("message", (topic, payload, packet) => {
      try {
        self.handleMessage(topic, payload, packet);
      } catch (err) {
        this.#onError(err instanceof Error ? err : new Error(String(err)), `MQTT message on ${topic}`);
      }
    });
  }

  override async expose(thing: ExposedThing): Promise<void> {
    const self = this.#internals;
    if (self.broker === undefined) return;
    const name = checkedPath(this.#pathOf, thing, self.things.has(this.#pathOf(thing)));
    this.#catchWrites(thing);
    self.things.set(name, thing);
    this.#names.set(thing.id, name);
    const broker = self.broker;
    // exposeAction/exposeProperty subscribe one topic at a time without waiting: collect the topics
    // and subscribe them in one SUBSCRIBE, waiting for the grant, so that an exposed thing is
    // reachable as soon as expose() resolves (and a broker handles one request per thing, not five).
    const topics: string[] = [];
    const subscribe = broker.subscribe;
    (broker as { subscribe: unknown }).subscribe = (topic: string) => topics.push(topic);
    // Property observations are published by publishProperty(), not through node-wot's listener
    // (a content stream per value): keep the binding from registering one.
    const thingObserve = thing as { handleObserveProperty: unknown };
    // The HTTP server's own wrapper (if exposed first) comes back after.
    const own = Object.getOwnPropertyDescriptor(thing, "handleObserveProperty");
    thingObserve.handleObserveProperty = async () => {};
    try {
      for (const property of Object.keys(thing.properties)) self.exposeProperty(name, property, thing);
      for (const action of Object.keys(thing.actions)) self.exposeAction(name, action, thing);
      for (const event of Object.keys(thing.events)) self.exposeEvent(name, event, thing);
    } finally {
      (broker as { subscribe: unknown }).subscribe = subscribe;
      if (own) Object.defineProperty(thing, "handleObserveProperty", own);
      else delete (thingObserve as { handleObserveProperty?: unknown }).handleObserveProperty;
    }
    if (topics.length > 0) await broker.subscribeAsync(topics);
    await broker.publishAsync(name, JSON.stringify(thing.getThingDescription()), { retain: true });
  }

  /**
   * binding-mqtt calls handleWriteProperty for a writeproperty message without awaiting it: a
   * refused write would be an unhandled rejection, which ends the process. Each write's promise
   * gets a handler here (reporting the refusal); callers that await it (HTTP) still see it reject.
   */
  #catchWrites(thing: ExposedThing): void {
    const write = thing.handleWriteProperty;
    const onError = this.#onError;
    thing.handleWriteProperty = function (this: ExposedThing, ...args) {
      const written = write.apply(this, args);
      written.catch((err: unknown) =>
        onError(err instanceof Error ? err : new Error(String(err)), `writing property ${args[0]}`),
      );
      return written;
    };
  }

  /**
   * The next destroy() of `thingId` leaves its retained TD on the broker. For a move: another copy
   * of the thing with the same path (on another servient, same broker) already published its TD
   * on the same topic, and clearing it would delete the new copy's. (The servient calls destroy()
   * with the thing id only, so the option travels this way.)
   */
  handOver(thingId: string): void {
    this.#handedOver.add(thingId);
  }

  override async destroy(thingId: string): Promise<boolean> {
    const self = this.#internals;
    const name = this.#names.get(thingId);
    const handover = this.#handedOver.delete(thingId);
    this.#names.delete(thingId);
    const thing = name === undefined ? undefined : self.things.get(name);
    const removed = await super.destroy(thingId);
    if (name !== undefined && self.broker?.connected) {
      const topics = [
        ...Object.keys(thing?.actions ?? {}).map((a) => `${name}/actions/${a}`),
        ...Object.keys(thing?.properties ?? {}).map((p) => `${name}/properties/${p}/writeproperty`),
      ];
      if (topics.length > 0) await self.broker.unsubscribeAsync(topics);
      // An empty retained message deletes the retained TD (unless it now belongs to another copy).
      if (!handover) await self.broker.publishAsync(name, "", { retain: true });
    }
    return removed;
  }

  /**
   * Publishes a property's new value on its observe topic ({path}/properties/{name}), as JSON, the
   * content type of the form. The digital interface calls it on every change.
   */
  publishProperty(thingId: string, property: string, value: unknown): void {
    const name = this.#names.get(thingId);
    const broker = this.#internals.broker;
    if (name === undefined || broker === undefined) return;
    broker.publish(`${name}/properties/${property}`, JSON.stringify(value ?? null));
  }
}
