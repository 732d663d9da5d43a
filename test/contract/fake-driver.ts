import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import type { LifecycleState } from "../../src/domain/lifecycle.js";
import type { TwinState } from "../../src/domain/twin-state.js";
import type { InstanceStatus, StatusListener } from "../../src/domain/twin-status.js";
import {
  type InstanceHandle,
  type InstanceSpec,
  type NodeTarget,
  type PlatformDriver,
  PlatformError,
  type PlatformErrorKind,
  type Readiness,
} from "../../src/platforms/driver.js";
import type { JsonObject } from "../../src/wot/rdf.js";

/**
 * An in-memory PlatformDriver for testing the layers above (the manager) fast and without a
 * gateway: its twins are records with a lifecycle and a history, served over a small HTTP server
 * (their TDs), and a test can make starts fail, instances get lost, or operations hang.
 */

interface FakeTwin {
  spec: InstanceSpec;
  lifecycle: LifecycleState;
  changes: { from: LifecycleState; to: LifecycleState; at: number }[];
  states: { at: number; seq: number }[];
  failed?: string;
  listeners: Set<StatusListener>;
}

export class FakeDriver implements PlatformDriver {
  readonly platform: string;
  /** Calls per method, for assertions. */
  readonly calls: Record<string, number> = {};
  /** Set by a test: the next starts fail with this kind (once each) . */
  readonly failStarts: { kind: PlatformErrorKind; message: string }[] = [];
  /** Set by a test: starts wait for this promise first (an operation that hangs until released). */
  hold: Promise<void> | undefined;
  readonly #twins = new Map<string, FakeTwin>();
  readonly #pts = new Set<string>();
  readonly #survivors: Map<string, FakeTwin>;
  #server: Promise<{ server: Server; url: string }> | undefined;
  #closed = false;

  /** `survivors`: twins that outlive the driver (share one map between drivers to test adoption). */
  constructor(options: { platform?: string; survivors?: Map<string, FakeTwin> } = {}) {
    this.platform = options.platform ?? "in-process";
    this.#survivors = options.survivors ?? new Map();
  }

  /** The PT of twin `id` publishes (its twin becomes Entangled) or stops. */
  setPt(id: string, on: boolean): void {
    if (on) this.#pts.add(id);
    else this.#pts.delete(id);
    const twin = this.#twins.get(id);
    if (twin && twin.lifecycle !== "Done") this.#move(twin, on ? "Entangled" : "Disentangled");
  }

  /** The platform loses twin `id` (its process dies). */
  lose(id: string, reason = "the fake process died"): void {
    const twin = this.#twins.get(id);
    if (!twin) return;
    twin.failed = reason;
    for (const l of twin.listeners) l.failed?.(reason);
  }

  async ready(node: NodeTarget): Promise<Readiness> {
    this.#count("ready");
    if (this.#closed) return { ready: false, reason: "the fake driver is closed" };
    if (node.platform !== this.platform) return { ready: false, reason: `not a ${this.platform} node` };
    return { ready: true };
  }

  async start(spec: InstanceSpec): Promise<InstanceHandle> {
    this.#count("start");
    if (this.#closed) throw new PlatformError("the fake driver is closed", "unavailable");
    if (spec.node.platform !== this.platform)
      throw new PlatformError(`not a ${this.platform} node`, "conflict");
    if (this.hold) await this.hold;
    const failure = this.failStarts.shift();
    if (failure) throw new PlatformError(failure.message, failure.kind);
    const base = await this.#base();
    const twin: FakeTwin = {
      spec,
      lifecycle: "Unbound",
      changes: [],
      states: spec.state ? structuredClone(spec.state.history.states as unknown as FakeTwin["states"]) : [],
      listeners: new Set(),
    };
    this.#twins.set(spec.id, twin);
    this.#survivors.set(spec.id, twin);
    this.#move(twin, "Bound");
    if (this.#pts.has(spec.id)) this.#move(twin, "Entangled");
    if (spec.state?.lifecycle.state === "Done") this.#move(twin, "Done");
    return this.#handle(spec.id, base);
  }

  async adopt(spec: InstanceSpec): Promise<InstanceHandle | undefined> {
    this.#count("adopt");
    const survivor = this.#survivors.get(spec.id);
    if (!survivor || this.#twins.has(spec.id)) return undefined;
    this.#twins.set(spec.id, survivor);
    return this.#handle(spec.id, await this.#base());
  }

  async running(node: NodeTarget): Promise<string[]> {
    this.#count("running");
    return [...this.#twins.values()].filter((t) => t.spec.node.id === node.id).map((t) => t.spec.id);
  }

  async removeOrphan(_node: NodeTarget, id: string): Promise<void> {
    this.#count("removeOrphan");
    this.#twins.delete(id);
    this.#survivors.delete(id);
  }

  async release(_node: NodeTarget): Promise<void> {
    this.#count("release");
  }

  async close(): Promise<void> {
    this.#count("close");
    this.#closed = true;
    this.#twins.clear();
    const server = await this.#server;
    await new Promise<void>((resolve) => (server ? server.server.close(() => resolve()) : resolve()));
  }

  #count(method: string): void {
    this.calls[method] = (this.calls[method] ?? 0) + 1;
  }

  #move(twin: FakeTwin, to: LifecycleState): void {
    if (twin.lifecycle === to) return;
    const at = Date.now();
    twin.changes.push({ from: twin.lifecycle, to, at });
    twin.lifecycle = to;
    if (to === "Entangled") twin.states.push({ at, seq: twin.states.length });
    for (const l of twin.listeners) l.lifecycleChanged?.();
  }

  /** Serves each twin's TD at {base}/{id}, as a node-wot server would behind the gateway. */
  #base(): Promise<string> {
    this.#server ??= new Promise((resolve) => {
      const server = createServer((req, res) => {
        const id = (req.url ?? "").split("/")[1] ?? "";
        const twin = this.#twins.get(id);
        res.writeHead(twin ? 200 : 404, { "Content-Type": "application/td+json" });
        res.end(twin ? JSON.stringify(description(twin)) : "{}");
      });
      server.listen(0, "127.0.0.1", () =>
        resolve({ server, url: `http://127.0.0.1:${(server.address() as AddressInfo).port}` }),
      );
    });
    return this.#server.then((s) => s.url);
  }

