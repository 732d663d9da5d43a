import { type ChildProcess, spawn, spawnSync } from "node:child_process";
import {
  chmodSync,
  closeSync,
  copyFileSync,
  cpSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  openSync,
  readdirSync,
  readFileSync,
  realpathSync,
  rmSync,
  statSync,
  writeFileSync,
} from "node:fs";
import http from "node:http";
import { tmpdir } from "node:os";
import path from "node:path";
import { projectRoot } from "../src/paths.js";

/**
 * A Docker engine for one test file: by default a private dockerd (its own data root, exec root and
 * socket in a temp dir, no bridge, no iptables rules; containers run with `--network host`), never the
 * machine's own engine (/var/run/docker.sock). `DTC_TEST_DOCKER_HOST=unix:///path/docker.sock` names an
 * engine to use instead (not stopped by the tests). `DTC_TEST_DOCKER_STORAGE` picks the private
 * engine's storage driver (default vfs: works on any file system, inside containers too; each layer
 * and each container is a full copy, so images are built once per test file).
 */
export interface TestDockerEngine {
  /** The engine's API socket: `new Docker({ socketPath })`, `docker -H unix://<socketPath>`. */
  socketPath: string;
  /** True when the tests started this engine (and stop removes it with its images and containers). */
  own: boolean;
  /** The storage driver the engine reports (vfs, overlay2, ...). */
  storageDriver: string;
  /** Stops a private engine (its containers with it) and removes its temp dir; no-op for a given one. */
  stop(): Promise<void>;
}

const STARTUP_DEADLINE_MS = 60_000;
const STOP_DEADLINE_MS = 20_000;
const INSTALL_HINT = "Debian package docker.io; .ci/run installs it";
const DEFAULT_TAG = "dtc-twin:test";
const DOCKERFILE = path.join(projectRoot, "test", "twin-test-image.Dockerfile");

function onPath(name: string, extraDirs: string[] = []): string | undefined {
  const dirs = [...(process.env.PATH ?? "").split(path.delimiter), ...extraDirs];
  return dirs
    .filter((d) => d !== "")
    .map((d) => path.join(d, name))
    .find((p) => existsSync(p));
}

const dockerdBinary = () => onPath("dockerd", ["/usr/sbin", "/usr/bin", "/usr/local/bin"]);
const dockerCli = () => onPath("docker", ["/usr/bin", "/usr/local/bin"]);

/** The socket path of DTC_TEST_DOCKER_HOST, undefined when unset; throws when it is not unix://. */
function givenSocket(): string | undefined {
  const host = process.env.DTC_TEST_DOCKER_HOST?.trim();
  if (!host) return undefined;
  if (!host.startsWith("unix://")) {
    throw new Error(`DTC_TEST_DOCKER_HOST must be unix:///path/to/docker.sock (got ${JSON.stringify(host)})`);
  }
  return host.slice("unix://".length);
}

function isSocket(file: string): boolean {
  try {
    return statSync(file).isSocket();
  } catch {
    return false;
  }
}

/** Why the Docker tests cannot run here, or undefined when they can. In CI a missing engine is an error. */
export function dockerUnavailable(): string | undefined {
  const reasons: string[] = [];
  if (dockerCli() === undefined) reasons.push("the docker CLI is not installed");
  const given = givenSocket();
  if (given === undefined || !isSocket(given)) {
    if (given !== undefined) reasons.push(`DTC_TEST_DOCKER_HOST: no socket at ${given}`);
    if (dockerdBinary() === undefined) reasons.push("dockerd is not installed");
    const uid = process.getuid?.();
    if (uid !== 0) reasons.push(`a private dockerd needs root (running as uid ${uid})`);
  }
  if (reasons.length === 0) return undefined;
  const reason = `${reasons.join("; ")} (${INSTALL_HINT}; or set DTC_TEST_DOCKER_HOST=unix:///path/to/docker.sock)`;
  if (process.env.CI === "true") throw new Error(`CI: ${reason}`);
  return reason;
}

/** GET over the engine's socket; rejects on connection errors and after `timeoutMs`. */
function get(
  socketPath: string,
  urlPath: string,
  timeoutMs = 2000,
): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = http.get({ socketPath, path: urlPath, timeout: timeoutMs }, (res) => {
      let body = "";
      res.setEncoding("utf8");
      res.on("data", (d: string) => {
        body += d;
      });
      res.on("end", () => resolve({ status: res.statusCode ?? 0, body }));
      res.on("error", reject);
    });
    req.on("timeout", () => req.destroy(new Error(`no answer within ${timeoutMs} ms`)));
    req.on("error", reject);
  });
}

