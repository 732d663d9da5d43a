import type { ChildProcess } from "node:child_process";
import { once } from "node:events";
import { mkdirSync, writeFileSync } from "node:fs";
import os from "node:os";
import { join } from "node:path";
import { Bench } from "tinybench";
import { projectRoot } from "../src/paths.js";

/**
 * One measured case; `baseline` names the case of the same run it is compared with. A case that is
 * not a throughput (a latency percentile, a count, a size) gives `value` and `unit` instead, with
 * NaN for the throughput fields.
 */
export interface BenchRow {
  case: string;
  opsPerSec: number;
  /** Relative margin of error of the throughput, percent. */
  rme: number;
  meanMs: number;
  p99Ms: number;
  baseline?: string;
  /** opsPerSec / baseline's opsPerSec; for a row with a value, value / baseline's value. */
  ratio?: number;
  value?: number;
  unit?: string;
}

/** A non-throughput row, related to `baseline` (a row of the same run) when given. */
export function valueRow(name: string, value: number, unit: string, baseline?: BenchRow): BenchRow {
  const nan = Number.NaN;
  const row: BenchRow = { case: name, opsPerSec: nan, rme: nan, meanMs: nan, p99Ms: nan, value, unit };
  if (baseline?.value !== undefined) {
    row.baseline = baseline.case;
    row.ratio = value / baseline.value;
  }
  return row;
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
  Number.isNaN(n)
    ? "-"
    : n.toLocaleString("en-US", { maximumFractionDigits: digits, minimumFractionDigits: digits });

/** Three significant digits or so, without exponent: values range from 0.05 ms to 10,000 twins. */
const fmtValue = (r: BenchRow) =>
  r.value === undefined
    ? "-"
    : `${fmt(r.value, Math.abs(r.value) >= 100 || Number.isInteger(r.value) ? 0 : Math.abs(r.value) >= 10 ? 1 : 3)} ${r.unit ?? ""}`.trim();

export function printTable(title: string, rows: BenchRow[]): void {
  // The value column only when a row has one, so throughput-only tables print as they always did.
  const values = rows.some((r) => r.value !== undefined);
  const referenced = new Set(rows.map((r) => r.baseline));
  const header = ["case", "ops/s", "±%", "mean ms", "p99 ms", ...(values ? ["value"] : []), "vs baseline"];
  const body = rows.map((r) => [
    r.case,
    fmt(r.opsPerSec),
    fmt(r.rme, 1),
    fmt(r.meanMs, 3),
    fmt(r.p99Ms, 3),
    ...(values ? [fmtValue(r)] : []),
    r.baseline === undefined
      ? referenced.has(r.case)
        ? "(baseline)"
        : "-"
      : r.ratio !== undefined && Number.isFinite(r.ratio)
        ? `${fmt(r.ratio, 2)}x ${r.baseline}`
        : `n/a vs ${r.baseline}`,
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

/** The next message of `type` from a forked bench child; rejects if the child exits first. */
export function nextMessage<T extends { type: string }>(child: ChildProcess, type: string): Promise<T> {
  return new Promise((resolve, reject) => {
    const onMessage = (m: { type?: string }) => {
      if (m?.type !== type) return;
      cleanup();
      resolve(m as T);
    };
    const onExit = (code: number | null) => {
      cleanup();
      reject(new Error(`bench child exited (${code}) before sending "${type}"`));
    };
    const cleanup = () => {
      child.off("message", onMessage);
      child.off("exit", onExit);
    };
    child.on("message", onMessage);
    child.once("exit", onExit);
  });
}

/** Waits for a child to exit, killing it if it has not within `timeoutMs`. */
export async function exited(child: ChildProcess, timeoutMs = 30_000): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exit = once(child, "exit");
  const timer = setTimeout(() => child.kill(), timeoutMs);
  await exit;
  clearTimeout(timer);
}
