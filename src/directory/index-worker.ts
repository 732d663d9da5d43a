import { existsSync, rmSync } from "node:fs";
import { parentPort, workerData } from "node:worker_threads";
import Database from "better-sqlite3";
import oxigraph from "oxigraph";
import { errorMessage } from "../domain/errors.js";
import { toNQuads } from "../wot/rdf.js";

/**
 * The embedded store's SPARQL index, in a worker thread: an in-memory Oxigraph store holding each TD
 * in its own named graph, plus the JSON-LD → N-Quads conversion feeding it. Oxigraph queries are
 * synchronous and cannot be interrupted, so running them here lets the main thread stay responsive
 * and end a runaway query by terminating this worker (it then starts a fresh one, see
 * embedded-store.ts). Messages are handled strictly one after the other, conversions included, so a
 * query answers only after every write posted before it is indexed.
 *
 * Conversions are cached in a SQLite file of their own (the N-Quads cache), written by one worker
 * (the first replica's; the others only read it when they rebuild): a restart loads them instead of
 * converting again. The cache is not part of the record: each
 * entry is keyed by the TD's id and the record revision it was converted at, so an entry that does
 * not match the record's row (stale, or of a record restored from elsewhere) is never loaded.
 */

/** What the main thread gives a new worker. */
export interface IndexWorkerInit {
  /** The SQLite record; read (never written) to rebuild the index. */
  dbPath: string;
  /** The N-Quads cache (created when missing; recreated when unreadable). */
  cachePath: string;
  /** Whether this worker writes the cache; one that does not only reads it, when it rebuilds. */
  writesCache: boolean;
  /** The gateway's own graphs (N-Triples by graph IRI): not in the record, the main thread remembers them. */
  graphs: [graph: string, ntriples: string][];
  /** Ids (TD ids, status graph IRIs) the main thread holds as index failures. */
  failed: string[];
}

/** Messages to the worker, one at a time or (the writes of one commit) as an array. */
export type ToIndexWorker =
  /** `rev`: the record's revision the write committed as. `td`: the TD as JSON text. */
  | { type: "put"; rev: number; id: string; td: string }
  | { type: "delete"; rev: number; id: string }
  | { type: "putGraph"; graph: string; ntriples: string }
  | { type: "deleteGraph"; graph: string }
  | { type: "query"; qid: number; sparql: string; accept: string }
  /** Answered with `synced` once everything posted before it is indexed. */
  | { type: "sync"; qid: number };

export type FromIndexWorker =
  /** The index holds the record as of the snapshot it was rebuilt from. */
  | { type: "ready" }
  /** A TD that had failed is indexed now (sent only then: successes need no message). */
  | { type: "indexed"; id: string }
  /** A TD (or status graph, `id` = its graph IRI) that could not be indexed; its graph is dropped. */
  | { type: "failed"; id: string; message: string }
  /** A query begins to run (the time limit counts from here). */
  | { type: "started"; qid: number }
  | { type: "result"; qid: number; body: string }
  | { type: "rejected"; qid: number; message: string }
  | { type: "synced"; qid: number };

interface SnapshotRow {
  id: string;
  rev: number;
  /** The cached conversion of this very revision, if any. */
  nquads: string | null;
  /** Read only for rows without N-Quads. */
  td: string | null;
}

const port = parentPort;
if (port === null) throw new Error("index-worker.ts runs as a worker thread (see embedded-store.ts)");
const init = workerData as IndexWorkerInit;
const index = new oxigraph.Store();
const post = (message: FromIndexWorker): void => port.postMessage(message);
const NQUADS = "application/n-quads";
/** Ids reported as failures: when one indexes fine again the main thread is told. */
const failed = new Set(init.failed);

