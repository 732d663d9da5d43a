import { randomBytes } from "node:crypto";
import { mkdirSync } from "node:fs";
import { join } from "node:path";
import Database from "better-sqlite3";
import { IndexReplica, type ReplicaHost } from "./index-replica.js";
import type { IndexWorkerInit, ToIndexWorker } from "./index-worker.js";
import type { DirectoryStore, QueryOptions, QueryResult, Registration, StoredThing } from "./store.js";
import { assertGatewayGraph, QueryError, StoreError } from "./store.js";

/**
 * The embedded store: SQLite (WAL, synchronous=FULL) is the system of record on disk; the SPARQL
 * index (an in-memory Oxigraph store, each TD in its own named graph) lives in a worker thread
 * (index-worker.ts) together with the JSON-LD → N-Quads conversion, so neither the conversion nor a
 * long query takes the main thread's time.
 *
 * A write is acknowledged once SQLite committed it, then posted to the worker, which indexes in
 * write order. Writes arriving together (concurrent clients) share one transaction, so one sync to
 * disk acknowledges them all. Queries are posted the same way, so they answer after every write
 * acknowledged before them is indexed (read your writes). A query running past its time limit is
 * ended by terminating the worker; a fresh one rebuilds the index from the record (which holds every
 * acknowledged write, including those the old worker had not reached) and the status graphs kept
 * here, then serves the requests that were waiting, in order.
 *
 * The index can be kept in several replicas (index-replica.ts), each a worker holding all of it
 * (memory: ~60 KB per TD of ~100 triples each): a query goes to a replica that runs no other, so a
 * query running to its time limit, or a replica rebuilding after one, holds up no search on the
 * others. Queries finding every replica taken wait here, in order (at most MAX_WAITING_QUERIES, for
 * no longer than their own time limit; past either they are refused as busy).
 *
 * The worker caches each TD's N-Quads in a file of its own (index-cache.sqlite), so a restart
 * reloads the index without converting again; the record holds only what must be durable.
 */

export interface EmbeddedStoreOptions {
  /**
   * Copies of the SPARQL index (default 1; the gateway runs DTC_SEARCH_INDEX_COPIES, 2). Each holds the whole
   * index and converts every write; with more than one, a slow query holds up no other.
   */
  indexReplicas?: number;
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

/** Query results kept for repeated queries (each valid until the next write): entries and chars. */
const RESULT_CACHE_ENTRIES = 64;
const RESULT_CACHE_CHARS = 32 * 1024 * 1024;
/** Queries that may wait for a free replica; more are refused busy. */
export const MAX_WAITING_QUERIES = 32;

/** A query waiting for a replica that runs no other. */
interface WaitingQuery {
  sparql: string;
  accept: string;
  timeoutMs: number | undefined;
  resolve: (body: string) => void;
  reject: (err: Error) => void;
  timer?: NodeJS.Timeout;
}

/** A write waiting for the next commit. */
type Write = (
  | { type: "put"; thing: StoredThing; td: string; resolve: (result: { created: boolean }) => void }
  | { type: "delete"; id: string; resolve: (deleted: boolean) => void }
) & { reject: (err: unknown) => void };

/** What a write did: its revision (undefined: nothing to delete) and, for a put, whether it created. */
type Applied = { rev: number | undefined; created: boolean };

interface Statements {
  /** Commits writes in one transaction, in order; their outcomes, in the same order. */
  commit: Database.Transaction<(writes: Write[]) => Applied[]>;
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

  readonly #replicaCount: number;
  #replicas: IndexReplica[] = [];
  readonly #waiting: WaitingQuery[] = [];
  /** Set when the index cannot be rebuilt: queries fail with it. */
  #broken: StoreError | undefined;
  #nextQid = 0;
  /** The gateway's own graphs (status, inventory) by IRI: not in the record, a rebuilt index gets them from here. */
  readonly #graphs = new Map<string, string>();
  readonly #failures = new Map<string, string>();
  /** Writes waiting for the commit scheduled (setImmediate) when the first of them arrived. */
  #writes: Write[] = [];
  /** Bumped by every change posted to the worker: a query result stays valid while it is unchanged. */
  #generation = 0;
  /** Results of recent queries by media type and text, with the generation they were computed at. */
  readonly #results = new Map<string, { generation: number; body: string }>();
  #resultChars = 0;

