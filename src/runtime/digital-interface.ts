import type { HttpConfig } from "@node-wot/binding-http";
import { type ExposedThing, Servient } from "@node-wot/core";
import type { EntanglementFigures } from "../domain/entanglement.js";
import type { LifecycleChange } from "../domain/lifecycle.js";
import { toExposedThingInit } from "../wot/instantiate.js";
import type { JsonObject } from "../wot/rdf.js";
import { StablePathHttpServer, StablePathMqttBrokerServer } from "../wot/servers.js";
import { isObject } from "../wot/thing-model.js";
import { AugmentationError } from "./augmentation.js";
import { clientError } from "./client-error.js";
import { PhysicalTwinUnreachableError, type Twin, TwinDetachedError, type TwinListener } from "./twin.js";
import { TWIN_AFFORDANCES } from "./twin-description.js";

/**
 * The digital side of the twins of a process ([dt-microservices]: the digital event handler and the
 * digital interface): one node-wot Servient with an HTTP server and an MQTT broker client shared
 * by all twins. Each twin is an ExposedThing at /{twin id} (HTTP) and {twin id}/... (MQTT).
 */

export interface DigitalInterfaceOptions {
  /** port 0 picks a free one; baseUri: where forms point (default http://{address}:{port}). */
  http: { port: number; address?: string; baseUri?: string };
  /** The broker the twins' MQTT forms point at; none: HTTP only. */
  mqtt?: { url: string; username?: string; password?: string };
  onError?: (err: Error, context: string) => void;
}

interface Exposed {
  thing: ExposedThing;
  unlisten: () => void;
}

const iso = (ms: number): string => new Date(ms).toISOString();

/** A property's value as consumers read it: the twin affordances, or the schema's (null until reported). */
function propertyValue(twin: Twin, name: string): unknown {
  switch (name) {
    case "lifecycleState":
      return twin.lifecycleState;
    case "entanglement":
      return twin.entanglement;
    case "history":
      return {
        states: twin
          .states()
          .map((r) => ({ ...r, committedAt: iso(r.committedAt), ptTimestamp: iso(r.ptTimestamp) })),
        events: twin.events().map((e) => ({ ...e, at: iso(e.at) })),
      };
    case "augmentations":
      return twin.augmentations.list().map((f) => ({ ...f, installedAt: iso(f.installedAt) }));
    default:
      return twin.properties[name] ?? null;
  }
}

export class DigitalInterface {
  readonly #servient: Servient;
  readonly #wot: typeof WoT;
  readonly #http: StablePathHttpServer;
  readonly #mqtt: StablePathMqttBrokerServer | undefined;
  readonly #twins = new Map<string, Exposed>();
  readonly #onError: (err: Error, context: string) => void;
  /** TD id -> twin id: the servers ask for a thing's path by TD id. */
  readonly #paths: Map<string, string>;

  private constructor(
    servient: Servient,
    wot: typeof WoT,
    http: StablePathHttpServer,
    mqtt: StablePathMqttBrokerServer | undefined,
    paths: Map<string, string>,
    onError: DigitalInterfaceOptions["onError"],
  ) {
    this.#servient = servient;
    this.#wot = wot;
    this.#http = http;
    this.#mqtt = mqtt;
    this.#paths = paths;
    this.#onError = onError ?? (() => {});
  }

  static async start(options: DigitalInterfaceOptions): Promise<DigitalInterface> {
    const servient = new Servient();
    const paths = new Map<string, string>();
    const pathOf = (thing: ExposedThing) => {
      const path = paths.get(thing.id);
      if (path === undefined) throw new Error(`thing ${thing.id} is not a twin of this interface`);
      return path;
    };
    const httpConfig: HttpConfig = { port: options.http.port, address: options.http.address };
    if (options.http.baseUri !== undefined) httpConfig.baseUri = options.http.baseUri.replace(/\/+$/, "");
    const http = new StablePathHttpServer(httpConfig, pathOf);
    servient.addServer(http);
    const m = options.mqtt;
    // node-wot's broker client connects as the gateway (credentials are client options, not URL parts).
    const mqtt = m
      ? new StablePathMqttBrokerServer(
          { uri: m.url, ...(m.username !== undefined ? { username: m.username, password: m.password } : {}) },
          pathOf,
          options.onError,
        )
      : undefined;
    if (mqtt) servient.addServer(mqtt);
    const wot = (await servient.start()) as unknown as typeof WoT;
    return new DigitalInterface(servient, wot, http, mqtt, paths, options.onError);
  }

  /** Where node-wot's HTTP server listens (the gateway routes /twins/* here). */
  get httpListenUrl(): string {
    return this.#http.listenUrl;
  }

  /** How many HTTP long polls (events, observations) of a twin are waiting. */
  longPollsOf(twinId: string): number {
    return this.#http.longPollsOf(twinId);
  }

  /** Where HTTP forms point: {httpBase}/{twin id}/... */
  get httpBase(): string {
    return this.#http.formBase ?? "";
  }

