import Docker from "dockerode";
import { afterAll, beforeAll } from "vitest";
import { type EmbeddedBroker, startEmbeddedBroker } from "../../src/mqtt/embedded-broker.js";
import { DockerDriver } from "../../src/platforms/docker/driver.js";
import type { InstanceSpec, NodeTarget } from "../../src/platforms/driver.js";
import { IiotDeviceSimulator } from "../../src/simulator/index.js";
import type { ThingModelRegistry } from "../../src/wot/model-registry.js";
import { freePort } from "../brokers.js";
import {
  buildTwinTestImage,
  dockerUnavailable,
  startDockerEngine,
  type TestDockerEngine,
} from "../docker-engine.js";
import { sample, sampleRegistry } from "../helpers.js";
import { runDriverContract } from "./driver-contract.js";

/**
 * The Docker driver under the PlatformDriver contract, on a real engine (a private dockerd, host
 * networking) with the twin image built from this checkout; skipped loudly without an engine
 * (an error under CI=true).
 */

const SKIP = dockerUnavailable();
const FIDELITY = { expectedUpdateRate: 10, odteWindow: 2, desiredTimeliness: 200, odteThreshold: 0.9 };
let engine: TestDockerEngine | undefined;
let image: string;
let broker: EmbeddedBroker | undefined;
let registry: ThingModelRegistry;
const drivers: DockerDriver[] = [];

beforeAll(async () => {
  if (SKIP) return;
  engine = await startDockerEngine();
  image = await buildTwinTestImage(engine);
  broker = await startEmbeddedBroker({ port: await freePort(), host: "127.0.0.1" });
  registry = await sampleRegistry();
}, 600_000);
afterAll(async () => {
  await Promise.all(drivers.map((d) => d.close()));
  await broker?.close();
  await engine?.stop();
}, 120_000);

const node = (): NodeTarget => ({
  id: "contract-docker",
  platform: "docker",
  endpoint: { socketPath: engine?.socketPath, network: "host" },
});

runDriverContract({
  name: "docker",
  unavailable: () => SKIP,
  newDriver: () => {
    const driver = new DockerDriver({
      registry,
      brokerUrl: (broker as EmbeddedBroker).url,
      httpBaseUri: () => "http://127.0.0.1:8080/twins",
      gatewayId: "contract-gateway",
      pushIntervalMs: 200,
      // A private vfs engine on a loaded machine can take longer than the default 10 s.
      engineTimeoutMs: 60_000,
    });
    drivers.push(driver);
    return driver;
  },
  node,
  foreignNode: { id: "elsewhere", platform: "in-process" },
  spec: (id: string, extra: Partial<InstanceSpec> = {}): InstanceSpec => ({
    id,
    node: node(),
    artefact: { image },
    requirements: { cpu: 0.5, memory: 256 },
    twin: {
      id,
      schema: sample("iiot-device.tm.jsonld"),
      placeholders: { DEVICE_ID: id },
      fidelity: FIDELITY,
    },
    ...extra,
  }),
  startPt: async (id) => {
    const sim = new IiotDeviceSimulator({ id, brokerUrl: (broker as EmbeddedBroker).url, rate: 10 });
    await sim.start();
    return () => sim.stop();
  },
  lose: async (handle) => {
    const docker = new Docker({ socketPath: engine?.socketPath });
    const filters = JSON.stringify({ label: [`dtc.instance=${handle.id}`] });
    for (const c of await docker.listContainers({ filters })) await docker.getContainer(c.Id).kill();
  },
  adopts: true,
  startTimeoutMs: 20_000,
  cleanup: async () => {},
});
