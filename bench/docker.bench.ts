import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import Docker from "dockerode";
import { loadConfig } from "../src/config.js";
import { type Gateway, startGateway } from "../src/gateway.js";
import { createLogger } from "../src/logger.js";
import { IiotDeviceSimulator } from "../src/simulator/index.js";
import { buildTwinTestImage, dockerUnavailable, startDockerEngine } from "../test/docker-engine.js";
import { type Benchmark, type BenchRow, valueRow } from "./harness.js";

/**
 * Twins as containers, each figure beside a baseline of the same run: (1) POST /api/instances ->
 * Entangled of an IIoT twin in a container on a Docker node, vs the same twin in-process, median
 * of 10 each (PT already publishing at 20 Hz); the engine's own floor, creating and starting a
 * container of the same image that exits at once; (2) memory of a twin container (the engine's
 * cgroup figure: usage less inactive file cache, as `docker stats`) vs an idle Node container of
 * the same image, and an in-process twin's share of the gateway's RSS (100 twins started together).
 *
 * The engine is a private dockerd (vfs storage, as in the tests; DTC_TEST_DOCKER_STORAGE=overlay2
 * for the copy-on-write driver real hosts use) with host networking; the image is the test image
 * built FROM scratch from this machine's Node. About 3 minutes with vfs.
 */

const log = (line: string) => process.stdout.write(`  docker: ${line}\n`);
const RUNS = 10;
const MEMORY_TWINS = 5;
const IN_PROCESS_TWINS = 100;
const FIDELITY = { expectedUpdateRate: 20, desiredTimeliness: 50, odteWindow: 2 };

const median = (values: number[]) => {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2
    ? (sorted[mid] as number)
    : ((sorted[mid - 1] as number) + (sorted[mid] as number)) / 2;
};

