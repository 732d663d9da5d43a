import { mkdirSync } from "node:fs";
import { join } from "node:path";
import Database from "better-sqlite3";
import oxigraph from "oxigraph";
import { toNQuads } from "../wot/rdf.js";
import type { DirectoryStore, QueryResult, Registration, StoredThing } from "./store.js";
import { StoreError, statusGraph } from "./store.js";

/**
 * The embedded store: SQLite (WAL, synchronous=FULL) is the system of record on disk, an in-memory
 * Oxigraph store the query index, each TD in its own named graph.
 *
 * A write is acknowledged once SQLite committed it; converting the TD to RDF (~2 ms with jsonld.js)
 * happens after, off the acknowledgement path, in write order. The N-Quads are kept in the record
 * too, so a restart reloads the index without converting again. Queries wait until every write
 * acknowledged before them is indexed (read your writes).
 */

interface Row {
  id: string;
  td: string;
  created: string;
  modified: string;
  expires: number | null;
  ttl: number | null;
  nquads: string | null;
}

const toThing = (row: Row): StoredThing => {
  const registration: Registration = { created: row.created, modified: row.modified };
  if (row.expires !== null) registration.expires = new Date(row.expires).toISOString();
  if (row.ttl !== null) registration.ttl = row.ttl;
  return { id: row.id, td: JSON.parse(row.td), registration };
};

export class EmbeddedStore implements DirectoryStore {
  readonly #dir: string;
  #db: Database.Database | undefined;
  readonly #index = new oxigraph.Store();
  /** The indexing of acknowledged writes, in order. */
  #indexing: Promise<void> = Promise.resolve();
  #indexError: Error | undefined;

  constructor(dir: string) {
    this.#dir = dir;
  }

  get #sql(): Database.Database {
    if (!this.#db) throw new StoreError("the embedded store is not open");
    return this.#db;
  }

  async open(): Promise<void> {
    mkdirSync(this.#dir, { recursive: true });
    const db = new Database(join(this.#dir, "directory.sqlite"));
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
      nquads TEXT
    ) WITHOUT ROWID;
    CREATE INDEX IF NOT EXISTS things_expires ON things (expires) WHERE expires IS NOT NULL;`);
    this.#db = db;
    // Rebuild the index from the record; convert what a crash left unconverted.
    const missing: Row[] = [];
    for (const row of db.prepare("SELECT * FROM things").iterate() as IterableIterator<Row>) {
      if (row.nquads === null) missing.push(row);
      else this.#load(row.id, row.nquads);
    }
    for (const row of missing) this.#scheduleIndex(row.id, JSON.parse(row.td), row.modified);
    await this.#indexing;
  }

  #load(id: string, nquads: string): void {
    this.#dropGraph(id);
    this.#index.load(nquads, { format: "application/n-quads", no_transaction: true });
  }

  #dropGraph(id: string): void {
    for (const quad of this.#index.match(null, null, null, oxigraph.namedNode(id))) this.#index.delete(quad);
  }

  /** Converts and indexes `td` after the writes before it; skipped if a later write replaced it. */
  #scheduleIndex(id: string, td: StoredThing["td"], modified: string): void {
    this.#indexing = this.#indexing.then(async () => {
      try {
        const nquads = await toNQuads(td, { graph: id });
        const current = this.#db?.prepare("SELECT modified FROM things WHERE id = ?").get(id) as
          | { modified: string }
          | undefined;
        if (current?.modified !== modified) return; // replaced or deleted since
        this.#db
          ?.prepare("UPDATE things SET nquads = ? WHERE id = ? AND modified = ?")
          .run(nquads, id, modified);
        this.#load(id, nquads);
      } catch (err) {
        // The TD was validated before it was stored; a failure here is a bug, reported on queries.
        this.#indexError = new StoreError(`indexing ${id} failed: ${(err as Error).message}`, { cause: err });
      }
    });
  }

  async put(thing: StoredThing): Promise<{ created: boolean }> {
    const db = this.#sql;
    const expires = thing.registration.expires === undefined ? null : Date.parse(thing.registration.expires);
    const created = db.transaction(() => {
      const existed = db.prepare("SELECT 1 FROM things WHERE id = ?").get(thing.id) !== undefined;
      db.prepare(
        `INSERT INTO things (id, td, created, modified, expires, ttl, nquads) VALUES (?, ?, ?, ?, ?, ?, NULL)
         ON CONFLICT (id) DO UPDATE SET td = excluded.td, modified = excluded.modified,
           expires = excluded.expires, ttl = excluded.ttl, nquads = NULL`,
      ).run(
        thing.id,
        JSON.stringify(thing.td),
        thing.registration.created,
        thing.registration.modified,
        expires,
        thing.registration.ttl ?? null,
      );
      return !existed;
    })();
    this.#scheduleIndex(thing.id, thing.td, thing.registration.modified);
    return { created };
  }

  async get(id: string): Promise<StoredThing | undefined> {
    const row = this.#sql.prepare("SELECT * FROM things WHERE id = ?").get(id) as Row | undefined;
    return row ? toThing(row) : undefined;
  }

  async delete(id: string): Promise<boolean> {
    const { changes } = this.#sql.prepare("DELETE FROM things WHERE id = ?").run(id);
    if (changes === 0) return false;
    this.#indexing = this.#indexing.then(() => this.#dropGraph(id));
    return true;
  }

  async list(offset: number, limit: number): Promise<StoredThing[]> {
    const rows = this.#sql
      .prepare("SELECT * FROM things ORDER BY id LIMIT ? OFFSET ?")
      .all(limit, offset) as Row[];
    return rows.map(toThing);
  }

  async count(): Promise<number> {
    return (this.#sql.prepare("SELECT count(*) AS n FROM things").get() as { n: number }).n;
  }

  async revision(): Promise<string> {
    const row = this.#sql.prepare("SELECT count(*) AS n, max(modified) AS m FROM things").get() as {
      n: number;
      m: string | null;
    };
    return `${row.n}-${row.m === null ? 0 : Date.parse(row.m)}`;
  }

  async expired(now: number): Promise<string[]> {
    const rows = this.#sql.prepare("SELECT id FROM things WHERE expires <= ?").all(now) as { id: string }[];
    return rows.map((r) => r.id);
  }

  async query(sparql: string, accept: string): Promise<QueryResult> {
    await this.#indexing;
    if (this.#indexError) throw this.#indexError;
    // Every TD is in its own graph: the default graph is their union, as WoT Discovery expects.
    const body = this.#index.query(sparql, { results_format: accept, use_default_graph_as_union: true });
    return { body: String(body), contentType: accept };
  }

  async putStatus(tdId: string, ntriples: string): Promise<void> {
    const graph = statusGraph(tdId);
    this.#indexing = this.#indexing.then(() => {
      this.#dropGraph(graph);
      this.#index.load(ntriples, {
        format: "application/n-triples",
        to_graph_name: oxigraph.namedNode(graph),
      });
    });
    await this.#indexing;
  }

  async deleteStatus(tdId: string): Promise<void> {
    const graph = statusGraph(tdId);
    this.#indexing = this.#indexing.then(() => this.#dropGraph(graph));
    await this.#indexing;
  }

  async close(): Promise<void> {
    await this.#indexing;
    this.#db?.close();
    this.#db = undefined;
  }
}
