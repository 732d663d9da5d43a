import { readFileSync } from "node:fs";
import { z } from "zod";
import { ConfigError, port, urlWithScheme } from "../config.js";
import { errorMessage } from "../domain/errors.js";
import { TWIN_ID, type TwinConfig } from "../domain/twin-state.js";

/**
 * The configuration of a standalone twin process (src/twin-main.ts): one twin per process, as a
 * container platform runs it. Read from the environment once at start; the twin itself comes as
 * JSON in DTC_TWIN (or a file named by DTC_TWIN_FILE, for configurations too large for the
 * environment).
 */

/** What DTC_TWIN (or the file of DTC_TWIN_FILE) holds. */
export interface TwinProcessConfig {
  twin: TwinConfig;
  /** Thing Models by IRI, registered (after the built-in thing-models/) before the twin is created. */
  models?: Record<string, unknown>;
  /** Installed on a fresh start only (a state carries its own functions). */
  augmentations?: { name: string; source: string }[];
  /** Create no twin at start: serve management and wait for PUT /state. */
  awaitState?: boolean;
}

/** Everything the process reads from the environment. */
export interface TwinProcessSettings {
  config: TwinProcessConfig;
  /** The variable the twin configuration came from (named in errors about its content). */
  configSource: "DTC_TWIN" | "DTC_TWIN_FILE";
  mqttUrl: string;
  /** Who the twin connects to DTC_MQTT_URL as; undefined = no credentials (an open broker). */
  mqttCredentials: { username: string; password: string } | undefined;
  /** node-wot HTTP port (0 picks a free one). */
  httpPort: number;
  /** Management HTTP port (0 picks a free one). */
  managementPort: number;
  /** Address both servers listen on. */
  host: string;
  /** Where the TD's HTTP forms point; undefined = http://localhost:{httpPort}. */
  baseUri: string | undefined;
  /** Bearer token of the management routes (all but GET /health); undefined = open. */
  token: string | undefined;
  /** A second bearer token GET /metrics accepts (Prometheus's); undefined = the management token only. */
  metricsToken: string | undefined;
  /** The node and platform labels of the twin's metrics. */
  node: string;
  platform: string;
  entanglementIntervalMs: number;
  /** How far ahead of the twin's clock a PT timestamp may be, ms. */
  ptClockSkewMs: number;
  logLevel: "fatal" | "error" | "warn" | "info" | "debug" | "trace" | "silent";
}

/** The variables, their defaults and what they mean (for the README's table). */
export const TWIN_ENVIRONMENT = {
  DTC_TWIN: {
    default: "",
    doc: "JSON of the twin process configuration ({twin, models?, augmentations?, awaitState?}); exactly one of DTC_TWIN and DTC_TWIN_FILE.",
  },
  DTC_TWIN_FILE: {
    default: "",
    doc: "Path of a JSON file holding the twin process configuration, instead of DTC_TWIN.",
  },
  DTC_MQTT_URL: {
    default: "",
    doc: "Required. MQTT broker of the PTs (by default) and of the twin's MQTT forms (mqtt://, mqtts://, ws://, wss://, tcp://, ssl://).",
  },
  DTC_MQTT_USERNAME: {
    default: "",
    doc: "User the twin connects to DTC_MQTT_URL as (the gateway sets dtc-twin:{id} for its embedded broker); unset = no credentials.",
  },
  DTC_MQTT_PASSWORD: {
    default: "",
    doc: "Password of DTC_MQTT_USERNAME; required with it. Never logged nor shown in errors.",
  },
  DTC_TWIN_PORT: { default: "8080", doc: "node-wot HTTP port of the twin (0 = any free port)." },
  DTC_TWIN_MANAGEMENT_PORT: { default: "8081", doc: "Management HTTP port (0 = any free port)." },
  DTC_TWIN_HOST: { default: "0.0.0.0", doc: "Address both HTTP servers listen on." },
  DTC_TWIN_BASE_URI: {
    default: "",
    doc: "Where the TD's HTTP forms point (e.g. http://gateway/twins); unset = http://localhost:{DTC_TWIN_PORT}.",
  },
  DTC_TWIN_TOKEN: {
    default: "",
    doc: "Bearer token every management route but GET /health requires; unset = no authentication.",
  },
  DTC_METRICS_TOKEN: {
    default: "",
    doc: "Bearer token GET /metrics on the management port accepts besides DTC_TWIN_TOKEN (Prometheus's); unset = DTC_TWIN_TOKEN only.",
  },
  DTC_TWIN_NODE: { default: "", doc: "The DTC Node the twin runs on: the `node` label of its metrics." },
  DTC_TWIN_PLATFORM: {
    default: "docker",
    doc: "The platform the twin runs on: the `platform` label of its metrics.",
  },
  DTC_ENTANGLEMENT_INTERVAL_MS: {
    default: "1000",
    doc: "How often the twin evaluates its entanglement (ODTE) and pushes it to observers, ms (50-60000).",
  },
  DTC_PT_CLOCK_SKEW_MS: {
    default: "60000",
    doc: "How far ahead of the twin's clock a PT timestamp may be; later ones are refused as malformed, ms (0-86400000).",
  },
  LOG_LEVEL: {
    default: "info",
    doc: "fatal, error, warn, info, debug, trace or silent (pino JSON on stdout).",
  },
} as const;

