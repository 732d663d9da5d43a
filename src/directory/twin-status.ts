import oxigraph from "oxigraph";
import type { EntanglementFigures } from "../domain/entanglement.js";
import type { LifecycleState } from "../domain/lifecycle.js";
import type { InstanceStatus, StatusListener } from "../domain/twin-status.js";
import { DTC, XSD } from "../domain/vocabulary.js";
import type { Logger } from "../logger.js";
import { type DirectoryStore, statusGraph } from "./store.js";

/**
 * Twins' status graphs: the directory's record of each twin's lifecycle state and latest
 * entanglement figures (and where it runs), written by the gateway, never by clients, so one SPARQL
 * query can join a twin's TD with how it is doing ("twins of schema S, Entangled, ODTE >= 0.9").
 *
 * Lifecycle changes are written at once, and at most once per LIFECYCLE_WRITE_GAP_MS per twin: the
 * changes of a flapping PT within the gap become one write at its end. Entanglement figures, which
 * move at every evaluation, at most once per interval per twin. A write carries the twin's state at
 * write time, so writes coalesce (one queued at most per twin), and one twin's writes are
 * serialised so an older status never overwrites a newer one.
 */

/** Shortest time between two lifecycle writes of one twin, ms. */
export const LIFECYCLE_WRITE_GAP_MS = 1000;

/** Where a twin runs and what it runs: the IRIs of its DTC Node and DT Package, and the platform. */
export interface TwinPlacement {
  node?: string;
  package?: string;
  /** The platform's individual in the dtc ontology (InProcess, Docker, ...). */
  platform?: string;
}

/** What the publisher watches: a running instance (a platform driver's handle). */
export interface StatusSource {
  status(): InstanceStatus;
  onStatus(listener: StatusListener): () => void;
}

export interface TwinStatus extends TwinPlacement {
  state: LifecycleState;
  entanglement?: EntanglementFigures;
}

/** The status graph's triples (N-Triples) for the twin whose TD has id `tdId`. */
export function statusTriples(tdId: string, status: TwinStatus): string {
  const iri = oxigraph.namedNode;
  const double = (n: number) => oxigraph.literal(String(n), iri(`${XSD}double`));
  const thing = iri(tdId);
  const triples: [oxigraph.Term, oxigraph.Term, oxigraph.Term][] = [
    [thing, iri(`${DTC}lifecycleState`), iri(`${DTC}${status.state}`)],
  ];
  const figures = status.entanglement;
  if (figures) {
    // One evaluation node per twin: the status graph is replaced as a whole on every write.
    const evaluation = oxigraph.blankNode("entanglement");
    triples.push(
      [thing, iri(`${DTC}entanglement`), evaluation],
      [evaluation, iri(`${DTC}odte`), double(figures.odte)],
      [evaluation, iri(`${DTC}timeliness`), double(figures.timeliness)],
      [evaluation, iri(`${DTC}reliability`), double(figures.reliability)],
      [evaluation, iri(`${DTC}availability`), double(figures.availability)],
      [evaluation, iri(`${DTC}evaluatedAt`), oxigraph.literal(figures.evaluatedAt, iri(`${XSD}dateTime`))],
    );
  }
  if (status.node !== undefined) triples.push([thing, iri(`${DTC}node`), iri(status.node)]);
  if (status.package !== undefined) triples.push([thing, iri(`${DTC}package`), iri(status.package)]);
  if (status.platform !== undefined)
    triples.push([thing, iri(`${DTC}platform`), iri(`${DTC}${status.platform}`)]);
  return triples.map(([s, p, o]) => `${s} ${p} ${o} .\n`).join("");
}

export interface TwinStatusOptions {
  store: DirectoryStore;
  /** Shortest time between two entanglement writes of one twin, ms (default 5,000). */
  intervalMs?: number;
  /** Shortest time between two lifecycle writes of one twin, ms (default LIFECYCLE_WRITE_GAP_MS). */
  lifecycleGapMs?: number;
  logger?: Logger;
}

interface Watched {
  source: StatusSource;
  tdId: string;
  placement: TwinPlacement;
  unlisten: () => void;
  /** The last write of this twin, so writes stay in order. */
  writing: Promise<void>;
  /** A write is queued and has not read the status yet: a new change needs no other. */
  queued: boolean;
  dirty: boolean;
  /** When the last lifecycle write was asked for, and the write due at the end of the gap. */
  lifecycleWrittenAt: number;
  trailing: NodeJS.Timeout | undefined;
}

