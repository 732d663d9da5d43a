import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { loadConfig } from "../src/config.js";
import { type Gateway, startGateway } from "../src/gateway.js";
import { createLogger } from "../src/logger.js";

/** A JSON answer of the gateway: status, content type and parsed body (objects and arrays alike). */
export interface Answer {
  status: number;
  type: string | null;
  body: Record<string, unknown> & Record<string, unknown>[];
}

/** Calls the gateway at `base` with a JSON body (a string is sent as is, to test bad JSON), as `token`. */
export async function call(
  base: string,
  method: string,
  path: string,
  body?: unknown,
  token?: string,
): Promise<Answer> {
  const res = await fetch(`${base}${path}`, {
    method,
    headers: {
      ...(body === undefined ? {} : { "Content-Type": "application/json" }),
      ...(token === undefined ? {} : { Authorization: `Bearer ${token}` }),
    },
    body: body === undefined ? undefined : typeof body === "string" ? body : JSON.stringify(body),
  });
  const text = await res.text();
  return {
    status: res.status,
    type: res.headers.get("content-type"),
    body: text === "" ? ({} as Answer["body"]) : JSON.parse(text),
  };
}

/**
 * An in-process gateway on free ports with fast entanglement, on `env.DTC_DATA_DIR` or on a fresh
 * data dir that its close() removes. Authentication is off unless `env.DTC_AUTH` is "on" (the
 * security suites and the journey test turn it on; the others test other things).
 */
export async function startTestGateway(env: Record<string, string> = {}): Promise<Gateway> {
  const own = env.DTC_DATA_DIR === undefined ? mkdtempSync(join(tmpdir(), "dtc-manager-")) : undefined;
  const gateway = await startGateway(
    loadConfig({
      DTC_PORT: "0",
      DTC_MQTT_PORT: "0",
      ...(own ? { DTC_DATA_DIR: own } : {}),
      DTC_ENTANGLEMENT_INTERVAL_MS: "100",
      DTC_AUTH: "off",
      ...env,
    }),
    // DTC_TEST_LOG_LEVEL=debug shows what a test gateway did (silent by default).
    createLogger((process.env.DTC_TEST_LOG_LEVEL ?? "silent") as Parameters<typeof createLogger>[0]),
  );
  if (!own) return gateway;
  return {
    ...gateway,
    close: async () => {
      await gateway.close();
      rmSync(own, { recursive: true, force: true });
    },
  };
}

/** Fidelity a 10 Hz simulator meets within a couple of seconds. */
export const FAST = { expectedUpdateRate: 10, odteWindow: 2, desiredTimeliness: 50 };

/** The admin token a gateway with authentication on wrote at its first start. */
export function adminToken(gateway: Gateway): string {
  if (gateway.adminTokenFile === undefined) throw new Error("this gateway runs without authentication");
  return readFileSync(gateway.adminTokenFile, "utf8").trim();
}
