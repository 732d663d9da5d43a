import { randomBytes } from "node:crypto";
import { mkdirSync } from "node:fs";
import { join } from "node:path";
import { Worker } from "node:worker_threads";
import Database from "better-sqlite3";
import type { FromIndexWorker, IndexWorkerInit, ToIndexWorker } from "./index-worker.js";
import type { DirectoryStore, QueryResult, Registration, StoredThing } from "./store.js";
import { QueryError, StoreError } from "./store.js";

/**
 * The embedded store: SQLite (WAL, synchronous=FULL) is the system of record on disk; the SPARQL
 * index (an in-memory Oxigraph store, each TD in its own named graph) lives in a worker thread
 * (index-worker.ts) together with the JSON-LD → N-Quads conversion, so neither the conversion nor a
 * long query takes the main thread's time.
 *
 * A write is acknowledged once SQLite committed it, then posted to the worker, which indexes in
 * write order. Queries are posted the same way, so they answer after every write acknowledged
 * before them is indexed (read your writes). A query running past its time limit is ended by
 * terminating the worker; a fresh one rebuilds the index from the record (which holds every
 * acknowledged write, including those the old worker had not reached) and the status graphs kept
 * here, then serves the requests that were waiting, in order.
 *
 * The record caches each TD's N-Quads, so a restart reloads the index without converting again.
 */

export interface EmbeddedStoreOptions {
  /**
   * Told when a TD (or a status graph, by its graph IRI) could not be indexed; the other TDs stay
   * searchable. Stored TDs were validated, so this is a bug. Default: a process warning.
   */
  onIndexFailure?: (id: string, message: string) => void;
}

interface Row {
  id: string;
  td: string;
  created: string;
  modified: string;
  expires: number | null;
  ttl: number | null;
}

const toThing = (row: Row): StoredThing => {
  const registration: Registration = { created: row.created, modified: row.modified };
  if (row.expires !== null) registration.expires = new Date(row.expires).toISOString();
  if (row.ttl !== null) registration.ttl = row.ttl;
  return { id: row.id, td: JSON.parse(row.td), registration };
};

const COLUMNS = "id, td, created, modified, expires, ttl";

/** N-Quads cache write-back: one transaction per this many rows, or this long after the first. */
const CACHE_BATCH_ROWS = 256;
const CACHE_BATCH_MS = 200;
/** A worker that dies this many times in a row before its index is loaded is not started again. */
const MAX_FAILED_STARTS = 3;

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

interface Statements {
  put: Database.Transaction<(thing: StoredThing, td: string) => { created: boolean; rev: number }>;
  delete: Database.Transaction<(id: string) => number | undefined>;
  cache: Database.Statement<[string, string, number]>;
  get: Database.Statement<[string], Row>;
  list: Database.Statement<[number, number], Row>;
  count: Database.Statement<[], number>;
  expired: Database.Statement<[number], string>;
}

export class EmbeddedStore implements DirectoryStore {
  readonly #dir: string;
  readonly #onIndexFailure: (id: string, message: string) => void;
  #db: Database.Database | undefined;
  #sql: Statements | undefined;
  /** The record's write counter (mirrored from its meta table) and a random id of the database. */
  #revision = 0;
  #databaseId = "";

  #worker: Worker | undefined;
  /** The current worker has loaded the record. */
  #workerReady = false;
  #failedStarts = 0;
  #workerError: unknown;
  /** Set when the index cannot be rebuilt: queries fail with it. */
  #broken: StoreError | undefined;
  readonly #requests = new Map<number, Request>();
  #nextQid = 0;
  /** The query the worker is running. */
  #running: number | undefined;
  /** The latest status graph of each TD: not in the record, a rebuilt index gets them from here. */
  readonly #status = new Map<string, string>();
  #cache: { id: string; rev: number; nquads: string }[] = [];
  #cacheTimer: NodeJS.Timeout | undefined;
  readonly #failures = new Map<string, string>();

  constructor(dir: string, options: EmbeddedStoreOptions = {}) {
    this.#dir = dir;
    this.#onIndexFailure =
      options.onIndexFailure ??
      ((id, message) => process.emitWarning(`${id}: ${message}`, { type: "DirectoryIndexWarning" }));
  }

  get #statements(): Statements {
    if (!this.#sql) throw new StoreError("the embedded store is not open");
    return this.#sql;
  }

  #assertOpen(): void {
    if (!this.#db) throw new StoreError("the embedded store is not open");
  }

  get #dbPath(): string {
    return join(this.#dir, "directory.sqlite");
  }

