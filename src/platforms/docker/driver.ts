import { randomBytes } from "node:crypto";
import type Docker from "dockerode";
import { errorMessage } from "../../domain/errors.js";
import type { TwinState } from "../../domain/twin-state.js";
import type { Logger } from "../../logger.js";
import { freePort } from "../../net.js";
import { TwinManagementClient } from "../../runtime/management-client.js";
import type { ThingModelRegistry } from "../../wot/model-registry.js";
import {
  type InstanceHandle,
  type InstanceSpec,
  type NodeTarget,
  type PlatformDriver,
  PlatformError,
  type Readiness,
} from "../driver.js";
import {
  CONTAINER_HTTP_PORT,
  CONTAINER_MANAGEMENT_PORT,
  type ContainerRequest,
  containerAddresses,
  containerCreateOptions,
  envOf,
  exitReason,
  type FreshSpec,
  fresh,
  type TwinPorts,
} from "./container-spec.js";
import { type DockerEndpoint, engineAddress, isLocalEngine, parseDockerEndpoint } from "./endpoint.js";
import {
  type ContainerExit,
  containerLogs,
  DEFAULT_ENGINE_TIMEOUT_MS,
  DockerEngine,
  engineError,
  inspectImage,
  LABEL,
  removeContainer,
} from "./engine.js";
import { type Deployment, DockerInstance, type InstanceHost, type Placement } from "./instance.js";

/**
 * The Docker platform: each twin is a container of a twin image (`node dist/src/twin-main.js`,
 * deploy/twin.Dockerfile) on a node's engine, driven through dockerode and, inside, through the
 * twin's management endpoint (health, TD, status events, state export and import, stop, shutdown).
 *
 * Containers are labelled with the gateway, node, instance, package and schema, so that a gateway
 * restart finds and adopts them (they outlive it) and orphans are found by label. The engine's
 * event stream reports a container's death at once: the instance is `failed`, and the manager's
 * reconcile loop starts it again from its last saved state.
 *
 * Networking: on `network: "host"` a twin listens on ports the driver picks on the engine's host
 * (which must be the gateway's); on any other network its ports 8080 (node-wot) and 8081
 * (management) are published on the engine's host, or reached directly on the container's address
 * with `reach: "network"` (the gateway shares the network, e.g. in docker-compose).
 *
 * Deadlines: every engine request has `engineTimeoutMs` (504 past it), an image pull
 * IMAGE_PULL_TIMEOUT_MS, a container's start `startTimeoutMs`, its shutdown STOP_GRACE_S.
 */

export interface DockerDriverOptions {
  registry: ThingModelRegistry;
  /** The gateway's broker: the PTs' default and the twins' MQTT forms (unless a node overrides it). */
  brokerUrl: string;
  /** Where the twins' HTTP forms point, e.g. "http://gateway:8080/twins". */
  httpBaseUri: () => string;
  /** This gateway's id: its containers carry it, so gateways sharing an engine leave each other's alone. */
  gatewayId: string;
  /** How often twins evaluate entanglement and push it, ms. */
  pushIntervalMs?: number;
  /** How far ahead of a twin's clock a PT timestamp may be, ms (passed to the twin process). */
  ptClockSkewMs?: number;
  /** Longest a container may take to answer as ready, ms (default 60,000). */
  startTimeoutMs?: number;
  /** Longest one engine API request may take, ms (default 10,000; DTC_PLATFORM_TIMEOUT_MS). */
  engineTimeoutMs?: number;
  /** Who a twin's container connects to the broker as (DTC_MQTT_USERNAME/PASSWORD); undefined: none. */
  brokerCredentials?: (twinId: string) => { username: string; password: string } | undefined;
  /** Passed to the twins as DTC_METRICS_TOKEN: what Prometheus scrapes their /metrics with. */
  metricsToken?: string;
  logger?: Logger;
}

/** Longest an image pull may take, ms (a pull streams progress for as long as it runs). */
export const IMAGE_PULL_TIMEOUT_MS = 4 * 60_000;

export class DockerDriver implements PlatformDriver {
  readonly platform = "docker" as const;
  readonly #options: DockerDriverOptions;
  /** Engine key -> engine (nodes on one engine share its event stream). */
  readonly #engines = new Map<string, Promise<DockerEngine>>();
  /** Engine key -> the nodes that used it, so that a removed node's engine is closed once unused. */
  readonly #engineNodes = new Map<string, Set<string>>();
  readonly #handles = new Set<DockerInstance>();
  #closed = false;
  /** What the driver's instances may ask of it. */
  readonly #host: InstanceHost;

