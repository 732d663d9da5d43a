import { randomBytes, randomUUID } from "node:crypto";
import type { Directory } from "../directory/directory.js";
import type { TwinStatusPublisher } from "../directory/twin-status.js";
import { errorMessage } from "../domain/errors.js";
import { LIFECYCLE_STATES } from "../domain/lifecycle.js";
import type { TwinState } from "../domain/twin-state.js";
import { TWIN_TD_PREFIX } from "../domain/vocabulary.js";
import type { Logger } from "../logger.js";
import { tracedDriver } from "../observability/traced-driver.js";
import { annotateSpan, tracingOn, withSpan } from "../observability/tracing.js";
import type { InstanceHandle, InstanceStatus, PlatformDriver, Readiness } from "../platforms/driver.js";
import type { JsonObject } from "../wot/rdf.js";
import { asManagerError, invalid, ManagerError, notFound } from "./errors.js";
import { instanceSpec, resolveConfiguration } from "./instance-spec.js";
import { type Inventory, labelKey } from "./inventory.js";
import type { ManagerStore, StoredSnapshot } from "./manager-store.js";
import {
  type DtcNode,
  type DtPackage,
  type InstanceRecord,
  moveInput,
  placementInput,
  type SnapshotSummary,
  startInput,
} from "./model.js";
import { type ManagerObserver, type OperationKind, outcomeOf } from "./observer.js";
import { OperationQueue, OperationTimeout, settledWithin } from "./operation-queue.js";
import { type Candidate, freeOn, misfits, type Resources, rankCandidates } from "./placement.js";
import { TwinPublication } from "./publication.js";
import { RECONCILE_NODE_DEADLINE_MS, Reconciler, target } from "./reconciler.js";
import { fingerprint, type Running, RunningInstances } from "./running.js";

/**
 * The DTC Manager's deployment and management functions ([dt-continuum] Table I, second and third
 * groups): starts twins through platform drivers, snapshots, restores, moves and clones them. It
 * composes the concepts in this folder: pure placement (placement.ts), a keyed operation queue
 * with timeouts (operation-queue.ts), what runs now (running.ts), the reconciler (reconciler.ts)
 * and twin publication to the directory (publication.ts). Desired state (the instance records) is
 * durable; what runs is the drivers' business. Links for HTTP are the API's (src/manager/api.ts).
 */

export type { Candidate };
export { asManagerError, OperationTimeout, RECONCILE_NODE_DEADLINE_MS, TWIN_TD_PREFIX };

/** Longest one operation on an instance holds its queue by default, ms (DTC_OPERATION_TIMEOUT_MS). */
export const DEFAULT_OPERATION_TIMEOUT_MS = 5 * 60_000;
/** Longest close() takes, ms: within `docker stop`'s 10 s grace, states saved first. */
export const CLOSE_DEADLINE_MS = 8_000;
/** Most snapshots kept of one instance: the next one is refused (conflict) until one is removed. */
export const MAX_SNAPSHOTS_PER_INSTANCE = 100;

export interface ManagerOptions {
  store: ManagerStore;
  inventory: Inventory;
  drivers: PlatformDriver[];
  directory: Directory;
  twinStatus: TwinStatusPublisher;
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
  /** Told of operations, reconcile passes and failures (the gateway's metrics); none: not told. */
  observer?: ManagerObserver;
  logger?: Logger;
}

export interface InstanceView extends InstanceRecord {
  lifecycle: InstanceStatus["lifecycle"] | "NotRunning";
  entanglement?: InstanceStatus["entanglement"];
  /** Why it is not running as it should (a failed start, a platform failure). */
  failed?: string;
  /** The DT Description as published (on single-instance answers). */
  td?: JsonObject;
}

/** Where a stored state goes in the one creation path: saved with the record, after the start, or not at all. */
type SaveState = "before" | "after" | "never";

export class DtcManager {
  readonly #store: ManagerStore;
  readonly #inventory: Inventory;
  readonly #drivers: Map<string, PlatformDriver>;
  readonly #logger: Logger | undefined;
  readonly #options: ManagerOptions;
  readonly #running = new RunningInstances();
  readonly #queue: OperationQueue;
  readonly #reconciler: Reconciler;
  readonly #publication: TwinPublication;
  #timers: NodeJS.Timeout[] = [];
  #closed = false;
  #closing: Promise<void> | undefined;