  /** Exposes `twin` described by `description` (its TD, forms are added here); returns the TD as exposed. */
  async expose(twin: Twin, description: JsonObject): Promise<JsonObject> {
    if (this.#twins.has(twin.id)) throw new Error(`twin ${twin.id} is already exposed`);
    const thing = await this.#wot.produce(toExposedThingInit(description) as WoT.ExposedThingInit);
    const exposedThing = thing as unknown as ExposedThing;
    this.#handle(twin, exposedThing, description);
    const unlisten = twin.listen(this.#notifier(twin, exposedThing));
    this.#paths.set(exposedThing.id, twin.id);
    this.#twins.set(twin.id, { thing: exposedThing, unlisten });
    try {
      await thing.expose();
    } catch (err) {
      unlisten();
      this.#twins.delete(twin.id);
      this.#paths.delete(exposedThing.id);
      throw err;
    }
    return this.description(twin.id) as JsonObject;
  }

  /** The exposed TD of a twin. */
  description(twinId: string): JsonObject | undefined {
    const exposed = this.#twins.get(twinId);
    return exposed ? (exposed.thing.getThingDescription() as unknown as JsonObject) : undefined;
  }

  /**
   * Stops exposing a twin and clears its retained MQTT TD. `handover`: another copy of the twin
   * (same id, same topics) runs on another interface on the same broker now (a move), so its
   * retained TD, which that copy has published, is left alone.
   */
  async destroy(twinId: string, options: { handover?: boolean } = {}): Promise<void> {
    const exposed = this.#twins.get(twinId);
    if (!exposed) return;
    exposed.unlisten();
    this.#twins.delete(twinId);
    if (options.handover) this.#mqtt?.handOver(exposed.thing.id);
    await exposed.thing.destroy();
    this.#paths.delete(exposed.thing.id);
  }

  async close(): Promise<void> {
    for (const id of [...this.#twins.keys()]) await this.destroy(id);
    await this.#servient.shutdown();
  }

  #handle(twin: Twin, thing: ExposedThing, description: JsonObject): void {
    const properties = (description.properties as Record<string, JsonObject> | undefined) ?? {};
    for (const [name, property] of Object.entries(properties)) {
      thing.setPropertyReadHandler(name, async () => propertyValue(twin, name) as WoT.InteractionInput);
      // The state changes only from the physical side: a property the schema left writable is
      // refused as a method the twin does not take, not with node-wot's "no writeHandler" 500.
      if (property.readOnly !== true) {
        thing.setPropertyWriteHandler(name, async () => {
          throw clientError(
            `property "${name}" of twin ${twin.id} follows its physical twin and cannot be written; use its actions`,
            405,
          );
        });
      }
    }
    // A refused function, a malformed request or a command to a detached twin is the client's
    // fault: marked, so that the gateway answers 4xx rather than node-wot's 500.
    const clientFault = (err: unknown) => {
      if (err instanceof AugmentationError) return clientError(err.message);
      if (err instanceof TwinDetachedError) return clientError(err.message, 409);
      if (err instanceof PhysicalTwinUnreachableError) return clientError(err.message, 503);
      return err;
    };
    // node-wot checks the input against the action's schema when it is read.
    const inputOf = (params: WoT.InteractionOutput) =>
      params.value().catch((err: unknown) => {
        throw clientError(`invalid input: ${err instanceof Error ? err.message : String(err)}`);
      });
    for (const name of Object.keys((description.actions as JsonObject | undefined) ?? {})) {
      if (name in TWIN_AFFORDANCES.actions) continue;
      thing.setActionHandler(name, async (params) => {
        const input = await inputOf(params);
        try {
          await twin.invoke(name, input);
        } catch (err) {
          throw clientFault(err);
        }
        return undefined;
      });
    }
    thing.setActionHandler("installAugmentation", async (params) => {
      const input = await inputOf(params);
      if (!isObject(input) || typeof input.name !== "string" || typeof input.source !== "string") {
        throw clientError('installAugmentation takes {"name": string, "source": string}');
      }
      try {
        const { replaced } = twin.installAugmentation(input.name, input.source);
        return { name: input.name, replaced };
      } catch (err) {
        throw clientFault(err);
      }
    });
    thing.setActionHandler("removeAugmentation", async (params) => {
      const input = await inputOf(params);
      if (!isObject(input) || typeof input.name !== "string") {
        throw clientError('removeAugmentation takes {"name": string}');
      }
      try {
        return { removed: twin.removeAugmentation(input.name) };
      } catch (err) {
        throw clientFault(err);
      }
    });
  }

  /**
   * The digital event handler: twin changes become property changes (published straight to the
   * property's MQTT topic, and through node-wot to HTTP observers) and events.
   */
  #notifier(twin: Twin, thing: ExposedThing): TwinListener {
    const mqtt = this.#mqtt;
    // The twin tells its listeners from MQTT message handlers and timers, where a throw would end
    // the process: a change that cannot be pushed is logged, and the twin goes on.
    const guarded = (what: string, push: () => void) => {
      try {
        push();
      } catch (err) {
        this.#onError(err instanceof Error ? err : new Error(String(err)), what);
      }
    };
    const emit = (name: string) =>
      guarded(`emitting ${name}`, () => {
        mqtt?.publishProperty(thing.id, name, propertyValue(twin, name));
        thing.emitPropertyChange(name).catch((err: Error) => this.#onError(err, `emitting ${name}`));
      });
    return {
      propertiesChanged: (names: string[]) => {
        for (const name of names) if (Object.hasOwn(thing.properties, name)) emit(name);
      },
      lifecycleChanged: (change: LifecycleChange) => {
        emit("lifecycleState");
        guarded("emitting lifecycleChanged", () =>
          thing.emitEvent("lifecycleChanged", { ...change, at: iso(change.at) }),
        );
      },
      entanglementEvaluated: () => {
        emit("entanglement");
      },
      entanglementChanged: (figures: EntanglementFigures) => {
        guarded("emitting entanglementChanged", () =>
          thing.emitEvent("entanglementChanged", figures as unknown as WoT.InteractionInput),
        );
      },
    };
  }
}
