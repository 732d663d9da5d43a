import { type ChildProcess, spawn } from "node:child_process";
import { existsSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import mqtt from "mqtt";
import { type EmbeddedBrokerOptions, startEmbeddedBroker } from "../src/mqtt/embedded-broker.js";
import { freePort } from "../src/net.js";

export { freePort };

/** A real MQTT broker on loopback for one test file. */
export interface TestBroker {
  kind: "aedes" | "mosquitto";
  url: string;
  stop(): Promise<void>;
}

export interface TestBrokerOptions {
  /** mosquitto: more configuration lines (password_file, acl_file, allow_anonymous false, …). */
  mosquittoConfig?: string[];
  /** aedes: authentication and ACLs, as the gateway's embedded broker has them. */
  security?: EmbeddedBrokerOptions["security"];
  /** aedes: this port (default any free one). */
  port?: number;
}

/** Why a broker cannot run here, or undefined when it can. In CI a missing engine is an error. */
export function unavailable(kind: TestBroker["kind"]): string | undefined {
  if (kind === "aedes") return undefined;
  if (mosquittoBinary() !== undefined) return undefined;
  const reason = "mosquitto is not installed (Debian package mosquitto; .ci/run installs it)";
  if (process.env.CI === "true") throw new Error(`CI: ${reason}`);
  return reason;
}

export const BROKER_KINDS = ["aedes", "mosquitto"] as const;

function mosquittoBinary(): string | undefined {
  const dirs = [...(process.env.PATH ?? "").split(path.delimiter), "/usr/sbin", "/usr/local/sbin"];
  return dirs.map((d) => path.join(d, "mosquitto")).find((p) => existsSync(p));
}

/** Connects until the broker answers (a refused CONNECT is an answer), or fails after `deadlineMs`. */
async function waitForBroker(url: string, deadlineMs: number, proc?: ChildProcess): Promise<void> {
  const until = Date.now() + deadlineMs;
  let last: unknown;
  while (Date.now() < until) {
    if (proc?.exitCode != null) throw new Error(`broker exited with code ${proc.exitCode}`);
    try {
      const client = await mqtt.connectAsync(url, { reconnectPeriod: 0, connectTimeout: 1000 });
      await client.endAsync();
      return;
    } catch (err) {
      // A CONNACK refusal has a numeric code: a broker that wants credentials is up.
      if (typeof (err as { code?: unknown }).code === "number") return;
      last = err;
      await new Promise((r) => setTimeout(r, 50));
    }
  }
  throw new Error(`broker at ${url} did not answer within ${deadlineMs} ms: ${String(last)}`);
}

export async function startBroker(
  kind: TestBroker["kind"],
  options: TestBrokerOptions = {},
): Promise<TestBroker> {
  if (kind === "aedes") {
    const broker = await startEmbeddedBroker({
      port: options.port ?? 0,
      ...(options.security ? { security: options.security } : {}),
    });
    return { kind, url: broker.url, stop: () => broker.close() };
  }
  const extra = options.mosquittoConfig ?? [];
  const binary = mosquittoBinary();
  if (binary === undefined) throw new Error("mosquitto is not installed");
  const dir = mkdtempSync(path.join(tmpdir(), "dtc-mosquitto-"));
  const port = await freePort();
  const conf = path.join(dir, "mosquitto.conf");
  writeFileSync(
    conf,
    [
      `listener ${port} 127.0.0.1`,
      ...(extra.some((line) => line.startsWith("allow_anonymous")) ? [] : ["allow_anonymous true"]),
      "persistence false",
      "log_dest stderr",
      "log_type error",
      "max_queued_messages 100000",
      "set_tcp_nodelay true",
      ...extra,
      "",
    ].join("\n"),
  );
  const proc = spawn(binary, ["-c", conf], { stdio: ["ignore", "ignore", "pipe"] });
  let stderr = "";
  proc.stderr?.on("data", (d) => {
    stderr += String(d);
  });
  const url = `mqtt://127.0.0.1:${port}`;
  try {
    await waitForBroker(url, 10_000, proc);
  } catch (err) {
    proc.kill("SIGKILL");
    rmSync(dir, { recursive: true, force: true });
    throw new Error(`mosquitto did not start: ${(err as Error).message}\n${stderr}`);
  }
  return {
    kind,
    url,
    stop: async () => {
      if (proc.exitCode === null) {
        const exited = new Promise((resolve) => proc.once("exit", resolve));
        proc.kill("SIGTERM");
        await exited;
      }
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
