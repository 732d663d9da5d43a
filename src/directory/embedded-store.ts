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
 * others. Queries finding every replica taken wait, in order (at most MAX_WAITING_QUERIES, for
 * no longer than their own time limit; past either they are refused as busy). The replicas and that
 * queue are embedded/index-worker-client.ts; repeated queries are answered by embedded/result-cache.ts.
 *
 * The worker caches each TD's N-Quads in a file of its own (index-cache.sqlite), so a restart
 * reloads the index without converting again; the record holds only what must be durable.
 */
import { randomBytes } from "node:crypto";
import { mkdirSync } from "node:fs";
import { join } from "node:path";
import Database from "better-sqlite3";
import { IndexWorkerClient } from "./embedded/index-worker-client.js";
import { ResultCache } from "./embedded/result-cache.js";
import type { ToIndexWorker } from "./index-worker.js";
import type { DirectoryStore, QueryOptions, QueryResult, Registration, StoredThing } from "./store.js";
import { assertGatewayGraph, StoreError } from "./store.js";

export { MAX_WAITING_QUERIES } from "./embedded/index-worker-client.js";

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
  #db: Database.Database | undefined;
  #sql: Statements | undefined;
  /** The record's write counter (mirrored from its meta table) and a random id of the database. */
  #revision = 0;
  #databaseId = "";

  readonly #index: IndexWorkerClient;
  /** Writes waiting for the commit scheduled (setImmediate) when the first of them arrived. */
  #writes: Write[] = [];
  /** Invalidated by every change posted to the index. */
  readonly #results = new ResultCache();

  constructor(dir: string, options: EmbeddedStoreOptions = {}) {
    this.#dir = dir;
    this.#index = new IndexWorkerClient({
      replicas: options.indexReplicas ?? 1,
      dbPath: this.#dbPath,
      cachePath: join(dir, "index-cache.sqlite"),
      onIndexFailure:
        options.onIndexFailure ??
        ((id, message) => process.emitWarning(`${id}: ${message}`, { type: "DirectoryIndexWarning" })),
    });
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
    this.#index.start();
  }

  /** Resolves once every replica of the index holds the record and every write acknowledged so far. */
  async indexed(): Promise<void> {
    if (!this.#db) throw new StoreError("the embedded store is not open");
    await this.#index.sync();
  }

  /** Index workers started since open(), over all replicas: each restart (time limit, crash) adds one. */
  indexStarts(): number {
    return this.#index.starts;
  }

  /** TDs (and status graphs, by graph IRI) the index could not hold, with the reason. */
  indexFailures(): ReadonlyMap<string, string> {
    return this.#index.failures;
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
    const cached = this.#db && !this.#index.broken ? this.#results.get(sparql, accept) : undefined;
    if (cached !== undefined) return { body: cached, contentType: accept };
    if (!this.#db) throw new StoreError("the embedded store is not open");
    const generation = this.#results.generation;
    const body = await this.#index.query(sparql, accept, options.timeoutMs);
    // Kept only when unchanged since it was posted: the index answered it in exactly this state
    // (writes are posted as they commit, so even a rebuilt index holds no later one).
    this.#results.remember(sparql, accept, generation, body);
    return { body, contentType: accept };
  }

  /** Resolves once posted: queries after it see it; a failure to load it is an index failure. */
  async putGraph(graph: string, ntriples: string): Promise<void> {
    this.#assertOpen();
    assertGatewayGraph(graph);
    this.#results.invalidate();
    this.#index.putGraph(graph, ntriples);
  }

  async deleteGraph(graph: string): Promise<void> {
    this.#assertOpen();
    assertGatewayGraph(graph);
    this.#results.invalidate();
    this.#index.deleteGraph(graph);
  }

  /** Commits the writes still waiting, ends the worker and closes the record. */
  async close(): Promise<void> {
    if (!this.#db) return;
    // Pending conversions are not waited for: the next open() converts what the cache lacks, so a
    // shutdown after a burst of writes takes no longer than any other.
    this.#commit();
    await this.#index.close(new StoreError("the embedded store closed"));
    this.#results.clear();
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
        this.#results.invalidate();
      }
      if (write.type === "put") {
        indexed.push({ type: "put", rev: rev as number, id: write.thing.id, td: write.td });
        write.resolve({ created });
      } else if (rev === undefined) write.resolve(false);
      else {
        indexed.push({ type: "delete", rev, id: write.id });
        write.resolve(true);
      }
    });
    this.#index.writes(indexed);
  }
}
