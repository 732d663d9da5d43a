import { parentPort, workerData } from "node:worker_threads";
import Database from "better-sqlite3";
import oxigraph from "oxigraph";
import { toNQuads } from "../wot/rdf.js";
import { statusGraph } from "./store.js";

/**
 * The embedded store's SPARQL index, in a worker thread: an in-memory Oxigraph store holding each TD
 * in its own named graph, plus the JSON-LD → N-Quads conversion feeding it. Oxigraph queries are
 * synchronous and cannot be interrupted, so running them here lets the main thread stay responsive
 * and end a runaway query by terminating this worker (it then starts a fresh one, see
 * embedded-store.ts). Messages are handled strictly one after the other, conversions included, so a
 * query answers only after every write posted before it is indexed.
 */

/** What the main thread gives a new worker. */
export interface IndexWorkerInit {
  /** The SQLite record; read (never written) to rebuild the index. */
  dbPath: string;
  /** The status graphs (N-Triples by TD id): not in the record, the main thread remembers them. */
  status: [tdId: string, ntriples: string][];
}

export type ToIndexWorker =
  /** `rev`: the record's revision the write committed as. `td`: the TD as JSON text. */
  | { type: "put"; rev: number; id: string; td: string }
  | { type: "delete"; rev: number; id: string }
  | { type: "putStatus"; tdId: string; ntriples: string }
  | { type: "deleteStatus"; tdId: string }
  | { type: "query"; qid: number; sparql: string; accept: string }
  /** Answered with `synced` once everything posted before it is indexed. */
  | { type: "sync"; qid: number };

export type FromIndexWorker =
  /** The index holds the record as of the snapshot it was rebuilt from. */
  | { type: "ready" }
  /** A TD converted and indexed: the N-Quads for the record's cache. */
  | { type: "indexed"; id: string; rev: number; nquads: string }
  /** A TD (or status graph, `id` = its graph IRI) that could not be indexed; its graph is dropped. */
  | { type: "failed"; id: string; message: string }
  /** A query begins to run (the time limit counts from here). */
  | { type: "started"; qid: number }
  | { type: "result"; qid: number; body: string }
  | { type: "rejected"; qid: number; message: string }
  | { type: "synced"; qid: number };

interface SnapshotRow {
  id: string;
  /** Read only for rows without N-Quads. */
  td: string | null;
  rev: number;
  nquads: string | null;
}

const port = parentPort;
if (port === null) throw new Error("index-worker.ts runs as a worker thread (see embedded-store.ts)");
const init = workerData as IndexWorkerInit;
const index = new oxigraph.Store();
const post = (message: FromIndexWorker): void => port.postMessage(message);
const NQUADS = "application/n-quads";

/** Characters an IRIREF may not hold (SPARQL 1.1 grammar, a little stricter); ids are validated IRIs. */
const NOT_IN_IRIREF = /[<>"{}|^`\\\s\p{Cc}]/u;

function dropGraph(iri: string): void {
  // DROP is ~40 times faster than matching and deleting a TD's quads one by one.
  if (!NOT_IN_IRIREF.test(iri)) index.update(`DROP SILENT GRAPH <${iri}>`);
  else for (const quad of index.match(null, null, null, oxigraph.namedNode(iri))) index.delete(quad);
}

/** Converts and indexes one TD. Each load renames blank nodes, so TDs never share one. */
async function indexThing(id: string, td: string, rev: number): Promise<void> {
  try {
    const nquads = await toNQuads(JSON.parse(td), { graph: id });
    dropGraph(id);
    // Without a transaction loading is twice as fast; a failure drops the partly loaded graph below.
    index.load(nquads, { format: NQUADS, no_transaction: true });
    post({ type: "indexed", id, rev, nquads });
  } catch (err) {
    // Stored TDs were validated, so this is a bug; drop the graph rather than keep an older version.
    dropGraph(id);
    post({ type: "failed", id, message: (err as Error).message });
  }
}

function loadStatus(tdId: string, ntriples: string): void {
  const graph = statusGraph(tdId);
  dropGraph(graph);
  try {
    index.load(ntriples, {
      format: "application/n-triples",
      to_graph_name: oxigraph.namedNode(graph),
      no_transaction: true,
    });
  } catch (err) {
    dropGraph(graph);
    post({ type: "failed", id: graph, message: (err as Error).message });
  }
}

/**
 * Writes up to this revision are in the snapshot the index was rebuilt from: their messages, which
 * may still be queued, are skipped (applying them again is harmless but converts for nothing).
 */
let snapshotRev = 0;

/**
 * Loads the record in one read transaction (a consistent snapshot, with the revision it is at):
 * cached N-Quads directly, the rest (what a crash left unconverted) converted.
 */
async function rebuild(): Promise<void> {
  const db = new Database(init.dbPath, { readonly: true, fileMustExist: true });
  let missing: SnapshotRow[];
  try {
    missing = db.transaction(() => {
      snapshotRev = db.prepare("SELECT value FROM meta WHERE key = 'revision'").pluck().get() as number;
      const unconverted: SnapshotRow[] = [];
      const damaged: number[] = [];
      // The TD's text is only needed where there are no N-Quads to load.
      const rows = db
        .prepare("SELECT id, rev, nquads, iif(nquads IS NULL, td, NULL) AS td FROM things")
        .iterate() as IterableIterator<SnapshotRow>;
      for (const row of rows) {
        if (row.nquads === null) {
          unconverted.push(row);
          continue;
        }
        try {
          // Our own conversions, validated when first loaded: lenient parsing is ~15% faster.
          index.load(row.nquads, { format: NQUADS, no_transaction: true, lenient: true });
        } catch {
          // A damaged cache entry: convert the TD again instead.
          dropGraph(row.id);
          damaged.push(unconverted.push({ ...row, nquads: null }) - 1);
        }
      }
      const tdOf = db.prepare("SELECT td FROM things WHERE id = ?").pluck();
      for (const i of damaged) {
        const row = unconverted[i] as SnapshotRow;
        row.td = tdOf.get(row.id) as string;
      }
      return unconverted;
    })();
  } finally {
    db.close();
  }
  for (const row of missing) await indexThing(row.id, row.td as string, row.rev);
  for (const [tdId, ntriples] of init.status) loadStatus(tdId, ntriples);
  post({ type: "ready" });
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
    post({ type: "rejected", qid, message: (err as Error).message });
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
      if (message.rev > snapshotRev) dropGraph(message.id);
      return;
    case "putStatus":
      loadStatus(message.tdId, message.ntriples);
      return;
    case "deleteStatus":
      dropGraph(statusGraph(message.tdId));
      return;
    case "query":
      query(message.qid, message.sparql, message.accept);
      return;
    case "sync":
      post({ type: "synced", qid: message.qid });
      return;
  }
}

/** Ends the worker on an unexpected error: the main thread sees it exit and starts a fresh one. */
const crash = (err: unknown): void =>
  process.nextTick(() => {
    // Only plain Errors keep their message across threads (a SqliteError arrives as { code }).
    const error = new Error(err instanceof Error ? err.message : String(err));
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
  draining = false;
}

port.on("message", (message: ToIndexWorker) => {
  queue.push(message);
  if (!draining) drain().catch(crash);
});
rebuild().then(drain).catch(crash);
