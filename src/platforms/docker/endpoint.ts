import { constants } from "node:fs";
import { open, stat } from "node:fs/promises";
import type { Agent } from "node:http";
import Docker from "dockerode";
import { z } from "zod";
import { BROKER_CREDENTIALS, hasCredentials } from "../../security/outbound.js";

/**
 * How the gateway reaches a Docker node's engine, and how twins there are networked: the `endpoint`
 * of a DTC Node of platform `docker`. Checked when the node is registered: its shape here (sync),
 * the files it names with checkEndpointFiles (async: a FIFO or a hung mount never blocks the event
 * loop).
 */

const MQTT_URL = z
  .url({ protocol: /^(mqtts?|wss?|tcp|ssl)$/ })
  .refine((url) => !hasCredentials(url), BROKER_CREDENTIALS);

/** A host name or an IP address: docker-modem parses a URL here, so no scheme, user, port or path. */
const HOST = z
  .string()
  .refine(
    (h) => z.hostname().safeParse(h).success || z.ipv6().safeParse(h).success,
    "must be a host name or an IP address (no scheme, user, port or path)",
  );

/** An absolute path on the gateway's host (a relative one would depend on the gateway's working directory). */
const ABSOLUTE_PATH = z
  .string()
  .max(4096)
  .refine((p) => p.startsWith("/") && !p.includes("\0"), "must be an absolute path");

/** Docker's rule for network names. */
const NETWORK_NAME = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$/;

const NETWORK = z
  .string()
  .superRefine((n, ctx) => {
    if (n.startsWith("container:")) {
      ctx.addIssue({
        code: "custom",
        message: "must not be container:<id> (twins would join another container's network namespace)",
      });
    } else if (n === "default" || !NETWORK_NAME.test(n)) {
      ctx.addIssue({
        code: "custom",
        message:
          "must be host, bridge, none or a user-defined network's name (letters, digits, _ . -, at most 128)",
      });
    }
  })
  .default("bridge");

