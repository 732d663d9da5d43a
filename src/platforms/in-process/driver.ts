import type { TwinConfig, TwinState } from "../../domain/twin-state.js";
import type { Logger } from "../../logger.js";
import type { MqttCredentials } from "../../mqtt/connections.js";
import type { Twin } from "../../runtime/twin.js";
import { TwinNotFoundError, TwinRuntime } from "../../runtime/twin-runtime.js";
import type { ThingModelRegistry } from "../../wot/model-registry.js";
import type { JsonObject } from "../../wot/rdf.js";
import type {
  InstanceHandle,
  InstanceSpec,
  InstanceStatus,
  NodeTarget,
  PlatformDriver,
  Readiness,
  StatusListener,
} from "../driver.js";

/**
 * The in-process platform: twins run in the gateway process on node-wot. Each in-process node is
 * its own TwinRuntime (its own Servient, HTTP server on loopback and MQTT clients), created on
 * the first twin started there, so that a twin can move between nodes like between machines:
 * export its state, start it on the target with that state, remove it from the source with
 * handover (the retained TD on the shared broker topic is the new copy's by then).
 *
 * An in-process twin never fails in the platform's sense: nothing outside the gateway can kill it,
 * and the gateway going down takes the manager with it. So status() has no `failed` and
 * StatusListener.failed is never called; problems with the PT show in the lifecycle instead.
 */

export interface InProcessDriverOptions {
  registry: ThingModelRegistry;
  /** Broker of the PTs (by default) and of the twins' MQTT forms. */
  brokerUrl: string;
  /** Who the runtimes connect to `brokerUrl` as (the gateway's internal user); none: an open broker. */
  brokerCredentials?: MqttCredentials;
  /** Where the twins' HTTP forms point, e.g. "http://127.0.0.1:8080/twins"; read when a node's runtime is created. */
  httpBaseUri: () => string;
  /** How often entanglement is evaluated and pushed, ms (TwinRuntime's default when absent). */
  pushIntervalMs?: number;
  /** How far ahead of a twin's clock a PT timestamp may be, ms. */
  ptClockSkewMs?: number;
  /** The commit hook of each twin started on node `node` (the gateway's metrics); none: unset. */
  commitObserver?: (twin: Twin, node: string) => Twin["onCommit"];
  logger?: Logger;
}

export class InProcessDriver implements PlatformDriver {
  readonly platform = "in-process" as const;
  readonly #options: InProcessDriverOptions;
  /** Node id -> its runtime being created or created (concurrent first starts share one). */
  readonly #creating = new Map<string, Promise<TwinRuntime>>();
  /** Node id -> its runtime, once created. */
  readonly #runtimes = new Map<string, TwinRuntime>();
  #closed = false;

  constructor(options: InProcessDriverOptions) {
    this.#options = options;
  }

  /** The runtime of an in-process node, once a twin was started there (for tests and diagnostics). */
  runtimeOf(nodeId: string): TwinRuntime | undefined {
    return this.#runtimes.get(nodeId);
  }

