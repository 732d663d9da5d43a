import { describe, expect, it } from "vitest";
import { ManagerError } from "../src/manager/errors.js";
import type { DtcNode, DtPackage, InstanceRecord } from "../src/manager/model.js";
import { OperationQueue, OperationTimeout } from "../src/manager/operation-queue.js";
import { freeOn, misfits, rankCandidates } from "../src/manager/placement.js";
import { BACKOFF_MAX_MS, outcomeOf } from "../src/manager/reconciler.js";

const node = (id: string, over: Partial<DtcNode> = {}): DtcNode => ({
  id,
  platform: "in-process",
  tier: "edge",
  capabilities: { cpu: 2, memory: 1024, gpu: 0 },
  labels: {},
  latencyMs: 5,
  registeredAt: "2026-12-04T00:00:00.000Z",
  ...over,
});
const pkg = (requirements: DtPackage["requirements"], over: Partial<DtPackage> = {}): DtPackage => ({
  id: "p",
  schema: "urn:schema",
  platform: "in-process",
  artefact: { module: "dtc:twin" },
  parameters: {},
  requirements,
  augmentations: [],
  registeredAt: "2026-12-04T00:00:00.000Z",
  ...over,
});
const record = (id: string, nodeId: string, packageId = "p"): InstanceRecord => ({
  id,
  package: packageId,
  schema: "urn:schema",
  node: nodeId,
  platform: "in-process",
  configuration: {},
  desired: "running",
  createdAt: "",
  updatedAt: "",
});

describe("placement", () => {
  it("counts what the instances placed on a node take, except the one being placed", () => {
    const n = node("a");
    const placed = [record("x", "a"), record("y", "a"), record("z", "b")];
    const req = () => ({ cpu: 0.5, memory: 256 });
    expect(freeOn(n, placed, req)).toEqual({ cpu: 1, memory: 512, gpu: 0 });
    expect(freeOn(n, placed, req, "x")).toEqual({ cpu: 1.5, memory: 768, gpu: 0 });
  });

  it("gives one reason per misfit: platform, readiness, CPU, memory, GPU and timeliness", () => {
    const reasons = misfits({
      pkg: pkg({ cpu: 4, memory: 2048, gpu: 1 }, { platform: "docker" }),
      node: node("a", { latencyMs: 30 }),
      readiness: { ready: false, reason: "engine down" },
      free: { cpu: 2, memory: 1024, gpu: 0 },
      timeliness: 10,
    });
    expect(reasons).toHaveLength(6);
    expect(reasons[0]).toMatch(/runs in-process; package "p" is for docker/);
    expect(reasons[1]).toMatch(/not ready: engine down/);
    expect(reasons[5]).toMatch(/30 ms from the physical side.*\(10 ms\)/);
    expect(
      misfits({
        pkg: pkg({ cpu: 1 }),
        node: node("a"),
        readiness: { ready: true },
        free: { cpu: 1, memory: 0, gpu: 0 },
      }),
    ).toEqual([]);
  });

  it("ranks fitting nodes first, then the nearest to the physical side", () => {
    const c = (id: string, fits: boolean, latencyMs: number) => ({
      node: node(id, { latencyMs }),
      fits,
      reasons: fits ? [] : ["no"],
      free: { cpu: 0, memory: 0, gpu: 0 },
    });
    const ranked = rankCandidates([c("far", true, 40), c("no", false, 1), c("near", true, 2)]);
    expect(ranked.map((r) => r.node.id)).toEqual(["near", "far", "no"]);
  });
});

describe("the operation queue", () => {
  it("runs one operation per key at a time, in order, and keys apart in parallel", async () => {
    const queue = new OperationQueue({ timeoutMs: 5000 });
    const log: string[] = [];
    let release: () => void = () => {};
    const first = queue.run("a", "first", async () => {
      log.push("a1 start");
      await new Promise<void>((r) => {
        release = r;
      });
      log.push("a1 end");
    });
    const second = queue.run("a", "second", async () => {
      log.push("a2");
    });
    await queue.run("b", "other", async () => {
      log.push("b");
    });
    expect(log).toEqual(["a1 start", "b"]);
    release();
    await Promise.all([first, second]);
    expect(log).toEqual(["a1 start", "b", "a1 end", "a2"]);
  });

  it("gives up an operation past its timeout, aborts its signal, and goes on with the next", async () => {
    const timedOut: string[] = [];
    const queue = new OperationQueue({ timeoutMs: 50, onTimeout: (key) => timedOut.push(key) });
    let signal: AbortSignal | undefined;
    const hung = queue.run("a", "hanging work", (s) => {
      signal = s;
      return new Promise(() => {});
    });
    const next = queue.run("a", "next", async () => "ran");
    const err = await hung.catch((e: unknown) => e);
    expect(err).toBeInstanceOf(OperationTimeout);
    expect((err as OperationTimeout).kind).toBe("timeout");
    expect((err as Error).message).toBe("hanging work did not finish within 50 ms");
    expect(signal?.aborted).toBe(true);
    expect(timedOut).toEqual(["a"]);
    expect(await next).toBe("ran");
  });
});

describe("the reconciler's outcome of a failed start", () => {
  it("retries what may work later with a doubling backoff, capped", () => {
    const unavailable = new ManagerError("unavailable", "engine down");
    expect(outcomeOf(unavailable, 1)).toEqual({ outcome: "retry", reason: "engine down", afterMs: 1000 });
    expect(outcomeOf(unavailable, 3)).toMatchObject({ afterMs: 4000 });
    expect(outcomeOf(new Error("boom"), 40)).toMatchObject({ outcome: "retry", afterMs: BACKOFF_MAX_MS });
  });

  it("gives up on what cannot work as things are (invalid, not found)", () => {
    expect(outcomeOf(new ManagerError("notFound", "package gone"), 1)).toEqual({
      outcome: "terminal",
      reason: "package gone",
    });
    expect(outcomeOf(new ManagerError("invalid", "bad configuration"), 5).outcome).toBe("terminal");
  });
});
