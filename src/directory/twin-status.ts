import oxigraph from "oxigraph";
import type { EntanglementFigures } from "../domain/entanglement.js";
import type { LifecycleState } from "../domain/lifecycle.js";
import type { Logger } from "../logger.js";
import type { Twin } from "../runtime/twin.js";
import type { TwinRuntime } from "../runtime/twin-runtime.js";
import type { Directory } from "./directory.js";
import type { DirectoryStore } from "./store.js";

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

/** Where a twin runs: the DTC Node's IRI and the platform. */
export interface TwinPlacement {
  node?: string;
  platform?: PlatformName;
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
  twin: Twin;
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

  /** Publishes `twin`'s status under `tdId` now and whenever it changes, until unwatched. */
  watch(twin: Twin, tdId: string, placement: TwinPlacement = {}): Promise<void> {
    this.#watched.get(tdId)?.unlisten();
    const watched: Watched = {
      twin,
      tdId,
      placement,
      dirty: false,
      writing: this.#watched.get(tdId)?.writing ?? Promise.resolve(),
      unlisten: twin.listen({
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
    await this.#store.deleteStatus(tdId).catch((err) => this.#failed(tdId, err));
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
      const { twin } = watched;
      const triples = statusTriples(watched.tdId, {
        ...watched.placement,
        state: twin.lifecycleState,
        entanglement: twin.entanglement,
      });
      await this.#store.putStatus(watched.tdId, triples).catch((err) => {
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

/**
 * Keeps the directory in step with a twin runtime: a twin's TD is registered when it starts and its
 * status published while it runs; both go when it is removed. Returns a function that stops it.
 */
export function publishTwins(
  runtime: TwinRuntime,
  directory: Directory,
  status: TwinStatusPublisher,
  options: { placement?: TwinPlacement; logger?: Logger } = {},
): () => void {
  const failed = (twin: Twin, what: string) => (err: unknown) =>
    options.logger?.warn({ err, twin: twin.id }, `directory: ${what} failed`);
  // One twin's registration and removal run in order: a quick remove must not precede the put.
  const pending = new Map<string, Promise<void>>();
  const inOrder = (tdId: string, step: () => Promise<unknown>) => {
    // A failed step is reported by its caller; the next one runs regardless.
    const previous = (pending.get(tdId) ?? Promise.resolve()).catch(() => undefined);
    const next: Promise<void> = previous
      .then(step)
      .then(() => void (pending.get(tdId) === next && pending.delete(tdId)));
    pending.set(tdId, next);
    return next;
  };
  return runtime.observe({
    started: (twin, td) => {
      const tdId = td.id as string;
      inOrder(tdId, async () => {
        await directory.put(tdId, td);
        await status.watch(twin, tdId, options.placement);
      }).catch(failed(twin, "registering the twin's TD"));
    },
    removed: (twin, td) => {
      const tdId = td.id as string;
      inOrder(tdId, async () => {
        await status.unwatch(tdId);
        await directory.delete(tdId);
      }).catch(failed(twin, "removing the twin's TD"));
    },
  });
}
