import { randomBytes, randomUUID } from "node:crypto";
import { type Directory, DirectoryError } from "../directory/directory.js";
import type { TwinPlacement, TwinStatusPublisher } from "../directory/twin-status.js";
import { noObservations, UNMEASURED } from "../domain/entanglement.js";
import { LIFECYCLE_STATES } from "../domain/lifecycle.js";
import type { Logger } from "../logger.js";
import {
  type InstanceHandle,
  type InstanceSpec,
  type InstanceStatus,
  type NodeTarget,
  PLATFORM_INDIVIDUAL,
  type PlatformDriver,
  PlatformError,
  type Readiness,
} from "../platforms/driver.js";
import { AugmentationError } from "../runtime/augmentation.js";
import type { TwinConfig, TwinState } from "../runtime/twin.js";
import { TwinStateError } from "../runtime/twin.js";
import { TwinConflictError, TwinNotFoundError } from "../runtime/twin-runtime.js";
import { ModelResolutionError } from "../wot/model-registry.js";
import type { JsonObject } from "../wot/rdf.js";
import type { Link } from "../wot/thing-model.js";
import { ValidationError } from "../wot/validation.js";
import { invalid, ManagerError, notFound } from "./errors.js";
import type { Inventory } from "./inventory.js";
import type { ManagerStore, StoredSnapshot } from "./manager-store.js";
import {
  type DtcNode,
  type DtPackage,
  type InstanceRecord,
  moveInput,
  parameterProblem,
  placementInput,
  type SnapshotSummary,
  startInput,
} from "./model.js";

/**
 * The DTC Manager's deployment and management functions (the paper's Table I, second and third
 * groups): starts twins through platform drivers, keeps their TDs and status in the directory,
 * snapshots, restores, moves and clones them, and reconciles what runs with what should run.
 *
 * Desired state (the instance records) is durable; what runs is the drivers' business. After a
 * restart, or when a platform loses a twin, the reconcile loop starts it again from its last saved
 * state, as a Kubernetes controller would. Operations on one instance run one at a time, each for
 * at most the operation timeout; the reconcile loop works on each node apart, with a deadline, so
 * a node that does not answer holds up no other; close() saves what it can within its deadline.
 */

export const TWIN_TD_PREFIX = "urn:dtc:twin:";
const DTC = "https://w3id.org/dtc#";
const JSON_TYPE = "application/json";
/** Instances the reconcile loop starts at once on one node. */
const RECONCILE_CONCURRENCY = 8;
/** Longest one operation on an instance holds its queue by default, ms (DTC_OPERATION_TIMEOUT_MS). */
export const DEFAULT_OPERATION_TIMEOUT_MS = 5 * 60_000;
/** Longest a reconcile pass waits for one node, ms; the node's work goes on, the next pass skips it. */
export const RECONCILE_NODE_DEADLINE_MS = 60_000;
/** Longest close() takes, ms: within `docker stop`'s 10 s grace, states saved first. */
export const CLOSE_DEADLINE_MS = 8_000;
/** Most snapshots kept of one instance: the next one is refused (409) until one is removed. */
export const MAX_SNAPSHOTS_PER_INSTANCE = 100;

export interface ManagerOptions {
  store: ManagerStore;
  inventory: Inventory;
  drivers: PlatformDriver[];
  directory: Directory;
  twinStatus: TwinStatusPublisher;
  publicBase: () => string;
  /** Declares the gateway's security in the twins' TDs (src/security/td-security.ts); default: as is. */
  secureTd?: (td: JsonObject) => JsonObject;
  /** How often desired and actual state are compared, ms (default 10,000). */
  reconcileIntervalMs?: number;
  /** How often running twins' states are saved, ms (default 30,000). */
  checkpointIntervalMs?: number;
  /** Longest one operation on an instance may take, ms (default DEFAULT_OPERATION_TIMEOUT_MS). */
  operationTimeoutMs?: number;
  /** Longest a reconcile pass waits for one node, ms (default RECONCILE_NODE_DEADLINE_MS). */
  reconcileDeadlineMs?: number;
  /** Longest close() takes, ms (default CLOSE_DEADLINE_MS). */
  closeDeadlineMs?: number;
  logger?: Logger;
}

export interface InstanceView extends InstanceRecord {
  lifecycle: InstanceStatus["lifecycle"] | "NotRunning";
  entanglement?: InstanceStatus["entanglement"];
  /** Why it is not running as it should (a failed start, a platform failure). */
  failed?: string;
  links: { self: string; twin: string; description: string };
  /** The DT Description as published (on single-instance answers). */
  td?: JsonObject;
}

export interface Candidate {
  node: DtcNode;
  fits: boolean;
  reasons: string[];
  free: { cpu: number; memory: number; gpu: number };
}

interface Running {
  handle: InstanceHandle;
  unlisten: () => void;
  failed?: string;
  /** What the last checkpoint saved, to skip twins that did not change. */
  savedFingerprint?: string;
}

const fingerprint = (state: TwinState) =>
  [
    state.lastUpdate?.committedAt,
    state.lifecycle.state,
    state.lifecycle.history.length,
    state.history.events.length,
    state.augmentations.length,
  ].join("/");

export class DtcManager {
  readonly #store: ManagerStore;
  readonly #inventory: Inventory;
  readonly #drivers: Map<string, PlatformDriver>;
  readonly #directory: Directory;
  readonly #twinStatus: TwinStatusPublisher;
  readonly #publicBase: () => string;
  readonly #secureTd: (td: JsonObject) => JsonObject;
  readonly #logger: Logger | undefined;
  readonly #options: ManagerOptions;
  readonly #running = new Map<string, Running>();
  /** Why an instance could not be started, or its last operation was given up (cleared once it runs). */
  readonly #startFailures = new Map<string, string>();
  /** The tail of each instance's operation queue. */
  readonly #queues = new Map<string, Promise<unknown>>();
  /** Nodes whose reconcile work went past its deadline and goes on: passes skip them until done. */
  readonly #busyNodes = new Set<string>();
  readonly #operationTimeoutMs: number;
  #timers: NodeJS.Timeout[] = [];
  #reconciling: Promise<void> | undefined;
  #closed = false;
  #closing: Promise<void> | undefined;

