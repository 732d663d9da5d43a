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
  sparql:
    | {
        queryUrl: string;
        updateUrl: string;
        /** Sent with HTTP Basic or Digest, as the store asks; undefined = no credentials. */
        auth: { user: string; password: string } | undefined;
      }
    | undefined;
  /** The URL clients reach the gateway at (TD forms point here); undefined = the listening address. */
  publicUrl: string | undefined;
  /** How often twins evaluate entanglement and push it to consumers, ms. */
  entanglementIntervalMs: number;
  /** The directory's limits and timers. */
  directory: {
    /** Longest a search query may run, ms. */
    searchTimeoutMs: number;
    /** Most results a search returns. */
    searchMaxResults: number;
    /** Largest request body, bytes. */
    maxBodyBytes: number;
    /** Shortest time between two entanglement writes of a twin's status graph, ms. */
    statusIntervalMs: number;
    /** How often expired TDs are purged, ms. */
    purgeIntervalMs: number;
  };
  /** The manager's timers and the gateway's own node. */
  manager: {
    /** How often desired and actual instances are compared (and lost ones started again), ms. */
    reconcileIntervalMs: number;
    /** How often running twins' states are saved, ms. */
    checkpointIntervalMs: number;
    /** Tier of the gateway's own node `local`. */
    localTier: "edge" | "mec" | "cloud";
  };
  /** Origins browsers may call the API from; ["*"] = any. */
  corsOrigins: string[];
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
  DTC_SPARQL_USER: {
    default: "",
    doc: "User for the remote store's endpoints (HTTP Basic or Digest, as the store asks); unset = none.",
  },
  DTC_SPARQL_PASSWORD: { default: "", doc: "Password of DTC_SPARQL_USER; required with it." },
  DTC_PUBLIC_URL: {
    default: "",
    doc: "URL clients reach the gateway at, used in twins' TD forms (behind a proxy, or with DTC_HOST=0.0.0.0); unset = http://DTC_HOST:port.",
  },
  DTC_ENTANGLEMENT_INTERVAL_MS: {
    default: "1000",
    doc: "How often each twin evaluates its entanglement (ODTE) and pushes it to observers, ms (50-60000).",
  },
  DTC_SEARCH_TIMEOUT_MS: {
    default: "5000",
    doc: "Longest a directory search (SPARQL, JSONPath) may run before it is stopped with a 400, ms (10-600000).",
  },
  DTC_SEARCH_MAX_RESULTS: {
    default: "10000",
    doc: "Most solutions a SPARQL search returns: a larger or missing LIMIT is lowered to it (1-1000000).",
  },
  DTC_MAX_BODY_BYTES: {
    default: "1048576",
    doc: "Largest request body the directory accepts (a TD, a patch); larger ones get 413 (1024-104857600).",
  },
  DTC_STATUS_INTERVAL_MS: {
    default: "5000",
    doc: "Shortest time between two writes of a twin's entanglement figures to its status graph, ms; lifecycle changes are written at once (100-3600000).",
  },
  DTC_PURGE_INTERVAL_MS: {
    default: "60000",
    doc: "How often TDs past their registration expiry are deleted, ms (1000-86400000).",
  },
  DTC_RECONCILE_INTERVAL_MS: {
    default: "10000",
    doc: "How often the manager compares the instances that should run with those that do, and starts lost ones again, ms (100-3600000).",
  },
  DTC_CHECKPOINT_INTERVAL_MS: {
    default: "30000",
    doc: "How often the state of each running twin that changed is saved under DTC_DATA_DIR (what a crash can lose), ms (100-3600000).",
  },
  DTC_NODE_TIER: {
    default: "edge",
    doc: "Tier of the gateway's own DTC Node `local` (in-process twins): edge, mec or cloud.",
  },
  DTC_CORS_ORIGINS: {
    default: "*",
    doc: "Comma-separated origins browsers may call the API from (e.g. https://app.example); * = any.",
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

/** A port number from the environment (`what` ends the message, e.g. the variable's purpose). */
export const port = (what = "") =>
  z
    .string()
    .regex(/^\d+$/, `must be a port number (0-65535)${what}`)
    .transform(Number)
    .refine((n) => n <= 65535, `must be a port number (0-65535)${what}`);

/** An absolute URL with one of `schemes`. */
export const urlWithScheme = (schemes: string[]) =>
  z
    .string()
    .refine((s) => URL.canParse(s), "must be an absolute URL")
    .refine(
      (s) => !URL.canParse(s) || schemes.includes(new URL(s).protocol.slice(0, -1)),
      `must use one of the schemes ${schemes.join(", ")}`,
    );

/** A whole number in [min, max], named with its unit in errors. */
const wholeNumber = (min: number, max: number, unit: string) =>
  z
    .string()
    .regex(/^\d+$/, `must be a whole number of ${unit}`)
    .transform(Number)
    .refine((n) => n >= min && n <= max, `must be between ${min} and ${max} ${unit}`);

const origins = z
  .string()
  .transform((s) =>
    s
      .split(",")
      .map((o) => o.trim())
      .filter((o) => o !== ""),
  )
  .refine((list) => list.length > 0, "must name at least one origin, or *")
  .refine(
    (list) => list.every((o) => o === "*" || (URL.canParse(o) && new URL(o).origin === o)),
    "must be * or origins like https://app.example (scheme, host and port only)",
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
    // RFC 7617: a Basic user-id cannot contain a colon.
    DTC_SPARQL_USER: z.string().refine((s) => !s.includes(":"), "must not contain a colon"),
    DTC_SPARQL_PASSWORD: z.string(),
    DTC_PUBLIC_URL: z.union([z.literal(""), urlWithScheme(["http", "https"])]),
    DTC_ENTANGLEMENT_INTERVAL_MS: z
      .string()
      .regex(/^\d+$/, "must be a whole number of milliseconds")
      .transform(Number)
      .refine((n) => n >= 50 && n <= 60_000, "must be between 50 and 60000 ms"),
    DTC_SEARCH_TIMEOUT_MS: wholeNumber(10, 600_000, "ms"),
    DTC_SEARCH_MAX_RESULTS: wholeNumber(1, 1_000_000, "results"),
    DTC_MAX_BODY_BYTES: wholeNumber(1024, 100 * 1024 * 1024, "bytes"),
    DTC_STATUS_INTERVAL_MS: wholeNumber(100, 3_600_000, "ms"),
    DTC_PURGE_INTERVAL_MS: wholeNumber(1000, 86_400_000, "ms"),
    DTC_RECONCILE_INTERVAL_MS: wholeNumber(100, 3_600_000, "ms"),
    DTC_CHECKPOINT_INTERVAL_MS: wholeNumber(100, 3_600_000, "ms"),
    DTC_NODE_TIER: z.enum(["edge", "mec", "cloud"]),
    DTC_CORS_ORIGINS: origins,
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
    if ((env.DTC_SPARQL_USER === "") !== (env.DTC_SPARQL_PASSWORD === "")) {
      const missing = env.DTC_SPARQL_USER === "" ? "DTC_SPARQL_USER" : "DTC_SPARQL_PASSWORD";
      ctx.addIssue({ code: "custom", path: [missing], message: "must be set too: credentials need both" });
    }
    if (env.DTC_SPARQL_USER !== "" && env.DTC_SPARQL_QUERY_URL === "") {
      ctx.addIssue({
        code: "custom",
        path: ["DTC_SPARQL_USER"],
        message: "is for a remote SPARQL store: set DTC_SPARQL_QUERY_URL and DTC_SPARQL_UPDATE_URL too",
      });
    }
  });

