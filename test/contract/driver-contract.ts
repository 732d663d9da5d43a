import { describe, expect, it } from "vitest";
import type { InstanceHandle, InstanceSpec, NodeTarget, PlatformDriver } from "../../src/platforms/driver.js";
import { waitFor } from "../helpers.js";

/**
 * The PlatformDriver contract (src/platforms/driver.ts), run by every driver, like hono's
 * common.case.test.ts: `runDriverContract(harness)` defines the cases; each driver's suite gives
 * a harness that makes drivers, nodes, specs and PTs on its platform.
 */

export interface DriverHarness {
  /** Names the describe block. */
  name: string;
  /** Why the suite cannot run here (no engine), or undefined. */
  unavailable?: () => string | undefined;
  /** A fresh driver (the harness closes what it made in `cleanup`). */
  newDriver(): PlatformDriver;
  node(): NodeTarget;
  /** A node of another platform, which the driver must refuse. */
  foreignNode: NodeTarget;
  spec(id: string, extra?: Partial<InstanceSpec>): InstanceSpec;
  /** Starts the physical twin of twin `id`; stopped by the returned function. */
  startPt(id: string): Promise<() => Promise<void>>;
  /** Makes the platform lose a running instance (its process or container dies); absent: it cannot. */
  lose?(handle: InstanceHandle): Promise<void>;
  /** Whether an instance outlives its driver (a container survives the gateway) and is adopted. */
  adopts: boolean;
  /** How long a start may take on this platform, ms. */
  startTimeoutMs: number;
  cleanup(): Promise<void>;
}

const lifecycleOf = (handle: InstanceHandle) => handle.status().lifecycle;