  /** Opens the record and starts the index worker; the index may still be loading (see indexed()). */
  async open(): Promise<void> {
    if (this.#db) return;
    mkdirSync(this.#dir, { recursive: true });
    const db = new Database(this.#dbPath);
    db.pragma("journal_mode = WAL");
    // Acknowledged means on disk, power loss included.
    db.pragma("synchronous = FULL");
    db.exec(`CREATE TABLE IF NOT EXISTS things (
      id TEXT PRIMARY KEY,
      td TEXT NOT NULL,
      created TEXT NOT NULL,
      modified TEXT NOT NULL,
      expires INTEGER,
      ttl REAL,
      nquads TEXT,
      rev INTEGER NOT NULL DEFAULT 0
    ) WITHOUT ROWID;
    CREATE INDEX IF NOT EXISTS things_expires ON things (expires) WHERE expires IS NOT NULL;
    CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value NOT NULL) WITHOUT ROWID;`);
    const columns = db.prepare("SELECT name FROM pragma_table_info('things')").pluck().all() as string[];
    // Records written before the revision counter existed.
    if (!columns.includes("rev")) db.exec("ALTER TABLE things ADD COLUMN rev INTEGER NOT NULL DEFAULT 0");
    db.prepare("INSERT OR IGNORE INTO meta (key, value) VALUES ('revision', 0), ('database', ?)").run(
      randomBytes(4).toString("hex"),
    );
    const meta = db.prepare<[string], unknown>("SELECT value FROM meta WHERE key = ?").pluck();
    this.#revision = meta.get("revision") as number;
    this.#databaseId = String(meta.get("database"));
    const exists = db.prepare("SELECT 1 FROM things WHERE id = ?");
    const bump = db
      .prepare<[], number>("UPDATE meta SET value = value + 1 WHERE key = 'revision' RETURNING value")
      .pluck();
    const upsert = db.prepare<[string, string, string, string, number | null, number | null, number]>(
      `INSERT INTO things (id, td, created, modified, expires, ttl, nquads, rev) VALUES (?, ?, ?, ?, ?, ?, NULL, ?)
       ON CONFLICT (id) DO UPDATE SET td = excluded.td, modified = excluded.modified,
         expires = excluded.expires, ttl = excluded.ttl, nquads = NULL, rev = excluded.rev`,
    );
    const remove = db.prepare<[string]>("DELETE FROM things WHERE id = ?");
    this.#sql = {
      // Every write bumps the revision in its own transaction.
      put: db.transaction((thing: StoredThing, td: string) => {
        const existed = exists.get(thing.id) !== undefined;
        const rev = bump.get() as number;
        const { created, modified, expires, ttl } = thing.registration;
        upsert.run(
          thing.id,
          td,
          created,
          modified,
          expires === undefined ? null : Date.parse(expires),
          ttl ?? null,
          rev,
        );
        return { created: !existed, rev };
      }),
      delete: db.transaction((id: string) =>
        remove.run(id).changes === 0 ? undefined : (bump.get() as number),
      ),
      // `rev` identifies the version converted: a conversion finishing after a newer write of the
      // same TD (even one within the same millisecond) never overwrites it.
      cache: db.prepare("UPDATE things SET nquads = ? WHERE id = ? AND rev = ?"),
      get: db.prepare(`SELECT ${COLUMNS} FROM things WHERE id = ?`),
      list: db.prepare(`SELECT ${COLUMNS} FROM things ORDER BY id LIMIT ? OFFSET ?`),
      count: db.prepare<[], number>("SELECT count(*) FROM things").pluck(),
      expired: db.prepare<[number], string>("SELECT id FROM things WHERE expires <= ?").pluck(),
    };
    this.#db = db;
    this.#broken = undefined;
    this.#failedStarts = 0;
    this.#startWorker();
  }

  /** Resolves once the index holds the record and every write acknowledged so far. */
  async indexed(): Promise<void> {
    await this.#ask((qid) => ({ type: "sync", qid }));
  }

  /** TDs (and status graphs, by graph IRI) the index could not hold, with the reason. */
  indexFailures(): ReadonlyMap<string, string> {
    return this.#failures;
  }

  async put(thing: StoredThing): Promise<{ created: boolean }> {
    const td = JSON.stringify(thing.td);
    const { created, rev } = this.#statements.put(thing, td);
    this.#revision = rev;
    this.#post({ type: "put", rev, id: thing.id, td });
    return { created };
  }

  async get(id: string): Promise<StoredThing | undefined> {
    const row = this.#statements.get.get(id);
    return row ? toThing(row) : undefined;
  }

  async delete(id: string): Promise<boolean> {
    const rev = this.#statements.delete(id);
    if (rev === undefined) return false;
    this.#revision = rev;
    this.#failures.delete(id);
    this.#post({ type: "delete", rev, id });
    return true;
  }

  async list(offset: number, limit: number): Promise<StoredThing[]> {
    return this.#statements.list.all(limit, offset).map(toThing);
  }

  async count(): Promise<number> {
    return this.#statements.count.get() as number;
  }

  /** Changes on every write (a counter kept in the record, so never reused after a restart). */
  async revision(): Promise<string> {
    this.#assertOpen();
    return `${this.#databaseId}-${this.#revision}`;
  }

  async expired(now: number): Promise<string[]> {
    return this.#statements.expired.all(now);
  }

  /** `options.timeoutMs` bounds the query's run time in the index (waiting for indexing excluded). */
  async query(sparql: string, accept: string, options: { timeoutMs?: number } = {}): Promise<QueryResult> {
    const body = await this.#ask((qid) => ({ type: "query", qid, sparql, accept }), options.timeoutMs);
    return { body, contentType: accept };
  }

  /** Resolves once posted: queries after it see it; a failure to load it is an index failure. */
  async putStatus(tdId: string, ntriples: string): Promise<void> {
    this.#assertOpen();
    this.#status.set(tdId, ntriples);
    this.#post({ type: "putStatus", tdId, ntriples });
  }

  async deleteStatus(tdId: string): Promise<void> {
    this.#assertOpen();
    this.#status.delete(tdId);
    this.#post({ type: "deleteStatus", tdId });
  }

  /** Waits for pending indexing, writes the N-Quads cache, ends the worker and closes the record. */
  async close(): Promise<void> {
    if (!this.#db) return;
    // Pending conversions are not waited for: their rows keep nquads NULL and the next open()
    // converts them, so a shutdown after a burst of writes takes no longer than any other.
    this.#flushCache();
    const worker = this.#worker;
    this.#worker = undefined;
    for (const request of this.#requests.values())
      request.reject(new StoreError("the embedded store closed"));
    this.#requests.clear();
    await worker?.terminate();
    // Status graphs are not part of the record: the gateway writes them again after a restart.
    this.#status.clear();
    this.#failures.clear();
    this.#db.close();
    this.#db = undefined;
    this.#sql = undefined;
  }

  #post(message: ToIndexWorker): void {
    // Without a worker (the index is broken) the write is in the record all the same.
    this.#worker?.postMessage(message);
  }

  #ask(message: (qid: number) => Request["message"], timeoutMs?: number): Promise<string> {
    if (!this.#db) return Promise.reject(new StoreError("the embedded store is not open"));
    if (this.#broken) return Promise.reject(this.#broken);
    const qid = ++this.#nextQid;
    return new Promise((resolve, reject) => {
      const request: Request = { message: message(qid), resolve, reject, timeoutMs };
      this.#requests.set(qid, request);
      this.#worker?.postMessage(request.message);
    });
  }

  #startWorker(): void {
    const init: IndexWorkerInit = { dbPath: this.#dbPath, status: [...this.#status] };
    const worker = new Worker(workerEntry, { workerData: init });
    this.#worker = worker;
    this.#workerReady = false;
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
        this.#workerReady = true;
        this.#failedStarts = 0;
        return;
      case "indexed":
        this.#failures.delete(message.id);
        this.#cacheNQuads(message.id, message.rev, message.nquads);
        return;
      case "failed":
        this.#failures.set(message.id, message.message);
        this.#onIndexFailure(message.id, message.message);
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
    if (!this.#workerReady && ++this.#failedStarts >= MAX_FAILED_STARTS) {
      const reason = cause instanceof Error ? cause.message : String(cause);
      this.#broken = new StoreError(`the SPARQL index cannot be loaded: ${reason}`, { cause });
      for (const request of this.#requests.values()) request.reject(this.#broken);
      this.#requests.clear();
      return;
    }
    this.#startWorker();
  }

  #cacheNQuads(id: string, rev: number, nquads: string): void {
    this.#cache.push({ id, rev, nquads });
    if (this.#cache.length >= CACHE_BATCH_ROWS) this.#flushCache();
    else this.#cacheTimer ??= setTimeout(() => this.#flushCache(), CACHE_BATCH_MS).unref();
  }

  /**
   * Writes converted N-Quads back to the record, many rows per transaction. The cache only speeds
   * up restarts. It is written here rather than by the worker over a second connection because
   * SQLite has one writer: the main thread would then wait (synchronously, blocking its event
   * loop) on the worker's write lock on the acknowledgement path.
   */
  #flushCache(): void {
    clearTimeout(this.#cacheTimer);
    this.#cacheTimer = undefined;
    const rows = this.#cache;
    this.#cache = [];
    const db = this.#db;
    const sql = this.#sql;
    if (!db || !sql || rows.length === 0) return;
    db.transaction(() => {
      for (const row of rows) sql.cache.run(row.nquads, row.id, row.rev);
    })();
  }
}
