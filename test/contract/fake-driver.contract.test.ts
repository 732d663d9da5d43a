import type { InstanceSpec, NodeTarget } from "../../src/platforms/driver.js";
import { runDriverContract } from "./driver-contract.js";
import { FakeDriver } from "./fake-driver.js";

/** The fake driver keeps the PlatformDriver contract too, so tests of the manager over it mean something. */

const survivors = new Map();
const drivers: FakeDriver[] = [];
const node = (): NodeTarget => ({ id: "fake-node", platform: "in-process" });

runDriverContract({
  name: "fake (in memory)",
  newDriver: () => {
    const driver = new FakeDriver({ survivors });
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
    twin: { id, schema: "urn:fake", placeholders: {} },
    ...extra,
  }),
  startPt: async (id) => {
    for (const d of drivers) d.setPt(id, true);
    return async () => {
      for (const d of drivers) d.setPt(id, false);
    };
  },
  lose: async (handle) => {
    for (const d of drivers) d.lose(handle.id);
  },
  adopts: true,
  startTimeoutMs: 1000,
  cleanup: async () => {},
});