  constructor(options: ManagerOptions) {
    this.#options = options;
    this.#store = options.store;
    this.#inventory = options.inventory;
    this.#drivers = new Map(options.drivers.map((d) => [d.platform, d]));
    this.#directory = options.directory;
    this.#twinStatus = options.twinStatus;
    this.#publicBase = options.publicBase;
    this.#secureTd = options.secureTd ?? ((td) => td);
    this.#logger = options.logger;
    this.#operationTimeoutMs = options.operationTimeoutMs ?? DEFAULT_OPERATION_TIMEOUT_MS;
  }

  get inventory(): Inventory {
    return this.#inventory;
  }

  /** Brings every instance that should run up (reconcile), then keeps doing so and saving states. */
  async open(): Promise<void> {
    await this.reconcile();
    const reconcile = setInterval(() => void this.reconcile(), this.#options.reconcileIntervalMs ?? 10_000);
    const checkpoint = setInterval(
      () => void this.checkpoint(),
      this.#options.checkpointIntervalMs ?? 30_000,
    );
    reconcile.unref();
    checkpoint.unref();
    this.#timers = [reconcile, checkpoint];
  }

  /** Where the gateway forwards /twins/{id}/...: the node the twin runs on now. */
  httpTarget(id: string): string | undefined {
    return this.#running.get(id)?.handle.httpTarget();
  }

  /** The TD of a running twin as its runtime exposes it (the broker's ACLs read its PT topics). */
  runningDescription(id: string): JsonObject | undefined {
    return this.#running.get(id)?.handle.description();
  }

  // ---- nodes and candidates

  async readiness(node: DtcNode): Promise<Readiness> {
    const driver = this.#drivers.get(node.platform);
    if (!driver) return { ready: false, reason: `this gateway has no ${node.platform} driver` };
    try {
      return await driver.ready(target(node));
    } catch (err) {
      return { ready: false, reason: (err as Error).message };
    }
  }

  /**
   * Removes a node from the inventory (refused while instances are placed on it) and lets its
   * driver release what it held for it: an in-process node's runtime, a Docker node's engine client.
   */
  async removeNode(id: string): Promise<void> {
    const node = this.#inventory.node(id);
    await this.#inventory.removeNode(id, this.countOn(id));
    await this.#drivers
      .get(node.platform)
      ?.release(target(node))
      .catch((err) => this.#logger?.warn({ err, node: id }, "releasing a removed node failed"));
  }

  /** How many instances are placed on `nodeId` (running or stopped). */
  countOn(nodeId: string): number {
    let count = 0;
    for (const record of this.#store.instances.peek()) if (record.node === nodeId) count++;
    return count;
  }

  /** CPU, memory and GPUs of `node` not taken by the requirements of the instances on it. */
  free(node: DtcNode, except?: string): Candidate["free"] {
    const free = { cpu: node.capabilities.cpu, memory: node.capabilities.memory, gpu: node.capabilities.gpu };
    const packages = new Map<string, DtPackage["requirements"]>();
    for (const pkg of this.#store.packages.peek()) packages.set(pkg.id, pkg.requirements);
    for (const record of this.#store.instances.peek()) {
      if (record.node !== node.id || record.id === except) continue;
      const req = packages.get(record.package) ?? {};
      free.cpu -= req.cpu ?? 0;
      free.memory -= req.memory ?? 0;
      free.gpu -= req.gpu ?? 0;
    }
    return free;
  }

  /**
   * Why `pkg` cannot run on `node` now (empty: it fits). `except`: an instance whose own requirements
   * do not count (it is the one being placed); `timeliness`: the instance's own Td, when it has one.
   */
  async misfits(pkg: DtPackage, node: DtcNode, except?: string, timeliness?: number): Promise<string[]> {
    const reasons: string[] = [];
    if (node.platform !== pkg.platform) {
      reasons.push(`node "${node.id}" runs ${node.platform}; package "${pkg.id}" is for ${pkg.platform}`);
    }
    const readiness = await this.readiness(node);
    if (!readiness.ready) reasons.push(`node "${node.id}" is not ready: ${readiness.reason}`);
    const free = this.free(node, except);
    const req = pkg.requirements;
    if ((req.cpu ?? 0) > free.cpu)
      reasons.push(`needs ${req.cpu} CPU, node "${node.id}" has ${round(free.cpu)} free`);
    if ((req.memory ?? 0) > free.memory) {
      reasons.push(`needs ${req.memory} MiB of memory, node "${node.id}" has ${round(free.memory)} MiB free`);
    }
    if ((req.gpu ?? 0) > free.gpu)
      reasons.push(`needs ${req.gpu} GPU, node "${node.id}" has ${free.gpu} free`);
    const td = timeliness ?? this.#inventory.schema(pkg.schema).summary.fidelity?.desiredTimeliness;
    if (td !== undefined && node.latencyMs > td) {
      reasons.push(
        `node "${node.id}" is ${node.latencyMs} ms from the physical side, more than the schema's desired timeliness (${td} ms)`,
      );
    }
    return reasons;
  }

  /** The nodes a package can be started on, best first (lowest latency); `all` adds the others with why not. */
  async candidates(packageId: string, options: { all?: boolean } = {}): Promise<Candidate[]> {
    const pkg = this.#inventory.package(packageId);
    const out: Candidate[] = [];
    for (const node of this.#inventory.nodes()) {
      const reasons = await this.misfits(pkg, node);
      if (reasons.length === 0 || options.all)
        out.push({ node, fits: reasons.length === 0, reasons, free: this.free(node) });
    }
    return out.sort((a, b) => Number(b.fits) - Number(a.fits) || a.node.latencyMs - b.node.latencyMs);
  }

  // ---- deployment

  /** Start DT Instance (Fig. 4): checks, records the desired state, starts through the driver, publishes the TD. */
  async start(input: unknown): Promise<InstanceView> {
    const parsed = startInput.safeParse(input);
    if (!parsed.success) throw invalid("start request", parsed.error);
    const request = parsed.data;
    this.#inventory.checkBrokerUrl(request.brokerUrl);
    const pkg = this.#inventory.package(request.package);
    const node = this.#inventory.node(request.node);
    const configuration = resolveConfiguration(pkg, request.configuration);
    const id = request.id ?? this.#newId(pkg.id);
    const starting = this.#serial(id, `starting instance "${id}" on node "${node.id}"`, async (signal) => {
      if (this.#store.instances.get(id)) throw new ManagerError(409, `an instance with id "${id}" exists`);
      await this.#checkFit(pkg, node, undefined, request.fidelity?.desiredTimeliness);
      signal.throwIfAborted();
      const now = new Date().toISOString();
      const record: InstanceRecord = {
        id,
        package: pkg.id,
        schema: pkg.schema,
        node: node.id,
        platform: node.platform,
        configuration,
        ...(request.fidelity ? { fidelity: request.fidelity } : {}),
        ...(request.brokerUrl ? { brokerUrl: request.brokerUrl } : {}),
        desired: "running",
        createdAt: now,
        updatedAt: now,
      };
      // Desired state first: if the gateway dies mid-start, the reconcile loop finishes the job.
      this.#store.instances.put(id, record);
      try {
        await this.#launch(record, undefined, signal);
      } catch (err) {
        // Given up (timed out): the record stays, as after a crash mid-start.
        if (!signal.aborted) this.#store.instances.delete(id);
        throw err;
      }
      return this.#view(record, { td: true });
    });
    return starting.catch((err: unknown) => {
      if (err instanceof OperationTimeout && this.#store.instances.get(id)) {
        throw new OperationTimeout(
          `${err.message}: instance "${id}" stays recorded and the reconcile loop keeps starting it (DELETE /api/instances/${id} gives up)`,
        );
      }
      throw err;
    });
  }

  /** Stop: detached from the PT (Done); its TD stays in the directory with its state. */
  async stop(id: string): Promise<InstanceView> {
    return this.#serial(id, `stopping instance "${id}"`, async () => {
      const record = this.#record(id);
      const running = this.#runningOf(record);
      await running.handle.stop();
      this.#save(record, { desired: "stopped" });
      await this.#saveState(id, running);
      return this.#view(record, { td: true });
    });
  }

  /** Start a stopped instance again (resume): it attaches to its PT with the state it had. */
  async resume(id: string): Promise<InstanceView> {
    return this.#serial(id, `starting instance "${id}" again`, async () => {
      const record = this.#record(id);
      const running = this.#runningOf(record);
      if (running.handle.status().lifecycle !== "Done") {
        throw new ManagerError(409, `instance "${id}" is ${running.handle.status().lifecycle}, not stopped`);
      }
      await running.handle.resume();
      this.#save(record, { desired: "running" });
      return this.#view(record, { td: true });
    });
  }

  /** Restart: fresh from its original configuration, same id, TD and URLs. */
  async restart(id: string): Promise<InstanceView> {
    return this.#serial(id, `restarting instance "${id}"`, async () => {
      const record = this.#record(id);
      const running = this.#runningOf(record);
      await running.handle.restart();
      // The saved state is the old twin's: a crash now must not bring it back.
      this.#store.states.delete(id);
      running.savedFingerprint = undefined;
      this.#save(record, { desired: "running" });
      return this.#view(record, { td: true });
    });
  }

  /** Remove: the twin, its TD and status in the directory, its saved state and its snapshots. */
  async remove(id: string): Promise<void> {
    await this.#serial(id, `removing instance "${id}"`, async () => {
      this.#record(id);
      await this.#unpublish(id);
      const running = this.#running.get(id);
      if (running) {
        running.unlisten();
        this.#running.delete(id);
        await running.handle.remove();
      }
      this.#store.transaction(() => {
        this.#store.instances.delete(id);
        this.#store.states.delete(id);
        for (const snapshot of this.#store.snapshots.all()) {
          if (snapshot.instance === id) this.#store.snapshots.delete(snapshot.id);
        }
      });
      this.#startFailures.delete(id);
    });
  }

  // ---- management

  instances(
    filter: { schema?: string; node?: string; state?: string; package?: string } = {},
  ): InstanceView[] {
    if (filter.state !== undefined && ![...LIFECYCLE_STATES, "NotRunning"].includes(filter.state)) {
      throw new ManagerError(400, `state must be one of ${[...LIFECYCLE_STATES, "NotRunning"].join(", ")}`, [
        { field: "state", description: `must be one of ${[...LIFECYCLE_STATES, "NotRunning"].join(", ")}` },
      ]);
    }
    const schemaIri =
      filter.schema === undefined
        ? undefined
        : (this.#inventory.schemas({}).find((s) => s.id === filter.schema)?.iri ?? filter.schema);
    return this.#store.instances
      .all()
      .filter(
        (r) =>
          (schemaIri === undefined || r.schema === schemaIri) &&
          (filter.node === undefined || r.node === filter.node) &&
          (filter.package === undefined || r.package === filter.package),
      )
      .map((r) => this.#view(r))
      .filter((v) => filter.state === undefined || v.lifecycle === filter.state);
  }

  instance(id: string): InstanceView {
    return this.#view(this.#record(id), { td: true });
  }

  /** Snapshot: configuration, state and history, kept until removed (or the instance is). */
  async snapshot(id: string): Promise<SnapshotSummary> {
    return this.#serial(id, `taking a snapshot of instance "${id}"`, async () => {
      const record = this.#record(id);
      const running = this.#runningOf(record);
      const kept = this.#store.snapshotCount(id);
      if (kept >= MAX_SNAPSHOTS_PER_INSTANCE) {
        throw new ManagerError(
          409,
          `instance "${id}" has ${kept} snapshots, the most kept per instance (${MAX_SNAPSHOTS_PER_INSTANCE}): remove one first (DELETE /api/snapshots/{id})`,
        );
      }
      const state = await running.handle.exportState();
      const snapshot: StoredSnapshot = {
        id: randomUUID(),
        instance: id,
        takenAt: new Date(state.exportedAt).toISOString(),
        record: structuredClone(record),
        state,
      };
      this.#store.transaction(() => {
        this.#store.snapshots.put(snapshot.id, snapshot);
        // The latest snapshot is the latest saved state too.
        this.#store.states.put(id, state);
      });
      running.savedFingerprint = fingerprint(state);
      return summariseSnapshot(snapshot);
    });
  }

  snapshots(filter: { instance?: string } = {}): SnapshotSummary[] {
    return this.#store.snapshots
      .all()
      .filter((s) => filter.instance === undefined || s.instance === filter.instance)
      .sort((a, b) => a.takenAt.localeCompare(b.takenAt))
      .map(summariseSnapshot);
  }

  snapshotDetails(id: string): StoredSnapshot {
    const snapshot = this.#store.snapshots.get(id);
    if (!snapshot) throw notFound("snapshot", id);
    return snapshot;
  }

  removeSnapshot(id: string): void {
    if (!this.#store.snapshots.delete(id)) throw notFound("snapshot", id);
  }

  /**
   * Restore: the snapshot's twin runs on `node` with the snapshot's state. Under its own id it
   * replaces the instance if that still runs (rolled back); under a new `id` it is a new instance.
   */
  async restore(snapshotId: string, input: unknown): Promise<{ view: InstanceView; created: boolean }> {
    const parsed = placementInput.safeParse(input);
    if (!parsed.success) throw invalid("restore request", parsed.error);
    const snapshot = this.snapshotDetails(snapshotId);
    this.#inventory.checkBrokerUrl(snapshot.record.brokerUrl);
    const node = this.#inventory.node(parsed.data.node);
    const id = parsed.data.id ?? snapshot.instance;
    return this.#serial(id, `restoring snapshot ${snapshotId} as instance "${id}"`, async (signal) => {
      const existing = this.#store.instances.get(id);
      const pkg = this.#packageFor(snapshot.record, node);
      await this.#checkFit(pkg, node, id, snapshot.record.fidelity?.desiredTimeliness);
      signal.throwIfAborted();
      const now = new Date().toISOString();
      const record: InstanceRecord = {
        ...structuredClone(snapshot.record),
        id,
        package: pkg.id,
        node: node.id,
        platform: node.platform,
        desired: "running",
        createdAt: existing?.createdAt ?? now,
        updatedAt: now,
        origin: { restoredFrom: snapshotId },
        failures: existing?.failures,
      };
      const previous = this.#running.get(id);
      if (previous) {
        previous.unlisten();
        await previous.handle.remove({ handover: true });
        this.#running.delete(id);
      }
      this.#store.instances.put(id, record);
      try {
        await this.#launch(record, snapshot.state, signal);
      } catch (err) {
        if (signal.aborted) throw err;
        if (existing) this.#store.instances.put(id, existing);
        else this.#store.instances.delete(id);
        throw err;
      }
      this.#store.states.put(id, snapshot.state);
      return { view: this.#view(record, { td: true }), created: existing === undefined };
    });
  }

  /**
   * Move: the twin continues on `node` with its state; same TD id, URLs and topics. The copy on
   * the target runs before the source goes, and the gateway's routing switches in between.
   *
   * Durable at each step: the exported state is saved before the target starts (a crash, or a
   * target that fails, leaves the source with it), and the record names the target before the
   * source is removed (a crash then brings the twin back on the target; a leftover source
   * container is an orphan the reconcile loop removes).
   */
  async move(id: string, input: unknown): Promise<InstanceView> {
    const parsed = moveInput.safeParse(input);
    if (!parsed.success) throw invalid("move request", parsed.error);
    const node = this.#inventory.node(parsed.data.node);
    return this.#serial(id, `moving instance "${id}" to node "${node.id}"`, async (signal) => {
      const record = this.#record(id);
      const source = this.#runningOf(record);
      if (record.node === node.id)
        throw new ManagerError(409, `instance "${id}" already runs on node "${node.id}"`);
      const pkg = this.#packageFor(record, node);
      await this.#checkFit(pkg, node, id, record.fidelity?.desiredTimeliness);
      signal.throwIfAborted();
      const state = await source.handle.exportState();
      this.#store.states.put(id, state);
      source.savedFingerprint = fingerprint(state);
      const moved: InstanceRecord = {
        ...record,
        package: pkg.id,
        node: node.id,
        platform: node.platform,
        updatedAt: new Date().toISOString(),
      };
      let handle: InstanceHandle;
      try {
        handle = await this.#driver(node).start(this.#spec(moved, pkg, node, state));
      } catch (err) {
        throw asManagerError(err);
      }
      if (signal.aborted) {
        await handle.remove({ handover: true }).catch(() => undefined);
        throw signal.reason;
      }
      source.unlisten();
      this.#adopt(moved, handle, fingerprint(state));
      this.#store.instances.put(id, moved);
      try {
        await source.handle.remove({ handover: true });
      } catch (err) {
        this.#logger?.warn({ err, instance: id }, "removing the source of a move failed");
      }
      await this.#publish(moved, handle);
      return this.#view(moved, { td: true });
    });
  }

  /** Clone: a new instance (new id and TD id) on `node` with a copy of the state. */
  async clone(id: string, input: unknown): Promise<InstanceView> {
    const parsed = placementInput.safeParse(input);
    if (!parsed.success) throw invalid("clone request", parsed.error);
    const node = this.#inventory.node(parsed.data.node);
    const source = this.#record(id);
    this.#inventory.checkBrokerUrl(source.brokerUrl);
    const cloneId = parsed.data.id ?? this.#newId(id);
    const state = await this.#serial(id, `exporting the state of instance "${id}"`, () =>
      this.#runningOf(source).handle.exportState(),
    );
    return this.#serial(cloneId, `cloning instance "${id}" as "${cloneId}"`, async (signal) => {
      if (this.#store.instances.get(cloneId))
        throw new ManagerError(409, `an instance with id "${cloneId}" exists`);
      const pkg = this.#packageFor(source, node);
      await this.#checkFit(pkg, node, undefined, source.fidelity?.desiredTimeliness);
      signal.throwIfAborted();
      const now = new Date().toISOString();
      const record: InstanceRecord = {
        ...structuredClone(source),
        id: cloneId,
        package: pkg.id,
        node: node.id,
        platform: node.platform,
        desired: state.lifecycle.state === "Done" ? "stopped" : "running",
        createdAt: now,
        updatedAt: now,
        origin: { clonedFrom: id },
        failures: undefined,
      };
      // With its state: a crash mid-start brings the clone back as it was cloned.
      this.#store.transaction(() => {
        this.#store.instances.put(cloneId, record);
        this.#store.states.put(cloneId, state);
      });
      try {
        await this.#launch(record, state, signal);
      } catch (err) {
        if (!signal.aborted) {
          this.#store.transaction(() => {
            this.#store.instances.delete(cloneId);
            this.#store.states.delete(cloneId);
          });
        }
        throw err;
      }
      return this.#view(record, { td: true });
    });
  }

  // ---- desired vs actual

  /**
   * Starts every instance that should run and does not (after a restart, or lost by its platform),
   * from its last saved state, and removes what platforms run that no instance accounts for. Each
   * node on its own: one whose engine does not answer is reported, and the others go on.
   */
  reconcile(): Promise<void> {
    if (this.#closed) return Promise.resolve();
    this.#reconciling ??= this.#reconcileOnce().finally(() => {
      this.#reconciling = undefined;
    });
    return this.#reconciling;
  }

  async #reconcileOnce(): Promise<void> {
    const due = new Map<string, InstanceRecord[]>();
    for (const record of this.#store.instances.all()) {
      const running = this.#running.get(record.id);
      if (running && running.failed === undefined) continue;
      due.set(record.node, [...(due.get(record.node) ?? []), record]);
    }
    const nodes = new Set([...this.#inventory.nodes().map((n) => n.id), ...due.keys()]);
    await Promise.all([...nodes].map((node) => this.#reconcileNode(node, due.get(node) ?? [])));
  }

  /** One node's share of a pass, waited for until the deadline; past it the pass goes on without it. */
  async #reconcileNode(nodeId: string, due: InstanceRecord[]): Promise<void> {
    if (this.#busyNodes.has(nodeId)) {
      this.#logger?.warn({ node: nodeId }, "reconcile skips the node: its previous pass is not done");
      return;
    }
    this.#busyNodes.add(nodeId);
    const work = this.#reconcileNodeWork(nodeId, due)
      .catch((err) => this.#logger?.warn({ err, node: nodeId }, "reconciling the node failed"))
      .finally(() => this.#busyNodes.delete(nodeId));
    const deadlineMs = this.#options.reconcileDeadlineMs ?? RECONCILE_NODE_DEADLINE_MS;
    if ((await settledWithin(work, deadlineMs)) === "late") {
      this.#logger?.warn(
        { node: nodeId, deadlineMs },
        "reconciling the node takes longer than its deadline; the pass goes on without it",
      );
    }
  }

  async #reconcileNodeWork(nodeId: string, due: InstanceRecord[]): Promise<void> {
    const node = this.#store.nodes.get(nodeId);
    if (!node) {
      for (const record of due) this.#startFailures.set(record.id, `node "${nodeId}" is not registered`);
      return;
    }
    if (due.length > 0) {
      // One question to the node, not one time-out per instance on a node that does not answer.
      const readiness = await this.readiness(node);
      if (!readiness.ready) {
        const why = `node "${nodeId}" is not ready: ${readiness.reason}`;
        for (const record of due) this.#startFailures.set(record.id, why);
        this.#logger?.warn({ node: nodeId, instances: due.length, reason: readiness.reason }, why);
        return;
      }
      // A few at a time: after a restart, a thousand instances one by one would take ten seconds.
      const queue = [...due];
      const workers = Array.from({ length: Math.min(RECONCILE_CONCURRENCY, queue.length) }, async () => {
        for (let record = queue.shift(); record !== undefined; record = queue.shift()) {
          if (this.#closed) return;
          await this.#reconcileInstance(record).catch(() => undefined);
        }
      });
      await Promise.all(workers);
    }
    await this.#removeOrphans(node);
  }

  #reconcileInstance(record: InstanceRecord): Promise<void> {
    return this.#serial(
      record.id,
      `starting instance "${record.id}" on node "${record.node}"`,
      async (signal) => {
        const current = this.#store.instances.get(record.id);
        if (!current || this.#closed) return;
        const stale = this.#running.get(record.id);
        if (stale && stale.failed === undefined) return;
        try {
          if (stale) {
            stale.unlisten();
            this.#running.delete(record.id);
            await stale.handle.remove().catch(() => undefined);
          }
          const saved = this.#store.states.get(current.id);
          // Lost by its platform, the time it did not run counts against it (the runtime says the PT
          // was unreachable). Not run since the gateway started: the gateway was down, not the twin.
          const state = saved && !stale ? withFreshWindow(saved) : saved;
          await this.#launch(current, state, signal);
          this.#startFailures.delete(current.id);
          this.#logger?.info({ instance: current.id, node: current.node }, "instance started by reconcile");
        } catch (err) {
          if (signal.aborted) return;
          this.#startFailures.set(current.id, (err as Error).message);
          this.#logger?.warn({ err, instance: current.id }, "reconcile could not start the instance");
        }
      },
    );
  }

  async #removeOrphans(node: DtcNode): Promise<void> {
    const driver = this.#drivers.get(node.platform);
    if (!driver || this.#closed) return;
    const ids = await driver.running(target(node)).catch(() => [] as string[]);
    for (const id of ids) {
      if (this.#owns(id, node.id)) continue;
      // In the instance's queue: a move or restore to this node may be starting it right now.
      await this.#serial(id, `removing orphan "${id}" from node "${node.id}"`, async () => {
        if (this.#closed || this.#owns(id, node.id)) return;
        this.#logger?.warn({ instance: id, node: node.id }, "removing an orphaned instance");
        await driver.removeOrphan(target(node), id);
      }).catch((err) => this.#logger?.warn({ err }, "orphan removal failed"));
    }
  }

  /** Whether instance `id` belongs on `nodeId`: it runs there, or its record puts it there. */
  #owns(id: string, nodeId: string): boolean {
    const record = this.#store.instances.get(id);
    if (!record) return false;
    return this.#running.get(id)?.handle.node === nodeId || record.node === nodeId;
  }

  /** Saves the state of every running twin that changed since its last save. */
  checkpoint(): Promise<void> {
    return this.#saveStates(() => this.#closed);
  }

  /**
   * Saves running twins' states that changed, node by node in parallel (a node whose twins do not
   * answer holds up no other), one twin at a time on each, until `stop` says so.
   */
  async #saveStates(stop: () => boolean): Promise<void> {
    const byNode = new Map<string, [string, Running][]>();
    for (const entry of this.#running) {
      const node = entry[1].handle.node;
      byNode.set(node, [...(byNode.get(node) ?? []), entry]);
    }
    await Promise.all(
      [...byNode.values()].map(async (entries) => {
        let done = 0;
        for (const [id, running] of entries) {
          if (stop()) return;
          // Exports and commits are synchronous: give the event loop (telemetry, requests) a turn now
          // and then, or a thousand twins would hold it for a third of a second.
          if (++done % 4 === 0) await new Promise((resolve) => setImmediate(resolve));
          await this.#serial(id, `saving the state of instance "${id}"`, () =>
            this.#saveState(id, running),
          ).catch((err) => this.#logger?.warn({ err, instance: id }, "saving the instance's state failed"));
        }
      }),
    );
  }

  /**
   * Saves every state, then lets the drivers go (instances stay desired: the next start brings
   * them back). Within the close deadline whatever hangs: a twin whose state cannot be saved in
   * time keeps its last checkpoint.
   */
  close(): Promise<void> {
    this.#closing ??= this.#close();
    return this.#closing;
  }

  async #close(): Promise<void> {
    for (const timer of this.#timers) clearInterval(timer);
    const deadline = Date.now() + (this.#options.closeDeadlineMs ?? CLOSE_DEADLINE_MS);
    const left = () => Math.max(0, deadline - Date.now());
    // No new work from here; work already queued on an instance finishes (or not) within the deadline.
    this.#closed = true;
    if (
      (await settledWithin(
        this.#saveStates(() => false),
        left(),
      )) === "late"
    ) {
      this.#logger?.warn(
        "closing: not every twin's state could be saved in time; they keep their last checkpoint",
      );
    }
    await settledWithin(Promise.allSettled([...this.#queues.values()]), left());
    for (const running of this.#running.values()) running.unlisten();
    this.#running.clear();
    for (const driver of this.#drivers.values()) {
      const closing = driver.close().catch((err) => this.#logger?.warn({ err }, "closing a driver failed"));
      if ((await settledWithin(closing, left())) === "late") {
        this.#logger?.warn({ platform: driver.platform }, "closing: the driver did not close in time");
      }
    }
  }

  // ---- internals

  /**
   * Runs `operation` (`what` names it in errors) on instance `id` after those before it: one at a
   * time per instance, each for at most the operation timeout. Past it the caller gets a 504, the
   * failure is recorded, and the queue goes on; `signal` tells the given-up operation, which must
   * then leave the instance alone (the manager checks it before its own writes).
   */
  #serial<T>(id: string, what: string, operation: (signal: AbortSignal) => Promise<T>): Promise<T> {
    const previous = this.#queues.get(id) ?? Promise.resolve();
    const next = previous.catch(() => undefined).then(() => this.#timed(id, what, operation));
    const tail = next.catch(() => undefined);
    this.#queues.set(id, tail);
    void tail.then(() => {
      if (this.#queues.get(id) === tail) this.#queues.delete(id);
    });
    return next;
  }

  #timed<T>(id: string, what: string, operation: (signal: AbortSignal) => Promise<T>): Promise<T> {
    const controller = new AbortController();
    const ms = this.#operationTimeoutMs;
    return new Promise<T>((resolve, reject) => {
      const timer = setTimeout(() => {
        const timeout = new OperationTimeout(`${what} did not finish within ${ms} ms`);
        controller.abort(timeout);
        this.#logger?.warn({ instance: id, timeoutMs: ms }, timeout.message);
        const running = this.#running.get(id);
        if (!running || running.failed !== undefined) this.#startFailures.set(id, timeout.message);
        reject(timeout);
      }, ms);
      timer.unref();
      Promise.resolve()
        .then(() => operation(controller.signal))
        .then(resolve, reject)
        .finally(() => clearTimeout(timer));
    });
  }

  #record(id: string): InstanceRecord {
    const record = this.#store.instances.get(id);
    if (!record) throw notFound("DT Instance", id);
    return record;
  }

  #runningOf(record: InstanceRecord): Running {
    const running = this.#running.get(record.id);
    if (!running || running.failed !== undefined) {
      const why = running?.failed ?? this.#startFailures.get(record.id) ?? "it is being started";
      throw new ManagerError(409, `instance "${record.id}" is not running on node "${record.node}": ${why}`);
    }
    return running;
  }

  #save(record: InstanceRecord, changes: Partial<InstanceRecord>): void {
    Object.assign(record, changes, { updatedAt: new Date().toISOString() });
    this.#store.instances.put(record.id, record);
  }

  async #saveState(id: string, running: Running): Promise<void> {
    if (this.#running.get(id) !== running || running.failed !== undefined) return;
    const state = await running.handle.exportState();
    const print = fingerprint(state);
    if (print === running.savedFingerprint) return;
    this.#store.states.put(id, state);
    running.savedFingerprint = print;
  }

  #driver(node: DtcNode): PlatformDriver {
    const driver = this.#drivers.get(node.platform);
    if (!driver)
      throw new ManagerError(409, `this gateway has no ${node.platform} driver for node "${node.id}"`);
    return driver;
  }

  async #checkFit(pkg: DtPackage, node: DtcNode, except?: string, timeliness?: number): Promise<void> {
    const reasons = await this.misfits(pkg, node, except, timeliness);
    if (reasons.length > 0)
      throw new ManagerError(
        409,
        `package "${pkg.id}" cannot run on node "${node.id}": ${reasons.join("; ")}`,
      );
  }

  /** The instance's package, or (on another platform) the first package of its schema for the node's platform. */
  #packageFor(record: InstanceRecord, node: DtcNode): DtPackage {
    const own = this.#store.packages.get(record.package);
    if (own && own.platform === node.platform) return own;
    const other = this.#inventory.packages({ schema: record.schema, platform: node.platform })[0];
    if (other) return other;
    if (!own)
      throw new ManagerError(409, `package "${record.package}" of instance "${record.id}" no longer exists`);
    throw new ManagerError(
      409,
      `no package of schema ${record.schema} runs on ${node.platform} (node "${node.id}")`,
    );
  }

  #newId(prefix: string): string {
    for (;;) {
      const id = `${prefix.slice(0, 54)}-${randomBytes(4).toString("hex")}`;
      if (!this.#store.instances.get(id)) return id;
    }
  }

  #spec(record: InstanceRecord, pkg: DtPackage, node: DtcNode, state?: TwinState): InstanceSpec {
    const twin: TwinConfig = {
      id: record.id,
      schema: record.schema,
      placeholders: record.configuration,
      ...(record.brokerUrl ? { brokerUrl: record.brokerUrl } : {}),
      ...(record.fidelity ? { fidelity: record.fidelity } : {}),
      ...(pkg.shadowing ? { shadowing: pkg.shadowing } : {}),
      ...(pkg.historyLimit ? { historyLimit: pkg.historyLimit } : {}),
    };
    return {
      id: record.id,
      node: target(node),
      package: pkg.id,
      artefact: pkg.artefact,
      requirements: pkg.requirements,
      twin,
      augmentations: pkg.augmentations,
      ...(state ? { state } : {}),
    };
  }

  /**
   * Starts (or adopts) the instance of `record` through its node's driver and publishes it. Given
   * up meanwhile (`signal`), it leaves no twin behind: one it started is removed again.
   */
  async #launch(record: InstanceRecord, state: TwinState | undefined, signal: AbortSignal): Promise<void> {
    const node = this.#inventory.node(record.node);
    const pkg = this.#store.packages.get(record.package);
    if (!pkg) throw new ManagerError(409, `package "${record.package}" no longer exists`);
    const driver = this.#driver(node);
    const spec = this.#spec(record, pkg, node, state);
    let handle: InstanceHandle | undefined;
    let adopted = false;
    try {
      handle = await driver.adopt(spec);
      adopted = handle !== undefined;
      handle ??= await driver.start(spec);
    } catch (err) {
      throw asManagerError(err);
    }
    // An adopted container is the instance's own: the next attempt adopts it again.
    if (signal.aborted && !adopted) await handle.remove().catch(() => undefined);
    signal.throwIfAborted();
    if (record.desired === "stopped" && handle.status().lifecycle !== "Done") await handle.stop();
    this.#adopt(record, handle, state && fingerprint(state));
    await this.#publish(record, handle);
  }

  /** Follows a started instance; `savedFingerprint`: that of the saved state it started from. */
  #adopt(record: InstanceRecord, handle: InstanceHandle, savedFingerprint?: string): void {
    const running: Running = { handle, unlisten: () => {}, savedFingerprint };
    running.unlisten = handle.onStatus({
      failed: (reason) => {
        running.failed = reason;
        this.#logger?.warn({ instance: record.id, reason }, "the platform lost the instance");
        const at = new Date().toISOString();
        void this.#serial(record.id, `recording the failure of instance "${record.id}"`, async () => {
          const current = this.#store.instances.get(record.id);
          if (!current) return;
          const count = (current.failures?.count ?? 0) + 1;
          this.#save(current, { failures: { count, last: { reason, at } } });
        })
          .catch((err) => this.#logger?.warn({ err, instance: record.id }, "recording a failure failed"))
          .then(() => this.reconcile());
      },
    });
    this.#running.set(record.id, running);
  }

  /** The TD with its placement links (schema, package, node, platform), as the directory has it. */
  #description(record: InstanceRecord, handle: InstanceHandle): JsonObject {
    const td = this.#secureTd(structuredClone(handle.description()));
    const links = ((td.links as Link[] | undefined) ?? []).filter((l) => !String(l.rel).startsWith(DTC));
    links.push(
      { rel: `${DTC}package`, href: this.#inventory.packageIri(record.package), type: JSON_TYPE },
      { rel: `${DTC}node`, href: this.#inventory.nodeIri(record.node), type: JSON_TYPE },
      { rel: `${DTC}platform`, href: `${DTC}${PLATFORM_INDIVIDUAL[record.platform]}` },
    );
    td.links = links;
    return td;
  }

  async #publish(record: InstanceRecord, handle: InstanceHandle): Promise<void> {
    const td = this.#description(record, handle);
    const tdId = td.id as string;
    await this.#directory.put(tdId, td);
    const placement: TwinPlacement = {
      node: this.#inventory.nodeIri(record.node),
      package: this.#inventory.packageIri(record.package),
      platform: PLATFORM_INDIVIDUAL[record.platform],
    };
    await this.#twinStatus.watch(handle, tdId, placement);
  }

  async #unpublish(id: string): Promise<void> {
    const tdId = `${TWIN_TD_PREFIX}${id}`;
    await this.#twinStatus.unwatch(tdId);
    await this.#directory.delete(tdId).catch((err) => {
      if (!(err instanceof DirectoryError && err.status === 404)) throw err;
    });
  }

  #view(record: InstanceRecord, options: { td?: boolean } = {}): InstanceView {
    const running = this.#running.get(record.id);
    const status = running?.handle.status();
    const base = this.#publicBase();
    const failed = running?.failed ?? this.#startFailures.get(record.id);
    return {
      ...record,
      lifecycle: status && running?.failed === undefined ? status.lifecycle : "NotRunning",
      ...(status?.entanglement ? { entanglement: status.entanglement } : {}),
      ...(failed !== undefined ? { failed } : {}),
      links: {
        self: `${base}/api/instances/${record.id}`,
        twin: `${base}/twins/${record.id}`,
        description: `${base}/things/${encodeURIComponent(`${TWIN_TD_PREFIX}${record.id}`)}`,
      },
      ...(options.td && running ? { td: this.#description(record, running.handle) } : {}),
    };
  }
}

