import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Pool } from "undici";
import { loadConfig } from "../src/config.js";
import { type Gateway, startGateway } from "../src/gateway.js";
import { createLogger } from "../src/logger.js";
import { type Benchmark, type BenchRow, valueRow } from "./harness.js";

/**
 * Declarative apply of 1,000 in-process instances (one POST /api/apply of a JSON manifest), vs the
 * same 1,000 through POST /api/instances by 16 clients, each on a fresh gateway in this process:
 * time until every instance runs (GET /api/instances shows none NotRunning), then a second apply
 * of the same manifest (all unchanged) and a dry run. No PTs publish: twins run, not Entangled.
 */

const INSTANCES = 1_000;
const CLIENTS = 16;
const log = (line: string) => process.stdout.write(`  apply: ${line}\n`);

const startOf = (i: number) => ({
  package: "iiot-device",
  node: "local",
  configuration: { DEVICE_ID: `dev-${i}` },
});
const manifest = JSON.stringify(
  Array.from({ length: INSTANCES }, (_, i) => ({
    apiVersion: "dtc/v1",
    kind: "Instance",
    metadata: { name: `twin-${i}`, labels: { "dtc.apply/manifest": "bench" } },
    spec: startOf(i),
  })),
);

async function request(pool: Pool, method: "GET" | "POST", path: string, body?: string): Promise<unknown> {
  const res = await pool.request({
    path,
    method,
    headers: body === undefined ? {} : { "Content-Type": "application/json" },
    body,
  });
  const text = await res.body.text();
  if (res.statusCode >= 300) throw new Error(`${method} ${path}: ${res.statusCode} ${text.slice(0, 300)}`);
  return JSON.parse(text);
}

async function allRunning(pool: Pool): Promise<void> {
  for (;;) {
    const instances = (await request(pool, "GET", "/api/instances")) as { lifecycle: string }[];
    if (instances.length === INSTANCES && instances.every((i) => i.lifecycle !== "NotRunning")) return;
    await new Promise((resolve) => setImmediate(resolve));
  }
}

async function onGateway<T>(run: (gateway: Gateway, pool: Pool) => Promise<T>): Promise<T> {
  const dataDir = mkdtempSync(join(tmpdir(), "dtc-bench-apply-"));
  try {
    const gateway = await startGateway(
      loadConfig({
        DTC_PORT: "0",
        DTC_MQTT_PORT: "0",
        DTC_DATA_DIR: dataDir,
        DTC_LOG_LEVEL: "silent",
        DTC_AUTH: "off",
        DTC_MAX_BODY_BYTES: String(16 * 1024 * 1024),
      }),
      createLogger("silent"),
    );
    const pool = new Pool(gateway.url, { connections: CLIENTS });
    try {
      return await run(gateway, pool);
    } finally {
      await pool.close();
      await gateway.close();
    }
  } finally {
    rmSync(dataDir, { recursive: true, force: true });
  }
}

export const benchmark: Benchmark = {
  name: "apply",
  description: "Declarative apply of 1,000 instances vs 1,000 POST /api/instances (16 clients)",
  async run() {
    const rows: BenchRow[] = [];
    const plain = await onGateway(async (_, pool) => {
      const started = performance.now();
      let next = 0;
      await Promise.all(
        Array.from({ length: CLIENTS }, async () => {
          while (next < INSTANCES) {
            const i = next++;
            await request(pool, "POST", "/api/instances", JSON.stringify({ ...startOf(i), id: `twin-${i}` }));
          }
        }),
      );
      await allRunning(pool);
      return performance.now() - started;
    });
    const base = valueRow(
      `${INSTANCES} x POST /api/instances (${CLIENTS} clients) -> all running`,
      plain,
      "ms",
    );
    rows.push(base);
    await onGateway(async (_, pool) => {
      const started = performance.now();
      const first = (await request(pool, "POST", "/api/apply", manifest)) as { changed: boolean };
      await allRunning(pool);
      const applied = performance.now() - started;
      if (!first.changed) throw new Error("the first apply changed nothing");
      rows.push(valueRow(`POST /api/apply of ${INSTANCES} instances -> all running`, applied, "ms", base));
      const t1 = performance.now();
      const second = (await request(pool, "POST", "/api/apply", manifest)) as { changed: boolean };
      const again = performance.now() - t1;
      if (second.changed) throw new Error("the second apply changed something");
      rows.push(valueRow(`second apply of the same ${INSTANCES} (all unchanged)`, again, "ms", base));
      const t2 = performance.now();
      await request(pool, "POST", "/api/apply?dryRun=true", manifest);
      rows.push(valueRow(`dry run of the same ${INSTANCES}`, performance.now() - t2, "ms", base));
      log(
        `plain ${plain.toFixed(0)} ms, apply ${applied.toFixed(0)} ms, second apply ${again.toFixed(0)} ms`,
      );
    });
    return rows;
  },
};
