import { afterAll, beforeAll } from "vitest";
import type { InstanceSpec, NodeTarget } from "../../src/platforms/driver.js";
import { InProcessDriver } from "../../src/platforms/in-process/driver.js";
import { IiotDeviceSimulator } from "../../src/simulator/index.js";
import type { ThingModelRegistry } from "../../src/wot/model-registry.js";
import { startBroker, type TestBroker } from "../brokers.js";
import { sample, sampleRegistry } from "../helpers.js";
import { runDriverContract } from "./driver-contract.js";

/** The in-process driver under the PlatformDriver contract: twins on node-wot runtimes in this process. */

const FIDELITY = { expectedUpdateRate: 10, odteWindow: 2, desiredTimeliness: 50, odteThreshold: 0.9 };
let broker: TestBroker;
let registry: ThingModelRegistry;
const drivers: InProcessDriver[] = [];

beforeAll(async () => {
  broker = await startBroker("aedes");
  registry = await sampleRegistry();
});
afterAll(async () => {
  await Promise.all(drivers.map((d) => d.close()));
  await broker?.stop();
});

const node = (): NodeTarget => ({ id: "contract-node", platform: "in-process" });

runDriverContract({
  name: "in-process",
  newDriver: () => {
    const driver = new InProcessDriver({
      registry,
      brokerUrl: broker.url,
      httpBaseUri: () => "http://127.0.0.1:8080/twins",
      pushIntervalMs: 200,
    });
    drivers.push(driver);
    return driver;
  },
  node,
  foreignNode: { id: "elsewhere", platform: "docker" },
  spec: (id: string, extra: Partial<InstanceSpec> = {}): InstanceSpec => ({
    id,
    node: node(),
    artefact: { module: "dtc:twin" },
    requirements: {},
    twin: {
      id,
      schema: sample("iiot-device.tm.jsonld"),
      placeholders: { DEVICE_ID: id },
      fidelity: FIDELITY,
    },
    ...extra,
  }),
  startPt: async (id) => {
    const sim = new IiotDeviceSimulator({ id, brokerUrl: broker.url, rate: 10 });
    await sim.start();
    return () => sim.stop();
  },
  adopts: false,
  startTimeoutMs: 5000,
  cleanup: async () => {},
});
