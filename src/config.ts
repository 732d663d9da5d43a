import { resolve } from "node:path";
import { z } from "zod";

/** Every setting of the gateway, read from the environment once at start. */
export interface Config {
  /** Gateway HTTP port (0 picks a free one). */
  port: number;
  host: string;
  /** Where durable state lives (absolute). */
  dataDir: string;
  /** External MQTT broker; undefined means the embedded broker on mqttPort. */
  mqttUrl: string | undefined;
  mqttPort: number;
  /** Remote SPARQL 1.1 store; undefined means the embedded store. */
  sparql: { queryUrl: string; updateUrl: string } | undefined;
  /** The URL clients reach the gateway at (TD forms point here); undefined = the listening address. */
  publicUrl: string | undefined;
  /** How often twins evaluate entanglement and push it to consumers, ms. */
  entanglementIntervalMs: number;
  logLevel: "fatal" | "error" | "warn" | "info" | "debug" | "trace" | "silent";
}

/** The environment variables, their defaults and what they mean: the README's table comes from this. */
export const ENVIRONMENT = {
  DTC_PORT: { default: "8080", doc: "Gateway HTTP port (0 = any free port)." },
  DTC_HOST: { default: "127.0.0.1", doc: "Address the gateway listens on (0.0.0.0 for all interfaces)." },
  DTC_DATA_DIR: { default: "./data", doc: "Directory for durable state (created if missing)." },
  DTC_MQTT_URL: {
    default: "",
    doc: "External MQTT broker (mqtt://, mqtts://, ws://, wss://); unset = embedded.",
  },
  DTC_MQTT_PORT: { default: "1883", doc: "Port of the embedded MQTT broker when DTC_MQTT_URL is unset." },
  DTC_SPARQL_QUERY_URL: {
    default: "",
    doc: "SPARQL 1.1 query endpoint of a remote store; unset = embedded.",
  },
  DTC_SPARQL_UPDATE_URL: {
    default: "",
    doc: "SPARQL 1.1 update endpoint; required with DTC_SPARQL_QUERY_URL.",
  },
  DTC_PUBLIC_URL: {
    default: "",
    doc: "URL clients reach the gateway at, used in twins' TD forms (behind a proxy, or with DTC_HOST=0.0.0.0); unset = http://DTC_HOST:port.",
  },
  DTC_ENTANGLEMENT_INTERVAL_MS: {
    default: "1000",
    doc: "How often each twin evaluates its entanglement (ODTE) and pushes it to observers, ms (50-60000).",
  },
  DTC_LOG_LEVEL: { default: "info", doc: "fatal, error, warn, info, debug, trace or silent." },
} as const;

export type EnvName = keyof typeof ENVIRONMENT;

/** A configuration that cannot start the gateway: names every variable at fault. */
export class ConfigError extends Error {
  readonly issues: { variable: string; message: string }[];
  constructor(issues: { variable: string; message: string }[]) {
    super(`Invalid configuration:\n${issues.map((i) => `  ${i.variable}: ${i.message}`).join("\n")}`);
    this.name = "ConfigError";
    this.issues = issues;
  }
}

const port = (what: string) =>
  z
    .string()
    .regex(/^\d+$/, `must be a port number (0-65535)${what}`)
    .transform(Number)
    .refine((n) => n <= 65535, `must be a port number (0-65535)${what}`);

const urlWithScheme = (schemes: string[]) =>
  z
    .string()
    .refine((s) => URL.canParse(s), "must be an absolute URL")
    .refine(
      (s) => !URL.canParse(s) || schemes.includes(new URL(s).protocol.slice(0, -1)),
      `must use one of the schemes ${schemes.join(", ")}`,
    );

const schema = z
  .object({
    DTC_PORT: port(""),
    DTC_HOST: z.string().min(1, "must not be empty"),
    DTC_DATA_DIR: z.string().min(1, "must not be empty"),
    DTC_MQTT_URL: z.union([z.literal(""), urlWithScheme(["mqtt", "mqtts", "ws", "wss", "tcp", "ssl"])]),
    DTC_MQTT_PORT: port(""),
    DTC_SPARQL_QUERY_URL: z.union([z.literal(""), urlWithScheme(["http", "https"])]),
    DTC_SPARQL_UPDATE_URL: z.union([z.literal(""), urlWithScheme(["http", "https"])]),
    DTC_PUBLIC_URL: z.union([z.literal(""), urlWithScheme(["http", "https"])]),
    DTC_ENTANGLEMENT_INTERVAL_MS: z
      .string()
      .regex(/^\d+$/, "must be a whole number of milliseconds")
      .transform(Number)
      .refine((n) => n >= 50 && n <= 60_000, "must be between 50 and 60000 ms"),
    DTC_LOG_LEVEL: z.enum(["fatal", "error", "warn", "info", "debug", "trace", "silent"]),
  })
  .superRefine((env, ctx) => {
    if ((env.DTC_SPARQL_QUERY_URL === "") !== (env.DTC_SPARQL_UPDATE_URL === "")) {
      const missing = env.DTC_SPARQL_QUERY_URL === "" ? "DTC_SPARQL_QUERY_URL" : "DTC_SPARQL_UPDATE_URL";
      ctx.addIssue({
        code: "custom",
        path: [missing],
        message: "must be set too: a remote SPARQL store needs both the query and the update endpoint",
      });
    }
  });

/** Reads and validates the configuration; throws ConfigError naming each bad variable and value. */
export function loadConfig(env: NodeJS.ProcessEnv = process.env): Config {
  const raw = Object.fromEntries(
    Object.entries(ENVIRONMENT).map(([name, spec]) => [name, (env[name] ?? spec.default).trim()]),
  ) as Record<EnvName, string>;
  const parsed = schema.safeParse(raw);
  if (!parsed.success) {
    throw new ConfigError(
      parsed.error.issues.map((issue) => {
        const variable = String(issue.path[0] ?? "(environment)");
        const value = raw[variable as EnvName];
        return { variable, message: `${issue.message} (got ${JSON.stringify(value ?? "")})` };
      }),
    );
  }
  const v = parsed.data;
  return {
    port: v.DTC_PORT,
    host: v.DTC_HOST,
    dataDir: resolve(v.DTC_DATA_DIR),
    mqttUrl: v.DTC_MQTT_URL || undefined,
    mqttPort: v.DTC_MQTT_PORT,
    sparql: v.DTC_SPARQL_QUERY_URL
      ? { queryUrl: v.DTC_SPARQL_QUERY_URL, updateUrl: v.DTC_SPARQL_UPDATE_URL }
      : undefined,
    publicUrl: v.DTC_PUBLIC_URL ? v.DTC_PUBLIC_URL.replace(/\/+$/, "") : undefined,
    entanglementIntervalMs: v.DTC_ENTANGLEMENT_INTERVAL_MS,
    logLevel: v.DTC_LOG_LEVEL,
  };
}
