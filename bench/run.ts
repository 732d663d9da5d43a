import { readdirSync } from "node:fs";
import { dirname } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import { type Benchmark, machine, printTable, writeResult } from "./harness.js";

/** `npm run bench [-- name ...]`: runs the benchmarks of bench/*.bench.ts (all, or those named). */
async function main(): Promise<void> {
  const here = dirname(fileURLToPath(import.meta.url));
  const available = new Map<string, Benchmark>();
  for (const file of readdirSync(here)
    .filter((f) => f.endsWith(".bench.js"))
    .sort()) {
    const { benchmark } = (await import(pathToFileURL(`${here}/${file}`).href)) as { benchmark: Benchmark };
    available.set(benchmark.name, benchmark);
  }
  const wanted = process.argv.slice(2);
  const unknown = wanted.filter((w) => !available.has(w));
  if (unknown.length > 0) {
    process.stderr.write(
      `unknown benchmark(s): ${unknown.join(", ")}; available: ${[...available.keys()].join(", ")}\n`,
    );
    process.exit(2);
  }
  const m = machine();
  process.stdout.write(
    `machine: ${m.cpu}, ${m.cores} cores, ${m.memoryGiB} GiB, Node ${m.node}, ${m.platform}\n`,
  );
  for (const name of wanted.length > 0 ? wanted : [...available.keys()]) {
    const benchmark = available.get(name) as Benchmark;
    const rows = await benchmark.run();
    printTable(`${benchmark.name}: ${benchmark.description}`, rows);
    process.stdout.write(`results: ${writeResult(benchmark.name, rows)}\n`);
  }
}

main().catch((err) => {
  process.stderr.write(`${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
  process.exit(1);
});
