import type Docker from "dockerode";
import type { EntanglementFigures } from "../../domain/entanglement.js";
import { errorMessage } from "../../domain/errors.js";
import type { LifecycleState } from "../../domain/lifecycle.js";
import type { TwinState } from "../../domain/twin-state.js";
import type { Logger } from "../../logger.js";
import { type TwinManagementClient, TwinManagementError } from "../../runtime/management-client.js";
import type { JsonObject } from "../../wot/rdf.js";
import { type InstanceHandle, type InstanceStatus, PlatformError, type StatusListener } from "../driver.js";
import { exitReason, type FreshSpec } from "./container-spec.js";
import type { DockerEndpoint } from "./endpoint.js";
import { type ContainerExit, type DockerEngine, removeContainer } from "./engine.js";

/**
 * A Docker twin as the manager holds it: the current container (a restart replaces it), its status
 * as the twin's event stream and the engine's exit events report it, and the management calls.
 * What it needs of the driver comes through an InstanceHost, so the driver has no public back door.
 */

const STOP_GRACE_S = 10;

/** Where a node's twins run and how the gateway reaches them. */
export interface Placement {
  node: string;
  endpoint: DockerEndpoint;
  engine: DockerEngine;
}

/** One container of an instance (a restart replaces it). */
export interface Deployment {
  container: Docker.Container;
  containerId: string;
  name: string;
  client: TwinManagementClient;
  httpTarget: string;
  td: JsonObject;
  status: InstanceStatus;
  /** How the container exited, once it has. */
  exited(): ContainerExit | undefined;
  /** Called once when the container exits (at once if it already has). */
  setOnExit(listener: (exit: ContainerExit) => void): void;
  stopWatching(): void;
}

/** What an instance needs of its driver. */
export interface InstanceHost {
  /** Creates and starts a container for `spec` (fresh, or importing `state`) and waits until it serves. */
  deploy(placement: Placement, spec: FreshSpec, state?: TwinState): Promise<Deployment>;
  /** The instance is gone (removed or detached): the driver stops tracking it. */
  release(handle: DockerInstance): void;
  readonly logger: Logger | undefined;
}

export class DockerInstance implements InstanceHandle {
  readonly id: string;
  readonly node: string;
  readonly #host: InstanceHost;
  readonly #placement: Placement;
  readonly #spec: FreshSpec;
  #deployment: Deployment | undefined;
  #failed: string | undefined;
  /** The container's exit is expected (shutdown, restart, removal): not a failure. */
  #leaving = false;
  #closeEvents: (() => void) | undefined;
  /** Registered listeners (each a copy, so one listener may be registered twice); they outlive a restart's container. */
  readonly #listeners = new Set<StatusListener>();

  constructor(host: InstanceHost, placement: Placement, spec: FreshSpec, deployment: Deployment) {
    this.id = spec.id;
    this.node = placement.node;
    this.#host = host;
    this.#placement = placement;
    this.#spec = spec;
    this.#use(deployment);
  }

  /** The engine this instance's containers run on. */
  get engine(): DockerEngine {
    return this.#placement.engine;
  }

  #live(): Deployment {
    const deployment = this.#deployment;
    if (!deployment)
      throw new PlatformError(`instance ${this.id} is no longer on node ${this.node}`, "conflict");
    if (this.#failed !== undefined)
      throw new PlatformError(`instance ${this.id}: ${this.#failed}`, "conflict");
    return deployment;
  }

  description(): JsonObject {
    return this.#live().td;
  }

  /** node-wot in the container serves /{id}/...: the gateway's /twins/{id}/... maps onto it. */
  httpTarget(): string {
    const deployment = this.#deployment;
    if (!deployment)
      throw new PlatformError(`instance ${this.id} is no longer on node ${this.node}`, "conflict");
    return deployment.httpTarget;
  }

  /** The current container's management port: its /metrics (a restart moves it). */
  metricsTarget(): string | undefined {
    return this.#deployment?.client.baseUrl;
  }

  status(): InstanceStatus {
    const status = this.#deployment?.status ?? { lifecycle: "Stopped" as LifecycleState };
    return this.#failed === undefined ? status : { ...status, failed: this.#failed };
  }

  onStatus(listener: StatusListener): () => void {
    const registration: StatusListener = { ...listener };
    this.#listeners.add(registration);
    return () => {
      this.#listeners.delete(registration);
    };
  }

  async stop(): Promise<void> {
    const deployment = this.#live();
    await this.#call(() => deployment.client.stop());
    await this.#refresh(deployment);
  }

  async resume(): Promise<void> {
    const deployment = this.#live();
    await this.#call(() => deployment.client.resume());
    await this.#refresh(deployment);
  }

  async exportState(): Promise<TwinState> {
    const deployment = this.#live();
    return this.#call(() => deployment.client.exportState());
  }

