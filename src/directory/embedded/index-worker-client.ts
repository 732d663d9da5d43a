/**
 * The embedded store's client of its SPARQL index: the replicas (index-replica.ts, each a worker
 * holding all of the index), every write posted to each, and queries sent to a replica that runs no
 * other. Queries finding every replica taken wait here, in order (at most MAX_WAITING_QUERIES, for
 * no longer than their own time limit; past either they are refused as busy). It also keeps what a
 * restarted worker is given: the gateway's own graphs and the TDs that failed to index.
 */
import { IndexReplica, type ReplicaHost } from "../index-replica.js";
import type { IndexWorkerInit, ToIndexWorker } from "../index-worker.js";
import { QueryError, type StoreError } from "../store.js";

/** Queries that may wait for a free replica; more are refused busy. */
export const MAX_WAITING_QUERIES = 32;

export interface IndexWorkerClientOptions {
  /** Copies of the index (at least 1). */
  replicas: number;
  /** The record the workers load the index from. */
  dbPath: string;
  /** The N-Quads cache the first replica writes (index-cache.sqlite). */
  cachePath: string;
  /** Told when a TD (or a status graph, by its graph IRI) could not be indexed. */
  onIndexFailure: (id: string, message: string) => void;
}

/** A query waiting for a replica that runs no other. */
interface WaitingQuery {
  sparql: string;
  accept: string;
  timeoutMs: number | undefined;
  resolve: (body: string) => void;
  reject: (err: Error) => void;
  timer?: NodeJS.Timeout;
}

export class IndexWorkerClient {
  readonly #options: IndexWorkerClientOptions;
  #replicas: IndexReplica[] = [];
  readonly #waiting: WaitingQuery[] = [];
  /** Set when the index cannot be rebuilt: queries fail with it. */
  #broken: StoreError | undefined;
  #nextQid = 0;
  /** The gateway's own graphs (status, inventory) by IRI: not in the record, a rebuilt index gets them from here. */
  readonly #graphs = new Map<string, string>();
  readonly #failures = new Map<string, string>();

  constructor(options: IndexWorkerClientOptions) {
    this.#options = { ...options, replicas: Math.max(1, options.replicas) };
  }

  /** Why the index cannot be used (it could not be rebuilt), or undefined. */
  get broken(): StoreError | undefined {
    return this.#broken;
  }

  /** TDs (and status graphs, by graph IRI) the index could not hold, with the reason. */
  get failures(): ReadonlyMap<string, string> {
    return this.#failures;
  }

  /** Index workers started since start(), over all replicas: each restart (time limit, crash) adds one. */
  get starts(): number {
    return this.#replicas.reduce((sum, r) => sum + r.starts, 0);
  }

  /** Starts the replicas' workers; each loads the index from the record. */
  start(): void {
    this.#broken = undefined;
    this.#replicas = Array.from(
      { length: this.#options.replicas },
      (_, i) => new IndexReplica(this.#host(i)),
    );
    for (const replica of this.#replicas) replica.start();
  }

  /** Resolves once every replica holds the record and every write posted so far. */
  async sync(): Promise<void> {
    if (this.#broken) throw this.#broken;
    await Promise.all(this.#replicas.map((r) => r.ask({ type: "sync", qid: ++this.#nextQid })));
  }

  /** Posts committed writes, in commit order (one message for a transaction's writes). */
  writes(messages: ToIndexWorker[]): void {
    if (messages.length === 0) return;
    for (const message of messages) if (message.type === "delete") this.#failures.delete(message.id);
    this.#post(messages.length === 1 ? (messages[0] as ToIndexWorker) : messages);
  }

  putGraph(graph: string, ntriples: string): void {
    this.#graphs.set(graph, ntriples);
    this.#post({ type: "putGraph", graph, ntriples });
  }

  deleteGraph(graph: string): void {
    this.#graphs.delete(graph);
    this.#post({ type: "deleteGraph", graph });
  }

  /** Runs a query on a free replica; `timeoutMs` bounds both the wait for one and its run there. */
  query(sparql: string, accept: string, timeoutMs: number | undefined): Promise<string> {
    if (this.#broken) return Promise.reject(this.#broken);
    if (this.#waiting.length >= MAX_WAITING_QUERIES) {
      return Promise.reject(
        new QueryError("busy", `every index replica is taken and ${MAX_WAITING_QUERIES} queries are waiting`),
      );
    }
    return new Promise((resolve, reject) => {
      const waiting: WaitingQuery = { sparql, accept, timeoutMs, resolve, reject };
      if (timeoutMs !== undefined) {
        // Waiting for a replica is bounded by the time the query may run.
        waiting.timer = setTimeout(() => {
          const at = this.#waiting.indexOf(waiting);
          if (at >= 0) this.#waiting.splice(at, 1);
          reject(new QueryError("busy", `no index replica was free within ${timeoutMs} ms`));
        }, timeoutMs);
      }
      this.#waiting.push(waiting);
      this.#dispatch();
    });
  }

  /** Ends the workers; queries waiting or running fail with `err`. The graphs and failures are forgotten. */
  async close(err: Error): Promise<void> {
    this.#rejectWaiting(err);
    const replicas = this.#replicas;
    this.#replicas = [];
    await Promise.all(replicas.map((r) => r.close(err)));
    // Status graphs are not part of the record: the gateway writes them again after a restart.
    this.#graphs.clear();
    this.#failures.clear();
  }

  #post(message: ToIndexWorker | ToIndexWorker[]): void {
    // Without a worker (the index is broken) the write is in the record all the same.
    for (const replica of this.#replicas) replica.post(message);
  }

  /** How replica `i` reaches this client. Only the first caches N-Quads and reports index failures. */
  #host(i: number): ReplicaHost {
    return {
      init: (): IndexWorkerInit => ({
        dbPath: this.#options.dbPath,
        cachePath: this.#options.cachePath,
        writesCache: i === 0,
        graphs: [...this.#graphs],
        failed: [...this.#failures.keys()],
      }),
      report: (message) => {
        if (i !== 0) return;
        if (message.type === "indexed") this.#failures.delete(message.id);
        else {
          this.#failures.set(message.id, message.message);
          this.#options.onIndexFailure(message.id, message.message);
        }
      },
      available: () => this.#dispatch(),
      broken: (err) => {
        this.#broken = err;
        this.#rejectWaiting(err);
        for (const replica of this.#replicas) void replica.close(err);
      },
    };
  }

  /**
   * Posts waiting queries to replicas running no other query: a loaded one, or any while none is
   * loaded yet (at open). A replica still loading while another is loaded is left to finish first.
   */
  #dispatch(): void {
    while (this.#waiting.length > 0) {
      const free = this.#replicas.filter((r) => r.queries === 0);
      const replica =
        free.find((r) => r.ready) ?? (this.#replicas.some((r) => r.ready) ? undefined : free[0]);
      if (replica === undefined) return;
      const query = this.#waiting.shift() as WaitingQuery;
      clearTimeout(query.timer);
      const { sparql, accept, timeoutMs } = query;
      replica
        .ask({ type: "query", qid: ++this.#nextQid, sparql, accept }, timeoutMs)
        .then(query.resolve, query.reject);
    }
  }

  #rejectWaiting(err: Error): void {
    for (const query of this.#waiting.splice(0)) {
      clearTimeout(query.timer);
      query.reject(err);
    }
  }
}
