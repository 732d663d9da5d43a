import { randomBytes } from "node:crypto";
import { once } from "node:events";
import { Readable, Writable } from "node:stream";
import type Docker from "dockerode";
import type { EntanglementFigures } from "../../domain/entanglement.js";
import type { LifecycleState } from "../../domain/lifecycle.js";
import type { Logger } from "../../logger.js";
import { freePort } from "../../net.js";
import { TwinManagementClient, TwinManagementError } from "../../runtime/management-client.js";
import type { TwinState } from "../../runtime/twin.js";
import type { ThingModelRegistry } from "../../wot/model-registry.js";
import type { JsonObject } from "../../wot/rdf.js";
import {
  type InstanceHandle,
  type InstanceSpec,
  type InstanceStatus,
  type NodeTarget,
  type PlatformDriver,
  PlatformError,
  type Readiness,
  type StatusListener,
} from "../driver.js";
import { type DockerEndpoint, engineAddress, isLocalEngine, parseDockerEndpoint } from "./endpoint.js";
import { type ContainerExit, DEFAULT_ENGINE_TIMEOUT_MS, DockerEngine, LABEL } from "./engine.js";

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
  logger?: Logger;
}

/** The twin's ports inside a container on a bridge or user-defined network. */
const CONTAINER_HTTP_PORT = 8080;
const CONTAINER_MANAGEMENT_PORT = 8081;
/** execve refuses a single environment string over 128 KiB. */
const MAX_TWIN_ENV_BYTES = 120 * 1024;
const STOP_GRACE_S = 10;
/** Longest an image pull may take, ms (a pull streams progress for as long as it runs). */
export const IMAGE_PULL_TIMEOUT_MS = 4 * 60_000;
/** Log lines of a container that failed at start, quoted in the error. */
const LOG_TAIL = 20;

export class DockerDriver implements PlatformDriver {
  readonly platform = "docker" as const;
  readonly #options: DockerDriverOptions;
  /** Engine key -> engine (nodes on one engine share its event stream). */
  readonly #engines = new Map<string, Promise<DockerEngine>>();
  /** Engine key -> the nodes that used it, so that a removed node's engine is closed once unused. */
  readonly #engineNodes = new Map<string, Set<string>>();
  readonly #handles = new Set<DockerInstance>();
  #closed = false;

