import oxigraph from "oxigraph";
import type { EntanglementFigures } from "../domain/entanglement.js";
import type { LifecycleState } from "../domain/lifecycle.js";
import type { Logger } from "../logger.js";
import type { InstanceStatus, StatusListener } from "../platforms/driver.js";
import { type DirectoryStore, statusGraph } from "./store.js";

/**
 * Twins' status graphs: the directory's record of each twin's lifecycle state and latest
 * entanglement figures (and where it runs), written by the gateway, never by clients, so one SPARQL
 * query can join a twin's TD with how it is doing ("twins of schema S, Entangled, ODTE >= 0.9").
 *
 * Lifecycle changes are written at once; entanglement figures, which move at every evaluation, at
 * most once per interval per twin. A write carries the twin's state at write time, so writes
 * coalesce, and one twin's writes are serialised so an older status never overwrites a newer one.
 */

const DTC = "https://w3id.org/dtc#";
const XSD = "http://www.w3.org/2001/XMLSchema#";

export type PlatformName = "InProcess" | "Docker" | "Kubernetes";

/** Where a twin runs and what it runs: the IRIs of its DTC Node and DT Package, and the platform. */
export interface TwinPlacement {
  node?: string;
  package?: string;
  platform?: PlatformName;
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
  logger?: Logger;
}

interface Watched {
  source: StatusSource;
  tdId: string;
  placement: TwinPlacement;
  unlisten: () => void;
  /** The last write of this twin, so writes stay in order. */
  writing: Promise<void>;
  dirty: boolean;
}

export class TwinStatusPublisher {
  readonly #store: DirectoryStore;
  readonly #logger: Logger | undefined;
  readonly #watched = new Map<string, Watched>();
  readonly #timer: NodeJS.Timeout;

  constructor(options: TwinStatusOptions) {
    this.#store = options.store;
    this.#logger = options.logger;
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
    this.#watched.get(tdId)?.unlisten();
    const watched: Watched = {
      source,
      tdId,
      placement,
      dirty: false,
      writing: this.#watched.get(tdId)?.writing ?? Promise.resolve(),
      unlisten: source.onStatus({
        lifecycleChanged: () => this.#write(watched),
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
    watched.unlisten();
    this.#watched.delete(tdId);
    await watched.writing;
    await this.#store.deleteGraph(statusGraph(tdId)).catch((err) => this.#failed(tdId, err));
  }

  /** Writes every twin whose figures moved since its last write (tests, shutdown). */
  async flush(): Promise<void> {
    await Promise.all([...this.#watched.values()].map((w) => (w.dirty ? this.#write(w) : w.writing)));
  }

  close(): void {
    clearInterval(this.#timer);
    for (const watched of this.#watched.values()) watched.unlisten();
    this.#watched.clear();
  }

  #write(watched: Watched): Promise<void> {
    watched.dirty = false;
    watched.writing = watched.writing.then(async () => {
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