export const dockerEndpoint = z
  .strictObject({
    /** A local engine's socket (the default when neither socketPath nor host is given). */
    socketPath: ABSOLUTE_PATH.optional(),
    /** A remote engine: host, port (2375, or 2376 with TLS) and protocol. */
    host: HOST.optional(),
    port: z.number().int().min(1).max(65535).optional(),
    protocol: z.enum(["http", "https"]).optional(),
    /** Client certificate files on the gateway's host (not their contents: no keys in the inventory). */
    tls: z.strictObject({ ca: ABSOLUTE_PATH.optional(), cert: ABSOLUTE_PATH, key: ABSOLUTE_PATH }).optional(),
    /**
     * `host`: twins share the engine host's network (ports picked by the gateway, which must run on
     * that host); `bridge` (default) or a user-defined network: twins' ports are published.
     */
    network: NETWORK,
    /**
     * Off the host network: `published` (default) reaches twins on ports published on the engine's
     * host; `network` on their address in `network`, which the gateway must share (docker-compose).
     */
    reach: z.enum(["published", "network"]).default("published"),
    /** The MQTT broker as twins in containers reach it (and their TDs' MQTT forms); default: the gateway's. */
    brokerUrl: MQTT_URL.optional(),
    /** The address the gateway reaches published ports at; default 127.0.0.1, or `host` for a remote engine. */
    publishHost: HOST.optional(),
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

/** The protocol the gateway speaks to the engine. */
export const engineProtocol = (e: DockerEndpoint): "http" | "https" =>
  e.protocol ?? (e.tls ? "https" : "http");

/** Where the engine is, for messages and for telling engines apart. */
export function engineAddress(e: DockerEndpoint): string {
  if (e.host === undefined) return `unix://${e.socketPath ?? DEFAULT_SOCKET}`;
  const protocol = engineProtocol(e);
  return `${protocol}://${e.host}:${e.port ?? (protocol === "https" ? 2376 : 2375)}`;
}

/** Whether the engine runs on the gateway's host (its ports can be probed and reached on loopback). */
export const isLocalEngine = (e: DockerEndpoint): boolean => e.host === undefined;

/** A certificate, key or CA bundle is a few KiB: anything larger is not one. */
const TLS_FILE_MAX_BYTES = 1024 * 1024;
/** Longest a stat or read of an endpoint's file may take (a hung network mount). */
const FILE_TIMEOUT_MS = 5000;

export interface EndpointIssue {
  field: string;
  description: string;
}

/**
 * What is wrong with the files an endpoint names: `socketPath` must be a socket when it exists (a
 * missing one is an engine not up yet: the node is registered, not ready), each `tls` file a
 * regular, non-empty file of at most 1 MiB (symbolic links followed).
 */
export async function checkEndpointFiles(e: DockerEndpoint): Promise<EndpointIssue[]> {
  const issues: EndpointIssue[] = [];
  if (e.socketPath !== undefined) {
    const problem = await fileProblem(e.socketPath, "socket");
    if (problem !== undefined) issues.push({ field: "endpoint.socketPath", description: problem });
  }
  for (const member of ["ca", "cert", "key"] as const) {
    const file = e.tls?.[member];
    if (file === undefined) continue;
    const problem = await fileProblem(file, "file");
    if (problem !== undefined) issues.push({ field: `endpoint.tls.${member}`, description: problem });
  }
  return issues;
}

async function fileProblem(path: string, kind: "socket" | "file"): Promise<string | undefined> {
  let info: Awaited<ReturnType<typeof stat>>;
  try {
    info = await withTimeout(stat(path), FILE_TIMEOUT_MS, `${path}: no answer within ${FILE_TIMEOUT_MS} ms`);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === "ENOENT" && kind === "socket") return undefined;
    return code === "ENOENT"
      ? `${path} does not exist`
      : `${path} cannot be checked (${code ?? (err as Error).message})`;
  }
  if (kind === "socket") return info.isSocket() ? undefined : `${path} is not a socket`;
  if (!info.isFile()) return `${path} is not a regular file`;
  if (info.size === 0) return `${path} is empty`;
  if (info.size > TLS_FILE_MAX_BYTES) return `${path} is larger than 1 MiB`;
  return undefined;
}

/**
 * Reads a TLS file without blocking the gateway: opened non-blocking (a FIFO swapped in after the
 * check must not hold a thread until a writer comes), checked to be a regular file, read up to the
 * size cap, within a timeout.
 */
async function readTlsFile(path: string, field: string): Promise<Buffer> {
  const read = async () => {
    const handle = await open(path, constants.O_RDONLY | constants.O_NONBLOCK);
    try {
      if (!(await handle.stat()).isFile()) throw new Error(`${path} is not a regular file`);
      const buffer = Buffer.alloc(TLS_FILE_MAX_BYTES + 1);
      let length = 0;
      while (length < buffer.length) {
        const { bytesRead } = await handle.read(buffer, length, buffer.length - length, null);
        if (bytesRead === 0) break;
        length += bytesRead;
      }
      if (length > TLS_FILE_MAX_BYTES) throw new Error(`${path} is larger than 1 MiB`);
      return buffer.subarray(0, length);
    } finally {
      await handle.close();
    }
  };
  try {
    return await withTimeout(read(), FILE_TIMEOUT_MS, `${path}: no answer within ${FILE_TIMEOUT_MS} ms`);
  } catch (err) {
    throw new Error(`${field}: ${(err as Error).message}`);
  }
}

/**
 * The engine's client; a remote engine's TLS files are read here, asynchronously. `agent` (an
 * https one for https): its connections are the client's, so destroying it closes them all.
 */
export async function dockerClient(e: DockerEndpoint, agent?: Agent): Promise<Docker> {
  // docker-modem takes `agent`; dockerode's typings do not list it.
  const withAgent = agent ? ({ agent } as Docker.DockerOptions) : {};
  if (e.host === undefined) return new Docker({ socketPath: e.socketPath ?? DEFAULT_SOCKET, ...withAgent });
  const protocol = engineProtocol(e);
  const { tls } = e;
  const files = tls
    ? await Promise.all([
        tls.ca === undefined ? undefined : readTlsFile(tls.ca, "endpoint.tls.ca"),
        readTlsFile(tls.cert, "endpoint.tls.cert"),
        readTlsFile(tls.key, "endpoint.tls.key"),
      ])
    : undefined;
  return new Docker({
    host: e.host,
    port: e.port ?? (protocol === "https" ? 2376 : 2375),
    protocol,
    ...(files ? { ca: files[0], cert: files[1], key: files[2] } : {}),
    ...withAgent,
  });
}

function withTimeout<T>(promise: Promise<T>, ms: number, message: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(message)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}