  constructor(options: DockerDriverOptions) {
    this.#options = options;
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
      return { ready: false, reason: (err as Error).message };
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
          : `the Docker engine at ${engineAddress(endpoint)} does not answer: ${(err as Error).message}`;
      return { ready: false, reason };
    }
  }

  async start(spec: InstanceSpec): Promise<InstanceHandle> {
    const placement = await this.#placement(spec.node);
    const deployment = await this.#deploy(placement, fresh(spec), spec.state);
    return this.#track(new DockerInstance(this, placement, fresh(spec), deployment));
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
            { instance: spec.id, container: info.Id, err: (err as Error).message },
            "a running twin container does not answer; replacing it",
          );
        }
      }
      await removeContainer(placement.engine, info.Id);
    }
    if (!adopted) return undefined;
    this.#options.logger?.info({ instance: spec.id, container: adopted.name }, "twin container adopted");
    return this.#track(new DockerInstance(this, placement, fresh(spec), adopted));
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

  // ---- for DockerInstance

  /** Creates and starts a container for `spec` (fresh, or importing `state`) and waits until it serves. */
  async deploy(placement: Placement, spec: FreshSpec, state?: TwinState): Promise<Deployment> {
    return this.#deploy(placement, spec, state);
  }

  untrack(handle: DockerInstance): void {
    this.#handles.delete(handle);
  }

  get logger(): Logger | undefined {
    return this.#options.logger;
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
      throw new PlatformError(`node ${node.id}: ${(err as Error).message}`, "conflict");
    }
    try {
      return { node: node.id, endpoint, engine: await this.#engine(endpoint, node.id) };
    } catch (err) {
      throw new PlatformError(`node ${node.id}: ${(err as Error).message}`, "conflict");
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
      throw engineError(placement, err);
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
    const ports = await this.#ports(placement);
    const name = `dtc-${spec.id}-${randomBytes(3).toString("hex")}`;
    const env = this.#environment(placement, spec, { token, ports, awaitState: state !== undefined });
    const { cpu, memory, gpu } = spec.requirements;
    const hostNetwork = placement.endpoint.network === "host";
    const publishIp = isLocalEngine(placement.endpoint) ? "127.0.0.1" : "";
    let container: Docker.Container;
    try {
      container = await engine.call(`creating the container of ${spec.id}`, (abortSignal) =>
        docker.createContainer({
          abortSignal,
          name,
          Image: image,
          Env: env,
          Labels: {
            [LABEL.gateway]: this.#options.gatewayId,
            [LABEL.node]: placement.node,
            [LABEL.instance]: spec.id,
            [LABEL.package]: spec.package ?? "",
            [LABEL.schema]: spec.twin.schema,
            ...(hostNetwork
              ? { [LABEL.httpPort]: String(ports.http), [LABEL.managementPort]: String(ports.management) }
              : {}),
          },
          ...(hostNetwork
            ? {}
            : {
                ExposedPorts: {
                  [`${CONTAINER_HTTP_PORT}/tcp`]: {},
                  [`${CONTAINER_MANAGEMENT_PORT}/tcp`]: {},
                },
              }),
          HostConfig: {
            NetworkMode: placement.endpoint.network,
            ...(hostNetwork
              ? {}
              : {
                  PortBindings: {
                    [`${CONTAINER_HTTP_PORT}/tcp`]: [{ HostIp: publishIp, HostPort: "" }],
                    [`${CONTAINER_MANAGEMENT_PORT}/tcp`]: [{ HostIp: publishIp, HostPort: "" }],
                  },
                }),
            ...(cpu ? { NanoCpus: Math.round(cpu * 1e9) } : {}),
            ...(memory ? { Memory: memory * 2 ** 20 } : {}),
            ...(gpu ? { DeviceRequests: [{ Driver: "", Count: gpu, Capabilities: [["gpu"]] }] } : {}),
            RestartPolicy: { Name: "no" },
          },
        }),
      );
    } catch (err) {
      throw engineError(placement, err, `creating the container of ${spec.id}`);
    }
    try {
      try {
        await engine.call(`starting the container of ${spec.id}`, (abortSignal) =>
          container.start({ abortSignal }),
        );
      } catch (err) {
        throw engineError(placement, err, `starting the container of ${spec.id}`);
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
          { container: name, err: (removal as Error).message },
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
    const { http, management } = addresses(placement, info);
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
      if ((err as { statusCode?: number }).statusCode !== 404) throw engineError(placement, err);
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
        `image ${image} is not on the Docker engine at ${placement.engine.address} and could not be pulled: ${(err as Error).message}`,
        "conflict",
      );
    }
  }

  async #ports(placement: Placement): Promise<{ http: number; management: number }> {
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

  #environment(
    placement: Placement,
    spec: FreshSpec,
    options: { token: string; ports: { http: number; management: number }; awaitState: boolean },
  ): string[] {
    const config = options.awaitState
      ? { twin: spec.twin, awaitState: true }
      : {
          twin: spec.twin,
          models: this.#options.registry.closure(spec.twin.schema),
          augmentations: spec.augmentations,
        };
    const twin = JSON.stringify(config);
    if (Buffer.byteLength(twin) > MAX_TWIN_ENV_BYTES) {
      throw new PlatformError(
        `instance ${spec.id}: its configuration and schemas take ${Buffer.byteLength(twin)} bytes, more than a container's environment takes (${MAX_TWIN_ENV_BYTES})`,
        "conflict",
      );
    }
    const local = isLocalEngine(placement.endpoint);
    const host = placement.endpoint.network === "host" && local ? "127.0.0.1" : "0.0.0.0";
    // Variables, not the URL: the URL reaches the twin's TD.
    const credentials = this.#options.brokerCredentials?.(spec.id);
    return [
      `DTC_TWIN=${twin}`,
      `DTC_MQTT_URL=${placement.endpoint.brokerUrl ?? this.#options.brokerUrl}`,
      `DTC_TWIN_HOST=${host}`,
      `DTC_TWIN_PORT=${options.ports.http}`,
      `DTC_TWIN_MANAGEMENT_PORT=${options.ports.management}`,
      `DTC_TWIN_BASE_URI=${this.#options.httpBaseUri()}`,
      `DTC_TWIN_TOKEN=${options.token}`,
      ...(credentials
        ? [`DTC_MQTT_USERNAME=${credentials.username}`, `DTC_MQTT_PASSWORD=${credentials.password}`]
        : []),
      ...(this.#options.pushIntervalMs
        ? [`DTC_ENTANGLEMENT_INTERVAL_MS=${this.#options.pushIntervalMs}`]
        : []),
      ...(this.#options.ptClockSkewMs !== undefined
        ? [`DTC_PT_CLOCK_SKEW_MS=${this.#options.ptClockSkewMs}`]
        : []),
    ];
  }
}

