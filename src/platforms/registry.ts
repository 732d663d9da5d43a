import type { ZodType } from "zod";
import type { FieldIssue } from "../domain/errors.js";
import type { Logger } from "../logger.js";
import type { Twin } from "../runtime/twin.js";
import type { ThingModelRegistry } from "../wot/model-registry.js";
import { dockerPlatform } from "./docker/platform.js";
import type { PlatformDriver } from "./driver.js";
import { inProcessPlatform } from "./in-process/platform.js";
import { kubernetesPlatform } from "./kubernetes/platform.js";

/**
 * The platforms dtc knows: each contributes its name, its ontology individual, the artefact its
 * packages carry, its nodes' endpoint schema and checks, and its driver factory. A new platform is
 * a folder under src/platforms/ plus one entry in PLATFORM_REGISTRY; the manager, the inventory
 * and the API read everything else from here.
 */

export interface MqttCredentials {
  username: string;
  password: string;
}

/** What the gateway gives every driver it creates. */
export interface DriverContext {
  registry: ThingModelRegistry;
  /** The gateway's broker: the PTs' default and the twins' MQTT forms. */
  brokerUrl: string;
  /** Who the gateway's own clients connect to the broker as; undefined: an open broker. */
  gatewayBrokerCredentials?: MqttCredentials;
  /** Who a twin running apart from the gateway (a container) connects as. */
  twinBrokerCredentials(twinId: string): MqttCredentials | undefined;
  /** Where the twins' HTTP forms point, e.g. "http://127.0.0.1:8080/twins". */
  httpBaseUri: () => string;
  /** This gateway's id (labels what it creates on shared engines). */
  gatewayId: string;
  pushIntervalMs?: number;
  ptClockSkewMs?: number;
  /** Longest one platform API request may take, ms (DTC_PLATFORM_TIMEOUT_MS). */
  platformTimeoutMs?: number;
  /** The bearer token Prometheus scrapes twin processes' /metrics with (DTC_METRICS_TOKEN). */
  metricsToken?: string;
  /** The commit hook of each twin the gateway runs in its own process (its metrics); none: unset. */
  commitObserver?: (twin: Twin, node: string) => Twin["onCommit"];
  logger?: Logger;
}

export interface PlatformPlugin<Name extends string = string> {
  name: Name;
  /** Its individual in the dtc ontology (dtc:InProcess, dtc:Docker, ...). */
  individual: string;
  /** What its packages run: a runtime `module` (in-process) or an `image`. */
  artefact: "module" | "image";
  /** The shape of its nodes' `endpoint` (absent: its nodes take any or none). */
  endpoint?: ZodType;
  /**
   * What is wrong with a node's endpoint beyond its shape (files it names, hosts it points the
   * gateway at; `hostRefused` says why a host is not allowed out). Fields start with `endpoint.`.
   */
  checkEndpoint?(
    endpoint: Record<string, unknown> | undefined,
    hostRefused: (host: string | undefined) => string | undefined,
  ): Promise<FieldIssue[]>;
  /** The driver; absent: nodes and packages of the platform can be registered, twins cannot run yet. */
  createDriver?(context: DriverContext): PlatformDriver;
}

export const PLATFORM_REGISTRY = [inProcessPlatform, dockerPlatform, kubernetesPlatform] as const;

export type Platform = (typeof PLATFORM_REGISTRY)[number]["name"];

export const PLATFORMS = PLATFORM_REGISTRY.map((p) => p.name) as [Platform, ...Platform[]];

export function platformPlugin(name: string): PlatformPlugin | undefined {
  return (PLATFORM_REGISTRY as readonly PlatformPlugin[]).find((p) => p.name === name);
}

/** The dtc ontology's individual for a platform. */
export function platformIndividual(name: string): string {
  const plugin = platformPlugin(name);
  if (plugin === undefined) throw new RangeError(`no platform named ${name}`);
  return plugin.individual;
}

/** One driver for each registered platform that has one. */
export function createDrivers(context: DriverContext): PlatformDriver[] {
  return (PLATFORM_REGISTRY as readonly PlatformPlugin[]).flatMap((p) =>
    p.createDriver ? [p.createDriver(context)] : [],
  );
}
