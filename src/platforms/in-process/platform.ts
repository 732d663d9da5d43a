import type { PlatformPlugin } from "../registry.js";
import { InProcessDriver } from "./driver.js";

/** Twins in the gateway's own process, on node-wot runtimes (one per node). */
export const inProcessPlatform = {
  name: "in-process",
  individual: "InProcess",
  artefact: "module",
  createDriver: (context) =>
    new InProcessDriver({
      registry: context.registry,
      brokerUrl: context.brokerUrl,
      ...(context.gatewayBrokerCredentials ? { brokerCredentials: context.gatewayBrokerCredentials } : {}),
      httpBaseUri: context.httpBaseUri,
      ...(context.pushIntervalMs !== undefined ? { pushIntervalMs: context.pushIntervalMs } : {}),
      ...(context.ptClockSkewMs !== undefined ? { ptClockSkewMs: context.ptClockSkewMs } : {}),
      ...(context.commitObserver ? { commitObserver: context.commitObserver } : {}),
      ...(context.logger ? { logger: context.logger } : {}),
    }),
} as const satisfies PlatformPlugin<"in-process">;