  constructor(options: DockerDriverOptions) {
    this.#options = options;
    this.#host = {
      deploy: (placement, spec, state) => this.#deploy(placement, spec, state),
      release: (handle) => this.#handles.delete(handle),
      logger: options.logger,
    };
  }

  async ready(node: NodeTarget): Promise<Readiness> {
    if (this.#closed) return { ready: false, reason: "the docker driver is closed" };
    if (node.platform !== this.platform) {
      return { ready: false, reason: `node ${node.id} is a ${node.platform} node, not docker` };
    }
    let endpoint: DockerEndpoint;
    try {
      endpoint = parseDockerEndpoint(node.endpoint);
    } catch (err) {
      return { ready: false, reason: errorMessage(err) };
    }
    try {
      const engine = await this.#engine(endpoint, node.id);
      // dockerode's typings omit ping's options; it takes abortSignal like every call.
      const ping = engine.docker.ping.bind(engine.docker) as (o: {
        abortSignal: AbortSignal;
      }) => Promise<unknown>;
      await engine.call("ping", (abortSignal) => ping({ abortSignal }));
      return { ready: true };
    } catch (err) {
      // A deadline passed says so itself, naming the engine.
      const reason =
        err instanceof PlatformError
          ? err.message
          : `the Docker engine at ${engineAddress(endpoint)} does not answer: ${errorMessage(err)}`;
      return { ready: false, reason };
    }
  }

  async start(spec: InstanceSpec): Promise<InstanceHandle> {
    const placement = await this.#placement(spec.node);
    const deployment = await this.#deploy(placement, fresh(spec), spec.state);
    return this.#track(new DockerInstance(this.#host, placement, fresh(spec), deployment));
  }

  /** The container of `spec` still running from before the gateway restarted, if it answers. */
  async adopt(spec: InstanceSpec): Promise<InstanceHandle | undefined> {
    const placement = await this.#placement(spec.node);
    const containers = await this.#containers(placement, spec.id);
    // The newest running one wins; the others are leftovers of an interrupted move or restart.
    containers.sort((a, b) => b.Created - a.Created);
    let adopted: Deployment | undefined;
    for (const info of containers) {
      if (adopted === undefined && info.State === "running") {
        try {
          const found = await this.#attach(placement, info.Id);
          // One still awaiting its state: the gateway stopped between starting it and the import.
          if (found.td.id !== undefined) {
            adopted = found;
            continue;
          }
          found.stopWatching();
        } catch (err) {
          this.#options.logger?.warn(
            { instance: spec.id, container: info.Id, err: errorMessage(err) },
            "a running twin container does not answer; replacing it",
          );
        }
      }
      await removeContainer(placement.engine, info.Id);
    }
    if (!adopted) return undefined;
    this.#options.logger?.info({ instance: spec.id, container: adopted.name }, "twin container adopted");
    return this.#track(new DockerInstance(this.#host, placement, fresh(spec), adopted));
  }

  async running(node: NodeTarget): Promise<string[]> {
    const placement = await this.#placement(node);
    const ids = (await this.#containers(placement)).map((c) => c.Labels[LABEL.instance] ?? "");
    return [...new Set(ids)].filter((id) => id !== "");
  }

  /** Removes the containers of an instance the manager does not know, without asking them (no handover). */
  async removeOrphan(node: NodeTarget, id: string): Promise<void> {
    const placement = await this.#placement(node);
    for (const handle of this.#handles) if (handle.id === id && handle.node === node.id) handle.detach();
    for (const info of await this.#containers(placement, id)) {
      await removeContainer(placement.engine, info.Id);
    }
  }

  /** Closes the engine client of a removed node, unless another node or a twin still uses it. */
  async release(node: NodeTarget): Promise<void> {
    let endpoint: DockerEndpoint;
    try {
      endpoint = parseDockerEndpoint(node.endpoint);
    } catch {
      return; // never had an engine
    }
    const key = engineKey(endpoint);
    const users = this.#engineNodes.get(key);
    users?.delete(node.id);
    if ((users?.size ?? 0) > 0) return;
    const engine = await this.#engines.get(key)?.catch(() => undefined);
    if (engine && [...this.#handles].some((h) => h.engine === engine)) return;
    this.#engines.delete(key);
    this.#engineNodes.delete(key);
    engine?.close();
  }

  /** Addresses of the engines the driver holds a client of (diagnostics, tests). */
  async engines(): Promise<string[]> {
    const engines = await Promise.all([...this.#engines.values()].map((e) => e.catch(() => undefined)));
    return engines.filter((e) => e !== undefined).map((e) => e.address);
  }

  /** Lets go of every container (they keep running: the next gateway adopts them). */
  async close(): Promise<void> {
    this.#closed = true;
    for (const handle of this.#handles) handle.detach();
    this.#handles.clear();
    for (const engine of this.#engines.values())
      void engine.then(
        (e) => e.close(),
        () => undefined,
      );
    this.#engines.clear();
    this.#engineNodes.clear();
  }

  // ---- internals

  #track(handle: DockerInstance): DockerInstance {
    this.#handles.add(handle);
    return handle;
  }

  #engine(endpoint: DockerEndpoint, nodeId: string): Promise<DockerEngine> {
    const key = engineKey(endpoint);
    let users = this.#engineNodes.get(key);
    if (!users) {
      users = new Set();
      this.#engineNodes.set(key, users);
    }
    users.add(nodeId);
    let engine = this.#engines.get(key);
    if (!engine) {
      engine = DockerEngine.connect(endpoint, this.#options.gatewayId, {
        timeoutMs: this.#options.engineTimeoutMs ?? DEFAULT_ENGINE_TIMEOUT_MS,
        logger: this.#options.logger,
      });
      // A TLS file that could not be read is read again next time (it may have been fixed).
      engine.catch(() => {
        if (this.#engines.get(key) === engine) this.#engines.delete(key);
      });
      this.#engines.set(key, engine);
    }
    return engine;
  }

  async #placement(node: NodeTarget): Promise<Placement> {
    if (this.#closed) throw new PlatformError("the docker driver is closed", "unavailable");
    if (node.platform !== this.platform) {
      throw new PlatformError(`node ${node.id} is a ${node.platform} node, not docker`, "conflict");
    }
    let endpoint: DockerEndpoint;
    try {
      endpoint = parseDockerEndpoint(node.endpoint);
    } catch (err) {
      throw new PlatformError(`node ${node.id}: ${errorMessage(err)}`, "conflict");
    }
    try {
      return { node: node.id, endpoint, engine: await this.#engine(endpoint, node.id) };
    } catch (err) {
      throw new PlatformError(`node ${node.id}: ${errorMessage(err)}`, "conflict");
    }
  }

  /** This gateway's containers on a node (of one instance). */
  async #containers(placement: Placement, instance?: string): Promise<Docker.ContainerInfo[]> {
    const label = [`${LABEL.gateway}=${this.#options.gatewayId}`, `${LABEL.node}=${placement.node}`];
    if (instance !== undefined) label.push(`${LABEL.instance}=${instance}`);
    try {
      return await placement.engine.call("listing containers", (abortSignal) =>
        placement.engine.docker.listContainers({
          all: true,
          filters: JSON.stringify({ label }),
          abortSignal,
        }),
      );
    } catch (err) {
      throw engineError(placement.engine, err);
    }
  }

  async #deploy(placement: Placement, spec: FreshSpec, state?: TwinState): Promise<Deployment> {
    const { engine } = placement;
    const { docker } = engine;
    const image = spec.artefact.image;
    if (image === undefined)
      throw new PlatformError(`instance ${spec.id}: the package has no image`, "conflict");
    await this.#ensureImage(placement, image);
    const token = randomBytes(24).toString("base64url");
    const name = `dtc-${spec.id}-${randomBytes(3).toString("hex")}`;
    const request: ContainerRequest = {
      name,
      node: placement.node,
      endpoint: placement.endpoint,
      spec,
      image,
      token,
      ports: await this.#ports(placement),
      models: state === undefined ? this.#options.registry.closure(spec.twin.schema) : undefined,
      awaitState: state !== undefined,
      gateway: {
        gatewayId: this.#options.gatewayId,
        brokerUrl: this.#options.brokerUrl,
        httpBaseUri: this.#options.httpBaseUri(),
        brokerCredentials: this.#options.brokerCredentials?.(spec.id),
        pushIntervalMs: this.#options.pushIntervalMs,
        ptClockSkewMs: this.#options.ptClockSkewMs,
        ...(this.#options.metricsToken !== undefined ? { metricsToken: this.#options.metricsToken } : {}),
      },
    };
    const options = containerCreateOptions(request);
    let container: Docker.Container;
    try {
      container = await engine.call(`creating the container of ${spec.id}`, (abortSignal) =>
        docker.createContainer({ ...options, abortSignal }),
      );
    } catch (err) {
      throw engineError(engine, err, `creating the container of ${spec.id}`);
    }
    try {
      try {
        await engine.call(`starting the container of ${spec.id}`, (abortSignal) =>
          container.start({ abortSignal }),
        );
      } catch (err) {
        throw engineError(placement.engine, err, `starting the container of ${spec.id}`);
      }
      const deployment = await this.#attach(placement, container.id, token);
      if (state !== undefined) {
        const { td, status } = await deployment.client.importState(state);
        deployment.td = td;
        deployment.status = status;
      }
      this.#options.logger?.info(
        { instance: spec.id, node: placement.node, container: name, image },
        "twin container started",
      );
      return deployment;
    } catch (err) {
      const logs = await containerLogs(engine, container);
      await removeContainer(engine, container.id).catch((removal: unknown) =>
        this.#options.logger?.warn(
          { container: name, err: errorMessage(removal) },
          "could not remove a twin container that did not start",
        ),
      );
      const message = err instanceof Error ? err.message : String(err);
      throw new PlatformError(
        `twin container ${name} (${image}) did not start: ${message}${logs ? `\n${logs}` : ""}`,
        "failed",
      );
    }
  }

  /** Connects to a started container: its addresses, its exit, its TD and status. */
  async #attach(placement: Placement, containerId: string, knownToken?: string): Promise<Deployment> {
    const container = placement.engine.docker.getContainer(containerId);
    const info = await placement.engine.call("inspecting a container", (abortSignal) =>
      container.inspect({ abortSignal }),
    );
    const name = info.Name.replace(/^\//, "");
    const token = knownToken ?? envOf(info, "DTC_TWIN_TOKEN");
    const { http, management } = containerAddresses(placement.endpoint, info);
    const client = new TwinManagementClient(management, { token });
    let exit: ContainerExit | undefined;
    let onExit: ((exit: ContainerExit) => void) | undefined;
    const stopWatching = await placement.engine.onExit(info.Id, (e) => {
      exit = e;
      onExit?.(e);
    });
    try {
      if (!info.State.Running)
        throw new Error(exitReason(name, { exitCode: info.State.ExitCode, oomKilled: info.State.OOMKilled }));
      await waitServing(client, this.#options.startTimeoutMs ?? 60_000, () =>
        exit ? exitReason(name, exit) : undefined,
      );
      const awaiting = (await client.health()).status === "awaiting-state";
      const deployment: Deployment = {
        container,
        containerId: info.Id,
        name,
        client,
        httpTarget: http,
        td: awaiting ? {} : await client.td(),
        status: awaiting ? { lifecycle: "Unbound" } : await client.status(),
        exited: () => exit,
        setOnExit: (listener) => {
          onExit = listener;
          if (exit) listener(exit);
        },
        stopWatching,
      };
      return deployment;
    } catch (err) {
      stopWatching();
      throw err;
    }
  }

  async #ensureImage(placement: Placement, image: string): Promise<void> {
    const { engine } = placement;
    const { docker } = engine;
    try {
      await engine.call(`inspecting image ${image}`, (abortSignal) =>
        inspectImage(docker, image, abortSignal),
      );
      return;
    } catch (err) {
      if ((err as { statusCode?: number }).statusCode !== 404) throw engineError(placement.engine, err);
    }
    this.#options.logger?.info({ image, engine: engine.address }, "pulling the twin image");
    try {
      await engine.call(
        `pulling image ${image}`,
        async (abortSignal) => {
          const stream = await docker.pull(image, { abortSignal });
          await new Promise<void>((resolve, reject) =>
            docker.modem.followProgress(stream, (err: Error | null) => (err ? reject(err) : resolve())),
          );
        },
        IMAGE_PULL_TIMEOUT_MS,
      );
    } catch (err) {
      throw new PlatformError(
        `image ${image} is not on the Docker engine at ${placement.engine.address} and could not be pulled: ${errorMessage(err)}`,
        "conflict",
      );
    }
  }

  async #ports(placement: Placement): Promise<TwinPorts> {
    if (placement.endpoint.network !== "host") {
      return { http: CONTAINER_HTTP_PORT, management: CONTAINER_MANAGEMENT_PORT };
    }
    if (!isLocalEngine(placement.endpoint)) {
      throw new PlatformError(
        `node ${placement.node}: host networking needs the engine on the gateway's host (a socketPath); use a bridge network for ${placement.engine.address}`,
        "conflict",
      );
    }
    return { http: await freePort(), management: await freePort() };
  }
}

/** Polls the management endpoint until it serves (a twin, or awaiting a state). */
async function waitServing(
  client: TwinManagementClient,
  timeoutMs: number,
  abort: () => string | undefined,
): Promise<void> {
  const until = Date.now() + timeoutMs;
  let last = "no answer yet";
  for (;;) {
    const reason = abort();
    if (reason !== undefined) throw new Error(reason);
    try {
      const health = await client.health();
      if (health.ok || health.status === "awaiting-state") return;
      last = `health: ${health.status}`;
    } catch (err) {
      last = (err as Error).message;
    }
    if (Date.now() > until) throw new Error(`the twin did not answer within ${timeoutMs} ms (${last})`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** Nodes with the same engine address and TLS files share one client. */
const engineKey = (endpoint: DockerEndpoint) =>
  JSON.stringify([engineAddress(endpoint), endpoint.tls ?? null]);