async function ping(socketPath: string): Promise<boolean> {
  try {
    const res = await get(socketPath, "/_ping");
    return res.status === 200 && res.body.trim() === "OK";
  } catch {
    return false;
  }
}

async function storageDriverOf(socketPath: string): Promise<string> {
  const res = await get(socketPath, "/info", 10_000);
  if (res.status !== 200) throw new Error(`GET /info: ${res.status} ${res.body}`);
  return String((JSON.parse(res.body) as { Driver?: unknown }).Driver ?? "unknown");
}

function fileTail(file: string, limit = 4096): string {
  try {
    return readFileSync(file, "utf8").slice(-limit);
  } catch {
    return "(no log)";
  }
}

async function stopProcess(proc: ChildProcess, deadlineMs: number): Promise<void> {
  if (proc.exitCode !== null || proc.signalCode !== null) return;
  const exited = new Promise<void>((resolve) => proc.once("exit", () => resolve()));
  proc.kill("SIGTERM");
  let timer: NodeJS.Timeout | undefined;
  const late = await Promise.race([
    exited.then(() => false),
    new Promise<boolean>((resolve) => {
      timer = setTimeout(() => resolve(true), deadlineMs);
    }),
  ]);
  clearTimeout(timer);
  if (late) {
    proc.kill("SIGKILL");
    await exited;
  }
}

/** Mount points at or under `dir` (dockerd bind-mounts its data root; a killed one may leave it). */
export function mountsUnder(dir: string): string[] {
  let table: string;
  try {
    table = readFileSync("/proc/self/mountinfo", "utf8");
  } catch {
    return [];
  }
  return table
    .split("\n")
    .map((line) => line.split(" ")[4])
    .filter((p): p is string => p !== undefined)
    .map((p) => p.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(Number.parseInt(o, 8))))
    .filter((p) => p === dir || p.startsWith(`${dir}/`));
}

/** Removes a private engine's dir: leftover mounts first (deepest first, lazily), then the files. */
export function removeEngineDir(dir: string): void {
  for (const mount of mountsUnder(dir).sort((a, b) => b.length - a.length)) {
    spawnSync("umount", ["-l", mount], { stdio: "ignore" });
  }
  rmSync(dir, { recursive: true, force: true, maxRetries: 3 });
}

/**
 * The engine named by DTC_TEST_DOCKER_HOST when it answers, else a private dockerd started here
 * (root needed), ready when `/_ping` answers.
 */
