import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createHistogram } from "node:perf_hooks";
import { Client, Pool } from "undici";
import { SparqlStore } from "../src/directory/sparql-store.js";
import { thingModelsDir } from "../src/paths.js";
import { instantiate } from "../src/wot/instantiate.js";
import { loadThingModels, SAMPLE_SCHEMA_BASE, ThingModelRegistry } from "../src/wot/model-registry.js";
import type { JsonObject } from "../src/wot/rdf.js";
import { type GatewayProcess, startGatewayProcess } from "../test/gateway-process.js";
import { startVirtuoso, type TestVirtuoso, virtuosoUnavailable } from "../test/virtuoso.js";
import { type Benchmark, type BenchRow, valueRow } from "./harness.js";

/**
 * The directory over HTTP, as clients use it: a gateway process (`node dist/src/main.js`) on the
 * embedded store and on a private Virtuoso, filled with 1k and 10k generated TDs of two schemas.
 * Baselines from the same gateway in the same run: `GET /healthz` (the HTTP floor of this client and
 * server) for throughputs and latencies, and the embedded store for Virtuoso's figures.
 *
 * The client is undici over keep-alive connections: `fetch` costs ~0.5 ms a request on this kind of
 * machine, more than the server's work for a GET, and autocannon paces requests at whole fractions of
 * a millisecond (~4,000/s, ~2,000/s, ~1,000/s), so neither measures the server.
 */

/** `DTC_BENCH_DIRECTORY_SIZES=1000` for a quick run; `DTC_BENCH_VIRTUOSO=0` skips Virtuoso. */
const SIZES = (process.env.DTC_BENCH_DIRECTORY_SIZES ?? "1000,10000").split(",").map(Number);
/** Registrations measured per mode (sequential, 16 concurrent); the rest of N is loaded after. */
const MEASURED = 500;
/**
 * TDs registered (then deleted) before measuring, so that one-time costs (the TD schema's
 * compilation, the JIT: the first few hundred writes run at half speed) are not counted; fewer on
 * Virtuoso, where each write takes ~25 ms.
 */
const WARMUP = { embedded: 1000, virtuoso: 40 } as const;
const CONCURRENCY = 16;
const QUERY_SAMPLES = 100;
/**
 * Queries measured right after a write (which makes the index answer anew: no cached result), after
 * as many unmeasured ones: the query engine (WebAssembly, compiled as it runs) warms up as it does
 * with repeated queries.
 */
const FRESH_QUERY_SAMPLES = 20;
const JSONPATH_SAMPLES = 20;
const IIOT = new URL("iiot-device.tm.jsonld", SAMPLE_SCHEMA_BASE).href;
const CAMERA = new URL("masa-camera.tm.jsonld", SAMPLE_SCHEMA_BASE).href;
const TEMPERATURE = "https://saref.etsi.org/core/Temperature";

const log = (line: string) => process.stdout.write(`  directory: ${line}\n`);

/** N TDs, alternating the two schemas, with ids in a shuffled order (not the listing's). */
async function generate(n: number): Promise<JsonObject[]> {
  const registry = new ThingModelRegistry();
  await loadThingModels(registry, thingModelsDir);
  const templates = [
    await instantiate(registry, IIOT, { placeholders: { DEVICE_ID: "x" } }),
    await instantiate(registry, CAMERA, {
      placeholders: { CAMERA_ID: "x", LATITUDE: 45.4, LONGITUDE: 9.2, AREA_ID: "a1" },
    }),
  ];
  return Array.from({ length: n }, (_, i) => {
    const td = structuredClone(templates[i % 2] as JsonObject);
    const key = ((i * 7919) % n).toString().padStart(6, "0");
    td.id = `urn:dtc:bench:${key}`;
    td.title = `Thing ${key}`;
    return td;
  });
}

const TD_JSON = { "Content-Type": "application/td+json" };

async function put(client: Client | Pool, td: JsonObject): Promise<void> {
  const res = await client.request({
    path: `/things/${td.id as string}`,
    method: "PUT",
    headers: TD_JSON,
    body: JSON.stringify(td),
  });
  await res.body.dump();
  if (res.statusCode !== 201 && res.statusCode !== 204) throw new Error(`PUT ${td.id}: ${res.statusCode}`);
}

/** Registrations per second, `concurrency` clients (one keep-alive connection each) sharing the list. */
async function register(url: string, tds: JsonObject[], concurrency: number): Promise<number> {
  const pool = new Pool(url, { connections: concurrency });
  try {
    // The bodies are serialised as they are sent, as a client would.
    let next = 0;
    const t0 = performance.now();
    await Promise.all(
      Array.from({ length: concurrency }, async () => {
        while (next < tds.length) await put(pool, tds[next++] as JsonObject);
      }),
    );
    return tds.length / ((performance.now() - t0) / 1000);
  } finally {
    await pool.close();
  }
}

