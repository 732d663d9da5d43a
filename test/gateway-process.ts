import { type ChildProcess, spawn } from "node:child_process";
import { once } from "node:events";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { projectRoot } from "../src/paths.js";

/** The built entry point, as `npm start` runs it (`npm test` and `npm run bench` build first). */
export const gatewayMain = join(projectRoot, "dist/src/main.js");

export interface GatewayProcess {
  child: ChildProcess;
  /** The URL from the "dtc gateway listening" log line. */
  url: string;
  /** ms from spawn to that line. */
  readyMs: number;
  /** SIGTERM, and resolves once it exited. */
  stop(): Promise<void>;
  /** SIGKILL, and resolves once it exited (cleanup after a failed test). */
  kill(): Promise<void>;
}

/**
 * Starts `node dist/src/main.js` with `env` over a clean environment (any free HTTP and MQTT port
 * unless given; authentication off unless `env.DTC_AUTH` is "on") and resolves once it listens.
 * stderr is passed through.
 */
export async function startGatewayProcess(env: Record<string, string>): Promise<GatewayProcess> {
  const started = performance.now();
  const child = spawn(process.execPath, ["--no-node-snapshot", gatewayMain], {
    env: {
      PATH: process.env.PATH ?? "",
      // The run's temp root (test/global-setup.ts), where its teardown looks for leftover processes.
      TMPDIR: tmpdir(),
      DTC_PORT: "0",
      DTC_MQTT_PORT: "0",
      DTC_AUTH: "off",
      ...env,
    },
    stdio: ["ignore", "pipe", "inherit"],
  });
  const url = await new Promise<string>((resolve, reject) => {
    let buffer = "";
    child.once("exit", (code, signal) =>
      reject(new Error(`the gateway exited (${code ?? signal}) before listening`)),
    );
    child.stdout?.on("data", (chunk: Buffer) => {
      buffer += chunk.toString();
      const line = buffer.split("\n").find((l) => l.includes('"dtc gateway listening"'));
      if (line) resolve((JSON.parse(line) as { url: string }).url);
      // Only the start matters; keep reading (a full pipe would stall the gateway) but not keeping.
      if (buffer.length > 1e6) buffer = buffer.slice(-1e4);
    });
  });
  const signalAndWait = async (signal: NodeJS.Signals) => {
    if (child.exitCode !== null || child.signalCode !== null) return;
    const exited = once(child, "exit");
    child.kill(signal);
    await exited;
  };
  return {
    child,
    url,
    readyMs: performance.now() - started,
    stop: () => signalAndWait("SIGTERM"),
    kill: () => signalAndWait("SIGKILL"),
  };
}