export type TwinEnvName = keyof typeof TWIN_ENVIRONMENT;

/** Never trimmed nor shown in error messages. */
const SECRETS: ReadonlySet<string> = new Set<TwinEnvName>([
  "DTC_TWIN_TOKEN",
  "DTC_MQTT_PASSWORD",
  "DTC_METRICS_TOKEN",
]);
/** Whole documents: shown in errors by their first characters only. */
const DOCUMENTS: ReadonlySet<string> = new Set<TwinEnvName>(["DTC_TWIN"]);

const MQTT_SCHEMES = ["mqtt", "mqtts", "ws", "wss", "tcp", "ssl"];

const environment = z.object({
  DTC_TWIN: z.string(),
  DTC_TWIN_FILE: z.string(),
  DTC_MQTT_URL: z
    .string()
    .min(1, "is required: the MQTT broker of the twin")
    .pipe(urlWithScheme(MQTT_SCHEMES)),
  DTC_MQTT_USERNAME: z.string(),
  DTC_MQTT_PASSWORD: z.string(),
  DTC_TWIN_PORT: port(),
  DTC_TWIN_MANAGEMENT_PORT: port(),
  DTC_TWIN_HOST: z.string().min(1, "must not be empty"),
  DTC_TWIN_BASE_URI: z.union([z.literal(""), urlWithScheme(["http", "https"])]),
  DTC_TWIN_TOKEN: z.string(),
  DTC_METRICS_TOKEN: z.string(),
  DTC_TWIN_NODE: z.string(),
  DTC_TWIN_PLATFORM: z.string().min(1, "must not be empty"),
  DTC_ENTANGLEMENT_INTERVAL_MS: z
    .string()
    .regex(/^\d+$/, "must be a whole number of milliseconds")
    .transform(Number)
    .refine((n) => n >= 50 && n <= 60_000, "must be between 50 and 60000 ms"),
  DTC_PT_CLOCK_SKEW_MS: z
    .string()
    .regex(/^\d+$/, "must be a whole number of milliseconds")
    .transform(Number)
    .refine((n) => n <= 86_400_000, "must be at most 86400000 ms"),
  LOG_LEVEL: z.enum(["fatal", "error", "warn", "info", "debug", "trace", "silent"]),
});

const positive = z.number().positive().finite();

/**
 * The twin's configuration (TwinConfig). Unknown members are kept: a newer gateway may send a
 * field this image does not know yet, and it should survive into exported states.
 */
const twinConfig = z.looseObject({
  id: z
    .string()
    .regex(
      TWIN_ID,
      "must be 1-63 characters: lowercase letters, digits, - or _, starting with a letter or digit",
    ),
  schema: z.string().refine((s) => URL.canParse(s), "must be an absolute IRI (the DT Schema's)"),
  placeholders: z.record(z.string(), z.unknown()).optional(),
  brokerUrl: urlWithScheme(MQTT_SCHEMES).optional(),
  fidelity: z
    .strictObject({
      desiredTimeliness: positive.optional(),
      expectedUpdateRate: positive.optional(),
      odteThreshold: z.number().min(0).max(1).optional(),
      odteWindow: positive.optional(),
    })
    .optional(),
  shadowing: z.string().min(1).optional(),
  historyLimit: z.number().int().min(1).max(100_000).optional(),
});

export const twinProcessConfigSchema = z.strictObject({
  twin: twinConfig,
  models: z
    .record(
      z.string().refine((s) => URL.canParse(s), "must be an absolute IRI"),
      z.record(z.string(), z.unknown()),
    )
    .optional(),
  augmentations: z.array(z.strictObject({ name: z.string().min(1), source: z.string().min(1) })).optional(),
  awaitState: z.boolean().optional(),
});

function shown(variable: string, value: string): string {
  if (SECRETS.has(variable)) return value === "" ? '""' : "(hidden)";
  if (DOCUMENTS.has(variable) && value.length > 80) return `${JSON.stringify(value.slice(0, 80))}...`;
  return JSON.stringify(value);
}

