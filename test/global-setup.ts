/**
 * Global setup of a vitest run: the run gets a fresh temp root (TMPDIR for the workers, so for every
 * `tmpdir()` of the tests and for what they spawn), and its teardown fails the run when a test left
 * a file there or a process running from it; then it kills those and removes the root. Other runs on
 * the machine have roots of their own, so what is found is this run's.
 * DTC_KEEP_TEMP=1 (for debugging) keeps the root with what was left in it and only warns; a leftover
 * process fails the run all the same.
 */
import { spawnSync } from "node:child_process";
import { chmodSync, mkdtempSync, readdirSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { mountsUnder, removeEngineDir } from "./docker-engine.js";

/**
 * Caches of the tools a run uses, not a test's leftovers (removed with the root all the same): tsx's
 * compile cache, `tsx-<uid>`, of the directory's worker threads when they run from the sources.
 */
const TOOL_CACHES = [/^tsx-\d+$/];

interface RunProcess {
  pid: number;
  command: string;
}

export default function setup(): () => void {
  // Short: dockerd's sockets under a test's dtc-dockerd-* dir must fit a sockaddr_un (107 bytes).
  const root = mkdtempSync(join(tmpdir(), "dtc-run-"));
  // Open as /tmp is: a broker or engine that drops root to its own user must reach its files here.
  chmodSync(root, 0o1777);
  // vitest forks its workers with process.env as it is now; os.tmpdir() reads TMPDIR on each call.
  process.env.TMPDIR = root;
  return () => teardown(root);
}

function teardown(root: string): void {
  const processes = processesUsing(root);
  for (const { pid } of processes) {
    try {
      process.kill(pid, "SIGKILL");
    } catch {
      // it ended meanwhile
    }
  }
  const entries = readdirSync(root).filter((entry) => !TOOL_CACHES.some((cache) => cache.test(entry)));
  const mounts = mountsUnder(root);
  const keep = process.env.DTC_KEEP_TEMP === "1";
  if (!keep) {
    // Leftover mounts (a killed dockerd's) are unmounted first, or removing would empty what they mount.
    removeEngineDir(root);
  }
  const problems = [
    ...processes.map((p) => `process ${p.pid} still running (killed now): ${p.command}`),
    ...entries.map((entry) => `${join(root, entry)} left behind`),
    ...mounts.map((mount) => `${mount} still mounted${keep ? "" : " (unmounted now)"}`),
  ];
  if (problems.length === 0) return;
  const report = `the tests left ${problems.length} thing(s) behind:\n  ${problems.join("\n  ")}`;
  if (keep && processes.length === 0) {
    console.warn(`${report}\n(DTC_KEEP_TEMP=1: kept in ${root})`);
    return;
  }
  throw new Error(report);
}

/**
 * Processes other than vitest's own whose command line or initial environment names `root`: a
 * test's broker, store or engine runs on files there, and a node child gets TMPDIR or a data dir
 * there. vitest's workers (and the tools they run from node_modules) are not the tests' leftovers.
 */
function processesUsing(root: string): RunProcess[] {
  const found: RunProcess[] = [];
  const read = (file: string) => {
    try {
      return readFileSync(file, "utf8").replaceAll("\0", " ").trim();
    } catch {
      return ""; // ended meanwhile, or not ours to read
    }
  };
  let pids: string[];
  try {
    pids = readdirSync("/proc").filter((name) => /^\d+$/.test(name));
  } catch {
    return processesNamingInPs(root); // no /proc (macOS): command lines only
  }
  for (const pid of pids) {
    if (Number(pid) === process.pid) continue;
    const command = read(`/proc/${pid}/cmdline`);
    if (command === "" || command.includes("/node_modules/")) continue;
    if (command.includes(root) || read(`/proc/${pid}/environ`).includes(root)) {
      found.push({ pid: Number(pid), command });
    }
  }
  return found;
}

function processesNamingInPs(root: string): RunProcess[] {
  const ps = spawnSync("ps", ["-axww", "-o", "pid=,command="], { encoding: "utf8" });
  return (ps.stdout ?? "")
    .split("\n")
    .map((line) => line.trim().match(/^(\d+)\s+(.*)$/))
    .filter((m): m is RegExpMatchArray => m !== null)
    .map((m) => ({ pid: Number(m[1]), command: m[2] ?? "" }))
    .filter(
      (p) => p.pid !== process.pid && p.command.includes(root) && !p.command.includes("/node_modules/"),
    );
}