export function runDriverContract(h: DriverHarness): void {
  const skip = h.unavailable?.();
  const timeout = h.startTimeoutMs * 3 + 20_000;

  describe.skipIf(skip !== undefined)(
    `PlatformDriver contract: ${h.name}${skip ? ` (skipped: ${skip})` : ""}`,
    () => {
      /** A driver, a started instance of `id` and its PT; everything let go of at the end. */
      async function withInstance<T>(
        id: string,
        body: (driver: PlatformDriver, handle: InstanceHandle) => Promise<T>,
        options: { pt?: boolean; spec?: Partial<InstanceSpec> } = {},
      ): Promise<T> {
        const driver = h.newDriver();
        const stopPt = options.pt === false ? undefined : await h.startPt(id);
        try {
          const handle = await driver.start(h.spec(id, options.spec));
          try {
            return await body(driver, handle);
          } finally {
            await handle.remove().catch(() => undefined); // removed by the body already, or removed now
          }
        } finally {
          await stopPt?.();
          await driver.close();
        }
      }

      it("says the node is ready, and refuses a node of another platform", { timeout }, async () => {
        const driver = h.newDriver();
        try {
          expect(await driver.ready(h.node())).toEqual({ ready: true });
          const foreign = await driver.ready(h.foreignNode);
          expect(foreign.ready).toBe(false);
          await expect(driver.start(h.spec("contract-foreign", { node: h.foreignNode }))).rejects.toThrow();
        } finally {
          await driver.close();
        }
      });

      it("starts a twin exposed under the gateway's URLs, attached to its PT: Entangled, with status events", {
        timeout,
      }, async () => {
        await withInstance("contract-start", async (driver, handle) => {
          expect(handle.id).toBe("contract-start");
          expect(handle.node).toBe(h.node().id);
          const td = handle.description();
          expect(td.id).toBe("urn:dtc:twin:contract-start");
          expect(JSON.stringify(td.properties)).toContain("/twins/contract-start/");
          const served = await fetch(`${handle.httpTarget()}/contract-start`);
          expect(served.status).toBe(200);
          expect(((await served.json()) as { id: string }).id).toBe("urn:dtc:twin:contract-start");
          let changes = 0;
          const unlisten = handle.onStatus({ lifecycleChanged: () => changes++ });
          await waitFor("Entangled", () => lifecycleOf(handle) === "Entangled", h.startTimeoutMs + 10_000);
          expect(handle.status().entanglement?.odte).toBeGreaterThan(0);
          expect(await driver.running(h.node())).toContain("contract-start");
          // Entangled may have come before the listener; a stop is a change it must see.
          await handle.stop();
          await waitFor("a lifecycle event", () => changes > 0);
          unlisten();
        });
      });

      it("stops a twin (Done, still exposed) and resumes it", { timeout }, async () => {
        await withInstance("contract-stop", async (_driver, handle) => {
          await waitFor("Entangled", () => lifecycleOf(handle) === "Entangled", h.startTimeoutMs + 10_000);
          await handle.stop();
          expect(lifecycleOf(handle)).toBe("Done");
          expect((await fetch(`${handle.httpTarget()}/contract-stop`)).status).toBe(200);
          await handle.resume();
          await waitFor("attached again", () => ["Bound", "Entangled"].includes(lifecycleOf(handle)));
        });
      });

      it("exports a state that a new start takes up, history included", { timeout }, async () => {
        await withInstance("contract-state", async (driver, handle) => {
          await waitFor("Entangled", () => lifecycleOf(handle) === "Entangled", h.startTimeoutMs + 10_000);
          const state = await handle.exportState();
          expect(state.config.id).toBe("contract-state");
          expect(state.history.states.length).toBeGreaterThan(0);
          await handle.remove({ handover: true });
          expect(await driver.running(h.node())).not.toContain("contract-state");
          const again = await driver.start(h.spec("contract-state", { state }));
          try {
            const imported = await again.exportState();
            expect(imported.history.states.length).toBeGreaterThanOrEqual(state.history.states.length);
            expect(imported.history.states[0]).toEqual(state.history.states[0]);
          } finally {
            await again.remove();
          }
        });
      });

      it("restarts a twin fresh, with the same id and URLs", { timeout }, async () => {
        await withInstance("contract-restart", async (_driver, handle) => {
          await waitFor("Entangled", () => lifecycleOf(handle) === "Entangled", h.startTimeoutMs + 10_000);
          const before = await waitFor("some history", async () => {
            const state = await handle.exportState();
            return state.history.states.length >= 3 ? state : undefined;
          });
          await handle.restart();
          const after = await handle.exportState();
          expect(after.config.id).toBe("contract-restart");
          // Fresh: the history it had is gone, and what it has now began after the restart.
          expect(after.history.states.length).toBeLessThan(before.history.states.length);
          for (const change of after.lifecycle.history)
            expect(change.at).toBeGreaterThanOrEqual(before.exportedAt);
          expect(handle.description().id).toBe("urn:dtc:twin:contract-restart");
          expect((await fetch(`${handle.httpTarget()}/contract-restart`)).status).toBe(200);
        });
      });

      it("removes a twin: no longer running nor served", { timeout }, async () => {
        await withInstance(
          "contract-remove",
          async (driver, handle) => {
            const target = handle.httpTarget();
            await handle.remove();
            expect(await driver.running(h.node())).not.toContain("contract-remove");
            const after = await fetch(`${target}/contract-remove`).catch(() => undefined);
            expect(after?.status ?? 404).not.toBe(200);
          },
          { pt: false },
        );
      });

      it("lists what runs on a node and removes an orphan", { timeout }, async () => {
        const driver = h.newDriver();
        try {
          const handle = await driver.start(h.spec("contract-orphan"));
          expect(await driver.running(h.node())).toContain("contract-orphan");
          await driver.removeOrphan(h.node(), "contract-orphan");
          await waitFor(
            "the orphan gone",
            async () => !(await driver.running(h.node())).includes("contract-orphan"),
          );
          expect(handle.id).toBe("contract-orphan");
        } finally {
          await driver.close();
        }
      });

      if (h.lose) {
        const lose = h.lose;
        it("reports an instance its platform lost: the failed listener and status().failed", {
          timeout,
        }, async () => {
          await withInstance(
            "contract-lost",
            async (_driver, handle) => {
              const reasons: string[] = [];
              handle.onStatus({ failed: (reason) => reasons.push(reason) });
              await lose(handle);
              await waitFor("the failure reported", () => reasons.length > 0, 20_000);
              expect(handle.status().failed).toBe(reasons[0]);
            },
            { pt: false },
          );
        });
      }

      it(h.adopts
        ? "lets a new driver adopt an instance that outlived the old one"
        : "has nothing to adopt after its driver closed (instances do not outlive it)", {
        timeout,
      }, async () => {
        const first = h.newDriver();
        const spec = h.spec("contract-adopt");
        const handle = await first.start(spec);
        await first.close();
        const second = h.newDriver();
        try {
          const adopted = await second.adopt(spec);
          if (!h.adopts) {
            expect(adopted).toBeUndefined();
            return;
          }
          expect(adopted?.id).toBe("contract-adopt");
          expect((await fetch(`${adopted?.httpTarget()}/contract-adopt`)).status).toBe(200);
          await adopted?.remove();
        } finally {
          await second.close();
          expect(handle.id).toBe("contract-adopt");
        }
      });

      it("releases a node and, once closed, is ready for nothing", { timeout }, async () => {
        const driver = h.newDriver();
        const handle = await driver.start(h.spec("contract-release"));
        await handle.remove();
        await driver.release(h.node());
        await driver.close();
        expect((await driver.ready(h.node())).ready).toBe(false);
      });
    },
  );
}