  /** A new container from the original configuration (no state); same id, TD and URLs. */
  async restart(): Promise<void> {
    const old = this.#live();
    await this.#retire(old, { handover: true });
    let next: Deployment;
    try {
      next = await this.#host.deploy(this.#placement, this.#spec);
    } catch (err) {
      this.#gone();
      throw err;
    }
    this.#use(next);
    for (const listener of [...this.#listeners]) listener.lifecycleChanged?.();
  }

  async remove(options: { handover?: boolean } = {}): Promise<void> {
    const deployment = this.#deployment;
    if (!deployment) return;
    try {
      await this.#retire(deployment, options);
    } finally {
      this.#gone();
    }
  }

  /** Lets go of the container without touching it (the gateway closes; it keeps running). */
  detach(): void {
    this.#leaving = true;
    this.#closeEvents?.();
    this.#deployment?.stopWatching();
    this.#deployment = undefined;
    this.#listeners.clear();
    this.#host.release(this);
  }

  // ---- internals

  #use(deployment: Deployment): void {
    this.#deployment = deployment;
    this.#failed = undefined;
    this.#leaving = false;
    deployment.setOnExit((exit) => {
      if (this.#deployment !== deployment || this.#leaving) return;
      this.#fail(exitReason(deployment.name, exit));
    });
    this.#listen(deployment);
  }

  /** Follows the twin's status events; a stream that ends while the container lives is reopened. */
  #listen(deployment: Deployment): void {
    let closed = false;
    const close = deployment.client.events(
      (event) => {
        if (this.#deployment !== deployment) return;
        if (event.type === "twin") {
          const td = (event.data as { td?: JsonObject }).td;
          if (td) deployment.td = td;
          return;
        }
        const data = event.data as { lifecycle: LifecycleState | null; entanglement?: EntanglementFigures };
        if (data.lifecycle === null) return;
        this.#setStatus(
          deployment,
          { lifecycle: data.lifecycle, ...(data.entanglement ? { entanglement: data.entanglement } : {}) },
          event.type === "entanglement",
        );
      },
      () => {
        if (closed || this.#deployment !== deployment || this.#leaving) return;
        // The container's death is reported by the engine; anything else (a dropped connection) is retried.
        const retry = setTimeout(() => {
          if (this.#deployment === deployment && !this.#leaving && !deployment.exited())
            this.#listen(deployment);
        }, 500);
        retry.unref();
      },
    );
    this.#closeEvents = () => {
      closed = true;
      close();
    };
  }

  async #refresh(deployment: Deployment): Promise<void> {
    const status = await this.#call(() => deployment.client.status());
    if (this.#deployment === deployment) this.#setStatus(deployment, status, false);
  }

  /** Takes the twin's status and tells the listeners what changed. */
  #setStatus(deployment: Deployment, status: InstanceStatus, evaluated: boolean): void {
    const before = deployment.status.lifecycle;
    deployment.status = status;
    if (evaluated) for (const l of [...this.#listeners]) l.entanglementEvaluated?.();
    if (status.lifecycle !== before) for (const l of [...this.#listeners]) l.lifecycleChanged?.();
  }

  /** Management calls: an answer is the twin's (a 409 stays a 409); no answer is the platform's failure. */
  async #call<T>(operation: () => Promise<T>): Promise<T> {
    try {
      return await operation();
    } catch (err) {
      if (err instanceof TwinManagementError) {
        const status = err.status;
        if (status === 400 || status === 409)
          throw new PlatformError(err.message, "conflict", { cause: err });
        throw new PlatformError(
          `instance ${this.id}: the twin's management endpoint: ${err.message}`,
          "failed",
          { cause: err },
        );
      }
      throw err;
    }
  }

  /** Asks the twin to shut down (handing over its topics on a move), then removes the container. */
  async #retire(deployment: Deployment, options: { handover?: boolean }): Promise<void> {
    this.#leaving = true;
    this.#closeEvents?.();
    if (!deployment.exited()) {
      try {
        await deployment.client.shutdown({ handover: options.handover });
        await this.#placement.engine.call(
          "waiting for the twin to exit",
          (abortSignal) => deployment.container.wait({ abortSignal }),
          STOP_GRACE_S * 1000,
        );
      } catch (err) {
        this.#host.logger?.warn(
          { instance: this.id, container: deployment.name, err: errorMessage(err) },
          "the twin did not shut down cleanly; removing its container",
        );
      }
    }
    deployment.stopWatching();
    await removeContainer(this.#placement.engine, deployment.containerId);
  }

  #fail(reason: string): void {
    this.#failed = reason;
    this.#closeEvents?.();
    this.#host.logger?.warn({ instance: this.id, node: this.node, reason }, "twin container failed");
    for (const l of [...this.#listeners]) l.failed?.(reason);
  }

  #gone(): void {
    this.#deployment?.stopWatching();
    this.#deployment = undefined;
    this.#listeners.clear();
    this.#host.release(this);
  }
}