/** An operation on an instance that did not finish within the operation timeout (it was given up). */
export class OperationTimeout extends ManagerError {
  constructor(message: string) {
    super(504, message);
    this.name = "OperationTimeout";
  }
}

/** Whether `work` settled within `ms` ("late": it goes on, unwaited for). */
async function settledWithin(work: Promise<unknown>, ms: number): Promise<"settled" | "late"> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<"late">((resolve) => {
    timer = setTimeout(() => resolve("late"), ms);
  });
  try {
    return await Promise.race([
      work.then(
        () => "settled" as const,
        () => "settled" as const,
      ),
      late,
    ]);
  } finally {
    clearTimeout(timer);
  }
}

/**
 * `state` with its entanglement window emptied: the twin measures afresh from its next binding,
 * instead of counting the time the gateway was down as time its PT was unreachable.
 */
function withFreshWindow(state: TwinState): TwinState {
  const { figures } = state.entanglement;
  return {
    ...state,
    entanglement: {
      figures: { ...figures, ...UNMEASURED },
      observations: noObservations(),
    },
  };
}

function target(node: DtcNode): NodeTarget {
  return { id: node.id, platform: node.platform, ...(node.endpoint ? { endpoint: node.endpoint } : {}) };
}

const round = (n: number) => Math.round(n * 100) / 100;

