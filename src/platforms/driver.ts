import { DtcError, type ErrorKind } from "../domain/errors.js";
import type { TwinConfig, TwinState } from "../domain/twin-state.js";
import type { InstanceStatus, StatusListener } from "../domain/twin-status.js";
import type { JsonObject } from "../wot/rdf.js";

/**
 * The PlatformDriver port: the one interface through which the manager runs twins on a platform
 * (in-process node-wot, Docker, Kubernetes). The manager decides what runs where; a driver only
 * knows how to run, stop, export and remove one twin on one of its nodes.
 */

export type { InstanceStatus, StatusListener };

/** What a driver is told about the node it starts a twin on. */
export interface NodeTarget {
  id: string;
  /** The platform's name (src/platforms/registry.ts). */
  platform: string;
  /** Platform-specific connection (e.g. a Docker engine's socketPath or host/port); none in-process. */
  endpoint?: Record<string, unknown>;
}

/** Everything a driver needs to start one twin. */
export interface InstanceSpec {
  /** The instance id, which is also the twin id (its URLs and MQTT topics). */
  id: string;
  node: NodeTarget;
  /** The package it is started from (labels, diagnostics). */
  package?: string;
  /** The package's artefact: `module` for in-process, `image` for Docker and Kubernetes. */
  artefact: { module?: string; image?: string };
  /** CPU (cores), memory (MiB) and GPUs the package asks for (limits on container platforms). */
  requirements: { cpu?: number; memory?: number; gpu?: number };
  /** The twin's configuration, resolved from the package and the start request. */
  twin: TwinConfig;
  /** The package's augmentation functions, installed on a fresh start (a state carries its own). */
  augmentations?: { name: string; source: string }[];
  /** Start from this exported state instead of fresh (restore, move, clone). */
  state?: TwinState;
}

/** One twin running on one node. Operations on it are serialised by the manager. */
export interface InstanceHandle {
  readonly id: string;
  readonly node: string;
  /** The TD as exposed: forms under the gateway's /twins/{id}/ (the URLs never change). */
  description(): JsonObject;
  /** Base URL the gateway forwards /twins/{path} to (as `${httpTarget()}/{path}`). */
  httpTarget(): string;
  /**
   * The base URL of the twin process's own metrics (GET `${metricsTarget()}/metrics`, its
   * management port), for Prometheus service discovery. Absent or undefined: the twin's metrics
   * are the gateway's (in-process twins).
   */
  metricsTarget?(): string | undefined;
  status(): InstanceStatus;
  /** Calls `listener` on status changes until the returned function is called. */
  onStatus(listener: StatusListener): () => void;
  /** Detaches the twin from its PT: Done, still exposed with its last state. */
  stop(): Promise<void>;
  /** A Done twin attaches to its PT again. */
  resume(): Promise<void>;
  /** Starts the twin again, fresh, from its original configuration; same id and URLs. */
  restart(): Promise<void>;
  exportState(): Promise<TwinState>;
  /**
   * Removes the twin from the node. `handover`: another copy of it (same id) runs elsewhere now
   * (a move), so what they share (its retained MQTT TD, its topics) is left to the new copy.
   */
  remove(options?: { handover?: boolean }): Promise<void>;
}

/**
 * A platform could not do what was asked: its engine is `unavailable`, it did not answer in time
 * (`timeout`), it `failed` doing it (a container that exits at start, an image that cannot be
 * pulled), or it refuses the request (`conflict`).
 */
export class PlatformError extends DtcError {
  constructor(message: string, kind: PlatformErrorKind = "failed", options?: { cause?: unknown }) {
    super(kind, message, options);
    this.name = "PlatformError";
  }
}
export type PlatformErrorKind = Extract<ErrorKind, "conflict" | "failed" | "unavailable" | "timeout">;

export type Readiness = { ready: true } | { ready: false; reason: string };

export interface PlatformDriver {
  /** The platform's name, as registered (src/platforms/registry.ts). */
  readonly platform: string;
  /** Whether `node` can take twins now (e.g. its engine answers), and why not. */
  ready(node: NodeTarget): Promise<Readiness>;
  /** Starts a twin; resolves once it is exposed and attached to its PT. */
  start(spec: InstanceSpec): Promise<InstanceHandle>;
  /**
   * Takes over an instance the platform still runs from before a gateway restart (a container
   * survives the gateway); undefined when there is none (in-process twins never survive).
   */
  adopt(spec: InstanceSpec): Promise<InstanceHandle | undefined>;
  /** Ids of the instances the platform runs on `node`, adopted or not (to find orphans). */
  running(node: NodeTarget): Promise<string[]>;
  /** Removes an instance the manager does not know (an orphan of a removed instance). */
  removeOrphan(node: NodeTarget, id: string): Promise<void>;
  /**
   * Lets go of what the driver holds for `node`, which was removed from the inventory (and has no
   * instances): its runtime, its engine connection (unless another node shares it).
   */
  release(node: NodeTarget): Promise<void>;
  /** Lets go of every instance without removing what outlives the gateway (containers). */
  close(): Promise<void>;
}