/** Parses and validates the twin configuration (JSON text); throws ConfigError naming `variable`. */
export function parseTwinProcessConfig(text: string, variable: string): TwinProcessConfig {
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (err) {
    throw new ConfigError([{ variable, message: `is not valid JSON: ${errorMessage(err)}` }]);
  }
  const parsed = twinProcessConfigSchema.safeParse(json);
  if (!parsed.success) {
    throw new ConfigError(
      parsed.error.issues.map((issue) => ({
        variable,
        message: `${issue.path.join(".") || "(root)"}: ${issue.message}`,
      })),
    );
  }
  return parsed.data as TwinProcessConfig;
}

/** Reads and validates the environment; throws ConfigError naming each bad variable. */
export function loadTwinProcessSettings(env: NodeJS.ProcessEnv = process.env): TwinProcessSettings {
  const raw = Object.fromEntries(
    Object.entries(TWIN_ENVIRONMENT).map(([name, spec]) => {
      const value = env[name] ?? spec.default;
      return [name, SECRETS.has(name) ? value : value.trim()];
    }),
  ) as Record<TwinEnvName, string>;
  const issues: { variable: string; message: string }[] = [];
  const parsed = environment.safeParse(raw);
  if (!parsed.success) {
    for (const issue of parsed.error.issues) {
      const variable = String(issue.path[0] ?? "(environment)");
      issues.push({
        variable,
        message: `${issue.message} (got ${shown(variable, raw[variable as TwinEnvName] ?? "")})`,
      });
    }
  }
  if ((raw.DTC_TWIN === "") === (raw.DTC_TWIN_FILE === "")) {
    issues.push({
      variable: "DTC_TWIN",
      message:
        raw.DTC_TWIN === ""
          ? "exactly one of DTC_TWIN and DTC_TWIN_FILE must be set (neither is)"
          : "exactly one of DTC_TWIN and DTC_TWIN_FILE must be set (both are)",
    });
  }
  if ((raw.DTC_MQTT_USERNAME === "") !== (raw.DTC_MQTT_PASSWORD === "")) {
    issues.push({
      variable: raw.DTC_MQTT_USERNAME === "" ? "DTC_MQTT_USERNAME" : "DTC_MQTT_PASSWORD",
      message: "DTC_MQTT_USERNAME and DTC_MQTT_PASSWORD go together (one of them is unset)",
    });
  }
  // Credentials in the URL would reach the twin's TD and the logs.
  if (URL.canParse(raw.DTC_MQTT_URL)) {
    const url = new URL(raw.DTC_MQTT_URL);
    if (url.username !== "" || url.password !== "") {
      issues.push({
        variable: "DTC_MQTT_URL",
        message:
          "must not carry credentials (they would reach the TD and the logs): use DTC_MQTT_USERNAME and DTC_MQTT_PASSWORD",
      });
    }
  }
  if (issues.length > 0) throw new ConfigError(issues);
  const v = parsed.data as z.output<typeof environment>;

  const configSource = v.DTC_TWIN !== "" ? "DTC_TWIN" : "DTC_TWIN_FILE";
  let text = v.DTC_TWIN;
  if (configSource === "DTC_TWIN_FILE") {
    try {
      text = readFileSync(v.DTC_TWIN_FILE, "utf8");
    } catch (err) {
      throw new ConfigError([{ variable: "DTC_TWIN_FILE", message: `cannot be read: ${errorMessage(err)}` }]);
    }
  }
  return {
    config: parseTwinProcessConfig(text, configSource),
    configSource,
    mqttUrl: v.DTC_MQTT_URL,
    mqttCredentials:
      v.DTC_MQTT_USERNAME === ""
        ? undefined
        : { username: v.DTC_MQTT_USERNAME, password: v.DTC_MQTT_PASSWORD },
    httpPort: v.DTC_TWIN_PORT,
    managementPort: v.DTC_TWIN_MANAGEMENT_PORT,
    host: v.DTC_TWIN_HOST,
    baseUri: v.DTC_TWIN_BASE_URI ? v.DTC_TWIN_BASE_URI.replace(/\/+$/, "") : undefined,
    token: v.DTC_TWIN_TOKEN === "" ? undefined : v.DTC_TWIN_TOKEN,
    metricsToken: v.DTC_METRICS_TOKEN === "" ? undefined : v.DTC_METRICS_TOKEN,
    node: v.DTC_TWIN_NODE,
    platform: v.DTC_TWIN_PLATFORM,
    entanglementIntervalMs: v.DTC_ENTANGLEMENT_INTERVAL_MS,
    ptClockSkewMs: v.DTC_PT_CLOCK_SKEW_MS,
    logLevel: v.LOG_LEVEL,
  };
}
