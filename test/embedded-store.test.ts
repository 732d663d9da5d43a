import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
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
    await store.putGraph(statusGraph("urn:slow:1"), statusOf("urn:slow:1", "Running"));
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
      await store.putGraph(statusGraph("urn:slow:2"), statusOf("urn:slow:2", "Running"));
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
      await store.deleteGraph(statusGraph("urn:slow:1"));
      await store.putGraph(statusGraph("urn:slow:3"), statusOf("urn:slow:3", "Suspended"));

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
    await store.putGraph(statusGraph("urn:bad:2"), "this is not N-Triples");
    await store.putGraph(statusGraph("urn:bad:1"), statusOf("urn:bad:1", "Running"));
    expect(await indexedIds(store)).toEqual(["urn:bad:2"]);
    expect(await twinsWithStatus(store)).toEqual(["urn:bad:1"]);
    expect(failures).toEqual(["urn:bad:1", statusGraph("urn:bad:2")]);
    expect([...store.indexFailures().keys()]).toEqual(failures);
    // Fixed by the next write.
    await store.put(thing("urn:bad:1"));
    await store.indexed();
    expect([...store.indexFailures().keys()]).toEqual([statusGraph("urn:bad:2")]);
  });

  it("reloads the index at restart from its N-Quads cache, converting what the cache lacks", async () => {
    const ids = range(30, "urn:rs:");
    for (const id of ids) await store.put(thing(id));
    await store.put(thing("urn:rs:1", "Second"));
    await store.delete("urn:rs:0");
    // Once indexed, every conversion is in the cache (close() does not wait for indexing).
    await store.indexed();
    await store.close();
    const cache = new Database(join(dir, "index-cache.sqlite"));
    const cachedIds = () => cache.prepare("SELECT id FROM nquads ORDER BY id").pluck().all();
    const cachedOf = (id: string) =>
      cache.prepare("SELECT nquads FROM nquads WHERE id = ?").pluck().get(id) as string | undefined;
    try {
      expect(cachedIds()).toEqual(ids.slice(1).sort());
      // As if the process had died before caching these conversions.
      cache.prepare("DELETE FROM nquads WHERE id IN ('urn:rs:1', 'urn:rs:2')").run();
      // A damaged entry, and one of another version of the TD: converted again.
      cache.prepare("UPDATE nquads SET nquads = 'not N-Quads' WHERE id = 'urn:rs:4'").run();
      cache
        .prepare(
          `UPDATE nquads SET rev = rev + 1000, nquads = replace(nquads, '"Thing"', '"Stale"') WHERE id = ?`,
        )
        .run("urn:rs:5");
      // An entry of a TD the record does not hold: dropped.
      cache.prepare("INSERT INTO nquads (id, rev, nquads) VALUES ('urn:rs:gone', 1, '')").run();

      store = await open();
      // Right after open: the query waits for the index to load.
      expect(await indexedIds(store)).toEqual(ids.slice(1).sort());
      expect(await titleOf(store, "urn:rs:1")).toBe("Second");
      expect(await titleOf(store, "urn:rs:5")).toBe("Thing");
      await store.close();
      expect(cachedIds()).toEqual(ids.slice(1).sort());
      expect(cachedOf("urn:rs:4")).toContain("<urn:rs:4>");
      expect(cachedOf("urn:rs:5")).not.toContain("Stale");
    } finally {
      cache.close();
    }
    store = await open();
    await store.indexed();
    expect(await store.count()).toBe(29);
    expect(await titleOf(store, "urn:rs:1")).toBe("Second");
  });

  it("never loads a cache filled from another record, or from a later state of this one", async () => {
    for (const id of range(5, "urn:fc:")) await store.put(thing(id));
    await store.indexed();
    await store.close();
    const poison = (sql: string) => {
      const cache = new Database(join(dir, "index-cache.sqlite"));
      try {
        cache.exec(`UPDATE nquads SET nquads = replace(nquads, '"Thing"', '"Foreign"'); ${sql}`);
      } finally {
        cache.close();
      }
    };
    // The same ids and revisions, converted from another record.
    poison("UPDATE meta SET value = 'elsewhere' WHERE key = 'database'");
    store = await open();
    expect(await titleOf(store, "urn:fc:1")).toBe("Thing");
    await store.indexed();
    await store.close();
    // Entries of revisions the record has not reached: the record is an older copy.
    poison("INSERT INTO nquads (id, rev, nquads) VALUES ('urn:fc:later', 1000, '')");
    store = await open();
    expect(await titleOf(store, "urn:fc:1")).toBe("Thing");
    expect(await indexedIds(store)).toEqual(range(5, "urn:fc:"));
  });

  it("rebuilds from the record alone when its cache file is damaged, and starts a new cache", async () => {
    const ids = range(30, "urn:dc:");
    for (const id of ids) await store.put(thing(id));
    await store.indexed();
    await store.close();
    const file = join(dir, "index-cache.sqlite");
    expect(statSync(file).size).toBeGreaterThan(300_000);
    for (const damage of [
      // A page of N-Quads overwritten: the file opens, reading the entries fails.
      () => writeFileSync(file, readFileSync(file).fill(0xff, 200 * 1024, 204 * 1024)),
      () => writeFileSync(file, "not a database"),
    ]) {
      damage();
      store = await open();
      expect(await indexedIds(store)).toEqual(ids.sort());
      expect(await titleOf(store, "urn:dc:7")).toBe("Thing");
      await store.close();
      const cache = new Database(file, { readonly: true });
      try {
        expect(cache.prepare("SELECT count(*) FROM nquads").pluck().get()).toBe(30);
      } finally {
        cache.close();
      }
    }
    store = await open();
    expect(failures).toEqual([]);
  });

  it("commits writes arriving together in one transaction, each with its own outcome", async () => {
    await store.put(thing("urn:gc:0"));
    const before = await store.revision();
    // A row SQLite refuses (no creation time): only that write fails.
    const broken = { ...thing("urn:gc:bad"), registration: { modified: MODIFIED } } as StoredThing;
    const outcomes = await Promise.allSettled([
      store.put(thing("urn:gc:0", "Again")),
      store.put(thing("urn:gc:1")),
      store.put(broken),
      store.put(thing("urn:gc:2")),
      store.delete("urn:gc:1"),
      store.delete("urn:gc:none"),
    ]);
    expect(outcomes.map((o) => (o.status === "fulfilled" ? o.value : "rejected"))).toEqual([
      { created: false },
      { created: true },
      "rejected",
      { created: true },
      true,
      false,
    ]);
    expect(await store.revision()).not.toBe(before);
    expect(await store.get("urn:gc:bad")).toBeUndefined();
    expect(await indexedIds(store)).toEqual(["urn:gc:0", "urn:gc:2"]);
    expect(await titleOf(store, "urn:gc:0")).toBe("Again");
  });

  it("answers a repeated query alike until a write changes the index", async () => {
    const q = `SELECT ?t ?title WHERE { ?t a <${TD}Thing> ; <${TD}title> ?title } ORDER BY ?t`;
    const titles = async () => (await select(store, q)).map((b) => `${b.t?.value}=${b.title?.value}`);
    await store.put(thing("urn:qc:1"));
    expect(await titles()).toEqual(["urn:qc:1=Thing"]);
    expect(await titles()).toEqual(["urn:qc:1=Thing"]);
    // Another media type is another result.
    expect((await store.query(q, "text/csv")).body).toContain("urn:qc:1,Thing");
    await store.put(thing("urn:qc:1", "Renamed"));
    expect(await titles()).toEqual(["urn:qc:1=Renamed"]);
    await store.put(thing("urn:qc:2"));
    expect(await titles()).toEqual(["urn:qc:1=Renamed", "urn:qc:2=Thing"]);
    await store.delete("urn:qc:1");
    expect(await titles()).toEqual(["urn:qc:2=Thing"]);
    expect(await twinsWithStatus(store)).toEqual([]);
    await store.putGraph(statusGraph("urn:qc:2"), statusOf("urn:qc:2", "Running"));
    expect(await twinsWithStatus(store)).toEqual(["urn:qc:2"]);
    await store.deleteGraph(statusGraph("urn:qc:2"));
    expect(await twinsWithStatus(store)).toEqual([]);
  });

  it("never caches the N-Quads of a TD's earlier version over a later one", async () => {
    for (const id of range(30, "urn:st:")) await store.put(thing(id));
    await store.indexed();
    // A query that ends the worker, and behind it a replacement within the same millisecond: the
    // record holds the replacement, the cache the first version's conversion.
    const slow = store.query("SELECT (COUNT(*) AS ?n) WHERE { ?a ?b ?c . ?d ?e ?f . ?g ?h ?i }", RESULTS, {
      timeoutMs: 1_000,
    });
    await store.put(thing("urn:st:1", "Second"));
    expect((await rejection(slow)).kind).toBe("timeout");
    // The fresh index is loaded from the cache: it must not hold the first version.
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