/** Never trimmed (spaces may be part of them) nor shown in error messages. */
const SECRETS: ReadonlySet<string> = new Set<EnvName>(["DTC_SPARQL_PASSWORD"]);

/** Reads and validates the configuration; throws ConfigError naming each bad variable and value. */
export function loadConfig(env: NodeJS.ProcessEnv = process.env): Config {
  const raw = Object.fromEntries(
    Object.entries(ENVIRONMENT).map(([name, spec]) => {
      const value = env[name] ?? spec.default;
      return [name, SECRETS.has(name) ? value : value.trim()];
    }),
  ) as Record<EnvName, string>;
  const parsed = schema.safeParse(raw);
  if (!parsed.success) {
    throw new ConfigError(
      parsed.error.issues.map((issue) => {
        const variable = String(issue.path[0] ?? "(environment)");
        const value = raw[variable as EnvName] ?? "";
        const shown = SECRETS.has(variable) && value !== "" ? "(hidden)" : JSON.stringify(value);
        return { variable, message: `${issue.message} (got ${shown})` };
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
      ? {
          queryUrl: v.DTC_SPARQL_QUERY_URL,
          updateUrl: v.DTC_SPARQL_UPDATE_URL,
          auth: v.DTC_SPARQL_USER ? { user: v.DTC_SPARQL_USER, password: v.DTC_SPARQL_PASSWORD } : undefined,
        }
      : undefined,
    publicUrl: v.DTC_PUBLIC_URL ? v.DTC_PUBLIC_URL.replace(/\/+$/, "") : undefined,
    entanglementIntervalMs: v.DTC_ENTANGLEMENT_INTERVAL_MS,
    directory: {
      searchTimeoutMs: v.DTC_SEARCH_TIMEOUT_MS,
      searchMaxResults: v.DTC_SEARCH_MAX_RESULTS,
      maxBodyBytes: v.DTC_MAX_BODY_BYTES,
      statusIntervalMs: v.DTC_STATUS_INTERVAL_MS,
      purgeIntervalMs: v.DTC_PURGE_INTERVAL_MS,
    },
    manager: {
      reconcileIntervalMs: v.DTC_RECONCILE_INTERVAL_MS,
      checkpointIntervalMs: v.DTC_CHECKPOINT_INTERVAL_MS,
      localTier: v.DTC_NODE_TIER,
    },
    corsOrigins: v.DTC_CORS_ORIGINS,
    logLevel: v.DTC_LOG_LEVEL,
  };
}