  /** A handle on the twin now under `id`: a later twin of the same id is another (as another container is). */
  #handle(id: string, base: string): InstanceHandle {
    const own = this.#twins.get(id);
    const get = (): FakeTwin => {
      const twin = this.#twins.get(id);
      if (!twin || twin !== own) throw new PlatformError(`instance ${id} is gone`, "conflict");
      return twin;
    };
    return {
      id,
      node: get().spec.node.id,
      description: () => description(get()),
      httpTarget: () => base,
      status: (): InstanceStatus => {
        const twin = this.#twins.get(id);
        if (!twin || twin !== own) return { lifecycle: "Stopped" };
        return {
          lifecycle: twin.lifecycle,
          entanglement: {
            odte: twin.lifecycle === "Entangled" ? 1 : 0,
            timeliness: 1,
            reliability: 1,
            availability: 1,
            updates: twin.states.length,
            windowSeconds: 2,
            desiredTimeliness: 50,
            expectedUpdateRate: 10,
          } as InstanceStatus["entanglement"] & object,
          ...(twin.failed ? { failed: twin.failed } : {}),
        };
      },
      onStatus: (listener) => {
        const twin = get();
        twin.listeners.add(listener);
        return () => twin.listeners.delete(listener);
      },
      stop: async () => this.#move(get(), "Done"),
      resume: async () => this.#move(get(), this.#pts.has(id) ? "Entangled" : "Bound"),
      restart: async () => {
        const twin = get();
        twin.changes = [];
        twin.states = [];
        twin.lifecycle = "Unbound";
        this.#move(twin, this.#pts.has(id) ? "Entangled" : "Bound");
      },
      exportState: async () => exportOf(get()),
      remove: async () => {
        this.#count("remove");
        if (this.#twins.get(id) === own) this.#twins.delete(id);
        if (this.#survivors.get(id) === own) this.#survivors.delete(id);
      },
    };
  }
}

function description(twin: FakeTwin): JsonObject {
  const id = twin.spec.id;
  return {
    "@context": "https://www.w3.org/2022/wot/td/v1.1",
    id: `urn:dtc:twin:${id}`,
    title: id,
    securityDefinitions: { nosec_sc: { scheme: "nosec" } },
    security: ["nosec_sc"],
    properties: {
      lifecycle: { type: "string", forms: [{ href: `http://127.0.0.1/twins/${id}/properties/lifecycle` }] },
    },
  };
}

function exportOf(twin: FakeTwin): TwinState {
  // An Entangled twin has committed updates since the last look.
  if (twin.lifecycle === "Entangled") twin.states.push({ at: Date.now(), seq: twin.states.length });
  return {
    format: "dtc-twin-state/1",
    exportedAt: Date.now(),
    config: twin.spec.twin,
    td: description(twin),
    lifecycle: { state: twin.lifecycle, history: structuredClone(twin.changes) },
    properties: {},
    lastUpdate: undefined,
    augmentations: [],
    history: { states: structuredClone(twin.states), events: [] },
    entanglement: {
      figures: { odte: 0, timeliness: 0, reliability: 0, availability: 0, updates: 0, windowSeconds: 0 },
      observations: {
        since: undefined,
        lastUpdate: undefined,
        updates: [],
        down: [],
        downSince: undefined,
        gaps: [],
      },
    },
    counters: {},
  } as unknown as TwinState;
}