  /** Every twin running in this process, with its node (the gateway's metrics read them). */
  *twins(): Generator<{ node: string; twin: Twin }> {
    for (const [node, runtime] of this.#runtimes) for (const twin of runtime.list()) yield { node, twin };
  }

  async ready(node: NodeTarget): Promise<Readiness> {
    if (this.#closed) return { ready: false, reason: "the in-process driver is closed" };
    if (node.platform !== this.platform) {
      return { ready: false, reason: `node ${node.id} is a ${node.platform} node, not in-process` };
    }
    return { ready: true };
  }

  async start(spec: InstanceSpec): Promise<InstanceHandle> {
    if (spec.node.platform !== this.platform) {
      throw new Error(`node ${spec.node.id} is a ${spec.node.platform} node, not in-process`);
    }
    const runtime = await this.#runtime(spec.node.id);
    if (spec.state) {
      // A clone gets a new id (and TD id); restore and move keep the state's. The state carries
      // its own augmentation functions.
      const id = spec.id !== spec.state.config.id ? spec.id : undefined;
      const twin = await runtime.restore(spec.state, { id });
      return new InProcessInstance(runtime, spec.node.id, twin, freshConfig(spec));
    }
    const fresh = freshConfig(spec);
    return new InProcessInstance(runtime, spec.node.id, await createFresh(runtime, fresh), fresh);
  }

  /** In-process twins never outlive the gateway: there is nothing to adopt. */
  async adopt(_spec: InstanceSpec): Promise<InstanceHandle | undefined> {
    return undefined;
  }

  async running(node: NodeTarget): Promise<string[]> {
    return (this.#runtimes.get(node.id)?.list() ?? []).map((twin) => twin.id);
  }

  async removeOrphan(node: NodeTarget, id: string): Promise<void> {
    const runtime = this.#runtimes.get(node.id);
    if (runtime?.get(id)) await runtime.remove(id);
  }

  /** Closes the runtime of a removed node (its servient, HTTP server and broker connections). */
  async release(node: NodeTarget): Promise<void> {
    const runtime = this.#creating.get(node.id);
    if (!runtime) return;
    this.#creating.delete(node.id);
    this.#runtimes.delete(node.id);
    // A runtime that failed to start has nothing to close.
    const started = await runtime.catch(() => undefined);
    await started?.close();
  }

  /** Closes every node's runtime: its twins are no longer exposed and their retained TDs cleared. */
  async close(): Promise<void> {
    this.#closed = true;
    const creating = [...this.#creating.values()];
    this.#creating.clear();
    const results = await Promise.allSettled(
      creating.map(async (runtime) => {
        // A runtime that failed to start has nothing to close.
        const started = await runtime.catch(() => undefined);
        await started?.close();
      }),
    );
    this.#runtimes.clear();
    const failure = results.find((r): r is PromiseRejectedResult => r.status === "rejected");
    if (failure) throw failure.reason;
  }

  #runtime(nodeId: string): Promise<TwinRuntime> {
    if (this.#closed) return Promise.reject(new Error("the in-process driver is closed"));
    let runtime = this.#creating.get(nodeId);
    if (!runtime) {
      const {
        registry,
        brokerUrl,
        brokerCredentials,
        httpBaseUri,
        pushIntervalMs,
        ptClockSkewMs,
        commitObserver,
        logger,
      } = this.#options;
      runtime = TwinRuntime.start({
        registry,
        brokerUrl,
        brokerCredentials,
        // node-wot listens on loopback only: consumers come through the gateway's /twins/.
        http: { port: 0, address: "127.0.0.1", baseUri: httpBaseUri() },
        pushIntervalMs,
        ...(ptClockSkewMs !== undefined ? { ptClockSkewMs } : {}),
        ...(commitObserver ? { commitObserver: (twin: Twin) => commitObserver(twin, nodeId) } : {}),
        logger: logger?.child({ node: nodeId }),
      }).then(
        (started) => {
          this.#runtimes.set(nodeId, started);
          return started;
        },
        (err: unknown) => {
          // Let the next start try again.
          this.#creating.delete(nodeId);
          throw err;
        },
      );
      this.#creating.set(nodeId, runtime);
    }
    return runtime;
  }
}

/** What a fresh start (and every restart) creates: the spec's twin and the package's functions. */
interface FreshConfig {
  twin: TwinConfig;
  augmentations: { name: string; source: string }[];
}

/**
 * The instance id is the twin id (a clone's spec may carry its source's configuration). A twin
 * started from a state restarts from this too, fresh: the state's functions are not the package's.
 */
function freshConfig(spec: InstanceSpec): FreshConfig {
  return {
    twin: structuredClone({ ...spec.twin, id: spec.id }),
    augmentations: structuredClone(spec.augmentations ?? []),
  };
}

/** Creates the twin and installs the package's functions; on failure nothing is left running. */
async function createFresh(runtime: TwinRuntime, fresh: FreshConfig): Promise<Twin> {
  const twin = await runtime.create(fresh.twin);
  try {
    for (const { name, source } of fresh.augmentations) twin.installAugmentation(name, source);
  } catch (err) {
    await runtime
      .remove(twin.id)
      .catch((removeError: unknown) =>
        runtime.options.logger?.debug(
          { err: removeError, twin: twin.id },
          "could not remove the twin whose functions were refused",
        ),
      );
    throw err;
  }
  return twin;
}

/** A listener as registered on the current twin. */
interface Registration {
  listener: StatusListener;
  unlisten: () => void;
}

class InProcessInstance implements InstanceHandle {
  readonly id: string;
  readonly node: string;
  readonly #runtime: TwinRuntime;
  readonly #fresh: FreshConfig;
  /** The twin this handle runs (replaced by restart); undefined once removed. */
  #twin: Twin | undefined;
  readonly #registrations = new Set<Registration>();

  constructor(runtime: TwinRuntime, node: string, twin: Twin, fresh: FreshConfig) {
    this.id = twin.id;
    this.node = node;
    this.#runtime = runtime;
    this.#twin = twin;
    this.#fresh = fresh;
  }

  /** The running twin, or a TwinNotFoundError once removed (by this handle or on the runtime). */
  #live(): Twin {
    const twin = this.#twin;
    if (twin === undefined || this.#runtime.get(this.id) !== twin) throw new TwinNotFoundError(this.id);
    return twin;
  }

  description(): JsonObject {
    this.#live();
    return this.#runtime.description(this.id);
  }

  /**
   * node-wot's HTTP server answers at /{twin id}/properties/..., whatever the forms' baseUri, so
   * the gateway's /twins/{id}/... maps onto `${httpTarget()}/{id}/...`.
   */
  httpTarget(): string {
    this.#live();
    return this.#runtime.digital.httpListenUrl;
  }

  status(): InstanceStatus {
    const twin = this.#live();
    return { lifecycle: twin.lifecycleState, entanglement: twin.entanglement };
  }

  onStatus(listener: StatusListener): () => void {
    const twin = this.#live();
    const registration: Registration = { listener, unlisten: () => {} };
    registration.unlisten = listenTo(twin, listener);
    this.#registrations.add(registration);
    return () => {
      if (this.#registrations.delete(registration)) registration.unlisten();
    };
  }

  async stop(): Promise<void> {
    this.#live();
    this.#runtime.stop(this.id);
  }

  async resume(): Promise<void> {
    this.#live();
    await this.#runtime.resume(this.id);
  }

  async restart(): Promise<void> {
    const old = this.#live();
    // Listeners follow the twin across the restart, without hearing the old one's dismissal.
    for (const registration of this.#registrations) registration.unlisten();
    try {
      // Handover: the new twin has the same id and TD, so its retained TD is not cleared only to
      // be published again a moment later.
      await this.#runtime.remove(this.id, { handover: true });
    } catch (err) {
      if (this.#runtime.get(this.id) === old) this.#relisten(old);
      else this.#gone();
      throw err;
    }
    let twin: Twin;
    try {
      twin = await createFresh(this.#runtime, this.#fresh);
    } catch (err) {
      // The old twin is gone and the new one did not start: the instance is gone.
      this.#gone();
      throw err;
    }
    this.#relisten(twin);
    for (const { listener } of [...this.#registrations]) listener.lifecycleChanged?.();
  }

  #relisten(twin: Twin): void {
    this.#twin = twin;
    for (const registration of this.#registrations) {
      registration.unlisten = listenTo(twin, registration.listener);
    }
  }

  async exportState(): Promise<TwinState> {
    this.#live();
    return this.#runtime.exportState(this.id);
  }

  async remove(options: { handover?: boolean } = {}): Promise<void> {
    this.#live();
    try {
      await this.#runtime.remove(this.id, { handover: options.handover });
    } finally {
      if (this.#runtime.get(this.id) !== this.#twin) this.#gone();
    }
  }

  #gone(): void {
    this.#twin = undefined;
    for (const registration of this.#registrations) registration.unlisten();
    this.#registrations.clear();
  }
}

/** A StatusListener on a twin's own listener. */
function listenTo(twin: Twin, listener: StatusListener): () => void {
  return twin.listen({
    lifecycleChanged: () => listener.lifecycleChanged?.(),
    entanglementEvaluated: () => listener.entanglementEvaluated?.(),
  });
}
