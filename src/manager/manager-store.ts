import { mkdirSync } from "node:fs";
import { dirname } from "node:path";
import Database from "better-sqlite3";
import type { TwinState } from "../runtime/twin.js";
import type { ThingModel } from "../wot/thing-model.js";
import type { DtcNode, DtPackage, InstanceRecord, SchemaSummary } from "./model.js";

/**
 * The manager's durable memory (DTC_DATA_DIR/manager.sqlite): the inventory, the desired state of
 * every instance, each instance's last saved twin state, and snapshots. Every write is committed
 * (fsync'd) before the API answers, so what a client was told survives a crash.
 */

export interface StoredSchema {
  summary: SchemaSummary;
  model: ThingModel;
}

export interface StoredSnapshot {
  id: string;
  instance: string;
  takenAt: string;
  record: InstanceRecord;
  state: TwinState;
}

type Table = "nodes" | "schemas" | "packages" | "instances" | "states" | "snapshots";

const TABLES: Table[] = ["nodes", "schemas", "packages", "instances", "states", "snapshots"];

/** One JSON document per id, per table. */
class Collection<T> {
  readonly #get: Database.Statement<[string], string>;
  readonly #all: Database.Statement<[], string>;
  readonly #put: Database.Statement<[string, string]>;
  readonly #delete: Database.Statement<[string]>;

  constructor(db: Database.Database, table: Table) {
    this.#get = db.prepare<[string], string>(`SELECT json FROM ${table} WHERE id = ?`).pluck();
    this.#all = db.prepare<[], string>(`SELECT json FROM ${table} ORDER BY id`).pluck();
    this.#put = db.prepare(
      `INSERT INTO ${table} (id, json) VALUES (?, ?) ON CONFLICT(id) DO UPDATE SET json = excluded.json`,
    );
    this.#delete = db.prepare(`DELETE FROM ${table} WHERE id = ?`);
  }

  get(id: string): T | undefined {
    const json = this.#get.get(id);
    return json === undefined ? undefined : (JSON.parse(json) as T);
  }

  all(): T[] {
    return this.#all.all().map((json) => JSON.parse(json) as T);
  }

  put(id: string, value: T): void {
    this.#put.run(id, JSON.stringify(value));
  }

  delete(id: string): boolean {
    return this.#delete.run(id).changes > 0;
  }
}

export class ManagerStore {
  readonly #db: Database.Database;
  readonly nodes: Collection<DtcNode>;
  readonly schemas: Collection<StoredSchema>;
  readonly packages: Collection<DtPackage>;
  readonly instances: Collection<InstanceRecord>;
  /** The last saved state of each instance (checkpoints, stop, shutdown). */
  readonly states: Collection<TwinState>;
  readonly snapshots: Collection<StoredSnapshot>;

  constructor(path: string) {
    mkdirSync(dirname(path), { recursive: true });
    const db = new Database(path);
    db.pragma("journal_mode = WAL");
    // Acknowledged means on disk: an instance started (or removed) stays so after a power cut.
    db.pragma("synchronous = FULL");
    for (const table of TABLES) {
      db.exec(`CREATE TABLE IF NOT EXISTS ${table} (id TEXT PRIMARY KEY, json TEXT NOT NULL) WITHOUT ROWID`);
    }
    this.#db = db;
    this.nodes = new Collection(db, "nodes");
    this.schemas = new Collection(db, "schemas");
    this.packages = new Collection(db, "packages");
    this.instances = new Collection(db, "instances");
    this.states = new Collection(db, "states");
    this.snapshots = new Collection(db, "snapshots");
  }

  /** Runs `writes` as one transaction: all of them are durable, or none. */
  transaction<T>(writes: () => T): T {
    return this.#db.transaction(writes)();
  }

  close(): void {
    if (this.#db.open) this.#db.close();
  }
}
