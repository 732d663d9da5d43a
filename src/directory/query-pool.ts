import { Worker } from "node:worker_threads";
import type { FromQueryWorker, QueryJob } from "./query-worker.js";
import { QueryError } from "./store.js";

/**
 * The query pool: a few worker threads (query-worker.ts) that parse and check users' SPARQL queries
 * and evaluate JSONPath searches, so that no query holds the main thread (sparqljs takes ~10 ms a KiB
 * of query; a backtracking regular expression in a JSONPath filter, hours).
 *
 * A query holds one worker while it runs (a JSONPath search sends it page after page). Its time
 * limit counts from when it got the worker, not while it waited for one; past it the worker is
 * terminated (JavaScript cannot be interrupted otherwise) and a fresh one takes its place. Queries
 * that find every worker taken wait in order, at most MAX_QUEUED_QUERIES of them and no longer than
 * their own time limit; past either they are refused as busy (503), never left to pile up behind a
 * slow one.
 */

/** Workers in a pool: one slow query leaves the other free. */
export const QUERY_WORKERS = 2;
/** Queries that may wait for a worker; more are refused busy. */
export const MAX_QUEUED_QUERIES = 32;
/** Seconds a client refused as busy is told to wait (Retry-After). */
export const BUSY_RETRY_AFTER_SECONDS = 1;
/** Heap a query worker may use (a query that needs more ends it, and is refused). */
export const QUERY_WORKER_MEMORY_MB = 256;

/** Compiled, the worker is query-worker.js; from the sources, query-worker-tsx.mjs loads the .ts. */
const workerEntry = new URL(
  import.meta.url.endsWith(".ts") ? "./query-worker-tsx.mjs" : "./query-worker.js",
  import.meta.url,
);

/** A job refused because of the query: the client's fault, answered with this title and detail. */
export class QueryRefusal extends Error {
  readonly title: string;
  constructor(title: string, detail: string) {
    super(detail);
    this.name = "QueryRefusal";
    this.title = title;
  }
}

/** What a query running in the pool may do with the worker it holds. */
export interface QuerySession {
  /** Runs `job` on the worker. Rejects with QueryRefusal, or QueryError `timeout` once the time is up. */
  call<T>(job: QueryJob): Promise<T>;
  /** Milliseconds left of the query's time limit. */
  remainingMs(): number;
}

interface Pending {
  resolve: (value: unknown) => void;
  reject: (err: Error) => void;
}

/** One worker of the pool (replaced when it is terminated or dies). */
interface Slot {
  worker: Worker | undefined;
  /** Resolves once the worker has loaded its modules. */
  ready: Promise<void>;
  busy: boolean;
  pending: Map<number, Pending>;
}

export interface QueryPoolOptions {
  size?: number;
  maxQueued?: number;
}

export class QueryPool {
  readonly #slots: Slot[];
  readonly #maxQueued: number;
  /** Queries waiting for a worker, first come first served. */
  readonly #waiting: ((slot: Slot) => void)[] = [];
  #nextId = 0;
  #closed = false;

