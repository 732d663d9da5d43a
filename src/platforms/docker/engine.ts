import type Docker from "dockerode";
import type { Logger } from "../../logger.js";
import { type DockerEndpoint, dockerClient, engineAddress } from "./endpoint.js";

/**
 * One Docker engine as the driver uses it: the dockerode client and the engine's event stream,
 * through which a container's death reaches its instance at once (a killed container is reported
 * within milliseconds, not at the next poll). Nodes on the same engine share one.
 */

/** Why a container stopped running, as the engine tells it. */
export interface ContainerExit {
  exitCode: number;
  oomKilled: boolean;
}

type ExitListener = (exit: ContainerExit) => void;

/** Labels of every container the driver creates. */
export const LABEL = {
  gateway: "dtc.gateway",
  node: "dtc.node",
  instance: "dtc.instance",
  package: "dtc.package",
  schema: "dtc.schema",
  httpPort: "dtc.http-port",
  managementPort: "dtc.management-port",
} as const;

const RECONNECT_MS = 1000;

export class DockerEngine {
  readonly docker: Docker;
  readonly address: string;
  readonly #gatewayId: string;
  readonly #logger: Logger | undefined;
  readonly #listeners = new Map<string, ExitListener>();
  /** Containers the engine said ran out of memory (the `oom` event comes before `die`). */
  readonly #oom = new Set<string>();
  #stream: NodeJS.ReadableStream | undefined;
  #following: Promise<void> | undefined;
  #reconnect: NodeJS.Timeout | undefined;
  #closed = false;

  /** The engine of `endpoint` (a remote engine's TLS files read, asynchronously). */
  static async connect(endpoint: DockerEndpoint, gatewayId: string, logger?: Logger): Promise<DockerEngine> {
    return new DockerEngine(await dockerClient(endpoint), engineAddress(endpoint), gatewayId, logger);
  }

  private constructor(docker: Docker, address: string, gatewayId: string, logger?: Logger) {
    this.docker = docker;
    this.address = address;
    this.#gatewayId = gatewayId;
    this.#logger = logger;
  }

  /** Calls `listener` once when container `id` stops running; returns the function that stops listening. */
  async onExit(id: string, listener: ExitListener): Promise<() => void> {
    this.#listeners.set(id, listener);
    await this.#follow();
    return () => {
      if (this.#listeners.get(id) === listener) this.#listeners.delete(id);
      this.#oom.delete(id);
    };
  }

  close(): void {
    this.#closed = true;
    clearTimeout(this.#reconnect);
    this.#listeners.clear();
    this.#destroyStream();
  }

  #follow(): Promise<void> {
    if (this.#closed) return Promise.resolve();
    this.#following ??= this.#open().catch((err: unknown) => {
      this.#following = undefined;
      this.#retry(err);
    });
    return this.#following;
  }

  async #open(): Promise<void> {
    const stream = await this.docker.getEvents({
      filters: JSON.stringify({
        type: ["container"],
        event: ["die", "oom"],
        label: [`${LABEL.gateway}=${this.#gatewayId}`],
      }),
    });
    if (this.#closed) {
      (stream as unknown as { destroy?: () => void }).destroy?.();
      return;
    }
    this.#stream = stream;
    this.docker.modem.followProgress(
      stream,
      (err: Error | null) => {
        if (this.#stream !== stream) return;
        this.#stream = undefined;
        this.#following = undefined;
        this.#retry(err ?? new Error("the event stream ended"));
      },
      (event: { Action?: string; Actor?: { ID?: string; Attributes?: Record<string, string> } }) =>
        this.#event(event),
    );
    // Deaths while the stream was down (the engine restarted, the connection dropped) were missed.
    await this.#checkListeners();
  }

  #event(event: { Action?: string; Actor?: { ID?: string; Attributes?: Record<string, string> } }): void {
    const id = event.Actor?.ID;
    if (id === undefined) return;
    if (event.Action === "oom") {
      this.#oom.add(id);
      return;
    }
    if (event.Action !== "die") return;
    this.#exited(id, {
      exitCode: Number(event.Actor?.Attributes?.exitCode ?? Number.NaN),
      oomKilled: this.#oom.has(id),
    });
  }

  #exited(id: string, exit: ContainerExit): void {
    const listener = this.#listeners.get(id);
    this.#listeners.delete(id);
    this.#oom.delete(id);
    listener?.(exit);
  }

  async #checkListeners(): Promise<void> {
    for (const id of [...this.#listeners.keys()]) {
      try {
        const info = await this.docker.getContainer(id).inspect();
        if (!info.State.Running) {
          this.#exited(id, { exitCode: info.State.ExitCode, oomKilled: info.State.OOMKilled });
        }
      } catch (err) {
        if ((err as { statusCode?: number }).statusCode === 404) {
          this.#exited(id, { exitCode: Number.NaN, oomKilled: false });
        }
      }
    }
  }

  #retry(err: unknown): void {
    if (this.#closed) return;
    this.#logger?.warn(
      { engine: this.address, err: (err as Error)?.message },
      "docker event stream lost; reconnecting",
    );
    clearTimeout(this.#reconnect);
    this.#reconnect = setTimeout(() => void this.#follow(), RECONNECT_MS);
    this.#reconnect.unref();
  }

  #destroyStream(): void {
    const stream = this.#stream as unknown as { destroy?: () => void } | undefined;
    this.#stream = undefined;
    this.#following = undefined;
    stream?.destroy?.();
  }
}
