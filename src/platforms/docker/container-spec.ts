import type Docker from "dockerode";
import { tracingEnvironment } from "../../observability/tracing.js";
import type { InstanceSpec } from "../driver.js";
import { PlatformError } from "../driver.js";
import { type DockerEndpoint, isLocalEngine } from "./endpoint.js";
import { type ContainerExit, LABEL } from "./engine.js";

/**
 * What a twin's container is, as pure functions of the instance, the node and the gateway: its
 * environment, its create options (labels, ports, limits) and the addresses the gateway reaches it
 * on. No engine is needed to build or test any of it (test/docker-container-spec.test.ts).
 */

/** The twin's ports inside a container on a bridge or user-defined network. */
export const CONTAINER_HTTP_PORT = 8080;
export const CONTAINER_MANAGEMENT_PORT = 8081;
/** execve refuses a single environment string over 128 KiB. */
export const MAX_TWIN_ENV_BYTES = 120 * 1024;

/** What a fresh start (and every restart) needs: the spec without a state. */
export type FreshSpec = Omit<InstanceSpec, "state">;

/** The spec without its state, the twin's id set to the instance's. */
export function fresh(spec: InstanceSpec): FreshSpec {
  const { state: _state, ...rest } = spec;
  return structuredClone({ ...rest, twin: { ...rest.twin, id: spec.id } });
}

/** Ports the twin listens on: the container's own, or ports of the engine's host on `network: "host"`. */
export interface TwinPorts {
  http: number;
  management: number;
}

/** The gateway's side of a twin container's environment. */
export interface GatewaySettings {
  gatewayId: string;
  /** The gateway's broker, unless the node names its own. */
  brokerUrl: string;
  /** Where the twins' HTTP forms point. */
  httpBaseUri: string;
  /** Who the twin connects to the broker as; undefined: nobody. */
  brokerCredentials?: { username: string; password: string };
  pushIntervalMs?: number;
  ptClockSkewMs?: number;
  /** The bearer token Prometheus scrapes twins' /metrics with (DTC_METRICS_TOKEN); undefined: the management token only. */
  metricsToken?: string;
}

/** One container to create for an instance on a node. */
export interface ContainerRequest {
  name: string;
  node: string;
  endpoint: DockerEndpoint;
  spec: FreshSpec;
  /** The image of the package (checked by the caller). */
  image: string;
  token: string;
  ports: TwinPorts;
  /** The schemas the twin needs (the schema and what it extends); left out when the container awaits a state. */
  models: unknown;
  /** The container starts empty and waits for a state import (restore, move). */
  awaitState: boolean;
  gateway: GatewaySettings;
}

/** The container's environment; refuses a configuration larger than an environment string may be. */
export function twinEnvironment(request: ContainerRequest): string[] {
  const { spec, endpoint, ports, gateway } = request;
  const config = request.awaitState
    ? { twin: spec.twin, awaitState: true }
    : { twin: spec.twin, models: request.models, augmentations: spec.augmentations };
  const twin = JSON.stringify(config);
  if (Buffer.byteLength(twin) > MAX_TWIN_ENV_BYTES) {
    throw new PlatformError(
      `instance ${spec.id}: its configuration and schemas take ${Buffer.byteLength(twin)} bytes, more than a container's environment takes (${MAX_TWIN_ENV_BYTES})`,
      "conflict",
    );
  }
  const host = endpoint.network === "host" && isLocalEngine(endpoint) ? "127.0.0.1" : "0.0.0.0";
  const credentials = gateway.brokerCredentials;
  // Variables, not the URL: the URL reaches the twin's TD.
  return [
    `DTC_TWIN=${twin}`,
    `DTC_MQTT_URL=${endpoint.brokerUrl ?? gateway.brokerUrl}`,
    `DTC_TWIN_HOST=${host}`,
    `DTC_TWIN_PORT=${ports.http}`,
    `DTC_TWIN_MANAGEMENT_PORT=${ports.management}`,
    `DTC_TWIN_BASE_URI=${gateway.httpBaseUri}`,
    `DTC_TWIN_TOKEN=${request.token}`,
    // The labels of the twin's own metrics (its /metrics on the management port).
    `DTC_TWIN_NODE=${request.node}`,
    "DTC_TWIN_PLATFORM=docker",
    ...(gateway.metricsToken !== undefined ? [`DTC_METRICS_TOKEN=${gateway.metricsToken}`] : []),
    ...(credentials
      ? [`DTC_MQTT_USERNAME=${credentials.username}`, `DTC_MQTT_PASSWORD=${credentials.password}`]
      : []),
    ...(gateway.pushIntervalMs ? [`DTC_ENTANGLEMENT_INTERVAL_MS=${gateway.pushIntervalMs}`] : []),
    ...(gateway.ptClockSkewMs !== undefined ? [`DTC_PT_CLOCK_SKEW_MS=${gateway.ptClockSkewMs}`] : []),
    // Tracing on: the twin exports its spans where the gateway does (they join its traces).
    ...tracingEnvironment(),
  ];
}