/** Registers `count` throwaway TDs (half sequentially, half concurrently), then deletes them. */
async function warmUp(url: string, tds: JsonObject[], count: number): Promise<void> {
  const throwaway = tds.slice(0, count).map((td, i) => ({ ...td, id: `urn:dtc:bench:warmup:${i}` }));
  await register(url, throwaway.slice(0, count / 2), 1);
  await register(url, throwaway.slice(count / 2), CONCURRENCY);
  const pool = new Pool(url, { connections: CONCURRENCY });
  try {
    await Promise.all(
      throwaway.map(async (td) => {
        const res = await pool.request({ path: `/things/${td.id}`, method: "DELETE" });
        await res.body.dump();
        if (res.statusCode !== 204) throw new Error(`DELETE ${td.id}: ${res.statusCode}`);
      }),
    );
  } finally {
    await pool.close();
  }
}

async function get(client: Client, path: string): Promise<string> {
  const res = await client.request({ path, method: "GET", headers: { Accept: "application/json" } });
  const body = await res.body.text();
  if (res.statusCode !== 200) throw new Error(`GET ${path}: ${res.statusCode}`);
  return body;
}

/** p50 and p99 (ms) of `samples` sequential GETs of `path`; `before` runs untimed before each. */
async function latency(
  client: Client,
  path: string,
  samples: number,
  before?: (i: number) => Promise<void>,
): Promise<{ p50: number; p99: number }> {
  const hist = createHistogram();
  for (let i = 0; i < samples; i++) {
    await before?.(i);
    const t0 = performance.now();
    await get(client, path);
    hist.record(Math.max(1, Math.round((performance.now() - t0) * 1e6)));
  }
  return { p50: hist.percentile(50) / 1e6, p99: hist.percentile(99) / 1e6 };
}

const named = (name: string, params: Record<string, string>) =>
  `/search/named/${name}?${new URLSearchParams(params).toString()}`;

async function count(client: Client, path: string): Promise<number> {
  const body = JSON.parse(await get(client, path)) as { results: { bindings: unknown[] } };
  return body.results.bindings.length;
}

/** Everything about one store at one size. */
async function runCase(
  label: string,
  n: number,
  env: Record<string, string>,
  tds: JsonObject[],
  embedded: Map<string, BenchRow>,
  /** Loads the TDs that are not measured a faster way than the gateway's HTTP API. */
  bulkLoad?: (tds: JsonObject[]) => Promise<void>,
): Promise<BenchRow[]> {
  const dataDir = mkdtempSync(join(tmpdir(), "dtc-bench-dir-"));
  const rows: BenchRow[] = [];
  /**
   * A figure against `floor` (this gateway's HTTP floor) on the embedded store, and against the
   * embedded store's same figure on Virtuoso.
   */
  const row = (name: string, value: number, unit: string, floor?: BenchRow) => {
    const key = `${name} N=${n}`;
    const baseline = label === "embedded" ? floor : embedded.get(key);
    const r = valueRow(`${label} N=${n}: ${name}`, value, unit, baseline);
    if (label === "embedded") embedded.set(key, r);
    rows.push(r);
    return r;
  };
  const start = () => startGatewayProcess({ DTC_DATA_DIR: dataDir, DTC_LOG_LEVEL: "info", ...env });
  let gateway: GatewayProcess = await start();
  let client = new Client(gateway.url);
  try {
    const health = await latency(client, "/healthz", 500);
    const floor = valueRow(`${label} N=${n}: GET /healthz p50 (HTTP floor)`, health.p50, "ms");
    const floorRate = valueRow(
      `${label} N=${n}: GET /healthz sequential (HTTP floor)`,
      1000 / health.p50,
      "req/s",
    );
    rows.push(floor, floorRate);

    await warmUp(gateway.url, tds, label === "embedded" ? WARMUP.embedded : WARMUP.virtuoso);
    row(
      "registrations sequential",
      await register(gateway.url, tds.slice(0, MEASURED), 1),
      "TDs/s",
      floorRate,
    );
    const concurrent = tds.slice(MEASURED, 2 * MEASURED);
    row(
      `registrations ${CONCURRENCY} clients`,
      await register(gateway.url, concurrent, CONCURRENCY),
      "TDs/s",
      floorRate,
    );
    if (n > 2 * MEASURED) {
      const t0 = performance.now();
      const rest = tds.slice(2 * MEASURED, n);
      if (bulkLoad) await bulkLoad(rest);
      // Through the gateway, a longer run of the concurrent case (on a growing store): measured too.
      else
        row(
          `registrations ${CONCURRENCY} clients, the other ${rest.length}`,
          await register(gateway.url, rest, CONCURRENCY),
          "TDs/s",
          floorRate,
        );
      log(
        `${label} N=${n}: loaded the other ${rest.length} TDs in ${((performance.now() - t0) / 1000).toFixed(1)} s${bulkLoad ? " (directly into the store)" : ""}`,
      );
    }
    // Read your writes: the first query waits until every acknowledged TD is indexed.
    const t1 = performance.now();
    const bySchema = named("twins-by-schema", { schema: IIOT });
    const found = await count(client, bySchema);
    row("index caught up after the last ack", performance.now() - t1, "ms");
    if (found !== n / 2) throw new Error(`${label}: twins-by-schema found ${found} of ${n / 2}`);

    for (const [name, path] of [
      ["SPARQL by-schema", bySchema],
      ["SPARQL by-capability", named("twins-by-capability", { type: TEMPERATURE })],
    ] as const) {
      const { p50, p99 } = await latency(client, path, QUERY_SAMPLES);
      row(`${name} p50`, p50, "ms", floor);
      row(`${name} p99`, p99, "ms", floor);
      // Each sample after a write (a TD registered again, unchanged): the index answers it anew.
      const rewrite = (i: number) => put(client, tds[i % n] as JsonObject);
      await latency(client, path, FRESH_QUERY_SAMPLES, rewrite);
      const fresh = await latency(client, path, FRESH_QUERY_SAMPLES, rewrite);
      row(`${name} p50 after a write`, fresh.p50, "ms", floor);
    }
    const title = `Thing ${String(Math.floor(n / 3)).padStart(6, "0")}`;
    const jsonPath = `/search/jsonpath?query=${encodeURIComponent(`$[?@.title == '${title}'].id`)}`;
    row("JSONPath by title p50", (await latency(client, jsonPath, JSONPATH_SAMPLES)).p50, "ms", floor);

    // Restart: to listening (Things API ready), then to the first search answer (index loaded).
    await client.close();
    await gateway.stop();
    const restarted = performance.now();
    gateway = await start();
    client = new Client(gateway.url);
    const answered = await count(client, bySchema);
    const searchable = performance.now() - restarted;
    if (answered !== n / 2) throw new Error(`${label}: after restart, twins-by-schema found ${answered}`);
    row("restart to ready", gateway.readyMs, "ms");
    row("restart to searchable", searchable, "ms");
  } finally {
    await client.close().catch(() => {});
    await gateway.stop().catch(() => {});
    rmSync(dataDir, { recursive: true, force: true });
  }
  return rows;
}