/** Characters an IRIREF may not hold (SPARQL 1.1 grammar, a little stricter); ids are validated IRIs. */
const NOT_IN_IRIREF = /[<>"{}|^`\\\s\p{Cc}]/u;

function dropGraph(iri: string): void {
  // DROP is ~40 times faster than matching and deleting a TD's quads one by one.
  if (!NOT_IN_IRIREF.test(iri)) index.update(`DROP SILENT GRAPH <${iri}>`);
  else for (const quad of index.match(null, null, null, oxigraph.namedNode(iri))) index.delete(quad);
}

/** Cache rows per write transaction (the cache is not synced, a commit costs little either way). */
const CACHE_BATCH_ROWS = 256;

/**
 * The N-Quads cache: this worker's own SQLite file, so writing it never takes the record's write
 * lock (the main thread would wait for it on the acknowledgement path) nor adds to its WAL. Not
 * durable (synchronous=OFF): whatever a crash loses or damages is converted again. Its failures
 * never fail indexing: a write that fails is dropped, a file that cannot be opened is replaced by
 * an in-memory cache (restarts then convert everything).
 */
class NQuadsCache {
  /** The file, to be attached to the record's connection for the rebuild; undefined in memory. */
  file: string | undefined;
  #db!: Database.Database;
  #put!: Database.Statement<[string, number, string]>;
  #delete!: Database.Statement<[string]>;
  #deleteStale!: Database.Statement<[string, number]>;
  #pending = 0;

  constructor(path: string) {
    this.#connect(path);
  }

  /** Starts over with an empty cache (this one could not be read). */
  reset(): void {
    this.#db.close();
    this.#pending = 0;
    if (this.file !== undefined) this.#connect(this.file, true);
    else this.#connect(":memory:");
  }

  #connect(path: string, fresh = false): void {
    let db: Database.Database;
    this.file = path === ":memory:" ? undefined : path;
    const remove = () => {
      for (const suffix of ["", "-wal", "-shm"]) rmSync(`${path}${suffix}`, { force: true });
    };
    try {
      if (fresh) remove();
      db = NQuadsCache.#open(path);
    } catch {
      try {
        // Unreadable (damaged by a crash, or not ours): start over, it is only a cache.
        remove();
        db = NQuadsCache.#open(path);
      } catch {
        db = NQuadsCache.#open(":memory:");
        this.file = undefined;
      }
    }
    this.#db = db;
    this.#put = db.prepare("INSERT OR REPLACE INTO nquads (id, rev, nquads) VALUES (?, ?, ?)");
    this.#delete = db.prepare("DELETE FROM nquads WHERE id = ?");
    this.#deleteStale = db.prepare("DELETE FROM nquads WHERE id = ? AND rev = ?");
  }

  static #open(path: string): Database.Database {
    const db = new Database(path);
    try {
      db.pragma("journal_mode = WAL");
      db.pragma("synchronous = OFF");
      // A worker being replaced (query time limit) may still hold the write lock for a moment.
      db.pragma("busy_timeout = 5000");
      db.exec(`CREATE TABLE IF NOT EXISTS nquads (id TEXT PRIMARY KEY, rev INTEGER NOT NULL, nquads TEXT NOT NULL);
        CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value NOT NULL) WITHOUT ROWID;`);
      db.prepare("SELECT count(*) FROM meta").get();
      return db;
    } catch (err) {
      db.close();
      throw err;
    }
  }

  /**
   * Empties the cache if it was filled from another record (the record's random id differs) or from
   * a later state of this one (an older copy of the record was restored): its revisions could match
   * rows they were not converted from.
   */
  adopt(databaseId: string, revision: () => number): boolean {
    const owner = this.#db.prepare("SELECT value FROM meta WHERE key = 'database'").pluck().get();
    const newest = this.#db.prepare("SELECT max(rev) FROM nquads").pluck().get() as number | null;
    if (owner === databaseId && (newest ?? 0) <= revision()) return true;
    this.#db.transaction(() => {
      this.#db.exec("DELETE FROM nquads");
      this.#db.prepare("INSERT OR REPLACE INTO meta (key, value) VALUES ('database', ?)").run(databaseId);
    })();
    return true;
  }

  put(id: string, rev: number, nquads: string): void {
    this.#write(() => this.#put.run(id, rev, nquads));
  }

  delete(id: string): void {
    this.#write(() => this.#delete.run(id));
  }

  deleteStale(rows: { id: string; rev: number }[]): void {
    for (const { id, rev } of rows) this.#write(() => this.#deleteStale.run(id, rev));
  }

  /** Ends the open write transaction, if any. */
  commit(): void {
    if (this.#pending === 0) return;
    this.#pending = 0;
    try {
      this.#db.exec("COMMIT");
    } catch {
      this.#rollback();
    }
  }

  #write(run: () => void): void {
    try {
      if (this.#pending === 0) this.#db.exec("BEGIN IMMEDIATE");
      run();
    } catch {
      // Lost with the rest of the open transaction: those TDs are converted again at a restart.
      this.#pending = 0;
      this.#rollback();
      return;
    }
    if (++this.#pending >= CACHE_BATCH_ROWS) this.commit();
  }

  #rollback(): void {
    if (this.#db.inTransaction) this.#db.exec("ROLLBACK");
  }
}

/**
 * The cache as a replica that does not write it sees it: read at a rebuild when it belongs to this
 * record, never changed (the writing replica may be writing it meanwhile).
 */
class NQuadsCacheReader {
  file: string | undefined;

  constructor(path: string) {
    this.file = existsSync(path) ? path : undefined;
  }

  reset(): void {
    this.file = undefined;
  }

  /** Whether the cache holds this record's conversions only (see NQuadsCache.adopt). */
  adopt(databaseId: string, revision: () => number): boolean {
    if (this.file === undefined) return false;
    try {
      const db = new Database(this.file, { readonly: true, fileMustExist: true });
      try {
        const owner = db.prepare("SELECT value FROM meta WHERE key = 'database'").pluck().get();
        // Read before the record's revision: the writer caches only revisions the record holds.
        const newest = db.prepare("SELECT max(rev) FROM nquads").pluck().get() as number | null;
        return owner === databaseId && (newest ?? 0) <= revision();
      } finally {
        db.close();
      }
    } catch {
      return false;
    }
  }

  put(_id: string, _rev: number, _nquads: string): void {}
  delete(_id: string): void {}
  deleteStale(_rows: { id: string; rev: number }[]): void {}
  commit(): void {}
}

const cache = init.writesCache ? new NQuadsCache(init.cachePath) : new NQuadsCacheReader(init.cachePath);

/** Loads a TD's N-Quads into its (emptied) graph. */
function load(nquads: string, lenient: boolean): void {
  // Without a transaction loading is twice as fast; a failure drops the partly loaded graph.
  index.load(nquads, { format: NQUADS, no_transaction: true, lenient });
}

/** Converts, indexes and caches one TD. Each load renames blank nodes, so TDs never share one. */
async function indexThing(id: string, td: string, rev: number): Promise<void> {
  try {
    const nquads = await toNQuads(JSON.parse(td), { graph: id });
    dropGraph(id);
    load(nquads, false);
    cache.put(id, rev, nquads);
    if (failed.delete(id)) post({ type: "indexed", id });
  } catch (err) {
    // Stored TDs were validated, so this is a bug; drop the graph rather than keep an older version.
    dropGraph(id);
    failed.add(id);
    post({ type: "failed", id, message: errorMessage(err) });
  }
}

function loadGraph(graph: string, ntriples: string): void {
  dropGraph(graph);
  try {
    index.load(ntriples, {
      format: "application/n-triples",
      to_graph_name: oxigraph.namedNode(graph),
      no_transaction: true,
    });
    if (failed.delete(graph)) post({ type: "indexed", id: graph });
  } catch (err) {
    dropGraph(graph);
    failed.add(graph);
    post({ type: "failed", id: graph, message: errorMessage(err) });
  }
}

/**
 * Writes up to this revision are in the snapshot the index was rebuilt from: their messages, which
 * may still be queued, are skipped (applying them again is harmless but converts for nothing).
 */
let snapshotRev = 0;

/**
 * Loads the record: each TD from the cache when it holds that revision's N-Quads, the rest (written
 * while the index lagged behind, or before a crash) converted.
 */
async function rebuild(): Promise<void> {
  const db = new Database(init.dbPath, { readonly: true, fileMustExist: true });
  let snapshot: Snapshot;
  try {
    try {
      snapshot = readSnapshot(db, true);
    } catch (err) {
      if (cache.file === undefined) throw err;
      // The record alone; if that works, the cache could not be read (damaged): a new one.
      index.update("DROP SILENT ALL");
      snapshot = readSnapshot(db, false);
      cache.reset();
    }
  } finally {
    db.close();
  }
  cache.deleteStale(snapshot.stale);
  for (const row of snapshot.missing) await indexThing(row.id, row.td as string, row.rev);
  cache.commit();
  for (const [graph, ntriples] of init.graphs) loadGraph(graph, ntriples);
  post({ type: "ready" });
}

interface Snapshot {
  /** Rows to convert, with their TD. */
  missing: SnapshotRow[];
  /** Cache entries no row matches (deleted TDs, earlier versions). */
  stale: { id: string; rev: number }[];
}

/**
 * Loads the record's rows into the index in one read transaction (a consistent snapshot, with the
 * revision it is at): from the cache, when `withCache` and it holds the row's revision.
 */
function readSnapshot(db: Database.Database, withCache: boolean): Snapshot {
  const meta = db.prepare<[string], unknown>("SELECT value FROM meta WHERE key = ?").pluck();
  const useCache =
    withCache &&
    cache.file !== undefined &&
    cache.adopt(String(meta.get("database")), () => meta.get("revision") as number);
  // Attached to the record's read-only connection, the cache is read in the same snapshot.
  if (useCache) db.prepare("ATTACH DATABASE ? AS cache").run(cache.file);
  return db.transaction((): Snapshot => {
    snapshotRev = meta.get("revision") as number;
    const missing: SnapshotRow[] = [];
    const rows = db
      .prepare(
        useCache
          ? `SELECT t.id, t.rev, c.nquads, NULL AS td FROM things t
             LEFT JOIN cache.nquads c ON c.id = t.id AND c.rev = t.rev`
          : "SELECT id, rev, NULL AS nquads, NULL AS td FROM things",
      )
      .iterate() as IterableIterator<SnapshotRow>;
    for (const row of rows) {
      if (row.nquads === null) {
        missing.push(row);
        continue;
      }
      try {
        // Our own conversions, validated when first loaded: lenient parsing is ~25% faster.
        load(row.nquads, true);
      } catch {
        // A damaged cache entry: convert the TD again instead.
        dropGraph(row.id);
        missing.push({ ...row, nquads: null });
      }
    }
    // The TD's text is only needed where there are no N-Quads to load.
    const tdOf = db.prepare("SELECT td FROM things WHERE id = ?").pluck();
    for (const row of missing) row.td = tdOf.get(row.id) as string;
    if (!useCache) return { missing, stale: [] };
    const stale = db
      .prepare(
        `SELECT c.id, c.rev FROM cache.nquads c
         WHERE NOT EXISTS (SELECT 1 FROM things t WHERE t.id = c.id AND t.rev = c.rev)`,
      )
      .all() as { id: string; rev: number }[];
    return { missing, stale };
  })();
}

function query(qid: number, sparql: string, accept: string): void {
  post({ type: "started", qid });
  let body: unknown;
  try {
    // Every TD is in its own graph: the default graph is their union, as WoT Discovery expects.
    body = index.query(sparql, { results_format: accept, use_default_graph_as_union: true });
  } catch (err) {
    // A trap inside the WebAssembly module may leave the store unusable: end this worker, the main
    // thread starts a fresh one.
    if (err instanceof Error && err.name === "RuntimeError") throw err;
    post({ type: "rejected", qid, message: errorMessage(err) });
    return;
  }
  post({ type: "result", qid, body: String(body) });
}

async function handle(message: ToIndexWorker): Promise<void> {
  switch (message.type) {
    case "put":
      if (message.rev > snapshotRev) await indexThing(message.id, message.td, message.rev);
      return;
    case "delete":
      if (message.rev > snapshotRev) {
        dropGraph(message.id);
        cache.delete(message.id);
        failed.delete(message.id);
      }
      return;
    case "putGraph":
      loadGraph(message.graph, message.ntriples);
      return;
    case "deleteGraph":
      dropGraph(message.graph);
      return;
    case "query":
      // Conversions so far go to the cache first: a query ended for its time limit ends the
      // worker, and an open transaction with it.
      cache.commit();
      query(message.qid, message.sparql, message.accept);
      return;
    case "sync":
      // Everything before it indexed, and cached.
      cache.commit();
      post({ type: "synced", qid: message.qid });
      return;
  }
}

/** Ends the worker on an unexpected error: the main thread sees it exit and starts a fresh one. */
const crash = (err: unknown): void =>
  process.nextTick(() => {
    // Only plain Errors keep their message across threads (a SqliteError arrives as { code }).
    const error = new Error(errorMessage(err));
    if (err instanceof Error && err.stack !== undefined) error.stack = err.stack;
    throw error;
  });

// Messages arriving during the rebuild or a conversion wait here, in order.
const queue: (ToIndexWorker | undefined)[] = [];
let head = 0;
let draining = true; // until the rebuild is done

async function drain(): Promise<void> {
  draining = true;
  while (head < queue.length) {
    const message = queue[head] as ToIndexWorker;
    queue[head++] = undefined; // let the TD text be collected
    await handle(message);
    if (head >= 1024 && head * 2 >= queue.length) {
      queue.splice(0, head);
      head = 0;
    }
  }
  // Caught up: what was converted goes to the cache now rather than with the next batch.
  cache.commit();
  draining = false;
}

// The writes of one commit come as one array.
port.on("message", (message: ToIndexWorker | ToIndexWorker[]) => {
  if (Array.isArray(message)) for (const m of message) queue.push(m);
  else queue.push(message);
  if (!draining) drain().catch(crash);
});
rebuild().then(drain).catch(crash);
