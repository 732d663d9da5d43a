import { randomBytes } from "node:crypto";
import { mkdirSync } from "node:fs";
import { dirname } from "node:path";
import Database from "better-sqlite3";
import type { TwinState } from "../domain/twin-state.js";
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

export interface StoredToken {
  id: string;
  name: string;
  /** reader, operator, admin, or device:{twin id}. */
  role: string;
  created: string;
  expires?: string;
  /** SHA-256 (hex) of the whole token: what the gateway checks. */
  sha256: string;
  /** The same token as mosquitto's password file wants it (PBKDF2-SHA512, `$7$`). */
  mosquitto: string;
}

export interface StoredSnapshot {
  id: string;
  instance: string;
  takenAt: string;
  record: InstanceRecord;
  state: TwinState;
}

/** Labels of a schema, package or instance (a node keeps its own): what a manifest gave it (src/manager/apply.ts). */
export interface StoredLabels {
  kind: "Schema" | "Package" | "Instance";
  name: string;
  labels: Record<string, string>;
}

type Table = "nodes" | "schemas" | "packages" | "instances" | "states" | "snapshots" | "tokens" | "labels";

// CREATE TABLE IF NOT EXISTS: a table added later (labels) appears in an older data file, empty.
const TABLES: Table[] = [
  "nodes",
  "schemas",
  "packages",
  "instances",
  "states",
  "snapshots",
  "tokens",
  "labels",
];

/**
 * One JSON document per id, per table. Small tables (the inventory, the instance records) are also
 * kept in memory, written through: the fit checks read every record of a node on each start.
 */
class Collection<T> {
  readonly #get: Database.Statement<[string], string>;
  readonly #all: Database.Statement<[], string>;
  readonly #put: Database.Statement<[string, string]>;
  readonly #delete: Database.Statement<[string]>;
  readonly #cache: Map<string, T> | undefined;

  constructor(db: Database.Database, table: Table, cached: boolean) {
    this.#get = db.prepare<[string], string>(`SELECT json FROM ${table} WHERE id = ?`).pluck();
    this.#all = db.prepare<[], string>(`SELECT json FROM ${table} ORDER BY id`).pluck();
    this.#put = db.prepare(
      `INSERT INTO ${table} (id, json) VALUES (?, ?) ON CONFLICT(id) DO UPDATE SET json = excluded.json`,
    );
    this.#delete = db.prepare(`DELETE FROM ${table} WHERE id = ?`);
    if (cached) {
      const rows = db
        .prepare<[], { id: string; json: string }>(`SELECT id, json FROM ${table} ORDER BY id`)
        .all();
      this.#cache = new Map(rows.map((r) => [r.id, JSON.parse(r.json) as T]));
    }
  }

  /** A copy of the document (callers may change it). */
  get(id: string): T | undefined {
    if (this.#cache) {
      const value = this.#cache.get(id);
      return value === undefined ? undefined : structuredClone(value);
    }
    const json = this.#get.get(id);
    return json === undefined ? undefined : (JSON.parse(json) as T);
  }

  /** Copies of every document, ordered by id. */
  all(): T[] {
    if (this.#cache)
      return [...this.#cache.keys()].sort().map((id) => structuredClone(this.#cache?.get(id) as T));
    return this.#all.all().map((json) => JSON.parse(json) as T);
  }

  /** The documents themselves, unordered, not to be changed (cached tables: no copy, no parse). */
  peek(): Iterable<Readonly<T>> {
    return this.#cache ? this.#cache.values() : this.all();
  }

  put(id: string, value: T): void {
    const json = JSON.stringify(value);
    this.#put.run(id, json);
    this.#cache?.set(id, JSON.parse(json) as T);
  }

  delete(id: string): boolean {
    const deleted = this.#delete.run(id).changes > 0;
    this.#cache?.delete(id);
    return deleted;
  }
}

export class ManagerStore {
  /** API tokens: their hashes and roles, never the tokens (src/security/tokens.ts). */
  readonly tokens: Collection<StoredToken>;
  readonly #db: Database.Database;
  readonly nodes: Collection<DtcNode>;
  readonly schemas: Collection<StoredSchema>;
  readonly packages: Collection<DtPackage>;
  readonly instances: Collection<InstanceRecord>;
  /** The last saved state of each instance (checkpoints, stop, shutdown). */
  readonly states: Collection<TwinState>;
  readonly snapshots: Collection<StoredSnapshot>;
  /** Labels of schemas, packages and instances, by `{kind}/{name}`. */
  readonly labels: Collection<StoredLabels>;

  /** This gateway's id, made at its first start (its containers carry it). */
  readonly gatewayId: string;
  #countSnapshots: Database.Statement<[string], number> | undefined;

  constructor(path: string) {
    mkdirSync(dirname(path), { recursive: true });
    const db = new Database(path);
    db.pragma("journal_mode = WAL");
    // Acknowledged means on disk: an instance started (or removed) stays so after a power cut.
    db.pragma("synchronous = FULL");
    for (const table of TABLES) {
      db.exec(`CREATE TABLE IF NOT EXISTS ${table} (id TEXT PRIMARY KEY, json TEXT NOT NULL) WITHOUT ROWID`);
    }
    db.exec("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID");
    db.prepare("INSERT OR IGNORE INTO meta (key, value) VALUES ('gateway-id', ?)").run(
      randomBytes(8).toString("hex"),
    );
    this.gatewayId = db
      .prepare<[], string>("SELECT value FROM meta WHERE key = 'gateway-id'")
      .pluck()
      .get() as string;
    this.#db = db;
    this.nodes = new Collection(db, "nodes", true);
    this.schemas = new Collection(db, "schemas", true);
    this.packages = new Collection(db, "packages", true);
    this.instances = new Collection(db, "instances", true);
    // Twin states and snapshots are large: read from disk when needed.
    this.states = new Collection(db, "states", false);
    this.snapshots = new Collection(db, "snapshots", false);
    this.tokens = new Collection(db, "tokens", true);
    this.labels = new Collection(db, "labels", true);
  }

  /**
   * A random secret made once per data dir and kept under `key` (e.g. the key the embedded broker's
   * internal credentials are derived from): the same across restarts, different per gateway.
   */
  secret(key: string): string {
    this.#db
      .prepare("INSERT OR IGNORE INTO meta (key, value) VALUES (?, ?)")
      .run(`secret:${key}`, randomBytes(32).toString("base64url"));
    return this.#db
      .prepare<[string], string>("SELECT value FROM meta WHERE key = ?")
      .pluck()
      .get(`secret:${key}`) as string;
  }

  /** How many snapshots of instance `instance` are kept (without reading them). */
  snapshotCount(instance: string): number {
    this.#countSnapshots ??= this.#db
      .prepare<[string], number>("SELECT COUNT(*) FROM snapshots WHERE json_extract(json, '$.instance') = ?")
      .pluck();
    return this.#countSnapshots.get(instance) ?? 0;
  }

  /** Runs `writes` as one transaction: all of them are durable, or none. */
  transaction<T>(writes: () => T): T {
    return this.#db.transaction(writes)();
  }

  close(): void {
    if (this.#db.open) this.#db.close();
  }
}