export async function startDockerEngine(): Promise<TestDockerEngine> {
  const given = givenSocket();
  if (given !== undefined && (await ping(given))) {
    return {
      socketPath: given,
      own: false,
      storageDriver: await storageDriverOf(given),
      stop: async () => {},
    };
  }
  const binary = dockerdBinary();
  if (binary === undefined) throw new Error(`dockerd is not installed (${INSTALL_HINT})`);
  if (process.getuid?.() !== 0) throw new Error("a private dockerd needs root");

  // Short: the socket path must fit a sockaddr_un (107 bytes), and containerd's sockets live under exec/.
  const dir = mkdtempSync(path.join(tmpdir(), "dtc-dockerd-"));
  const socketPath = path.join(dir, "docker.sock");
  const log = path.join(dir, "dockerd.log");
  const config = path.join(dir, "daemon.json");
  // Its own (empty) config file: the machine's /etc/docker/daemon.json may set conflicting options.
  writeFileSync(config, "{}\n");
  const storage = process.env.DTC_TEST_DOCKER_STORAGE?.trim() || "vfs";
  const args = [
    `--config-file=${config}`,
    `--storage-driver=${storage}`,
    "--iptables=false",
    "--ip6tables=false",
    "--bridge=none",
    `--data-root=${path.join(dir, "data")}`,
    `--exec-root=${path.join(dir, "exec")}`,
    `--pidfile=${path.join(dir, "dockerd.pid")}`,
    `--host=unix://${socketPath}`,
    // Containers still running at stop get this long before SIGKILL (within STOP_DEADLINE_MS).
    "--shutdown-timeout=5",
    // dockerd 20.10 starts its own containerd, unless the machine runs one (/run/containerd/
    // containerd.sock): then it uses that one, and namespaces of its own keep its containers apart
    // from the machine's engine ("moby").
    `--containerd-namespace=${path.basename(dir)}`,
    `--containerd-plugins-namespace=${path.basename(dir)}-plugins`,
  ];
  const logFd = openSync(log, "a");
  const started = Date.now();
  const proc = spawn(binary, args, { cwd: dir, stdio: ["ignore", logFd, logFd] });
  closeSync(logFd);
  proc.once("error", () => {}); // seen as exitCode/signalCode below
  // Best effort if the test process ends without calling stop (a crash, a killed worker).
  const onExit = () => {
    if (proc.exitCode === null && proc.signalCode === null) proc.kill("SIGTERM");
  };
  process.once("exit", onExit);

  const fail = async (why: string): Promise<never> => {
    await stopProcess(proc, STOP_DEADLINE_MS);
    process.removeListener("exit", onExit);
    const tail = fileTail(log);
    removeEngineDir(dir);
    throw new Error(`dockerd did not start: ${why}\n--- dockerd log (tail) ---\n${tail}`);
  };

  while (!(await ping(socketPath))) {
    if (proc.exitCode !== null || proc.signalCode !== null) {
      await fail(`it exited (${proc.exitCode ?? proc.signalCode}) after ${Date.now() - started} ms`);
    }
    if (Date.now() - started > STARTUP_DEADLINE_MS) {
      await fail(`/_ping did not answer within ${STARTUP_DEADLINE_MS} ms`);
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  let storageDriver: string;
  try {
    storageDriver = await storageDriverOf(socketPath);
  } catch (err) {
    return fail(`GET /info failed: ${(err as Error).message}`);
  }

  let stopping: Promise<void> | undefined;
  return {
    socketPath,
    own: true,
    storageDriver,
    stop: () => {
      stopping ??= stopProcess(proc, STOP_DEADLINE_MS).finally(() => {
        process.removeListener("exit", onExit);
        removeEngineDir(dir);
      });
      return stopping;
    },
  };
}

/** Runs a command to completion; rejects with the tail of its output when it fails. */
function run(
  command: string,
  args: string[],
  options: { cwd?: string; env?: NodeJS.ProcessEnv },
): Promise<void> {
  return new Promise((resolve, reject) => {
    const proc = spawn(command, args, { ...options, stdio: ["ignore", "pipe", "pipe"] });
    let output = "";
    const keep = (d: Buffer) => {
      output = (output + d.toString("utf8")).slice(-8192);
    };
    proc.stdout.on("data", keep);
    proc.stderr.on("data", keep);
    proc.once("error", (err) => reject(new Error(`${command}: ${err.message}`)));
    proc.once("close", (code, signal) => {
      if (code === 0) resolve();
      else reject(new Error(`${command} ${args.join(" ")} failed (${code ?? signal}):\n${output.trim()}`));
    });
  });
}

/** Shared libraries `ldd` lists for `file` (absolute paths, the dynamic loader included); [] if none. */
function sharedLibraries(file: string): string[] {
  const out = spawnSync("ldd", [file], { encoding: "utf8" });
  if (out.status !== 0) return []; // "not a dynamic executable" (e.g. a prebuilt for another platform)
  const libs: string[] = [];
  for (const line of out.stdout.split("\n")) {
    const match = /=>\s*(\/\S+)/.exec(line) ?? /^\s*(\/\S+)\s+\(/.exec(line);
    if (match?.[1] !== undefined && existsSync(match[1])) libs.push(match[1]);
  }
  return libs;
}

/** Files under `dir` whose names end with `suffix` (symbolic links not followed). */
function filesEndingWith(dir: string, suffix: string): string[] {
  const found: string[] = [];
  for (const entry of readdirSync(dir, { withFileTypes: true, recursive: true })) {
    if (entry.isFile() && entry.name.endsWith(suffix)) found.push(path.join(entry.parentPath, entry.name));
  }
  return found;
}

/** Files no process ever loads: type declarations, source maps, markdown, native build leftovers. */
const UNUSED_FILE = /(\.d\.[cm]?ts|\.map|\.md|\.markdown|\.[oa])$/i;
/** Directories of the same: node-gyp's intermediates, better-sqlite3's SQLite and C++ sources. */
const UNUSED_DIR = /\/(build\/Release\/(obj|obj\.target|\.deps)|better-sqlite3\/(deps|src))$/;

/**
 * Removes from the staged app what only compilers and editors read (~35% of the bytes, ~45% of the
 * files of node_modules): with vfs every file is copied several times per build and per container.
 */
function stripForRuntime(dir: string): void {
  for (const entry of readdirSync(dir, { withFileTypes: true, recursive: true })) {
    const full = path.join(entry.parentPath, entry.name);
    if (entry.isDirectory() && UNUSED_DIR.test(full)) rmSync(full, { recursive: true, force: true });
    else if (entry.isFile() && UNUSED_FILE.test(entry.name)) rmSync(full, { force: true });
  }
}

/**
 * Builds the twin test image (test/twin-test-image.Dockerfile) into `engine` and returns its tag
 * (default `dtc-twin:test`): FROM scratch, the host's node and its shared libraries, the built project
 * under /app (`dist/` as it is now: run `npm run build` first) with production node_modules, user
 * 1000:1000, `ENTRYPOINT ["/usr/local/bin/node"]`, `CMD ["dist/src/twin-main.js"]`. Offline: the
 * legacy builder (DOCKER_BUILDKIT=0) of the docker CLI, no base image, no registry. About 20-40 s.
 */
export async function buildTwinTestImage(
  engine: TestDockerEngine,
  options: { tag?: string } = {},
): Promise<string> {
  const tag = options.tag ?? DEFAULT_TAG;
  const cli = dockerCli();
  if (cli === undefined) throw new Error(`the docker CLI is not installed (${INSTALL_HINT})`);
  if (!existsSync(path.join(projectRoot, "dist", "src"))) {
    throw new Error(`${path.join(projectRoot, "dist")} is missing: run npm run build first`);
  }
  const staging = mkdtempSync(path.join(tmpdir(), "dtc-twin-image-"));
  try {
    const context = path.join(staging, "context");
    const rootfs = path.join(context, "rootfs");
    const app = path.join(rootfs, "app");
    mkdirSync(app, { recursive: true });

    // The project, then node_modules without devDependencies (offline: prune only deletes).
    for (const name of [
      "package.json",
      "package-lock.json",
      "dist",
      "thing-models",
      "ontology",
      "directory",
    ]) {
      const from = path.join(projectRoot, name);
      if (existsSync(from)) cpSync(from, path.join(app, name), { recursive: true, verbatimSymlinks: true });
    }
    cpSync(path.join(projectRoot, "node_modules"), path.join(app, "node_modules"), {
      recursive: true,
      verbatimSymlinks: true,
    });
    await run("npm", ["prune", "--omit=dev", "--ignore-scripts", "--offline", "--no-audit", "--no-fund"], {
      cwd: app,
      env: { ...process.env, npm_config_update_notifier: "false" },
    });
    stripForRuntime(app);
    await run("chmod", ["-R", "a+rX", app], {});

    // node and every shared library it and the native addons load, at the same paths.
    const node = realpathSync(process.execPath);
    const binDir = path.join(rootfs, "usr", "local", "bin");
    mkdirSync(binDir, { recursive: true });
    copyFileSync(node, path.join(binDir, "node"));
    chmodSync(path.join(binDir, "node"), 0o755);
    const libraries = new Set(sharedLibraries(node));
    for (const addon of filesEndingWith(path.join(app, "node_modules"), ".node")) {
      for (const lib of sharedLibraries(addon)) libraries.add(lib);
    }
    for (const lib of libraries) {
      const to = path.join(rootfs, lib);
      mkdirSync(path.dirname(to), { recursive: true });
      copyFileSync(realpathSync(lib), to);
      chmodSync(to, 0o755);
    }
    const tmp = path.join(rootfs, "tmp");
    mkdirSync(tmp);
    chmodSync(tmp, 0o1777);
    copyFileSync(DOCKERFILE, path.join(context, "Dockerfile"));

    const env: NodeJS.ProcessEnv = {
      ...process.env,
      DOCKER_BUILDKIT: "0",
      // Not the user's ~/.docker (credential helpers, contexts): nothing is pulled.
      DOCKER_CONFIG: path.join(staging, "docker-config"),
      DOCKER_CLI_HINTS: "false",
    };
    for (const name of ["DOCKER_HOST", "DOCKER_CONTEXT", "DOCKER_TLS_VERIFY", "DOCKER_CERT_PATH"])
      delete env[name];
    await run(
      cli,
      [
        "-H",
        `unix://${engine.socketPath}`,
        "build",
        "--build-arg",
        `NODE_VERSION=${process.version}`,
        "-t",
        tag,
        context,
      ],
      { env },
    );
    return tag;
  } finally {
    rmSync(staging, { recursive: true, force: true });
  }
}
