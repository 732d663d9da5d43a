import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { Directory } from "../../src/directory/directory.js";
import { EmbeddedStore } from "../../src/directory/embedded-store.js";
import { TwinStatusPublisher } from "../../src/directory/twin-status.js";
import { Inventory } from "../../src/manager/inventory.js";
import { DtcManager } from "../../src/manager/manager.js";
import { ManagerStore } from "../../src/manager/manager-store.js";
import { thingModelsDir } from "../../src/paths.js";
import { loadThingModels, ThingModelRegistry } from "../../src/wot/model-registry.js";
import { waitFor } from "../helpers.js";
import { FakeDriver } from "./fake-driver.js";

/**
 * The manager's logic over the fake driver, without a gateway: rollback of failed starts, the
 * reconciler starting lost instances again with a backoff and giving up on what cannot run,
 * snapshots. Real store, inventory and directory; only the platform is fake.
 */

interface Setup {
  manager: DtcManager;
  driver: FakeDriver;
  store: ManagerStore;
  close(): Promise<void>;
}

async function newManagerWithFakeDriver(options: { operationTimeoutMs?: number } = {}): Promise<Setup> {
  const dir = mkdtempSync(join(tmpdir(), "dtc-logic-"));
  const registry = new ThingModelRegistry();
  const schemas = await loadThingModels(registry, thingModelsDir);
  const directoryStore = new EmbeddedStore(join(dir, "directory"));
  await directoryStore.open();
  const store = new ManagerStore(join(dir, "manager.sqlite"));
  const inventory = new Inventory({
    store,
    registry,
    directory: directoryStore,
    publicBase: () => "http://127.0.0.1:1",
  });
  await inventory.open(schemas);
  await inventory.registerNode({
    id: "n1",
    platform: "in-process",
    tier: "edge",
    capabilities: { cpu: 1, memory: 1024 },
  });
  const driver = new FakeDriver();
  const twinStatus = new TwinStatusPublisher({ store: directoryStore, intervalMs: 1000 });
  const manager = new DtcManager({
    store,
    inventory,
    drivers: [driver],
    directory: new Directory(directoryStore),
    twinStatus,
    reconcileIntervalMs: 60_000,
    checkpointIntervalMs: 60_000,
    ...options,
  });
  return {
    manager,
    driver,
    store,
    close: async () => {
      await manager.close();
      twinStatus.close();
      await directoryStore.close();
      store.close();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

const start = (manager: DtcManager, id: string) =>
  manager.start({ package: "iiot-device", node: "n1", id, configuration: { DEVICE_ID: id } });

describe("DTC Manager logic (fake platform)", () => {
  let s: Setup;
  beforeEach(async () => {
    s = await newManagerWithFakeDriver({ operationTimeoutMs: 500 });
  });
  afterEach(async () => {
    await s.close();
  });

  it("leaves no record behind when the platform fails the start, and says why by kind", async () => {
    s.driver.failStarts.push({ kind: "failed", message: "the image would not run" });
    const err = await start(s.manager, "a1").catch((e: unknown) => e);
    expect(err).toMatchObject({ kind: "failed", message: "the image would not run" });
    expect(s.store.instances.get("a1")).toBeUndefined();
    const ok = await start(s.manager, "a1");
    expect(ok.lifecycle).toBe("Bound");
  });

  it("gives up an operation that hangs (kind timeout) and runs the next one on the instance", async () => {
    let release: () => void = () => {};
    s.driver.hold = new Promise((r) => {
      release = r;
    });
    const hung = await start(s.manager, "h1").catch((e: unknown) => e);
    expect(hung).toMatchObject({ kind: "timeout" });
    s.driver.hold = undefined;
    release();
    // The given-up start left the record for the reconciler, which finishes the job.
    await s.manager.reconcile();
    await waitFor("h1 running", () => s.manager.instance("h1").lifecycle === "Bound");
  });

  it("starts a lost instance again from its saved state, counting the failure", async () => {
    await start(s.manager, "l1");
    s.driver.setPt("l1", true);
    await s.manager.checkpoint();
    s.driver.lose("l1");
    await waitFor("l1 back", () => {
      const view = s.manager.instance("l1");
      return view.lifecycle === "Entangled" && view.failures?.count === 1;
    });
    expect(s.manager.instance("l1").failures?.last.reason).toBe("the fake process died");
    expect(s.driver.calls.start).toBe(2);
  });

  it("retries a failing start after a backoff, not on every pass", async () => {
    await start(s.manager, "b1");
    s.driver.failStarts.push(
      { kind: "unavailable", message: "engine down" },
      { kind: "unavailable", message: "engine down" },
    );
    s.driver.lose("b1");
    await waitFor("the first retry failed", () => s.manager.instance("b1").failed === "engine down");
    const starts = s.driver.calls.start;
    await s.manager.reconcile();
    await s.manager.reconcile();
    // Within the backoff (1 s, then 2 s) passes leave it alone.
    expect(s.driver.calls.start).toBeLessThanOrEqual((starts ?? 0) + 1);
    await waitFor(
      "running again after the backoff",
      async () => {
        await s.manager.reconcile();
        return s.manager.instance("b1").lifecycle === "Bound";
      },
      15_000,
    );
  });

  it("gives up on an instance that cannot run as things are, and records why on it", async () => {
    await start(s.manager, "t1");
    // Its package disappears behind the manager's back (as from an older gateway's database).
    s.store.packages.delete("iiot-device");
    s.driver.lose("t1");
    await waitFor("given up", () => s.manager.instance("t1").gaveUp !== undefined);
    expect(s.manager.instance("t1").gaveUp?.reason).toMatch(/package "iiot-device" no longer exists/);
    const starts = s.driver.calls.start;
    await s.manager.reconcile();
    expect(s.driver.calls.start).toBe(starts);
  });

  it("keeps at most 100 snapshots of an instance (kind conflict) and restores one as a new instance", async () => {
    await start(s.manager, "s1");
    const first = await s.manager.snapshot("s1");
    for (let i = 1; i < 100; i++) await s.manager.snapshot("s1");
    await expect(s.manager.snapshot("s1")).rejects.toMatchObject({ kind: "conflict" });
    const { view, created } = await s.manager.restore(first.id, { node: "n1", id: "s2" });
    expect(created).toBe(true);
    expect(view).toMatchObject({ id: "s2", origin: { restoredFrom: first.id } });
  });
});