  constructor(options: ManagerOptions) {
    this.#options = options;
    this.#store = options.store;
    this.#inventory = options.inventory;
    // Traced: each driver call a span inside the operation's (tracing on only).
    this.#drivers = new Map(options.drivers.map((d) => [d.platform, tracingOn() ? tracedDriver(d) : d]));
    this.#logger = options.logger;
    this.#queue = new OperationQueue({
      timeoutMs: options.operationTimeoutMs ?? DEFAULT_OPERATION_TIMEOUT_MS,
      onTimeout: (id, timeout) => {
        if (!this.#running.healthy(id)) this.#running.notRunning(id, timeout.message);
      },
      ...(options.logger ? { logger: options.logger } : {}),
    });
    this.#publication = new TwinPublication({
      directory: options.directory,
      twinStatus: options.twinStatus,
      iris: this.#inventory,
      ...(options.secureTd ? { secureTd: options.secureTd } : {}),
    });
    this.#reconciler = new Reconciler({
      store: this.#store,
      inventory: this.#inventory,
      running: this.#running,
      queue: this.#queue,
      driverOf: (platform) => this.#drivers.get(platform),
      readiness: (node) => this.readiness(node),
      launch: (record, state, signal) => this.#launch(record, state, signal),
      recordTerminal: (id, reason) => {
        const current = this.#store.instances.get(id);
        if (current) this.#save(current, { gaveUp: { reason, at: new Date().toISOString() } });
      },
      isClosed: () => this.#closed,
      ...(options.observer ? { observer: options.observer } : {}),
      ...(options.reconcileDeadlineMs !== undefined ? { deadlineMs: options.reconcileDeadlineMs } : {}),
      ...(options.logger ? { logger: options.logger } : {}),
    });
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

  /** The instances that run now, each with its record and its platform's handle. */
  *running(): Generator<{ record: InstanceRecord; handle: InstanceHandle; failed?: string }> {
    for (const [id, running] of this.#running.entries()) {
      const record = this.#store.instances.get(id);
      if (record)
        yield { record, handle: running.handle, ...(running.failed ? { failed: running.failed } : {}) };
    }
  }

  /**
   * Calls `listener` whenever what runs changes: an instance starts or stops running here, moves,
   * or its platform replaces it (a restart). With an id, or undefined for all of them.
   */
  onRunningChange(listener: (id: string | undefined) => void): () => void {
    return this.#running.onChange(listener);
  }

  // ---- nodes and candidates

  async readiness(node: DtcNode): Promise<Readiness> {
    const driver = this.#drivers.get(node.platform);
    if (!driver) return { ready: false, reason: `this gateway has no ${node.platform} driver` };
    try {
      return await driver.ready(target(node));
    } catch (err) {
      return { ready: false, reason: errorMessage(err) };
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
  free(node: DtcNode, except?: string): Resources {
    const packages = new Map<string, DtPackage["requirements"]>();
    for (const pkg of this.#store.packages.peek()) packages.set(pkg.id, pkg.requirements);
    return freeOn(node, this.#store.instances.peek(), (id) => packages.get(id), except);
  }

  /**
   * Why `pkg` cannot run on `node` now (empty: it fits). `except`: an instance whose own requirements
   * do not count (it is the one being placed); `timeliness`: the instance's own Td, when it has one.
   */
  async misfits(pkg: DtPackage, node: DtcNode, except?: string, timeliness?: number): Promise<string[]> {
    return misfits({
      pkg,
      node,
      readiness: await this.readiness(node),
      free: this.free(node, except),
      timeliness: timeliness ?? this.#inventory.schema(pkg.schema).summary.fidelity?.desiredTimeliness,
    });
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
    return rankCandidates(out);
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
    const starting = this.#operation(
      "start",
      id,
      `starting instance "${id}" on node "${node.id}"`,
      async (signal) => {
        this.#mustBeFree(id);
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
        await this.#create(record, undefined, "never", signal);
        return this.#view(record, { td: true });
      },
    );
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
    return this.#operation("stop", id, `stopping instance "${id}"`, async () => {
      const record = this.#record(id);
      const running = this.#runningOf(record);
      await running.handle.stop();
      this.#save(record, { desired: "stopped" });
      await this.#reconciler.saveState(id, running);
      return this.#view(record, { td: true });
    });
  }

  /** Start a stopped instance again (resume): it attaches to its PT with the state it had. */
  async resume(id: string): Promise<InstanceView> {
    return this.#operation("resume", id, `starting instance "${id}" again`, async () => {
      const record = this.#record(id);
      const running = this.#runningOf(record);
      const lifecycle = running.handle.status().lifecycle;
      if (lifecycle !== "Done")
        throw new ManagerError("conflict", `instance "${id}" is ${lifecycle}, not stopped`);
      await running.handle.resume();
      this.#save(record, { desired: "running" });
      return this.#view(record, { td: true });
    });
  }

  /** Restart: fresh from its original configuration, same id, TD and URLs. */
  async restart(id: string): Promise<InstanceView> {
    return this.#operation("restart", id, `restarting instance "${id}"`, async () => {
      const record = this.#record(id);
      const running = this.#runningOf(record);
      try {
        await running.handle.restart();
      } finally {
        // A new process (a container) with new addresses, or none when the restart failed.
        this.#running.changed(id);
      }
      // The saved state is the old twin's: a crash now must not bring it back.
      this.#store.states.delete(id);
      running.savedFingerprint = undefined;
      this.#save(record, { desired: "running" });
      return this.#view(record, { td: true });
    });
  }

  /** Remove: the twin, its TD and status in the directory, its saved state and its snapshots. */
  async remove(id: string): Promise<void> {
    await this.#operation("remove", id, `removing instance "${id}"`, async () => {
      this.#record(id);
      await this.#publication.unpublish(id);
      const running = this.#running.forget(id);
      if (running) await running.handle.remove();
      this.#store.transaction(() => {
        this.#store.instances.delete(id);
        this.#store.states.delete(id);
        this.#store.labels.delete(labelKey("Instance", id));
        for (const snapshot of this.#store.snapshots.all()) {
          if (snapshot.instance === id) this.#store.snapshots.delete(snapshot.id);
        }
      });
      this.#running.clearWhyNot(id);
      this.#reconciler.forget(id);
    });
  }

  // ---- management

  instances(
    filter: { schema?: string; node?: string; state?: string; package?: string } = {},
  ): InstanceView[] {
    const states = [...LIFECYCLE_STATES, "NotRunning"];
    if (filter.state !== undefined && !states.includes(filter.state)) {
      const description = `must be one of ${states.join(", ")}`;
      throw new ManagerError("invalid", `state ${description}`, [{ field: "state", description }]);
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
    return this.#operation("snapshot", id, `taking a snapshot of instance "${id}"`, async () => {
      const record = this.#record(id);
      const running = this.#runningOf(record);
      const kept = this.#store.snapshotCount(id);
      if (kept >= MAX_SNAPSHOTS_PER_INSTANCE) {
        throw new ManagerError(
          "conflict",
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
    return this.#operation(
      "restore",
      id,
      `restoring snapshot ${snapshotId} as instance "${id}"`,
      async (signal) => {
        const existing = this.#store.instances.get(id);
        const pkg = this.#packageFor(snapshot.record, node);
        await this.#checkFit(pkg, node, id, snapshot.record.fidelity?.desiredTimeliness);
        signal.throwIfAborted();
        const now = new Date().toISOString();
        const { gaveUp: _, ...recorded } = structuredClone(snapshot.record);
        const record: InstanceRecord = {
          ...recorded,
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
        const previous = this.#running.forget(id);
        if (previous) await previous.handle.remove({ handover: true });
        this.#reconciler.forget(id);
        await this.#create(record, snapshot.state, "after", signal, existing);
        return { view: this.#view(record, { td: true }), created: existing === undefined };
      },
    );
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
    return this.#operation("move", id, `moving instance "${id}" to node "${node.id}"`, async (signal) => {
      const record = this.#record(id);
      const source = this.#runningOf(record);
      annotateSpan({ "dtc.node.target": node.id, "dtc.platform.target": node.platform });
      if (record.node === node.id)
        throw new ManagerError("conflict", `instance "${id}" already runs on node "${node.id}"`);
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
        handle = await this.#driver(node).start(instanceSpec(moved, pkg, node, state));
      } catch (err) {
        throw asManagerError(err);
      }
      if (signal.aborted) {
        await handle
          .remove({ handover: true })
          .catch((err) =>
            this.#logger?.debug(
              { err, instance: id, node: node.id },
              "removing a given-up move's target failed",
            ),
          );
        throw signal.reason;
      }
      source.unlisten();
      this.#follow(moved, handle, fingerprint(state));
      this.#store.instances.put(id, moved);
      try {
        await source.handle.remove({ handover: true });
      } catch (err) {
        this.#logger?.warn({ err, instance: id, node: record.node }, "removing the source of a move failed");
      }
      await this.#publication.publish(moved, handle);
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
    return this.#operation("clone", cloneId, `cloning instance "${id}" as "${cloneId}"`, async (signal) => {
      this.#mustBeFree(cloneId);
      const pkg = this.#packageFor(source, node);
      await this.#checkFit(pkg, node, undefined, source.fidelity?.desiredTimeliness);
      signal.throwIfAborted();
      const now = new Date().toISOString();
      const { gaveUp: _, ...recorded } = structuredClone(source);
      const record: InstanceRecord = {
        ...recorded,
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
      await this.#create(record, state, "before", signal);
      return this.#view(record, { td: true });
    });
  }

  // ---- desired vs actual

  /**
   * Starts every instance that should run and does not, and removes what platforms run that no
   * instance accounts for (the reconciler, reconciler.ts).
   */
  reconcile(): Promise<void> {
    return this.#reconciler.reconcile();
  }

  /** Saves the state of every running twin that changed since its last save. */
  checkpoint(): Promise<void> {
    return this.#reconciler.saveStates(() => this.#closed);
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
        this.#reconciler.saveStates(() => false),
        left(),
      )) === "late"
    ) {
      this.#logger?.warn(
        "closing: not every twin's state could be saved in time; they keep their last checkpoint",
      );
    }
    await settledWithin(this.#queue.idle(), left());
    this.#running.clear();
    for (const driver of this.#drivers.values()) {
      const closing = driver.close().catch((err) => this.#logger?.warn({ err }, "closing a driver failed"));
      if ((await settledWithin(closing, left())) === "late") {
        this.#logger?.warn({ platform: driver.platform }, "closing: the driver did not close in time");
      }
    }
  }

  // ---- internals

  /** Runs `operation` on instance `id` in its queue (one at a time, each within the operation timeout). */
  #serial<T>(id: string, what: string, operation: (signal: AbortSignal) => Promise<T>): Promise<T> {
    return this.#queue.run(id, what, operation);
  }

  /** #serial for one of the operations of the API, told to the observer (metrics) when it settles. */
  #operation<T>(
    kind: OperationKind,
    id: string,
    what: string,
    operation: (signal: AbortSignal) => Promise<T>,
  ): Promise<T> {
    const observer = this.#options.observer;
    // A span dtc.manager.<kind> around the queued operation: its driver calls are its children.
    const run = withSpan(`dtc.manager.${kind}`, { "dtc.instance": id, "dtc.operation": kind }, () =>
      this.#serial(id, what, operation),
    );
    if (!observer) return run;
    const started = performance.now();
    const settled = (outcome: string) => observer.operation(kind, outcome, performance.now() - started);
    run.then(
      () => settled("ok"),
      (err: unknown) => settled(outcomeOf(err)),
    );
    return run;
  }

  /**
   * The one way an instance comes to run (start, restore, clone): its record made durable (with its
   * state when `saveState` is "before"), the twin launched, and on a failure everything put back as
   * it was (`previous`: the record it replaces). Given up meanwhile (`signal`), the record stays, as
   * after a crash mid-start, and the reconciler finishes the job.
   */
  async #create(
    record: InstanceRecord,
    state: TwinState | undefined,
    saveState: SaveState,
    signal: AbortSignal,
    previous?: InstanceRecord,
  ): Promise<void> {
    const withState = state !== undefined && saveState === "before";
    annotateSpan({ "dtc.instance": record.id, "dtc.node": record.node, "dtc.platform": record.platform });
    // Desired state first: if the gateway dies mid-start, the reconcile loop finishes the job.
    this.#store.transaction(() => {
      this.#store.instances.put(record.id, record);
      if (withState) this.#store.states.put(record.id, state);
    });
    try {
      await this.#launch(record, state, signal);
    } catch (err) {
      if (!signal.aborted) {
        this.#store.transaction(() => {
          if (previous) this.#store.instances.put(record.id, previous);
          else this.#store.instances.delete(record.id);
          if (withState && !previous) this.#store.states.delete(record.id);
        });
      }
      throw err;
    }
    if (state !== undefined && saveState === "after") this.#store.states.put(record.id, state);
  }

  #mustBeFree(id: string): void {
    if (this.#store.instances.get(id))
      throw new ManagerError("conflict", `an instance with id "${id}" exists`);
  }

  #record(id: string): InstanceRecord {
    const record = this.#store.instances.get(id);
    if (!record) throw notFound("DT Instance", id);
    annotateSpan({ "dtc.node": record.node, "dtc.platform": record.platform });
    return record;
  }

  #runningOf(record: InstanceRecord): Running {
    const running = this.#running.healthy(record.id);
    if (!running) {
      const why = this.#running.whyNot(record.id) ?? "it is being started";
      throw new ManagerError(
        "conflict",
        `instance "${record.id}" is not running on node "${record.node}": ${why}`,
      );
    }
    return running;
  }

  #save(record: InstanceRecord, changes: Partial<InstanceRecord>): void {
    Object.assign(record, changes, { updatedAt: new Date().toISOString() });
    this.#store.instances.put(record.id, record);
  }

  #driver(node: DtcNode): PlatformDriver {
    const driver = this.#drivers.get(node.platform);
    if (!driver)
      throw new ManagerError("conflict", `this gateway has no ${node.platform} driver for node "${node.id}"`);
    return driver;
  }

  async #checkFit(pkg: DtPackage, node: DtcNode, except?: string, timeliness?: number): Promise<void> {
    const reasons = await this.misfits(pkg, node, except, timeliness);
    if (reasons.length > 0) {
      throw new ManagerError(
        "conflict",
        `package "${pkg.id}" cannot run on node "${node.id}": ${reasons.join("; ")}`,
      );
    }
  }

  /** The instance's package, or (on another platform) the first package of its schema for the node's platform. */
  #packageFor(record: InstanceRecord, node: DtcNode): DtPackage {
    const own = this.#store.packages.get(record.package);
    if (own && own.platform === node.platform) return own;
    const other = this.#inventory.packages({ schema: record.schema, platform: node.platform })[0];
    if (other) return other;
    if (!own) {
      throw new ManagerError(
        "conflict",
        `package "${record.package}" of instance "${record.id}" no longer exists`,
      );
    }
    throw new ManagerError(
      "conflict",
      `no package of schema ${record.schema} runs on ${node.platform} (node "${node.id}")`,
    );
  }

  #newId(prefix: string): string {
    for (;;) {
      const id = `${prefix.slice(0, 54)}-${randomBytes(4).toString("hex")}`;
      if (!this.#store.instances.get(id)) return id;
    }
  }

  /**
   * Starts (or adopts) the instance of `record` through its node's driver, follows and publishes
   * it. Given up meanwhile (`signal`), it leaves no twin behind: one it started is removed again.
   */
  async #launch(record: InstanceRecord, state: TwinState | undefined, signal: AbortSignal): Promise<void> {
    const node = this.#inventory.node(record.node);
    const pkg = this.#store.packages.get(record.package);
    if (!pkg) throw new ManagerError("notFound", `package "${record.package}" no longer exists`);
    const driver = this.#driver(node);
    const spec = instanceSpec(record, pkg, node, state);
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
    if (signal.aborted && !adopted) {
      await handle
        .remove()
        .catch((err) =>
          this.#logger?.debug(
            { err, instance: record.id, node: record.node },
            "removing a given-up start's twin failed",
          ),
        );
    }
    signal.throwIfAborted();
    if (record.desired === "stopped" && handle.status().lifecycle !== "Done") await handle.stop();
    this.#follow(record, handle, state && fingerprint(state));
    if (record.gaveUp !== undefined) this.#save(record, { gaveUp: undefined });
    await this.#publication.publish(record, handle);
  }

  /** Follows a started instance; `savedFingerprint`: that of the saved state it started from. */
  #follow(record: InstanceRecord, handle: InstanceHandle, savedFingerprint?: string): void {
    const running: Running = { handle, unlisten: () => {}, savedFingerprint };
    running.unlisten = handle.onStatus({
      failed: (reason) => {
        running.failed = reason;
        this.#options.observer?.instanceLost(record.platform);
        this.#logger?.warn(
          { instance: record.id, node: record.node, reason },
          "the platform lost the instance",
        );
        const at = new Date().toISOString();
        void this.#serial(record.id, `recording the failure of instance "${record.id}"`, async () => {
          const current = this.#store.instances.get(record.id);
          if (!current) return;
          const count = (current.failures?.count ?? 0) + 1;
          this.#save(current, { failures: { count, last: { reason, at } } });
        })
          .catch((err) =>
            this.#logger?.warn({ err, instance: record.id, node: record.node }, "recording a failure failed"),
          )
          .then(() => this.reconcile());
      },
    });
    this.#running.set(record.id, running);
  }

  #view(record: InstanceRecord, options: { td?: boolean } = {}): InstanceView {
    const running = this.#running.get(record.id);
    const status = running?.handle.status();
    const failed = this.#running.whyNot(record.id);
    return {
      ...record,
      lifecycle: status && running?.failed === undefined ? status.lifecycle : "NotRunning",
      ...(status?.entanglement ? { entanglement: status.entanglement } : {}),
      ...(failed !== undefined ? { failed } : {}),
      ...(options.td && running ? { td: this.#publication.description(record, running.handle) } : {}),
    };
  }
}

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