  constructor(options: QueryPoolOptions = {}) {
    const size = Math.max(1, options.size ?? QUERY_WORKERS);
    this.#maxQueued = options.maxQueued ?? MAX_QUEUED_QUERIES;
    this.#slots = Array.from({ length: size }, () => ({
      worker: undefined,
      ready: Promise.resolve(),
      busy: false,
      pending: new Map(),
    }));
  }

  /** Queries holding a worker now. */
  get running(): number {
    return this.#slots.filter((s) => s.busy).length;
  }

  /**
   * Runs `task` on a worker of its own within `timeoutMs` (counted from when it has the worker).
   * Rejects with QueryError `busy` when no worker was free in time, `timeout` past the limit.
   */
  async run<T>(timeoutMs: number, task: (session: QuerySession) => Promise<T>): Promise<T> {
    const slot = await this.#acquire(timeoutMs);
    try {
      // Starting a worker is not the query's time.
      await slot.ready;
      return await this.#runOn(slot, timeoutMs, task);
    } finally {
      this.#release(slot);
    }
  }

  /** Ends the workers; queries still waiting or running fail. */
  async close(): Promise<void> {
    this.#closed = true;
    const closed = new Error("the query pool is closed");
    for (const slot of this.#slots) this.#end(slot, closed);
    this.#waiting.length = 0;
  }

  async #runOn<T>(slot: Slot, timeoutMs: number, task: (session: QuerySession) => Promise<T>): Promise<T> {
    const started = performance.now();
    const timeout = new QueryError("timeout", `the query ran longer than ${timeoutMs} ms`);
    let expired = false;
    let expire: (err: Error) => void = () => {};
    const deadline = new Promise<never>((_, reject) => {
      expire = reject;
    });
    const timer = setTimeout(() => {
      expired = true;
      // The job still running cannot be stopped but with its thread.
      this.#end(slot, timeout);
      if (!this.#closed) this.#start(slot);
      expire(timeout);
    }, timeoutMs);
    const session: QuerySession = {
      call: <R>(job: QueryJob) => (expired ? Promise.reject(timeout) : (this.#call(slot, job) as Promise<R>)),
      remainingMs: () => timeoutMs - (performance.now() - started),
    };
    try {
      return await Promise.race([task(session), deadline]);
    } finally {
      clearTimeout(timer);
    }
  }

  #acquire(timeoutMs: number): Promise<Slot> {
    if (this.#closed) return Promise.reject(new Error("the query pool is closed"));
    const free = this.#slots.find((s) => !s.busy);
    if (free !== undefined) return Promise.resolve(this.#take(free));
    if (this.#waiting.length >= this.#maxQueued) {
      return Promise.reject(
        new QueryError("busy", `every query worker is taken and ${this.#maxQueued} queries are waiting`),
      );
    }
    return new Promise((resolve, reject) => {
      const waiter = (slot: Slot) => {
        clearTimeout(timer);
        resolve(slot);
      };
      const timer = setTimeout(() => {
        const at = this.#waiting.indexOf(waiter);
        if (at >= 0) this.#waiting.splice(at, 1);
        reject(new QueryError("busy", `no query worker was free within ${timeoutMs} ms`));
      }, timeoutMs);
      this.#waiting.push(waiter);
    });
  }

  #take(slot: Slot): Slot {
    slot.busy = true;
    if (slot.worker === undefined) this.#start(slot);
    return slot;
  }

  #release(slot: Slot): void {
    slot.busy = false;
    const next = this.#waiting.shift();
    if (next !== undefined && !this.#closed) next(this.#take(slot));
  }

  #start(slot: Slot): void {
    const worker = new Worker(workerEntry, {
      resourceLimits: { maxOldGenerationSizeMb: QUERY_WORKER_MEMORY_MB },
    });
    // An idle pool does not keep the process alive.
    worker.unref();
    slot.worker = worker;
    let booted: () => void = () => {};
    let failedToBoot: (err: Error) => void = () => {};
    slot.ready = new Promise<void>((resolve, reject) => {
      booted = resolve;
      failedToBoot = reject;
    });
    // Awaited by the next query; never an unhandled rejection meanwhile.
    slot.ready.catch(() => {});
    let error: Error | undefined;
    worker.on("message", (message: FromQueryWorker) => {
      if ("type" in message) {
        booted();
        return;
      }
      const pending = slot.pending.get(message.id);
      if (pending === undefined) return;
      slot.pending.delete(message.id);
      if (message.ok) pending.resolve(message.value);
      else if ("refusal" in message)
        pending.reject(new QueryRefusal(message.refusal.title, message.refusal.detail));
      else pending.reject(new Error(`the query worker failed: ${message.failure}`));
    });
    worker.on("error", (err) => {
      error = err;
    });
    worker.on("exit", () => {
      if (slot.worker !== worker) return;
      // Died on its own: out of memory (the query's doing) or a bug.
      const cause =
        (error as { code?: string } | undefined)?.code === "ERR_WORKER_OUT_OF_MEMORY"
          ? new QueryRefusal(
              "Bad Request",
              `the query needed more than ${QUERY_WORKER_MEMORY_MB} MB of memory`,
            )
          : new Error(`the query worker ended: ${error?.message ?? "no error"}`, { cause: error });
      failedToBoot(cause);
      this.#end(slot, cause);
    });
  }

  /** Terminates `slot`'s worker; its jobs fail with `err`. The next query there starts a new one. */
  #end(slot: Slot, err: Error): void {
    const worker = slot.worker;
    slot.worker = undefined;
    void worker?.terminate();
    for (const pending of slot.pending.values()) pending.reject(err);
    slot.pending.clear();
  }

  #call(slot: Slot, job: QueryJob): Promise<unknown> {
    const worker = slot.worker;
    if (worker === undefined) return Promise.reject(new Error("the query worker ended"));
    const id = ++this.#nextId;
    return new Promise((resolve, reject) => {
      slot.pending.set(id, { resolve, reject });
      worker.postMessage({ id, job });
    });
  }
}

let shared: QueryPool | undefined;

/** The pool of searches mounted without one of their own: one per process, so they share its threads. */
export function sharedQueryPool(): QueryPool {
  shared ??= new QueryPool();
  return shared;
}
