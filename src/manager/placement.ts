import type { Readiness } from "../platforms/driver.js";
import type { DtcNode, DtPackage, InstanceRecord } from "./model.js";

/**
 * Placement, pure: what a node has free and why a package does not fit it. The manager gathers the
 * facts (the node's readiness, the instances placed, the schema's Td); these functions decide.
 */

export interface Resources {
  cpu: number;
  memory: number;
  gpu: number;
}

export interface Candidate {
  node: DtcNode;
  fits: boolean;
  reasons: string[];
  free: Resources;
}

/**
 * CPU, memory and GPUs of `node` not taken by the requirements of the instances placed on it;
 * `except`: an instance whose own requirements do not count (it is the one being placed).
 */
export function freeOn(
  node: DtcNode,
  instances: Iterable<InstanceRecord>,
  requirementsOf: (packageId: string) => DtPackage["requirements"] | undefined,
  except?: string,
): Resources {
  const free = { cpu: node.capabilities.cpu, memory: node.capabilities.memory, gpu: node.capabilities.gpu };
  for (const record of instances) {
    if (record.node !== node.id || record.id === except) continue;
    const req = requirementsOf(record.package) ?? {};
    free.cpu -= req.cpu ?? 0;
    free.memory -= req.memory ?? 0;
    free.gpu -= req.gpu ?? 0;
  }
  return free;
}

export interface FitFacts {
  pkg: DtPackage;
  node: DtcNode;
  readiness: Readiness;
  free: Resources;
  /** The desired timeliness Td the twin must meet, ms (the instance's own, else its schema's). */
  timeliness?: number | undefined;
}

const round = (n: number) => Math.round(n * 100) / 100;

/** Why `pkg` cannot run on `node` now, one sentence each (empty: it fits). */
export function misfits({ pkg, node, readiness, free, timeliness }: FitFacts): string[] {
  const reasons: string[] = [];
  if (node.platform !== pkg.platform) {
    reasons.push(`node "${node.id}" runs ${node.platform}; package "${pkg.id}" is for ${pkg.platform}`);
  }
  if (!readiness.ready) reasons.push(`node "${node.id}" is not ready: ${readiness.reason}`);
  const req = pkg.requirements;
  if ((req.cpu ?? 0) > free.cpu)
    reasons.push(`needs ${req.cpu} CPU, node "${node.id}" has ${round(free.cpu)} free`);
  if ((req.memory ?? 0) > free.memory) {
    reasons.push(`needs ${req.memory} MiB of memory, node "${node.id}" has ${round(free.memory)} MiB free`);
  }
  if ((req.gpu ?? 0) > free.gpu) reasons.push(`needs ${req.gpu} GPU, node "${node.id}" has ${free.gpu} free`);
  if (timeliness !== undefined && node.latencyMs > timeliness) {
    reasons.push(
      `node "${node.id}" is ${node.latencyMs} ms from the physical side, more than the schema's desired timeliness (${timeliness} ms)`,
    );
  }
  return reasons;
}

/** Fitting nodes first, then by latency to the physical side (lowest first). */
export function rankCandidates(candidates: Candidate[]): Candidate[] {
  return [...candidates].sort(
    (a, b) => Number(b.fits) - Number(a.fits) || a.node.latencyMs - b.node.latencyMs,
  );
}
