import { noObservations, UNMEASURED } from "../domain/entanglement.js";
import { type ErrorKind, errorMessage, isDtcError } from "../domain/errors.js";
import type { TwinState } from "../domain/twin-state.js";
import type { Logger } from "../logger.js";
import type { NodeTarget, PlatformDriver, Readiness } from "../platforms/driver.js";
import type { Inventory } from "./inventory.js";
import type { ManagerStore } from "./manager-store.js";
import type { DtcNode, InstanceRecord } from "./model.js";
import type { ManagerObserver } from "./observer.js";
import { type OperationQueue, settledWithin } from "./operation-queue.js";
import { fingerprint, type Running, type RunningInstances } from "./running.js";

/**
 * The reconciler compares desired state (the instance records) with what runs, as a Kubernetes
 * controller would: it starts what should run and does not (after a restart, or lost by its
 * platform) from its last saved state, removes what platforms run that no instance accounts for,
 * and saves running twins' states (checkpoints). Each node on its own, with a deadline. A start
 * that fails is retried after a backoff (1 s doubling to 60 s); one that can never succeed as things
 * are (kinds `invalid`, `notFound`: a schema or configuration that no longer resolves) is a terminal
 * failure, recorded on the instance and not retried until the gateway starts again.
 */

/** Instances started at once on one node. */
const CONCURRENCY = 8;
/** Longest a reconcile pass waits for one node, ms; the node's work goes on, the next pass skips it. */
export const RECONCILE_NODE_DEADLINE_MS = 60_000;
export const BACKOFF_BASE_MS = 1000;
export const BACKOFF_MAX_MS = 60_000;
const TERMINAL_KINDS: readonly ErrorKind[] = ["invalid", "notFound"];

export type ReconcileOutcome =
  | { outcome: "started" }
  | { outcome: "retry"; reason: string; afterMs: number }
  | { outcome: "terminal"; reason: string };

/** What an error means for the next attempt. */
export function outcomeOf(err: unknown, attempts: number): ReconcileOutcome {
  const reason = errorMessage(err);
  if (isDtcError(err) && TERMINAL_KINDS.includes(err.kind)) return { outcome: "terminal", reason };
  const afterMs = Math.min(BACKOFF_MAX_MS, BACKOFF_BASE_MS * 2 ** Math.max(0, attempts - 1));
  return { outcome: "retry", reason, afterMs };
}

export interface ReconcilerOptions {
  store: ManagerStore;
  inventory: Inventory;
  running: RunningInstances;
  queue: OperationQueue;
  driverOf(platform: string): PlatformDriver | undefined;
  readiness(node: DtcNode): Promise<Readiness>;
  /** Starts (or adopts) the instance from `state` and follows it. */
  launch(record: InstanceRecord, state: TwinState | undefined, signal: AbortSignal): Promise<void>;
  /** Records the outcome of a start on the instance (terminal failures). */
  recordTerminal(id: string, reason: string): void;
  isClosed(): boolean;
  /** Told how long each pass took and which starts failed (the gateway's metrics). */
  observer?: Pick<ManagerObserver, "reconciled" | "reconcileFailed">;
  deadlineMs?: number;
  now?: () => number;
  logger?: Logger;
}

export function target(node: DtcNode): NodeTarget {
  return { id: node.id, platform: node.platform, ...(node.endpoint ? { endpoint: node.endpoint } : {}) };
}

export class Reconciler {
  readonly #o: ReconcilerOptions;
  /** Nodes whose work went past its deadline and goes on: passes skip them until done. */
  readonly #busyNodes = new Set<string>();
  /** Failed starts per instance and when the next may be tried. */
  readonly #backoff = new Map<string, { attempts: number; nextAt: number }>();
  /** Instances given up on (terminal failures) in this gateway's run. */
  readonly #gaveUp = new Set<string>();
  #pass: Promise<void> | undefined;

  constructor(options: ReconcilerOptions) {
    this.#o = options;
  }

