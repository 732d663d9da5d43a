import type { FieldIssue } from "../../domain/errors.js";
import { urlHost } from "../../security/outbound.js";
import type { PlatformPlugin } from "../registry.js";
import { DockerDriver } from "./driver.js";
import { checkEndpointFiles, dockerEndpoint, parseDockerEndpoint } from "./endpoint.js";

/** Twins as containers on a Docker engine (local socket or remote, TLS). */
export const dockerPlatform = {
  name: "docker",
  individual: "Docker",
  artefact: "image",
  endpoint: dockerEndpoint,
  async checkEndpoint(raw, hostRefused) {
    // Its shape was checked with the node: this gives the defaults.
    const endpoint = parseDockerEndpoint(raw);
    const issues: FieldIssue[] = [];
    const named: { field: string; host: string | undefined }[] = [];
    if (endpoint.host !== undefined) named.push({ field: "endpoint.host", host: endpoint.host });
    if (endpoint.publishHost !== undefined) {
      named.push({ field: "endpoint.publishHost", host: endpoint.publishHost });
    }
    if (endpoint.brokerUrl !== undefined) {
      named.push({ field: "endpoint.brokerUrl", host: urlHost(endpoint.brokerUrl) });
    }
    for (const { field, host } of named) {
      const description = hostRefused(host);
      if (description !== undefined) issues.push({ field, description });
    }
    issues.push(...(await checkEndpointFiles(endpoint)));
    return issues;
  },
  createDriver: (context) =>
    new DockerDriver({
      registry: context.registry,
      brokerUrl: context.brokerUrl,
      brokerCredentials: context.twinBrokerCredentials,
      httpBaseUri: context.httpBaseUri,
      gatewayId: context.gatewayId,
      ...(context.pushIntervalMs !== undefined ? { pushIntervalMs: context.pushIntervalMs } : {}),
      ...(context.ptClockSkewMs !== undefined ? { ptClockSkewMs: context.ptClockSkewMs } : {}),
      ...(context.platformTimeoutMs !== undefined ? { engineTimeoutMs: context.platformTimeoutMs } : {}),
      ...(context.metricsToken !== undefined ? { metricsToken: context.metricsToken } : {}),
      ...(context.logger ? { logger: context.logger } : {}),
    }),
} as const satisfies PlatformPlugin<"docker">;
