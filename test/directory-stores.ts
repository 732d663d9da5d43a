import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { EmbeddedStore } from "../src/directory/embedded-store.js";
import { SparqlStore } from "../src/directory/sparql-store.js";
import type { DirectoryStore } from "../src/directory/store.js";
import { dropGraphs, startVirtuoso, type TestVirtuoso, virtuosoUnavailable } from "./virtuoso.js";

/** A directory store under test: the directory suites run on each (`describe.each(storeAdapters())`). */
export interface StoreAdapter {
  /** Why the adapter cannot run here (its engine is missing), or undefined. */
  unavailable(): string | undefined;
  /** Starts the engine (once per file). */
  start(): Promise<void>;
  stop(): Promise<void>;
  /** An opened store with no TDs. */
  fresh(): Promise<DirectoryStore>;
  /** Another opened store on the same data: a restart, or a second gateway on a remote store. */
  reopen(): Promise<DirectoryStore>;
  /**
   * A search time limit the store can keep. Virtuoso checks its limit on 2 s ticks (a 300 ms limit
   * stops at 2 s, a 2 s one at 2 or 4 s) while SparqlStore gives up 1 s past the limit: at 2 s some
   * answers are Virtuoso's own. Either way a 400 Query Timeout after the limit.
   */
  queryTimeoutMs: number;
  /** A search that runs for minutes on this store's test data, and that the store does not refuse up front. */
  slowQuery: string;
}

async function opened(store: DirectoryStore): Promise<DirectoryStore> {
  await store.open();
  return store;
}

/** The embedded store, in a new temp dir for each fresh() store; stop() removes them all. */
export function embeddedAdapter(): StoreAdapter {
  let dir = "";
  const dirs: string[] = [];
  return {
    unavailable: () => undefined,
    start: async () => {},
    stop: async () => {
      for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
    },
    fresh: () => {
      dir = mkdtempSync(join(tmpdir(), "dtc-dir-"));
      dirs.push(dir);
      return opened(new EmbeddedStore(dir));
    },
    reopen: () => opened(new EmbeddedStore(dir)),
    queryTimeoutMs: 300,
    // Every triple with itself, three times over.
    slowQuery: "SELECT (COUNT(*) AS ?n) WHERE { ?a ?b ?c . ?d ?e ?f . ?g ?h ?i }",
  };
}

/**
 * A SparqlStore on a private Virtuoso (one per file), laid out as deployed: the gateway reads and
 * writes through /sparql-auth as a dedicated writer, searches go to the read-only anonymous /sparql.
 * Each fresh() store starts from no graphs.
 */
export function virtuosoAdapter(): StoreAdapter {
  let server: TestVirtuoso | undefined;
  const open = () => {
    if (!server) throw new Error("start() the adapter first");
    return opened(
      new SparqlStore({
        queryUrl: server.queryUrl,
        updateUrl: server.updateUrl,
        auth: server.auth,
        search: { url: server.searchUrl },
      }),
    );
  };
  return {
    unavailable: virtuosoUnavailable,
    start: async () => {
      server = await startVirtuoso({ access: "writer" });
    },
    stop: async () => server?.stop(),
    fresh: async () => {
      if (server) await dropGraphs(server);
      return open();
    },
    reopen: open,
    queryTimeoutMs: 2_000,
    // Virtuoso's cost estimate refuses the embedded store's three-fold product before running it
    // (by an estimate that varies with its sampling, and with its own graphs' thousands of triples);
    // a twofold one with a regular expression on each pair it estimates low and runs for minutes.
    slowQuery: `SELECT (COUNT(*) AS ?n) WHERE { ?a ?b ?c . ?d ?e ?f FILTER (REGEX(CONCAT(STR(?c), STR(?f)), "1.*2.*3.*4")) }`,
  };
}

/** [name, adapter] pairs for describe.each, new adapters for each test file. */
export const storeAdapters = () =>
  [
    ["embedded", embeddedAdapter()],
    ["remote SPARQL (Virtuoso)", virtuosoAdapter()],
  ] as const;