  /** One pass (a pass already under way is joined, not doubled). */
  reconcile(): Promise<void> {
    if (this.#o.isClosed()) return Promise.resolve();
    const started = performance.now();
    this.#pass ??= this.#reconcileOnce().finally(() => {
      this.#pass = undefined;
      this.#o.observer?.reconciled(performance.now() - started);
    });
    return this.#pass;
  }

  /** Forgets what it knew of an instance's failed starts (removed, or replaced by an operation). */
  forget(id: string): void {
    this.#backoff.delete(id);
    this.#gaveUp.delete(id);
  }

  async #reconcileOnce(): Promise<void> {
    const due = new Map<string, InstanceRecord[]>();
    const now = this.#now();
    for (const record of this.#o.store.instances.all()) {
      if (this.#o.running.healthy(record.id)) continue;
      if (this.#gaveUp.has(record.id)) continue;
      const backoff = this.#backoff.get(record.id);
      if (backoff && now < backoff.nextAt) continue;
      due.set(record.node, [...(due.get(record.node) ?? []), record]);
    }
    const nodes = new Set([...this.#o.inventory.nodes().map((n) => n.id), ...due.keys()]);
    await Promise.all([...nodes].map((node) => this.#reconcileNode(node, due.get(node) ?? [])));
  }

  /** One node's share of a pass, waited for until the deadline; past it the pass goes on without it. */
  async #reconcileNode(nodeId: string, due: InstanceRecord[]): Promise<void> {
    const logger = this.#o.logger;
    if (this.#busyNodes.has(nodeId)) {
      logger?.warn({ node: nodeId }, "reconcile skips the node: its previous pass is not done");
      return;
    }
    this.#busyNodes.add(nodeId);
    const work = this.#reconcileNodeWork(nodeId, due)
      .catch((err) => logger?.warn({ err, node: nodeId }, "reconciling the node failed"))
      .finally(() => this.#busyNodes.delete(nodeId));
    const deadlineMs = this.#o.deadlineMs ?? RECONCILE_NODE_DEADLINE_MS;
    if ((await settledWithin(work, deadlineMs)) === "late") {
      logger?.warn(
        { node: nodeId, deadlineMs },
        "reconciling the node takes longer than its deadline; the pass goes on without it",
      );
    }
  }

  async #reconcileNodeWork(nodeId: string, due: InstanceRecord[]): Promise<void> {
    const { store, running, logger } = this.#o;
    const node = store.nodes.get(nodeId);
    if (!node) {
      for (const record of due) running.notRunning(record.id, `node "${nodeId}" is not registered`);
      return;
    }
    if (due.length > 0) {
      // One question to the node, not one time-out per instance on a node that does not answer.
      const readiness = await this.#o.readiness(node);
      if (!readiness.ready) {
        const why = `node "${nodeId}" is not ready: ${readiness.reason}`;
        for (const record of due) running.notRunning(record.id, why);
        logger?.warn({ node: nodeId, instances: due.length, reason: readiness.reason }, why);
        return;
      }
      // A few at a time: after a restart, a thousand instances one by one would take ten seconds.
      const queue = [...due];
      const workers = Array.from({ length: Math.min(CONCURRENCY, queue.length) }, async () => {
        for (let record = queue.shift(); record !== undefined; record = queue.shift()) {
          if (this.#o.isClosed()) return;
          await this.#reconcileInstance(record);
        }
      });
      await Promise.all(workers);
    }
    await this.#removeOrphans(node);
  }

  /** Starts one instance again, in its queue; never throws (the outcome is recorded). */
  async #reconcileInstance(record: InstanceRecord): Promise<void> {
    const { store, running, logger } = this.#o;
    const what = `starting instance "${record.id}" on node "${record.node}"`;
    try {
      await this.#o.queue.run(record.id, what, async (signal) => {
        const current = store.instances.get(record.id);
        if (!current || this.#o.isClosed()) return;
        const stale = running.get(record.id);
        if (stale && stale.failed === undefined) return;
        try {
          if (stale) {
            running.forget(record.id);
            await stale.handle
              .remove()
              .catch((err) =>
                logger?.debug(
                  { err, instance: record.id, node: stale.handle.node },
                  "removing a lost copy failed",
                ),
              );
          }
          const saved = store.states.get(current.id);
          // Lost by its platform, the time it did not run counts against it (the runtime says the PT
          // was unreachable). Not run since the gateway started: the gateway was down, not the twin.
          const state = saved && !stale ? withFreshWindow(saved) : saved;
          await this.#o.launch(current, state, signal);
          running.clearWhyNot(current.id);
          this.#backoff.delete(current.id);
          logger?.info({ instance: current.id, node: current.node }, "instance started by reconcile");
        } catch (err) {
          if (signal.aborted) return;
          this.#failed(current.id, err);
        }
      });
    } catch (err) {
      // Given up by the queue (timed out): the queue recorded why.
      logger?.debug({ err, instance: record.id, node: record.node }, "reconcile: the start was given up");
    }
  }

  #failed(id: string, err: unknown): void {
    const attempts = (this.#backoff.get(id)?.attempts ?? 0) + 1;
    const outcome = outcomeOf(err, attempts);
    this.#o.running.notRunning(id, errorMessage(err));
    const record = this.#o.store.instances.get(id);
    const platform = record?.platform ?? "unknown";
    const node = record?.node;
    this.#o.observer?.reconcileFailed(platform, isDtcError(err) ? err.kind : "failed");
    if (outcome.outcome === "terminal") {
      this.#gaveUp.add(id);
      this.#backoff.delete(id);
      this.#o.recordTerminal(id, outcome.reason);
      this.#o.logger?.error({ err, instance: id, node }, "reconcile gave up starting the instance");
      return;
    }
    if (outcome.outcome === "retry") {
      this.#backoff.set(id, { attempts, nextAt: this.#now() + outcome.afterMs });
      this.#o.logger?.warn(
        { err, instance: id, node, attempts, retryInMs: outcome.afterMs },
        "reconcile could not start the instance",
      );
    }
  }

  async #removeOrphans(node: DtcNode): Promise<void> {
    const { queue, logger } = this.#o;
    const driver = this.#o.driverOf(node.platform);
    if (!driver || this.#o.isClosed()) return;
    let ids: string[];
    try {
      ids = await driver.running(target(node));
    } catch (err) {
      logger?.debug({ err, node: node.id }, "reconcile: listing the node's instances failed");
      return;
    }
    for (const id of ids) {
      if (this.#owns(id, node.id)) continue;
      // In the instance's queue: a move or restore to this node may be starting it right now.
      await queue
        .run(id, `removing orphan "${id}" from node "${node.id}"`, async () => {
          if (this.#o.isClosed() || this.#owns(id, node.id)) return;
          logger?.warn({ instance: id, node: node.id }, "removing an orphaned instance");
          await driver.removeOrphan(target(node), id);
        })
        .catch((err) => logger?.warn({ err, instance: id, node: node.id }, "orphan removal failed"));
    }
  }

  /** Whether instance `id` belongs on `nodeId`: it runs there, or its record puts it there. */
  #owns(id: string, nodeId: string): boolean {
    const record = this.#o.store.instances.get(id);
    if (!record) return false;
    return this.#o.running.get(id)?.handle.node === nodeId || record.node === nodeId;
  }

  /**
   * Saves running twins' states that changed, node by node in parallel (a node whose twins do not
   * answer holds up no other), one twin at a time on each, until `stop` says so.
   */
  async saveStates(stop: () => boolean): Promise<void> {
    const byNode = new Map<string, [string, Running][]>();
    for (const entry of this.#o.running.entries()) {
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
          await this.#o.queue
            .run(id, `saving the state of instance "${id}"`, () => this.saveState(id, running))
            .catch((err) =>
              this.#o.logger?.warn(
                { err, instance: id, node: running.handle.node },
                "saving the instance's state failed",
              ),
            );
        }
      }),
    );
  }

  /** Saves the state of `running` if it is still the instance's copy and changed since its last save. */
  async saveState(id: string, running: Running): Promise<void> {
    if (this.#o.running.get(id) !== running || running.failed !== undefined) return;
    const state = await running.handle.exportState();
    const print = fingerprint(state);
    if (print === running.savedFingerprint) return;
    this.#o.store.states.put(id, state);
    running.savedFingerprint = print;
  }

  #now(): number {
    return (this.#o.now ?? Date.now)();
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
    entanglement: { figures: { ...figures, ...UNMEASURED }, observations: noObservations() },
  };
}
