import { mkdirSync, writeFileSync } from "node:fs";
import os from "node:os";
import { join } from "node:path";
import { Bench } from "tinybench";
import { projectRoot } from "../src/paths.js";

/** One measured case; `baseline` names the case of the same run it is compared with. */
export interface BenchRow {
  case: string;
  opsPerSec: number;
  /** Relative margin of error of the throughput, percent. */
  rme: number;
  meanMs: number;
  p99Ms: number;
  baseline?: string;
  /** opsPerSec / baseline's opsPerSec. */
  ratio?: number;
}

export interface Benchmark {
  name: string;
  description: string;
  run(): Promise<BenchRow[]>;
}

export interface Case {
  name: string;
  fn: () => unknown | Promise<unknown>;
  baseline?: string;
}

/** Measures cases with tinybench (warm-up, then `timeMs` of samples each) and relates them to baselines. */
export async function measure(cases: Case[], timeMs = 500): Promise<BenchRow[]> {
  const bench = new Bench({ time: timeMs, warmup: true });
  for (const c of cases) bench.add(c.name, c.fn);
  await bench.run();
  const rows = new Map<string, BenchRow>();
  for (const task of bench.tasks) {
    const r = task.result;
    if (r.state !== "completed")
      throw new Error(
        `benchmark case "${task.name}" ${r.state}: ${String((r as { error?: unknown }).error ?? "")}`,
      );
    rows.set(task.name, {
      case: task.name,
      opsPerSec: r.throughput.mean,
      rme: r.throughput.rme,
      meanMs: r.latency.mean,
      p99Ms: r.latency.p99,
    });
  }
  for (const c of cases) {
    const row = rows.get(c.name) as BenchRow;
    const base = c.baseline === undefined ? undefined : rows.get(c.baseline);
    if (base) Object.assign(row, { baseline: base.case, ratio: row.opsPerSec / base.opsPerSec });
  }
  return [...rows.values()];
}

export function machine() {
  const cpus = os.cpus();
  return {
    cpu: cpus[0]?.model ?? "unknown",
    cores: cpus.length,
    memoryGiB: Math.round(os.totalmem() / 2 ** 30),
    node: process.version,
    platform: `${os.platform()} ${os.release()}`,
  };
}

const fmt = (n: number, digits = 0) =>
  n.toLocaleString("en-US", { maximumFractionDigits: digits, minimumFractionDigits: digits });

export function printTable(title: string, rows: BenchRow[]): void {
  const header = ["case", "ops/s", "±%", "mean ms", "p99 ms", "vs baseline"];
  const body = rows.map((r) => [
    r.case,
    fmt(r.opsPerSec),
    fmt(r.rme, 1),
    fmt(r.meanMs, 3),
    fmt(r.p99Ms, 3),
    r.ratio === undefined ? "(baseline)" : `${fmt(r.ratio, 2)}x ${r.baseline}`,
  ]);
  const widths = header.map((h, i) => Math.max(h.length, ...body.map((row) => (row[i] as string).length)));
  const line = (cells: string[]) =>
    cells.map((c, i) => (i === 0 ? c.padEnd(widths[i] ?? 0) : c.padStart(widths[i] ?? 0))).join("  ");
  process.stdout.write(`\n${title}\n${line(header)}\n${widths.map((w) => "-".repeat(w)).join("  ")}\n`);
  for (const row of body) process.stdout.write(`${line(row)}\n`);
}

/** Writes bench/results/<name>-<timestamp>.json and returns its path. */
export function writeResult(name: string, rows: BenchRow[]): string {
  const dir = join(projectRoot, "bench", "results");
  mkdirSync(dir, { recursive: true });
  const file = join(dir, `${name}-${new Date().toISOString().replace(/[:.]/g, "-")}.json`);
  writeFileSync(
    file,
    `${JSON.stringify({ benchmark: name, date: new Date().toISOString(), machine: machine(), rows }, null, 2)}\n`,
  );
  return file;
}