function summariseSnapshot(s: StoredSnapshot): SnapshotSummary {
  return {
    id: s.id,
    instance: s.instance,
    takenAt: s.takenAt,
    node: s.record.node,
    package: s.record.package,
    schema: s.record.schema,
    lifecycle: s.state.lifecycle.state,
    history: { states: s.state.history.states.length, events: s.state.history.events.length },
  };
}

/** The configuration of a start request checked against the package's parameters, defaults filled in. */
function resolveConfiguration(
  pkg: DtPackage,
  given: Record<string, unknown>,
): Record<string, string | number | boolean> {
  const issues: { field: string; description: string }[] = [];
  const out: Record<string, string | number | boolean> = {};
  for (const name of Object.keys(given)) {
    if (!(name in pkg.parameters)) {
      issues.push({
        field: `configuration.${name}`,
        description: `is not a parameter of package "${pkg.id}" (it has ${Object.keys(pkg.parameters).join(", ") || "none"})`,
      });
    }
  }
  for (const [name, parameter] of Object.entries(pkg.parameters)) {
    const value = given[name] ?? parameter.default;
    if (value === undefined) {
      if (parameter.required !== false)
        issues.push({ field: `configuration.${name}`, description: "is required" });
      continue;
    }
    const problem = parameterProblem(parameter, value);
    if (problem) issues.push({ field: `configuration.${name}`, description: problem });
    else out[name] = value as string | number | boolean;
  }
  if (issues.length > 0) {
    throw new ManagerError(
      400,
      `configuration: ${issues.map((i) => `${i.field} ${i.description}`).join("; ")}`,
      issues,
    );
  }
  return out;
}

/** Errors of the twin runtime, as the API reports them. */
export function asManagerError(err: unknown): unknown {
  if (err instanceof ManagerError) return err;
  if (err instanceof ValidationError) return new ManagerError(400, err.message, err.errors);
  if (
    err instanceof TwinStateError ||
    err instanceof AugmentationError ||
    err instanceof ModelResolutionError
  ) {
    return new ManagerError(400, err.message);
  }
  if (err instanceof TwinConflictError) return new ManagerError(409, err.message);
  if (err instanceof PlatformError) return new ManagerError(err.status, err.message);
  if (err instanceof TwinNotFoundError) return new ManagerError(404, err.message);
  return err;
}