/** Where a node's twins run and how the gateway reaches them. */
interface Placement {
  node: string;
  endpoint: DockerEndpoint;
  engine: DockerEngine;
}

/** What a fresh start (and every restart) needs: the spec without a state. */
type FreshSpec = Omit<InstanceSpec, "state">;

function fresh(spec: InstanceSpec): FreshSpec {
  const { state: _state, ...rest } = spec;
  return structuredClone({ ...rest, twin: { ...rest.twin, id: spec.id } });
}

/** One container of an instance (a restart replaces it). */
interface Deployment {
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

/** The twin's node-wot HTTP and management base URLs as the gateway reaches them. */
function addresses(
  placement: Placement,
  info: Docker.ContainerInspectInfo,
): { http: string; management: string } {
  const { endpoint } = placement;
  const host = endpoint.publishHost ?? (isLocalEngine(endpoint) ? "127.0.0.1" : (endpoint.host as string));
  const url = (h: string, port: number | string) => `http://${h.includes(":") ? `[${h}]` : h}:${port}`;
  if (endpoint.network === "host") {
    const labels = info.Config.Labels ?? {};
    return {
      http: url(host, labels[LABEL.httpPort] ?? ""),
      management: url(host, labels[LABEL.managementPort] ?? ""),
    };
  }
  if (endpoint.reach === "network") {
    const ip = info.NetworkSettings.Networks[endpoint.network]?.IPAddress;
    if (!ip) throw new Error(`container ${info.Name} has no address on network ${endpoint.network}`);
    return { http: url(ip, CONTAINER_HTTP_PORT), management: url(ip, CONTAINER_MANAGEMENT_PORT) };
  }
  const published = (port: number) => {
    const binding = info.NetworkSettings.Ports?.[`${port}/tcp`]?.[0];
    if (!binding?.HostPort) throw new Error(`container ${info.Name} has no published port for ${port}`);
    return binding.HostPort;
  };
  return {
    http: url(host, published(CONTAINER_HTTP_PORT)),
    management: url(host, published(CONTAINER_MANAGEMENT_PORT)),
  };
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

function exitReason(name: string, exit: ContainerExit): string {
  const code = Number.isNaN(exit.exitCode) ? "is gone" : `exited with code ${exit.exitCode}`;
  return `container ${name} ${code}${exit.oomKilled ? " (out of memory)" : exit.exitCode === 137 ? " (killed)" : ""}`;
}

function envOf(info: Docker.ContainerInspectInfo, name: string): string | undefined {
  const entry = (info.Config.Env ?? []).find((e) => e.startsWith(`${name}=`));
  return entry?.slice(name.length + 1);
}

/** Image.inspect() of dockerode drops its abortSignal: the same request, abortable. */
function inspectImage(docker: Docker, image: string, abortSignal: AbortSignal): Promise<unknown> {
  return new Promise((resolve, reject) =>
    docker.modem.dial(
      {
        path: `/images/${image}/json`,
        method: "GET",
        abortSignal,
        statusCodes: { 200: true, 404: "no such image", 500: "server error" },
      },
      (err, data) => (err ? reject(err) : resolve(data)),
    ),
  );
}

/** The last lines a container wrote (stdout and stderr, demultiplexed by docker-modem). */
async function containerLogs(engine: DockerEngine, container: Docker.Container): Promise<string> {
  try {
    const framed = (await engine.call("reading a container's logs", (abortSignal) =>
      container.logs({ stdout: true, stderr: true, tail: LOG_TAIL, abortSignal }),
    )) as unknown as Buffer;
    const chunks: Buffer[] = [];
    const sink = new Writable({
      write(chunk: Buffer, _encoding, done) {
        chunks.push(chunk);
        done();
      },
    });
    const source = Readable.from([framed]);
    engine.docker.modem.demuxStream(source, sink, sink);
    await once(source, "end");
    return Buffer.concat(chunks).toString("utf8").trim();
  } catch {
    return "";
  }
}

async function removeContainer(engine: DockerEngine, id: string): Promise<void> {
  try {
    await engine.call("removing a container", (abortSignal) =>
      engine.docker.getContainer(id).remove({ force: true, abortSignal }),
    );
  } catch (err) {
    const status = (err as { statusCode?: number }).statusCode;
    // Gone already, or being removed by an earlier call.
    if (status !== 404 && status !== 409) throw err;
  }
}

function engineError(placement: Placement, err: unknown, doing?: string): PlatformError {
  if (err instanceof PlatformError) return err;
  const status = (err as { statusCode?: number }).statusCode;
  const message = (err as { json?: { message?: string } }).json?.message ?? (err as Error).message;
  const what = `${doing ? `${doing}: ` : ""}the Docker engine at ${placement.engine.address}`;
  return status === undefined
    ? new PlatformError(`${what} does not answer: ${message}`, "unavailable")
    : new PlatformError(`${what} refused: ${message}`, "failed");
}

/** Nodes with the same engine address and TLS files share one client. */
const engineKey = (endpoint: DockerEndpoint) =>
  JSON.stringify([engineAddress(endpoint), endpoint.tls ?? null]);

class DockerInstance implements InstanceHandle {
  readonly id: string;
  readonly node: string;
  readonly #driver: DockerDriver;
  readonly #placement: Placement;
  readonly #spec: FreshSpec;
  #deployment: Deployment | undefined;
  #failed: string | undefined;
  /** The container's exit is expected (shutdown, restart, removal): not a failure. */
  #leaving = false;
  #closeEvents: (() => void) | undefined;
  /** Registered listeners (each a copy, so one listener may be registered twice); they outlive a restart's container. */
  readonly #listeners = new Set<StatusListener>();

  constructor(driver: DockerDriver, placement: Placement, spec: FreshSpec, deployment: Deployment) {
    this.id = spec.id;
    this.node = placement.node;
    this.#driver = driver;
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
      next = await this.#driver.deploy(this.#placement, this.#spec);
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
    this.#driver.untrack(this);
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
        if (status === 400 || status === 409) throw new PlatformError(err.message, "conflict");
        throw new PlatformError(
          `instance ${this.id}: the twin's management endpoint: ${err.message}`,
          "failed",
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
        this.#driver.logger?.warn(
          { instance: this.id, container: deployment.name, err: (err as Error).message },
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
    this.#driver.logger?.warn({ instance: this.id, node: this.node, reason }, "twin container failed");
    for (const l of [...this.#listeners]) l.failed?.(reason);
  }

  #gone(): void {
    this.#deployment?.stopWatching();
    this.#deployment = undefined;
    this.#listeners.clear();
    this.#driver.untrack(this);
  }
}