/**
 * Writes TDs with the gateway's own SPARQL store adapter (same layout) from this process: ~36 TDs/s
 * at 1k-10k TDs instead of ~30 through the gateway (Virtuoso runs updates one at a time either
 * way), which keeps the full run under ~8 minutes.
 */
async function loadIntoVirtuoso(virtuoso: TestVirtuoso, tds: JsonObject[]): Promise<void> {
  const store = new SparqlStore({ queryUrl: virtuoso.queryUrl, updateUrl: virtuoso.updateUrl });
  await store.open();
  try {
    const now = new Date().toISOString();
    for (const td of tds)
      await store.put({ id: td.id as string, td, registration: { created: now, modified: now } });
  } finally {
    await store.close();
  }
}

export const benchmark: Benchmark = {
  name: "directory",
  description: `Thing Description Directory over HTTP, ${SIZES.join(" and ")} TDs, embedded store vs Virtuoso`,
  async run() {
    const rows: BenchRow[] = [];
    const baselines = new Map<string, BenchRow>();
    const largest = Math.max(...SIZES);
    const tds = await generate(largest);
    // DTC_BENCH_VIRTUOSO=0: the embedded store only (quick runs).
    const unavailable =
      process.env.DTC_BENCH_VIRTUOSO === "0" ? "DTC_BENCH_VIRTUOSO=0" : virtuosoUnavailable();
    if (unavailable) log(`Virtuoso cases skipped: ${unavailable}`);
    for (const n of SIZES) {
      const subset = n === largest ? tds : await generate(n);
      rows.push(...(await runCase("embedded", n, {}, subset, baselines)));
      if (unavailable) continue;
      let virtuoso: TestVirtuoso | undefined;
      try {
        virtuoso = await startVirtuoso();
        rows.push(
          ...(await runCase(
            "virtuoso",
            n,
            {
              DTC_SPARQL_QUERY_URL: virtuoso.queryUrl,
              DTC_SPARQL_UPDATE_URL: virtuoso.updateUrl,
              // A JSONPath search pages through every TD over SPARQL: at 10,000 it takes longer than
              // the default search limit (answered 400 Query Timeout); the bench measures it.
              DTC_SEARCH_TIMEOUT_MS: "120000",
            },
            subset,
            baselines,
            (rest) => loadIntoVirtuoso(virtuoso as TestVirtuoso, rest),
          )),
        );
      } finally {
        await virtuoso?.stop();
      }
    }
    return rows;
  },
};
