import { readFileSync } from "node:fs";
import Docker from "dockerode";
import { z } from "zod";

/**
 * How the gateway reaches a Docker node's engine, and how twins there are networked: the `endpoint`
 * of a DTC Node of platform `docker`. Checked when the node is registered.
 */

const MQTT_URL = z.url({ protocol: /^(mqtts?|wss?|tcp|ssl)$/ });

export const dockerEndpoint = z
  .strictObject({
    /** A local engine's socket (the default when neither socketPath nor host is given). */
    socketPath: z.string().min(1).optional(),
    /** A remote engine: host, port (2375, or 2376 with TLS) and protocol. */
    host: z.string().min(1).optional(),
    port: z.number().int().min(1).max(65535).optional(),
    protocol: z.enum(["http", "https"]).optional(),
    /** Client certificate files on the gateway's host (not their contents: no keys in the inventory). */
    tls: z
      .strictObject({ ca: z.string().min(1).optional(), cert: z.string().min(1), key: z.string().min(1) })
      .optional(),
    /**
     * `host`: twins share the engine host's network (ports picked by the gateway, which must run on
     * that host); `bridge` (default) or a user-defined network: twins' ports are published.
     */
    network: z.string().min(1).default("bridge"),
    /**
     * Off the host network: `published` (default) reaches twins on ports published on the engine's
     * host; `network` on their address in `network`, which the gateway must share (docker-compose).
     */
    reach: z.enum(["published", "network"]).default("published"),
    /** The MQTT broker as twins in containers reach it (and their TDs' MQTT forms); default: the gateway's. */
    brokerUrl: MQTT_URL.optional(),
    /** The address the gateway reaches published ports at; default 127.0.0.1, or `host` for a remote engine. */
    publishHost: z.string().min(1).optional(),
  })
  .superRefine((e, ctx) => {
    if (e.socketPath !== undefined && e.host !== undefined) {
      ctx.addIssue({ code: "custom", path: ["host"], message: "give socketPath or host, not both" });
    }
    if (e.host === undefined && (e.port !== undefined || e.protocol !== undefined || e.tls !== undefined)) {
      ctx.addIssue({ code: "custom", path: ["host"], message: "is required with port, protocol or tls" });
    }
  });

export type DockerEndpoint = z.output<typeof dockerEndpoint>;

export const DEFAULT_SOCKET = "/var/run/docker.sock";

/** The endpoint of a node (its `endpoint` checked; none means the local default socket). */
export function parseDockerEndpoint(endpoint: Record<string, unknown> | undefined): DockerEndpoint {
  const parsed = dockerEndpoint.safeParse(endpoint ?? {});
  if (!parsed.success) {
    const problems = parsed.error.issues.map((i) => `endpoint.${i.path.join(".")}: ${i.message}`);
    throw new Error(problems.join("; "));
  }
  return parsed.data;
}

/** Where the engine is, for messages and for telling engines apart. */
export function engineAddress(e: DockerEndpoint): string {
  if (e.host === undefined) return `unix://${e.socketPath ?? DEFAULT_SOCKET}`;
  const protocol = e.protocol ?? (e.tls ? "https" : "http");
  return `${protocol}://${e.host}:${e.port ?? (protocol === "https" ? 2376 : 2375)}`;
}

/** Whether the engine runs on the gateway's host (its ports can be probed and reached on loopback). */
export const isLocalEngine = (e: DockerEndpoint): boolean => e.host === undefined;

export function dockerClient(e: DockerEndpoint): Docker {
  if (e.host === undefined) return new Docker({ socketPath: e.socketPath ?? DEFAULT_SOCKET });
  const protocol = e.protocol ?? (e.tls ? "https" : "http");
  return new Docker({
    host: e.host,
    port: e.port ?? (protocol === "https" ? 2376 : 2375),
    protocol,
    ...(e.tls
      ? {
          ca: e.tls.ca === undefined ? undefined : readFileSync(e.tls.ca),
          cert: readFileSync(e.tls.cert),
          key: readFileSync(e.tls.key),
        }
      : {}),
  });
}