async function api(
  gateway: Gateway,
  method: string,
  path: string,
  body?: unknown,
): Promise<Record<string, unknown>> {
  const res = await fetch(`${gateway.url}${path}`, {
    method,
    headers: body === undefined ? {} : { "Content-Type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await res.text();
  if (!res.ok) throw new Error(`${method} ${path}: ${res.status} ${text.slice(0, 500)}`);
  return text === "" ? {} : (JSON.parse(text) as Record<string, unknown>);
}

/** Polls until the instance is Entangled (10 ms steps: small beside seconds of container start). */
async function entangled(gateway: Gateway, id: string, timeoutMs = 120_000): Promise<void> {
  const until = Date.now() + timeoutMs;
  while (Date.now() < until) {
    if ((await api(gateway, "GET", `/api/instances/${id}`)).lifecycle === "Entangled") return;
    await new Promise((r) => setTimeout(r, 10));
  }
  throw new Error(`${id} not Entangled within ${timeoutMs} ms`);
}

/** Milliseconds from POST /api/instances to 201 and to Entangled, for one twin; removed after. */
async function startOnce(gateway: Gateway, pkg: string, node: string, id: string) {
  const sim = new IiotDeviceSimulator({ id, brokerUrl: gateway.brokerUrl, rate: 20 });
  await sim.start();
  try {
    const t0 = performance.now();
    await api(gateway, "POST", "/api/instances", {
      package: pkg,
      node,
      id,
      configuration: { DEVICE_ID: id },
      fidelity: FIDELITY,
    });
    const created = performance.now() - t0;
    await entangled(gateway, id);
    const toEntangled = performance.now() - t0;
    await api(gateway, "DELETE", `/api/instances/${id}`);
    return { created, toEntangled };
  } finally {
    await sim.stop();
  }
}

/** Bytes the engine counts for a container (cgroup usage less the page cache, as `docker stats`). */
async function containerMemory(docker: Docker, id: string): Promise<number> {
  const stats = (await docker.getContainer(id).stats({ stream: false })) as unknown as {
    memory_stats: { usage?: number; stats?: Record<string, number> };
  };
  const { usage = Number.NaN, stats: detail = {} } = stats.memory_stats;
  return usage - (detail.inactive_file ?? detail.total_inactive_file ?? detail.cache ?? 0);
}

async function run(): Promise<BenchRow[]> {
  const skip = dockerUnavailable();
  if (skip) {
    log(`skipped: ${skip}`);
    return [];
  }
  const engine = await startDockerEngine();
  const docker = new Docker({ socketPath: engine.socketPath });
  const dataDir = mkdtempSync(join(tmpdir(), "dtc-bench-docker-"));
  let gateway: Gateway | undefined;
  try {
    log(`engine: ${engine.own ? "private dockerd" : "given"}, storage ${engine.storageDriver}`);
    const built = performance.now();
    const image = await buildTwinTestImage(engine);
    log(`test image built in ${((performance.now() - built) / 1000).toFixed(1)} s`);
    gateway = await startGateway(
      loadConfig({ DTC_PORT: "0", DTC_MQTT_PORT: "0", DTC_DATA_DIR: dataDir, DTC_AUTH: "off" }),
      createLogger("silent"),
    );
    await api(gateway, "POST", "/api/nodes", {
      id: "docker-1",
      platform: "docker",
      tier: "edge",
      capabilities: { cpu: 64, memory: 65536 },
      endpoint: { socketPath: engine.socketPath, network: "host" },
    });
    await api(gateway, "POST", "/api/packages", {
      id: "iiot-docker",
      schema: "iiot-device",
      platform: "docker",
      artefact: { image },
    });

    // (1) Start -> Entangled, alternating platforms so that both see the same machine.
    const inProcess: number[] = [];
    const container: number[] = [];
    const created: number[] = [];
    for (let i = 0; i < RUNS; i++) {
      inProcess.push((await startOnce(gateway, "iiot-device", "local", `bench-p${i}`)).toEntangled);
      const once = await startOnce(gateway, "iiot-docker", "docker-1", `bench-d${i}`);
      container.push(once.toEntangled);
      created.push(once.created);
      log(
        `run ${i + 1}/${RUNS}: in-process ${inProcess[i]?.toFixed(0)} ms, docker ${once.toEntangled.toFixed(0)} ms`,
      );
    }
    // The engine's floor: create, start and wait for a container of the image that exits at once.
    const floor: number[] = [];
    for (let i = 0; i < RUNS; i++) {
      const t0 = performance.now();
      const c = await docker.createContainer({
        Image: image,
        Cmd: ["-e", "0"],
        HostConfig: { NetworkMode: "host" },
      });
      await c.start();
      await c.wait();
      floor.push(performance.now() - t0);
      await c.remove({ force: true });
    }

    // (2) Memory: in-process twins' share of the gateway's RSS (100 of them, for a figure above the noise).
    const rssBefore = process.memoryUsage().rss;
    const inProcessTwins: IiotDeviceSimulator[] = [];
    for (let i = 0; i < IN_PROCESS_TWINS; i++) {
      const id = `bench-i${i}`;
      const sim = new IiotDeviceSimulator({ id, brokerUrl: gateway.brokerUrl, rate: 20 });
      await sim.start();
      inProcessTwins.push(sim);
      await api(gateway, "POST", "/api/instances", {
        package: "iiot-device",
        node: "local",
        id,
        configuration: { DEVICE_ID: id },
        fidelity: FIDELITY,
      });
    }
    await new Promise((r) => setTimeout(r, 5000));
    const perInProcessTwin = (process.memoryUsage().rss - rssBefore) / IN_PROCESS_TWINS;
    for (let i = 0; i < IN_PROCESS_TWINS; i++) await api(gateway, "DELETE", `/api/instances/bench-i${i}`);
    await Promise.all(inProcessTwins.map((s) => s.stop()));

    // Twin containers Entangled and settled, vs idle Node containers of the image.
    const twins: string[] = [];
    const sims: IiotDeviceSimulator[] = [];
    for (let i = 0; i < MEMORY_TWINS; i++) {
      const id = `bench-m${i}`;
      const sim = new IiotDeviceSimulator({ id, brokerUrl: gateway.brokerUrl, rate: 20 });
      await sim.start();
      sims.push(sim);
      await api(gateway, "POST", "/api/instances", {
        package: "iiot-docker",
        node: "docker-1",
        id,
        configuration: { DEVICE_ID: id },
        fidelity: FIDELITY,
      });
      twins.push(id);
    }
    for (const id of twins) await entangled(gateway, id);
    await new Promise((r) => setTimeout(r, 5000)); // let the twins' histories and heaps settle
    const twinMemory: number[] = [];
    for (const id of twins) {
      const [info] = await docker.listContainers({
        filters: JSON.stringify({ label: [`dtc.instance=${id}`] }),
      });
      twinMemory.push(await containerMemory(docker, info?.Id as string));
    }
    const idle: Docker.Container[] = [];
    for (let i = 0; i < MEMORY_TWINS; i++) {
      const c = await docker.createContainer({
        Image: image,
        Cmd: ["-e", "setInterval(() => {}, 1000)"],
        HostConfig: { NetworkMode: "host" },
      });
      await c.start();
      idle.push(c);
    }
    await new Promise((r) => setTimeout(r, 2000));
    const idleMemory: number[] = [];
    for (const c of idle) idleMemory.push(await containerMemory(docker, c.id));
    for (const c of idle) await c.remove({ force: true });
    for (const id of twins) await api(gateway, "DELETE", `/api/instances/${id}`);
    await Promise.all(sims.map((s) => s.stop()));

    const mib = (bytes: number) => bytes / 2 ** 20;
    const base = valueRow(`in-process: POST -> Entangled (median of ${RUNS})`, median(inProcess), "ms");
    const engineFloor = valueRow(
      `engine floor: create + start + exit of the image (median of ${RUNS})`,
      median(floor),
      "ms",
    );
    const idleRow = valueRow(
      `idle Node container of the image (mean of ${MEMORY_TWINS})`,
      mib(mean(idleMemory)),
      "MiB",
    );
    return [
      base,
      valueRow(`docker: POST -> Entangled (median of ${RUNS})`, median(container), "ms", base),
      valueRow(`docker: POST -> 201 (median of ${RUNS})`, median(created), "ms", base),
      engineFloor,
      valueRow(`docker: POST -> Entangled vs the engine floor`, median(container), "ms", engineFloor),
      idleRow,
      valueRow(
        `twin container, Entangled at 20 Hz (mean of ${MEMORY_TWINS})`,
        mib(mean(twinMemory)),
        "MiB",
        idleRow,
      ),
      valueRow(
        `in-process twin: gateway RSS growth per twin (${IN_PROCESS_TWINS} twins)`,
        mib(perInProcessTwin),
        "MiB",
      ),
    ];
  } finally {
    await gateway?.close();
    rmSync(dataDir, { recursive: true, force: true });
    await engine.stop();
  }
}

const mean = (values: number[]) => values.reduce((a, b) => a + b, 0) / values.length;

export const benchmark: Benchmark = {
  name: "docker",
  description: "twins as containers: start -> Entangled vs in-process, memory per container twin",
  run,
};
