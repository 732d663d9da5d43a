import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createHistogram } from "node:perf_hooks";
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
 */

const SIZES = (process.env.DTC_BENCH_DIRECTORY_SIZES ?? "1000,10000").split(",").map(Number);
/** Registrations measured per mode (sequential, 16 concurrent); the rest of N is loaded unmeasured. */
const MEASURED = 500;
const CONCURRENCY = 16;
const QUERY_SAMPLES = 100;
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

async function put(url: string, td: JsonObject): Promise<void> {
  const res = await fetch(`${url}/things/${td.id as string}`, {
    method: "PUT",
    headers: { "Content-Type": "application/td+json" },
    body: JSON.stringify(td),
  });
  await res.arrayBuffer();
  if (res.status !== 201 && res.status !== 204) throw new Error(`PUT ${td.id}: ${res.status}`);
}

/** Registrations per second, `concurrency` clients sharing the list. */
async function register(url: string, tds: JsonObject[], concurrency: number): Promise<number> {
  let next = 0;
  const t0 = performance.now();
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (next < tds.length) await put(url, tds[next++] as JsonObject);
    }),
  );
  return tds.length / ((performance.now() - t0) / 1000);
}

/** p50 and p99 (ms) of `samples` sequential GETs of `path`. */
async function latency(url: string, path: string, samples: number): Promise<{ p50: number; p99: number }> {
  const hist = createHistogram();
  for (let i = 0; i < samples; i++) {
    const t0 = performance.now();
    const res = await fetch(`${url}${path}`, { headers: { Accept: "application/json" } });
    await res.arrayBuffer();
    if (res.status !== 200) throw new Error(`GET ${path}: ${res.status}`);
    hist.record(Math.max(1, Math.round((performance.now() - t0) * 1e6)));
  }
  return { p50: hist.percentile(50) / 1e6, p99: hist.percentile(99) / 1e6 };
}

const named = (name: string, params: Record<string, string>) =>
  `/search/named/${name}?${new URLSearchParams(params).toString()}`;

async function count(url: string, path: string): Promise<number> {
  const body = (await (await fetch(`${url}${path}`, { headers: { Accept: "application/json" } })).json()) as {
    results: { bindings: unknown[] };
  };
  return body.results.bindings.length;
}

/** Everything about one store at one size. */
async function runCase(
  label: string,
  n: number,
  env: Record<string, string>,
  tds: JsonObject[],
  embedded: Map<string, BenchRow>,
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
  try {
    const health = await latency(gateway.url, "/healthz", 500);
    const floor = valueRow(`${label} N=${n}: GET /healthz p50 (HTTP floor)`, health.p50, "ms");
    const floorRate = valueRow(
      `${label} N=${n}: GET /healthz sequential (HTTP floor)`,
      1000 / health.p50,
      "req/s",
    );
    rows.push(floor, floorRate);

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
      await register(gateway.url, tds.slice(2 * MEASURED, n), CONCURRENCY);
      log(
        `${label} N=${n}: loaded the other ${n - 2 * MEASURED} TDs in ${((performance.now() - t0) / 1000).toFixed(1)} s`,
      );
    }
    // Read your writes: the first query waits until every acknowledged TD is indexed.
    const t1 = performance.now();
    const bySchema = named("twins-by-schema", { schema: IIOT });
    const found = await count(gateway.url, bySchema);
    row("index caught up after the last ack", performance.now() - t1, "ms");
    if (found !== n / 2) throw new Error(`${label}: twins-by-schema found ${found} of ${n / 2}`);

    for (const [name, path] of [
      ["SPARQL by-schema", bySchema],
      ["SPARQL by-capability", named("twins-by-capability", { type: TEMPERATURE })],
    ] as const) {
      const { p50, p99 } = await latency(gateway.url, path, QUERY_SAMPLES);
      row(`${name} p50`, p50, "ms", floor);
      row(`${name} p99`, p99, "ms", floor);
    }
    const title = `Thing ${String(Math.floor(n / 3)).padStart(6, "0")}`;
    const jsonPath = `/search/jsonpath?query=${encodeURIComponent(`$[?@.title == '${title}'].id`)}`;
    row("JSONPath by title p50", (await latency(gateway.url, jsonPath, JSONPATH_SAMPLES)).p50, "ms", floor);

    // Restart: to listening (Things API ready), then to the first search answer (index loaded).
    await gateway.stop();
    const restarted = performance.now();
    gateway = await start();
    const answered = await count(gateway.url, bySchema);
    const searchable = performance.now() - restarted;
    if (answered !== n / 2) throw new Error(`${label}: after restart, twins-by-schema found ${answered}`);
    row("restart to ready", gateway.readyMs, "ms");
    row("restart to searchable", searchable, "ms");
  } finally {
    await gateway.stop().catch(() => {});
    rmSync(dataDir, { recursive: true, force: true });
  }
  return rows;
}

export const benchmark: Benchmark = {
  name: "directory",
  description: `Thing Description Directory over HTTP, ${SIZES.join(" and ")} TDs, embedded store vs Virtuoso`,
  async run() {
    const rows: BenchRow[] = [];
    const baselines = new Map<string, BenchRow>();
    const largest = Math.max(...SIZES);
    const tds = await generate(largest);
    const unavailable = virtuosoUnavailable();
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
            { DTC_SPARQL_QUERY_URL: virtuoso.queryUrl, DTC_SPARQL_UPDATE_URL: virtuoso.updateUrl },
            subset,
            baselines,
          )),
        );
      } finally {
        await virtuoso?.stop();
      }
    }
    return rows;
  },
};