export class TwinStatusPublisher {
  readonly #store: DirectoryStore;
  readonly #logger: Logger | undefined;
  readonly #watched = new Map<string, Watched>();
  readonly #timer: NodeJS.Timeout;
  readonly #lifecycleGapMs: number;

  constructor(options: TwinStatusOptions) {
    this.#store = options.store;
    this.#logger = options.logger;
    this.#lifecycleGapMs = options.lifecycleGapMs ?? LIFECYCLE_WRITE_GAP_MS;
    this.#timer = setInterval(() => {
      for (const watched of this.#watched.values()) if (watched.dirty) this.#write(watched);
    }, options.intervalMs ?? 5_000);
    this.#timer.unref();
  }

  /**
   * Publishes the status of `source` under `tdId` now and whenever it changes, until unwatched.
   * Watching a TD id again (the twin moved, or restarted) replaces the previous source.
   */
  watch(source: StatusSource, tdId: string, placement: TwinPlacement = {}): Promise<void> {
    const previous = this.#watched.get(tdId);
    if (previous) this.#forget(previous);
    const watched: Watched = {
      source,
      tdId,
      placement,
      dirty: false,
      queued: false,
      writing: previous?.writing ?? Promise.resolve(),
      lifecycleWrittenAt: Date.now(),
      trailing: undefined,
      unlisten: source.onStatus({
        lifecycleChanged: () => this.#lifecycleChanged(watched),
        entanglementEvaluated: () => {
          watched.dirty = true;
        },
      }),
    };
    this.#watched.set(tdId, watched);
    return this.#write(watched);
  }

  /** Stops publishing and drops the twin's status graph. */
  async unwatch(tdId: string): Promise<void> {
    const watched = this.#watched.get(tdId);
    if (!watched) return;
    this.#forget(watched);
    this.#watched.delete(tdId);
    await watched.writing;
    await this.#store.deleteGraph(statusGraph(tdId)).catch((err) => this.#failed(tdId, err));
  }

  /** Writes every twin whose status moved since its last write (tests, shutdown). */
  async flush(): Promise<void> {
    await Promise.all(
      [...this.#watched.values()].map((w) => {
        if (w.trailing === undefined && !w.dirty) return w.writing;
        clearTimeout(w.trailing);
        w.trailing = undefined;
        return this.#write(w);
      }),
    );
  }

  close(): void {
    clearInterval(this.#timer);
    for (const watched of this.#watched.values()) this.#forget(watched);
    this.#watched.clear();
  }

  #forget(watched: Watched): void {
    watched.unlisten();
    clearTimeout(watched.trailing);
    watched.trailing = undefined;
  }

  /** At once, unless the last lifecycle write is less than the gap ago: then once, at its end. */
  #lifecycleChanged(watched: Watched): void {
    if (watched.trailing !== undefined) return;
    const wait = watched.lifecycleWrittenAt + this.#lifecycleGapMs - Date.now();
    const write = () => {
      watched.trailing = undefined;
      watched.lifecycleWrittenAt = Date.now();
      void this.#write(watched);
    };
    if (wait <= 0) {
      write();
      return;
    }
    watched.trailing = setTimeout(write, wait);
    watched.trailing.unref();
  }

  #write(watched: Watched): Promise<void> {
    watched.dirty = false;
    // The queued write reads the status when it runs: it carries this change too.
    if (watched.queued) return watched.writing;
    watched.queued = true;
    watched.writing = watched.writing.then(async () => {
      watched.queued = false;
      // Unwatched while waiting: the graph is being dropped, do not bring it back.
      if (this.#watched.get(watched.tdId) !== watched) return;
      let status: ReturnType<StatusSource["status"]>;
      try {
        status = watched.source.status();
      } catch (err) {
        // The instance went (removed, moved) before its unwatch: nothing to write.
        this.#logger?.debug({ err, td: watched.tdId }, "no status to write");
        return;
      }
      const triples = statusTriples(watched.tdId, {
        ...watched.placement,
        state: status.lifecycle,
        entanglement: status.entanglement,
      });
      await this.#store.putGraph(statusGraph(watched.tdId), triples).catch((err) => {
        watched.dirty = true; // the next interval tries again
        this.#failed(watched.tdId, err);
      });
    });
    return watched.writing;
  }

  #failed(tdId: string, err: unknown): void {
    this.#logger?.warn({ err, td: tdId }, "writing a twin's status to the directory failed");
  }
}
