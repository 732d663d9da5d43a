import { Worker } from "node:worker_threads";
import type { FromIndexWorker, IndexWorkerInit, ToIndexWorker } from "./index-worker.js";
import { QueryError, StoreError } from "./store.js";

/**
 * One copy of the embedded store's SPARQL index: an index worker (index-worker.ts) and the requests
 * posted to it. Every replica is sent every write, in commit order, so each answers a query only
 * after the writes acknowledged before it (read your writes). Oxigraph cannot interrupt a query: one
 * that runs past its time limit is ended with its worker, and a fresh worker rebuilds this replica
 * from the record, then answers the requests that were waiting, in order; the other replicas go on
 * serving meanwhile. A worker that crashes is replaced the same way.
 */

/** A worker that dies this many times in a row before its index is loaded is not started again. */
export const MAX_FAILED_STARTS = 3;

/** Compiled, the worker is index-worker.js; from the sources, index-worker-tsx.mjs loads the .ts. */
const workerEntry = new URL(
  import.meta.url.endsWith(".ts") ? "./index-worker-tsx.mjs" : "./index-worker.js",
  import.meta.url,
);

/** A query or sync waiting for the worker's answer. */
interface Request {
  message: Extract<ToIndexWorker, { qid: number }>;
  resolve: (body: string) => void;
  reject: (err: Error) => void;
  timeoutMs?: number | undefined;
  timer?: NodeJS.Timeout;
}

/** What a replica needs from the store that owns it. */
export interface ReplicaHost {
  /** What a fresh worker is given (the gateway's graphs and the failures as they are now). */
  init(): IndexWorkerInit;
  /** A TD's indexing failed, or one that had failed is indexed now. */
  report(message: Extract<FromIndexWorker, { type: "indexed" | "failed" }>): void;
  /** A query settled, or the index finished loading: this replica can take the next query. */
  available(): void;
  /** The index cannot be loaded (MAX_FAILED_STARTS in a row). */
  broken(err: StoreError): void;
}

export class IndexReplica {
  readonly #host: ReplicaHost;
  #worker: Worker | undefined;
  /** The current worker has loaded the record. */
  #ready = false;
  #failedStarts = 0;
  #workerError: unknown;
  readonly #requests = new Map<number, Request>();
  /** Queries posted and not answered (syncs are not counted). */
  #queries = 0;
  /** The query the worker is running. */
  #running: number | undefined;
  #starts = 0;

  constructor(host: ReplicaHost) {
    this.#host = host;
  }

  /** Whether the current worker has loaded the index. */
  get ready(): boolean {
    return this.#ready;
  }

  /** Queries posted to this replica and not answered yet. */
  get queries(): number {
    return this.#queries;
  }

  /** Workers started so far (1 at open; each restart after a time limit or a crash adds one). */
  get starts(): number {
    return this.#starts;
  }

  start(): void {
    this.#failedStarts = 0;
    this.#startWorker();
  }

  post(message: ToIndexWorker | ToIndexWorker[]): void {
    this.#worker?.postMessage(message);
  }

  /** Posts a query or sync; `timeoutMs` bounds a query's run time (waiting for indexing excluded). */
  ask(message: Request["message"], timeoutMs?: number): Promise<string> {
    return new Promise((resolve, reject) => {
      const request: Request = { message, resolve, reject, timeoutMs };
      this.#requests.set(message.qid, request);
      if (message.type === "query") this.#queries++;
      this.#worker?.postMessage(message);
    });
  }

  /** Ends the worker; requests waiting fail with `err`. */
  async close(err: Error): Promise<void> {
    const worker = this.#worker;
    this.#worker = undefined;
    this.#rejectAll(err);
    await worker?.terminate();
  }

  #rejectAll(err: Error): void {
    for (const request of this.#requests.values()) {
      clearTimeout(request.timer);
      request.reject(err);
    }
    this.#requests.clear();
    this.#queries = 0;
    this.#running = undefined;
  }

  #startWorker(): void {
    const worker = new Worker(workerEntry, { workerData: this.#host.init() });
    this.#starts++;
    this.#worker = worker;
    this.#ready = false;
    this.#workerError = undefined;
    // A worker that was replaced or closed may still report; only the current one is listened to.
    worker.on("message", (message: FromIndexWorker) => {
      if (this.#worker === worker) this.#receive(message);
    });
    worker.on("error", (err) => {
      if (this.#worker === worker) this.#workerError = err;
    });
    worker.on("exit", () => {
      if (this.#worker === worker) this.#workerDied();
    });
    // Requests the previous worker did not answer: this one answers them, before later writes.
    for (const request of this.#requests.values()) worker.postMessage(request.message);
  }

  #receive(message: FromIndexWorker): void {
    switch (message.type) {
      case "ready":
        this.#ready = true;
        this.#failedStarts = 0;
        this.#host.available();
        return;
      case "indexed":
      case "failed":
        this.#host.report(message);
        return;
      case "started": {
        this.#running = message.qid;
        const request = this.#requests.get(message.qid);
        if (request?.timeoutMs !== undefined) {
          const limit = request.timeoutMs;
          request.timer = setTimeout(() => this.#timedOut(message.qid, limit), limit);
        }
        return;
      }
      case "result":
        this.#settle(message.qid)?.resolve(message.body);
        return;
      case "rejected":
        this.#settle(message.qid)?.reject(new QueryError("rejected", message.message));
        return;
      case "synced":
        this.#settle(message.qid)?.resolve("");
        return;
    }
  }

  #settle(qid: number): Request | undefined {
    if (this.#running === qid) this.#running = undefined;
    const request = this.#requests.get(qid);
    if (request === undefined) return undefined;
    clearTimeout(request.timer);
    this.#requests.delete(qid);
    if (request.message.type === "query") {
      this.#queries--;
      // Told once the request is settled, so that the next query can be posted here.
      queueMicrotask(() => this.#host.available());
    }
    return request;
  }

  /** Oxigraph cannot interrupt a query: the worker goes, a fresh one takes over. */
  #timedOut(qid: number, limit: number): void {
    this.#settle(qid)?.reject(new QueryError("timeout", `the query ran longer than ${limit} ms`));
    const worker = this.#worker;
    this.#worker = undefined;
    void worker?.terminate();
    this.#startWorker();
  }

  /** The worker ended on its own (a crash): the query it was running fails, the others wait. */
  #workerDied(): void {
    const cause = this.#workerError;
    this.#worker = undefined;
    if (this.#running !== undefined) {
      this.#settle(this.#running)?.reject(new StoreError("the index failed running this query", { cause }));
    }
    if (!this.#ready && ++this.#failedStarts >= MAX_FAILED_STARTS) {
      const reason = cause instanceof Error ? cause.message : String(cause);
      const broken = new StoreError(`the SPARQL index cannot be loaded: ${reason}`, { cause });
      this.#rejectAll(broken);
      this.#host.broken(broken);
      return;
    }
    this.#startWorker();
  }
}
