import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import Database from "better-sqlite3";
import { afterEach, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { EmbeddedStore } from "../src/directory/embedded-store.js";
import { QueryError, type StoredThing, StoreError, statusGraph } from "../src/directory/store.js";
import { instantiate } from "../src/wot/instantiate.js";
import type { JsonObject } from "../src/wot/rdf.js";
import { sample, sampleRegistry } from "./helpers.js";

const RESULTS = "application/sparql-results+json";
const TD = "https://www.w3.org/2019/wot/td#";
const DTC = "https://w3id.org/dtc#";
const MODIFIED = new Date(Date.UTC(2026, 0, 1)).toISOString();

let deviceTd: JsonObject;

beforeAll(async () => {
  deviceTd = await instantiate(await sampleRegistry(), sample("iiot-device.tm.jsonld"), {
    placeholders: { DEVICE_ID: "d1" },
    id: "urn:dtc:twin:d1",
    base: "http://127.0.0.1:8080/twins/d1/",
  });
});

/** A TD as stored; every write of it carries the same registration time (same millisecond). */
const thing = (id: string, title = "Thing"): StoredThing => ({
  id,
  td: { ...structuredClone(deviceTd), id, title },
  registration: { created: MODIFIED, modified: MODIFIED },
});

type Binding = Record<string, { value: string }>;
const select = async (store: EmbeddedStore, sparql: string, timeoutMs?: number): Promise<Binding[]> =>
  JSON.parse((await store.query(sparql, RESULTS, { timeoutMs })).body).results.bindings;

/** The ids of the TDs the index holds, sorted. */
const indexedIds = async (store: EmbeddedStore): Promise<string[]> =>
  (await select(store, `SELECT DISTINCT ?t WHERE { ?t a <${TD}Thing> }`))
    .map((b) => b.t?.value as string)
    .sort();

const titleOf = async (store: EmbeddedStore, id: string): Promise<string | undefined> =>
  (await select(store, `SELECT ?title WHERE { GRAPH <${id}> { <${id}> <${TD}title> ?title } }`))[0]?.title
    ?.value;

const statusOf = (id: string, state: string): string => `<${id}> <${DTC}lifecycleState> <${DTC}${state}> .\n`;

/** Twins with a lifecycle state in their status graph, sorted. */
const twinsWithStatus = async (store: EmbeddedStore): Promise<string[]> =>
  (await select(store, `SELECT ?t WHERE { GRAPH ?g { ?t <${DTC}lifecycleState> ?s } }`))
    .map((b) => b.t?.value as string)
    .sort();

const range = (n: number, prefix: string): string[] => Array.from({ length: n }, (_, i) => `${prefix}${i}`);

/** Runs `query` and returns the error it is rejected with (fails when it answers). */
async function rejection(query: Promise<unknown>): Promise<QueryError> {
  const err = await query.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(QueryError);
  return err as QueryError;
}

describe("the embedded store", () => {
  let dir: string;
  let store: EmbeddedStore;
  const failures: string[] = [];

  const open = async (): Promise<EmbeddedStore> => {
    const opened = new EmbeddedStore(dir, { onIndexFailure: (id) => failures.push(id) });
    await opened.open();
    return opened;
  };

  beforeEach(async () => {
    dir = mkdtempSync(join(tmpdir(), "dtc-store-"));
    failures.length = 0;
    store = await open();
  });
  afterEach(async () => {
    await store.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it("answers a query after every write acknowledged before it (read your writes)", async () => {
    const ids = range(100, "urn:ryw:").sort();
    // Acknowledged (committed) without waiting for indexing, which lags behind.
    for (const id of ids) await store.put(thing(id));
    await store.put(thing("urn:ryw:7", "Renamed"));
    expect(await indexedIds(store)).toEqual(ids);
    expect(await titleOf(store, "urn:ryw:7")).toBe("Renamed");

    expect(await store.delete("urn:ryw:3")).toBe(true);
    expect(await store.delete("urn:ryw:3")).toBe(false);
    expect(await indexedIds(store)).toEqual(ids.filter((id) => id !== "urn:ryw:3"));

    // Graph results in the media type asked for.
    const turtle = await store.query(
      `CONSTRUCT { <urn:ryw:7> <${TD}title> ?t } WHERE { <urn:ryw:7> <${TD}title> ?t }`,
      "text/turtle",
    );
    expect(turtle).toEqual({ body: expect.stringContaining('"Renamed"'), contentType: "text/turtle" });
    const csv = await store.query(`ASK { <urn:ryw:3> ?p ?o }`, "application/sparql-results+xml");
    expect(csv.body).toContain("<boolean>false</boolean>");
  });

  it("ends a query running past its time limit without blocking, then answers the next ones in full", async () => {
    const ids = range(300, "urn:slow:");
    for (const id of ids) await store.put(thing(id));
    await store.putStatus("urn:slow:1", statusOf("urn:slow:1", "Running"));
    await store.indexed();

    let ticks = 0;
    const ticker = setInterval(() => ticks++, 10);
    try {
      const started = Date.now();
      const slow = store.query("SELECT (COUNT(*) AS ?n) WHERE { ?a ?b ?c . ?d ?e ?f . ?g ?h ?i }", RESULTS, {
        timeoutMs: 200,
      });
      // Writes while it runs, and a query waiting behind it: they must survive the worker's end.
      await store.delete("urn:slow:0");
      await store.put(thing("urn:slow:late"));
      await store.put(thing("urn:slow:2", "Replaced"));
      await store.putStatus("urn:slow:2", statusOf("urn:slow:2", "Running"));
      const behind = indexedIds(store);

      const err = await rejection(slow);
      const elapsed = Date.now() - started;
      expect(err.kind).toBe("timeout");
      expect(err.message).toContain("200 ms");
      expect(elapsed).toBeLessThan(5_000);
      // The event loop ran while the query did (a tick every 10 ms; a blocked loop gives none).
      expect(ticks).toBeGreaterThanOrEqual(5);

      // Writes while the index is rebuilt.
      await store.put(thing("urn:slow:rebuild"));
      await store.deleteStatus("urn:slow:1");
      await store.putStatus("urn:slow:3", statusOf("urn:slow:3", "Suspended"));

      const expected = [...ids.filter((id) => id !== "urn:slow:0"), "urn:slow:late"].sort();
      // The query that waited sees at least every write acknowledged before it (the rebuilt index
      // may already hold later ones).
      const waited = await behind;
      expect(waited).toEqual(expect.arrayContaining(expected));
      expect(waited).not.toContain("urn:slow:0");
      expect(await indexedIds(store)).toEqual([...expected, "urn:slow:rebuild"].sort());
      expect(await titleOf(store, "urn:slow:2")).toBe("Replaced");
      expect(await twinsWithStatus(store)).toEqual(["urn:slow:2", "urn:slow:3"]);
      expect(failures).toEqual([]);
    } finally {
      clearInterval(ticker);
    }
  });

  it("refuses a query Oxigraph rejects, and keeps answering", async () => {
    await store.put(thing("urn:rej:1"));
    // Valid SPARQL 1.1 (sparqljs parses it), but Oxigraph has no such function.
    const err = await rejection(
      store.query("SELECT * WHERE { ?s ?p ?o FILTER(<urn:unknown>(?o)) }", RESULTS),
    );
    expect(err.kind).toBe("rejected");
    expect(err.message).toContain("urn:unknown");
    expect(await indexedIds(store)).toEqual(["urn:rej:1"]);
  });

  it("reports a TD or status graph it cannot index, and keeps indexing the others", async () => {
    await store.put({
      ...thing("urn:bad:1"),
      td: { ...thing("urn:bad:1").td, "@context": "https://example.org/x" },
    });
    await store.put(thing("urn:bad:2"));
    await store.putStatus("urn:bad:2", "this is not N-Triples");
    await store.putStatus("urn:bad:1", statusOf("urn:bad:1", "Running"));
    expect(await indexedIds(store)).toEqual(["urn:bad:2"]);
    expect(await twinsWithStatus(store)).toEqual(["urn:bad:1"]);
    expect(failures).toEqual(["urn:bad:1", statusGraph("urn:bad:2")]);
    expect([...store.indexFailures().keys()]).toEqual(failures);
    // Fixed by the next write.
    await store.put(thing("urn:bad:1"));
    await store.indexed();
    expect([...store.indexFailures().keys()]).toEqual([statusGraph("urn:bad:2")]);
  });

  it("reloads the index at restart from the cached N-Quads, converting what a crash left out", async () => {
    const record = new Database(join(dir, "directory.sqlite"));
    const cachedOf = (id: string) =>
      record.prepare("SELECT nquads FROM things WHERE id = ?").pluck().get(id) as string | null;
    const uncached = () => record.prepare("SELECT count(*) FROM things WHERE nquads IS NULL").pluck().get();
    try {
      const ids = range(30, "urn:rs:");
      for (const id of ids) await store.put(thing(id));
      await store.put(thing("urn:rs:1", "Second"));
      await store.delete("urn:rs:0");
      // close() does not wait for indexing; once indexed, every conversion is cached at close.
      await store.indexed();
      await store.close();
      expect(uncached()).toBe(0);

      // As if the process had died before writing these conversions to the cache.
      record
        .prepare("UPDATE things SET nquads = NULL WHERE id IN ('urn:rs:1', 'urn:rs:2', 'urn:rs:3')")
        .run();
      expect(uncached()).toBe(3);
      // And a damaged cache entry: converted again as well.
      record.prepare("UPDATE things SET nquads = 'not N-Quads' WHERE id = 'urn:rs:4'").run();

      store = await open();
      // Right after open: the query waits for the index to load.
      expect(await indexedIds(store)).toEqual(ids.slice(1).sort());
      expect(await titleOf(store, "urn:rs:1")).toBe("Second");
      await store.close();
      expect(uncached()).toBe(0);
      expect(cachedOf("urn:rs:4")).toContain("<urn:rs:4>");
    } finally {
      record.close();
    }
    store = await open();
    await store.indexed();
    expect(await store.count()).toBe(29);
    expect(await titleOf(store, "urn:rs:1")).toBe("Second");
  });

  it("never caches the N-Quads of a TD's earlier version over a later one", async () => {
    for (const id of range(30, "urn:st:")) await store.put(thing(id));
    // Converted; the N-Quads go to the cache in a batch a moment later (200 ms).
    await store.indexed();
    // A query that outlasts that moment, and behind it a replacement within the same millisecond:
    // when the batch is written, the record holds the replacement, not yet converted.
    const slow = store.query("SELECT (COUNT(*) AS ?n) WHERE { ?a ?b ?c . ?d ?e ?f . ?g ?h ?i }", RESULTS, {
      timeoutMs: 1_000,
    });
    await store.put(thing("urn:st:1", "Second"));
    expect((await rejection(slow)).kind).toBe("timeout");
    // The fresh index is loaded from the record's cache: it must not hold the first version.
    expect(await titleOf(store, "urn:st:1")).toBe("Second");
  });

  it("gives up, with an error, on an index it cannot load instead of restarting it forever", async () => {
    for (const id of range(30, "urn:gone:")) await store.put(thing(id));
    await store.indexed();
    const record = new Database(join(dir, "directory.sqlite"));
    try {
      // The next index worker cannot read the record.
      record.exec("ALTER TABLE meta RENAME TO elsewhere");
      const slow = store.query("SELECT (COUNT(*) AS ?n) WHERE { ?a ?b ?c . ?d ?e ?f . ?g ?h ?i }", RESULTS, {
        timeoutMs: 200,
      });
      expect((await rejection(slow)).kind).toBe("timeout");
      const err = await store.query("ASK { ?s ?p ?o }", RESULTS).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(StoreError);
      expect(err).not.toBeInstanceOf(QueryError);
      expect((err as Error).message).toContain("no such table: meta");
    } finally {
      record.exec("ALTER TABLE elsewhere RENAME TO meta");
      record.close();
    }
  });

  it("changes the revision on every write, also within the same millisecond and across restarts", async () => {
    const seen = [await store.revision()];
    await store.put(thing("urn:rev:1"));
    seen.push(await store.revision());
    await store.put(thing("urn:rev:1", "Same millisecond"));
    seen.push(await store.revision());
    await store.put(thing("urn:rev:2"));
    seen.push(await store.revision());
    await store.delete("urn:rev:1");
    seen.push(await store.revision());
    await store.delete("urn:rev:1"); // nothing deleted
    expect(await store.revision()).toBe(seen.at(-1));
    await store.close();
    store = await open();
    expect(await store.revision()).toBe(seen.at(-1));
    await store.put(thing("urn:rev:3"));
    seen.push(await store.revision());
    expect(new Set(seen).size).toBe(seen.length);
  });
});