/**
 * The engine's create options: labels that let a restarted gateway adopt the container, the ports
 * (host ports in labels on `network: "host"`, else published on loopback for a local engine), the
 * package's CPU, memory and GPU as limits, and no restart policy (the reconciler restarts twins).
 */
export function containerCreateOptions(request: ContainerRequest): Docker.ContainerCreateOptions {
  const { spec, endpoint, ports } = request;
  const { cpu, memory, gpu } = spec.requirements;
  const hostNetwork = endpoint.network === "host";
  const publishIp = isLocalEngine(endpoint) ? "127.0.0.1" : "";
  const exposed = [`${CONTAINER_HTTP_PORT}/tcp`, `${CONTAINER_MANAGEMENT_PORT}/tcp`];
  return {
    name: request.name,
    Image: request.image,
    Env: twinEnvironment(request),
    Labels: {
      [LABEL.gateway]: request.gateway.gatewayId,
      [LABEL.node]: request.node,
      [LABEL.instance]: spec.id,
      [LABEL.package]: spec.package ?? "",
      [LABEL.schema]: spec.twin.schema,
      ...(hostNetwork
        ? { [LABEL.httpPort]: String(ports.http), [LABEL.managementPort]: String(ports.management) }
        : {}),
    },
    ...(hostNetwork ? {} : { ExposedPorts: Object.fromEntries(exposed.map((p) => [p, {}])) }),
    HostConfig: {
      NetworkMode: endpoint.network,
      ...(hostNetwork
        ? {}
        : {
            PortBindings: Object.fromEntries(exposed.map((p) => [p, [{ HostIp: publishIp, HostPort: "" }]])),
          }),
      ...(cpu ? { NanoCpus: Math.round(cpu * 1e9) } : {}),
      ...(memory ? { Memory: memory * 2 ** 20 } : {}),
      ...(gpu ? { DeviceRequests: [{ Driver: "", Count: gpu, Capabilities: [["gpu"]] }] } : {}),
      RestartPolicy: { Name: "no" },
    },
  };
}

/** The twin's node-wot HTTP and management base URLs as the gateway reaches them. */
export function containerAddresses(
  endpoint: DockerEndpoint,
  info: Docker.ContainerInspectInfo,
): { http: string; management: string } {
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

/** Why a container is no longer running, in words. */
export function exitReason(name: string, exit: ContainerExit): string {
  const code = Number.isNaN(exit.exitCode) ? "is gone" : `exited with code ${exit.exitCode}`;
  return `container ${name} ${code}${exit.oomKilled ? " (out of memory)" : exit.exitCode === 137 ? " (killed)" : ""}`;
}

/** A variable of a container's environment. */
export function envOf(info: Docker.ContainerInspectInfo, name: string): string | undefined {
  const entry = (info.Config.Env ?? []).find((e) => e.startsWith(`${name}=`));
  return entry?.slice(name.length + 1);
}
