import http from "node:http";
import type { AddressInfo } from "node:net";

/**
 * A stand-in for a Docker engine on a free loopback port, for faults a real engine does not make
 * on demand. `hang`: accepts every connection and never answers; `ping-only`: answers GET /_ping
 * and never anything else (an engine stuck behind its API); `broken`: answers GET /_ping and
 * fails every other request with 500 (it "refuses" them, as a real engine says).
 */
export type FakeEngineMode = "hang" | "ping-only" | "broken";

export interface FakeDockerEngine {
  port: number;
  /** A Docker node's endpoint for it. */
  endpoint: { host: string; port: number; network: string };
  mode: FakeEngineMode;
  /** Requests it received (method and path), in order. */
  requests: string[];
  /** Connections open to it now. */
  connections(): Promise<number>;
  close(): Promise<void>;
}

export async function startFakeDockerEngine(mode: FakeEngineMode): Promise<FakeDockerEngine> {
  const requests: string[] = [];
  const engine = { mode } as FakeDockerEngine;
  const server = http.createServer((req, res) => {
    requests.push(`${req.method} ${req.url}`);
    if (engine.mode === "hang") return;
    if (req.method === "GET" && req.url?.startsWith("/_ping")) {
      res.writeHead(200, { "Content-Type": "text/plain" }).end("OK");
      return;
    }
    if (engine.mode === "ping-only") return;
    res
      .writeHead(500, { "Content-Type": "application/json" })
      .end(JSON.stringify({ message: "boom (fake)" }));
  });
  // Idle connections stay open until the client closes them (what a test of releasing them watches).
  server.keepAliveTimeout = 10 * 60_000;
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as AddressInfo;
  return Object.assign(engine, {
    port,
    endpoint: { host: "127.0.0.1", port, network: "bridge" },
    requests,
    connections: () =>
      new Promise<number>((resolve, reject) =>
        server.getConnections((err, count) => (err ? reject(err) : resolve(count))),
      ),
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  });
}