  constructor(dir: string, options: EmbeddedStoreOptions = {}) {
    this.#dir = dir;
    this.#replicaCount = Math.max(1, options.indexReplicas ?? 1);
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
      rev INTEGER NOT NULL DEFAULT 0
    ) WITHOUT ROWID;
    CREATE INDEX IF NOT EXISTS things_expires ON things (expires) WHERE expires IS NOT NULL;
    CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value NOT NULL) WITHOUT ROWID;`);
    const columns = db.prepare("SELECT name FROM pragma_table_info('things')").pluck().all() as string[];
    // Records written before the revision counter existed.
    if (!columns.includes("rev")) db.exec("ALTER TABLE things ADD COLUMN rev INTEGER NOT NULL DEFAULT 0");
    // Records that cached N-Quads in the record itself: the cache is index-cache.sqlite now.
    if (columns.includes("nquads")) db.exec("ALTER TABLE things DROP COLUMN nquads");
    db.prepare("INSERT OR IGNORE INTO meta (key, value) VALUES ('revision', 0), ('database', ?)").run(
      randomBytes(4).toString("hex"),
    );
    const meta = db.prepare<[string], unknown>("SELECT value FROM meta WHERE key = ?").pluck();
    this.#revision = meta.get("revision") as number;
    this.#databaseId = String(meta.get("database"));
    const exists = db.prepare<[string], number>("SELECT 1 FROM things WHERE id = ?").pluck();
    const revision = db.prepare<[], number>("SELECT value FROM meta WHERE key = 'revision'").pluck();
    const setRevision = db.prepare<[number]>("UPDATE meta SET value = ? WHERE key = 'revision'");
    const upsert = db.prepare<[string, string, string, string, number | null, number | null, number]>(
      `INSERT INTO things (id, td, created, modified, expires, ttl, rev) VALUES (?, ?, ?, ?, ?, ?, ?)
       ON CONFLICT (id) DO UPDATE SET td = excluded.td, modified = excluded.modified,
         expires = excluded.expires, ttl = excluded.ttl, rev = excluded.rev`,
    );
    const remove = db.prepare<[string]>("DELETE FROM things WHERE id = ?");
    this.#sql = {
      // Every write gets a revision of its own; the counter is written once per transaction.
      commit: db.transaction((writes: Write[]) => {
        const first = revision.get() as number;
        let rev = first;
        const applied = writes.map((write): Applied => {
          if (write.type === "delete") {
            return remove.run(write.id).changes === 0
              ? { rev: undefined, created: false }
              : { rev: ++rev, created: false };
          }
          const { id, registration } = write.thing;
          const created = exists.get(id) === undefined;
          const { expires, ttl } = registration;
          upsert.run(
            id,
            write.td,
            registration.created,
            registration.modified,
            expires === undefined ? null : Date.parse(expires),
            ttl ?? null,
            ++rev,
          );
          return { rev, created };
        });
        if (rev !== first) setRevision.run(rev);
        return applied;
      }),
      get: db.prepare(`SELECT ${COLUMNS} FROM things WHERE id = ?`),
      list: db.prepare(`SELECT ${COLUMNS} FROM things ORDER BY id LIMIT ? OFFSET ?`),
      count: db.prepare<[], number>("SELECT count(*) FROM things").pluck(),
      expired: db.prepare<[number], string>("SELECT id FROM things WHERE expires <= ?").pluck(),
    };
    this.#db = db;
    this.#broken = undefined;
    this.#replicas = Array.from({ length: this.#replicaCount }, (_, i) => new IndexReplica(this.#host(i)));
    for (const replica of this.#replicas) replica.start();
  }

  /** Resolves once every replica of the index holds the record and every write acknowledged so far. */
  async indexed(): Promise<void> {
    if (!this.#db) throw new StoreError("the embedded store is not open");
    if (this.#broken) throw this.#broken;
    await Promise.all(this.#replicas.map((r) => r.ask({ type: "sync", qid: ++this.#nextQid })));
  }

  /** Index workers started since open(), over all replicas: each restart (time limit, crash) adds one. */
  indexStarts(): number {
    return this.#replicas.reduce((sum, r) => sum + r.starts, 0);
  }

  /** TDs (and status graphs, by graph IRI) the index could not hold, with the reason. */
  indexFailures(): ReadonlyMap<string, string> {
    return this.#failures;
  }

  /** Resolves once committed (with the other writes of the same moment, see #commit). */
  async put(thing: StoredThing): Promise<{ created: boolean }> {
    this.#assertOpen();
    const td = JSON.stringify(thing.td);
    return new Promise((resolve, reject) => this.#write({ type: "put", thing, td, resolve, reject }));
  }

  async get(id: string): Promise<StoredThing | undefined> {
    const row = this.#statements.get.get(id);
    return row ? toThing(row) : undefined;
  }

  async delete(id: string): Promise<boolean> {
    this.#assertOpen();
    return new Promise((resolve, reject) => this.#write({ type: "delete", id, resolve, reject }));
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

  /**
   * `options.timeoutMs` bounds the query's run time in the index (waiting for indexing excluded).
   * A query asked again with no write in between is answered with the same result, without the index.
   */
  async query(sparql: string, accept: string, options: QueryOptions = {}): Promise<QueryResult> {
    const key = `${accept}\n${sparql}`;
    const cached = this.#results.get(key);
    if (cached !== undefined && cached.generation === this.#generation && this.#db && !this.#broken) {
      // Most recently used last.
      this.#results.delete(key);
      this.#results.set(key, cached);
      return { body: cached.body, contentType: accept };
    }
    const generation = this.#generation;
    const body = await this.#submit(sparql, accept, options.timeoutMs);
    // Unchanged since it was posted: the index answered it in exactly this state (writes are
    // posted as they commit, so even a rebuilt index holds no later one).
    if (generation === this.#generation) this.#remember(key, generation, body);
    return { body, contentType: accept };
  }

  /** Resolves once posted: queries after it see it; a failure to load it is an index failure. */
  async putGraph(graph: string, ntriples: string): Promise<void> {
    this.#assertOpen();
    assertGatewayGraph(graph);
    this.#graphs.set(graph, ntriples);
    this.#generation++;
    this.#post({ type: "putGraph", graph, ntriples });
  }

  async deleteGraph(graph: string): Promise<void> {
    this.#assertOpen();
    assertGatewayGraph(graph);
    this.#graphs.delete(graph);
    this.#generation++;
    this.#post({ type: "deleteGraph", graph });
  }

  /** Commits the writes still waiting, ends the worker and closes the record. */
  async close(): Promise<void> {
    if (!this.#db) return;
    // Pending conversions are not waited for: the next open() converts what the cache lacks, so a
    // shutdown after a burst of writes takes no longer than any other.
    this.#commit();
    const closed = new StoreError("the embedded store closed");
    this.#rejectWaiting(closed);
    const replicas = this.#replicas;
    this.#replicas = [];
    await Promise.all(replicas.map((r) => r.close(closed)));
    // Status graphs are not part of the record: the gateway writes them again after a restart.
    this.#graphs.clear();
    this.#failures.clear();
    this.#results.clear();
    this.#resultChars = 0;
    this.#db.close();
    this.#db = undefined;
    this.#sql = undefined;
  }

  #write(write: Write): void {
    // One commit for the writes of this turn of the event loop: concurrent requests parsed in
    // the same turn share the transaction and its sync to disk.
    if (this.#writes.push(write) === 1) setImmediate(() => this.#commit());
  }

  /** Commits the waiting writes, then acknowledges them and posts them to the index, in order. */
  #commit(): void {
    const writes = this.#writes;
    if (writes.length === 0) return;
    this.#writes = [];
    const sql = this.#sql;
    if (!sql) {
      for (const write of writes) write.reject(new StoreError("the embedded store closed"));
      return;
    }
    let applied: Applied[];
    try {
      applied = sql.commit(writes);
    } catch (err) {
      if (writes.length === 1) {
        writes[0]?.reject(err);
        return;
      }
      // One bad write must not fail the others: each on its own then.
      for (const write of writes) {
        this.#writes = [write];
        this.#commit();
      }
      return;
    }
    // One message for the transaction's writes: posting costs about as much as a small commit.
    const indexed: ToIndexWorker[] = [];
    writes.forEach((write, i) => {
      const { rev, created } = applied[i] as Applied;
      if (rev !== undefined) {
        this.#revision = rev;
        this.#generation++;
      }
      if (write.type === "put") {
        indexed.push({ type: "put", rev: rev as number, id: write.thing.id, td: write.td });
        write.resolve({ created });
      } else if (rev === undefined) write.resolve(false);
      else {
        this.#failures.delete(write.id);
        indexed.push({ type: "delete", rev, id: write.id });
        write.resolve(true);
      }
    });
    if (indexed.length > 0) this.#post(indexed.length === 1 ? (indexed[0] as ToIndexWorker) : indexed);
  }

  #remember(key: string, generation: number, body: string): void {
    const previous = this.#results.get(key);
    if (previous !== undefined) {
      this.#results.delete(key);
      this.#resultChars -= previous.body.length;
    }
    if (body.length > RESULT_CACHE_CHARS / 4) return;
    this.#results.set(key, { generation, body });
    this.#resultChars += body.length;
    for (const [oldest, entry] of this.#results) {
      if (this.#results.size <= RESULT_CACHE_ENTRIES && this.#resultChars <= RESULT_CACHE_CHARS) break;
      this.#results.delete(oldest);
      this.#resultChars -= entry.body.length;
    }
  }

  #post(message: ToIndexWorker | ToIndexWorker[]): void {
    // Without a worker (the index is broken) the write is in the record all the same.
    for (const replica of this.#replicas) replica.post(message);
  }

  /** How replica `i` reaches this store. Only the first caches N-Quads and reports index failures. */
  #host(i: number): ReplicaHost {
    return {
      init: (): IndexWorkerInit => ({
        dbPath: this.#dbPath,
        cachePath: join(this.#dir, "index-cache.sqlite"),
        writesCache: i === 0,
        graphs: [...this.#graphs],
        failed: [...this.#failures.keys()],
      }),
      report: (message) => {
        if (i !== 0) return;
        if (message.type === "indexed") this.#failures.delete(message.id);
        else {
          this.#failures.set(message.id, message.message);
          this.#onIndexFailure(message.id, message.message);
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

  #submit(sparql: string, accept: string, timeoutMs: number | undefined): Promise<string> {
    if (!this.#db) return Promise.reject(new StoreError("the embedded store is not open"));
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
