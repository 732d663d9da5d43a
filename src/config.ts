import { join, resolve } from "node:path";
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
  /** Address the embedded broker listens on (its own setting, not DTC_HOST). */
  mqttHost: string;
  /** Port of the embedded broker's MQTT-over-TLS listener (needs DTC_TLS_CERT/KEY); undefined = none. */
  mqttTlsPort: number | undefined;
  /** Credentials the gateway (and its twin containers) use with an external broker: client options, never in a URL. */
  mqttCredentials: { username: string; password: string } | undefined;
  /** Remote SPARQL 1.1 store; undefined means the embedded store. */
  sparql:
    | {
        queryUrl: string;
        updateUrl: string;
        /** Sent with HTTP Basic or Digest, as the store asks; undefined = no credentials. */
        auth: { user: string; password: string } | undefined;
        /** Where searches go: a read-only endpoint and user (default: queryUrl without credentials). */
        search: { url: string; auth: { user: string; password: string } | undefined };
      }
    | undefined;
  /** The URL clients reach the gateway at (TD forms point here); undefined = the listening address. */
  publicUrl: string | undefined;
  /** How often twins evaluate entanglement and push it to consumers, ms. */
  entanglementIntervalMs: number;
  /** How far ahead of a twin's clock a PT timestamp may be before it is refused, ms. */
  ptClockSkewMs: number;
  /** The directory's limits and timers. */
  directory: {
    /** Longest a search query may run, ms. */
    searchTimeoutMs: number;
    /** Most results a search returns. */
    searchMaxResults: number;
    /** Copies of the embedded store's SPARQL index (each answers one query at a time). */
    searchIndexCopies: number;
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
    /** Longest one operation on an instance (start, stop, move, ...) may take, ms. */
    operationTimeoutMs: number;
    /** Longest one request to a platform (a Docker engine's API) may take, ms. */
    platformTimeoutMs: number;
    /** Tier of the gateway's own node `local`. */
    localTier: "edge" | "mec" | "cloud";
  };
  /** Origins browsers may call the API from; [] = none, ["*"] = any. */
  corsOrigins: string[];
  /** Who may do what (see README "Security"). */
  security: SecurityConfig;
  /** GET /metrics (Prometheus, reader role); undefined = DTC_METRICS=off. */
  metrics: { maxTwins: number } | undefined;
  /** The bearer token twin processes also accept on their /metrics (DTC_METRICS_TOKEN); undefined = none. */
  metricsToken: string | undefined;
  /** Where the Prometheus file-SD targets of the twin processes are written (absolute); undefined = off. */
  prometheusSdFile: string | undefined;
  logLevel: "fatal" | "error" | "warn" | "info" | "debug" | "trace" | "silent";
  /** A module's own level where it differs from logLevel (DTC_LOG_LEVELS), by module (LOG_MODULES). */
  logLevels: Partial<Record<LogModule, Config["logLevel"]>>;
}

const LOG_LEVELS = ["fatal", "error", "warn", "info", "debug", "trace", "silent"] as const;

/** The modules whose log level DTC_LOG_LEVELS can set (the `component` of their log lines). */
export const LOG_MODULES = ["manager", "directory", "platform", "http", "mqtt-broker", "tracing"] as const;
export type LogModule = (typeof LOG_MODULES)[number];

export interface SecurityConfig {
  /** false only with DTC_AUTH=off, which is refused unless every listener binds loopback. */
  enabled: boolean;
  /** Directory reads (/things, /search, /events) without credentials. */
  anonymousDiscovery: boolean;
  /** OAuth2/OIDC bearer JWTs; undefined = API tokens only. */
  oidc:
    | {
        /** A JWKS URL (https://…/jwks.json) or file path. */
        jwks: string;
        issuer: string;
        audience: string | undefined;
        /** Claim holding the role (a string or an array of strings); dotted paths allowed (realm_access.roles). */
        rolesClaim: string;
      }
    | undefined;
  /** HTTPS (and MQTT over TLS) certificate and key files; undefined = plain HTTP. */
  tls: { certFile: string; keyFile: string } | undefined;
  /** Host names accepted in the Host header besides loopback and the public URL's host (DNS rebinding). */
  allowedHosts: string[];
  /** Writes per minute per principal before 429. */
  writesPerMinute: number;
  /** Images docker packages may name (globs: registry/name:*); [] = any. */
  allowedImages: string[];
  /** Hosts the gateway may connect to for engines and brokers named by callers (globs); [] = any. */
  allowedOutboundHosts: string[];
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
  DTC_MQTT_HOST: {
    default: "127.0.0.1",
    doc: "Address the embedded MQTT broker listens on (0.0.0.0 for all interfaces; PTs on other machines).",
  },
  DTC_MQTT_TLS_PORT: {
    default: "",
    doc: "Port of the embedded broker's MQTT-over-TLS listener (with DTC_TLS_CERT and DTC_TLS_KEY); unset = none.",
  },
  DTC_MQTT_USERNAME: {
    default: "",
    doc: "User the gateway and its twin containers connect to DTC_MQTT_URL with (never put credentials in the URL).",
  },
  DTC_MQTT_PASSWORD: { default: "", doc: "Password of DTC_MQTT_USERNAME; required with it." },
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
  DTC_SPARQL_SEARCH_URL: {
    default: "",
    doc: "Read-only SPARQL endpoint that users' searches go to; unset = DTC_SPARQL_QUERY_URL without credentials.",
  },
  DTC_SPARQL_SEARCH_USER: { default: "", doc: "Read-only user of DTC_SPARQL_SEARCH_URL; unset = none." },
  DTC_SPARQL_SEARCH_PASSWORD: { default: "", doc: "Password of DTC_SPARQL_SEARCH_USER; required with it." },
  DTC_PUBLIC_URL: {
    default: "",
    doc: "URL clients reach the gateway at, used in twins' TD forms (behind a proxy, or with DTC_HOST=0.0.0.0); unset = http://DTC_HOST:port.",
  },
  DTC_ENTANGLEMENT_INTERVAL_MS: {
    default: "1000",
    doc: "How often each twin evaluates its entanglement (ODTE) and pushes it to observers, ms (50-60000).",
  },
  DTC_PT_CLOCK_SKEW_MS: {
    default: "60000",
    doc: "How far ahead of a twin's clock a PT timestamp may be: a later one is counted as malformed and never committed (one such message would otherwise hide every genuine one after it), ms (0-86400000).",
  },
  DTC_SEARCH_TIMEOUT_MS: {
    default: "5000",
    doc: "Longest a directory search (SPARQL, JSONPath) may run before it is stopped with a 400, ms (10-600000).",
  },
  DTC_SEARCH_MAX_RESULTS: {
    default: "10000",
    doc: "Most solutions a SPARQL search returns: a larger or missing LIMIT is lowered to it (1-1000000).",
  },
  DTC_SEARCH_INDEX_COPIES: {
    default: "2",
    doc: "Copies of the embedded store's SPARQL index, each answering one query at a time: with 2 a slow query leaves the other answering; 1 halves the index's memory (each copy holds the whole index: ~300 MB at 10,000 TDs) but queues searches behind a slow one (1-8).",
  },
  DTC_MAX_BODY_BYTES: {
    default: "1048576",
    doc: "Largest request body the directory accepts (a TD, a patch); larger ones get 413 (1024-104857600).",
  },
  DTC_STATUS_INTERVAL_MS: {
    default: "5000",
    doc: "Shortest time between two writes of a twin's entanglement figures to its status graph, ms; lifecycle changes are written at once, at most once a second per twin (100-3600000).",
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
  DTC_OPERATION_TIMEOUT_MS: {
    default: "300000",
    doc: "Longest one operation on an instance (start, stop, move, snapshot, ...) may take before it is given up with 504 and the instance's next operations go on, ms (100-86400000). It includes pulling a Docker image.",
  },
  DTC_PLATFORM_TIMEOUT_MS: {
    default: "10000",
    doc: "Longest one request to a platform (a Docker engine's API call) may take before it fails with 504 (the node reads not ready), ms (100-600000). Image pulls have 4 minutes.",
  },
  DTC_NODE_TIER: {
    default: "edge",
    doc: "Tier of the gateway's own DTC Node `local` (in-process twins): edge, mec or cloud.",
  },
  DTC_CORS_ORIGINS: {
    default: "",
    doc: "Comma-separated origins browsers may call the API from (e.g. https://app.example); unset = none, * = any (without credentials).",
  },
  DTC_AUTH: {
    default: "on",
    doc: "on: every request and MQTT client needs credentials (tokens or OIDC JWTs) and a role; off: no authentication, accepted only while every listener binds loopback.",
  },
  DTC_ANONYMOUS_DISCOVERY: {
    default: "false",
    doc: "true: directory reads (/things, /search, /events) need no credentials (WoT Discovery allows anonymous read-only access); false: they need the reader role.",
  },
  DTC_OIDC_JWKS: {
    default: "",
    doc: "JWKS URL or file of an OAuth2/OIDC authorization server whose bearer JWTs the gateway accepts; unset = API tokens only.",
  },
  DTC_OIDC_ISSUER: { default: "", doc: "Required iss of those JWTs; required with DTC_OIDC_JWKS." },
  DTC_OIDC_AUDIENCE: { default: "", doc: "Required aud of those JWTs; unset = not checked." },
  DTC_OIDC_ROLES_CLAIM: {
    default: "roles",
    doc: "Claim (dotted path) holding the dtc role(s): reader, operator, admin, or device:{twin id}.",
  },
  DTC_TLS_CERT: {
    default: "",
    doc: "PEM certificate file: the gateway serves HTTPS (and MQTT over TLS on DTC_MQTT_TLS_PORT).",
  },
  DTC_TLS_KEY: { default: "", doc: "PEM private key file of DTC_TLS_CERT; required with it." },
  DTC_ALLOWED_HOSTS: {
    default: "",
    doc: "Comma-separated host names the gateway answers to besides loopback and DTC_PUBLIC_URL's host (*.example.com allowed); other Host headers get 421 (DNS rebinding).",
  },
  DTC_WRITE_RATE_LIMIT: {
    default: "1200",
    doc: "Writes (POST, PUT, PATCH, DELETE) per minute per principal before 429 (1-1000000).",
  },
  DTC_ALLOWED_IMAGES: {
    default: "",
    doc: "Comma-separated images docker packages may name (globs, e.g. registry.example/dtc/*); unset = any.",
  },
  DTC_ALLOWED_OUTBOUND_HOSTS: {
    default: "",
    doc: "Comma-separated hosts callers may point the gateway at (Docker engines, twins' brokers; globs); unset = any.",
  },
  DTC_METRICS: {
    default: "on",
    doc: "on: GET /metrics serves the gateway's metrics in Prometheus text format (reader role); off: no /metrics and nothing measured.",
  },
  DTC_METRICS_MAX_TWINS: {
    default: "1000",
    doc: "Most in-process twins with series of their own in /metrics (by id order; the rest are counted in dtc_twin_series_omitted); 0 = none (0-1000000).",
  },
  DTC_METRICS_TOKEN: {
    default: "",
    doc: "Bearer token Prometheus scrapes twin containers' /metrics (their management port) with; the gateway passes it to the twins it starts. Unset = their /metrics needs the twin's own management token.",
  },
  DTC_PROMETHEUS_SD_FILE: {
    default: "",
    doc: "Prometheus file_sd_configs JSON the gateway keeps current with every twin container's metrics target and labels (twin, schema, node, platform); unset = DTC_DATA_DIR/prometheus-targets.json, off = not written.",
  },
  DTC_LOG_LEVEL: { default: "info", doc: "fatal, error, warn, info, debug, trace or silent." },
  DTC_LOG_LEVELS: {
    default: "",
    doc: `A module's own log level, as module=level pairs separated by commas (e.g. manager=debug,directory=warn); modules: ${LOG_MODULES.join(", ")}; unset = DTC_LOG_LEVEL for all.`,
  },
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

/** A comma-separated list; empty entries dropped. */
const list = z.string().transform((s) =>
  s
    .split(",")
    .map((o) => o.trim())
    .filter((o) => o !== ""),
);

const origins = list.refine(
  (list) => list.every((o) => o === "*" || (URL.canParse(o) && new URL(o).origin === o)),
  "must be * or origins like https://app.example (scheme, host and port only)",
);

/** module=level pairs, comma-separated: each module and level checked, none twice. */
const moduleLevels = list.transform((pairs, ctx) => {
  const levels: Partial<Record<LogModule, Config["logLevel"]>> = {};
  for (const pair of pairs) {
    const [module = "", level = "", ...rest] = pair.split("=").map((s) => s.trim());
    if (rest.length > 0 || !pair.includes("=")) {
      ctx.addIssue({ code: "custom", message: `"${pair}" is not module=level` });
    } else if (!(LOG_MODULES as readonly string[]).includes(module)) {
      ctx.addIssue({
        code: "custom",
        message: `unknown module "${module}" (one of ${LOG_MODULES.join(", ")})`,
      });
    } else if (!(LOG_LEVELS as readonly string[]).includes(level)) {
      ctx.addIssue({
        code: "custom",
        message: `unknown level "${level}" for ${module} (one of ${LOG_LEVELS.join(", ")})`,
      });
    } else if (levels[module as LogModule] !== undefined) {
      ctx.addIssue({ code: "custom", message: `module "${module}" is given twice` });
    } else {
      levels[module as LogModule] = level as Config["logLevel"];
    }
  }
  return levels;
});

const schema = z
  .object({
    DTC_PORT: port(""),
    DTC_HOST: z.string().min(1, "must not be empty"),
    DTC_DATA_DIR: z.string().min(1, "must not be empty"),
    DTC_MQTT_URL: z.union([z.literal(""), urlWithScheme(["mqtt", "mqtts", "ws", "wss", "tcp", "ssl"])]),
    DTC_MQTT_PORT: port(""),
    DTC_MQTT_HOST: z.string().min(1, "must not be empty"),
    DTC_MQTT_TLS_PORT: z.union([z.literal(""), port("")]),
    DTC_MQTT_USERNAME: z.string(),
    DTC_MQTT_PASSWORD: z.string(),
    DTC_SPARQL_QUERY_URL: z.union([z.literal(""), urlWithScheme(["http", "https"])]),
    DTC_SPARQL_UPDATE_URL: z.union([z.literal(""), urlWithScheme(["http", "https"])]),
    // RFC 7617: a Basic user-id cannot contain a colon.
    DTC_SPARQL_USER: z.string().refine((s) => !s.includes(":"), "must not contain a colon"),
    DTC_SPARQL_PASSWORD: z.string(),
    DTC_SPARQL_SEARCH_URL: z.union([z.literal(""), urlWithScheme(["http", "https"])]),
    DTC_SPARQL_SEARCH_USER: z.string().refine((s) => !s.includes(":"), "must not contain a colon"),
    DTC_SPARQL_SEARCH_PASSWORD: z.string(),
    DTC_PUBLIC_URL: z.union([z.literal(""), urlWithScheme(["http", "https"])]),
    DTC_ENTANGLEMENT_INTERVAL_MS: z
      .string()
      .regex(/^\d+$/, "must be a whole number of milliseconds")
      .transform(Number)
      .refine((n) => n >= 50 && n <= 60_000, "must be between 50 and 60000 ms"),
    DTC_PT_CLOCK_SKEW_MS: wholeNumber(0, 86_400_000, "ms"),
    DTC_SEARCH_TIMEOUT_MS: wholeNumber(10, 600_000, "ms"),
    DTC_SEARCH_MAX_RESULTS: wholeNumber(1, 1_000_000, "results"),
    DTC_SEARCH_INDEX_COPIES: wholeNumber(1, 8, "copies"),
    DTC_MAX_BODY_BYTES: wholeNumber(1024, 100 * 1024 * 1024, "bytes"),
    DTC_STATUS_INTERVAL_MS: wholeNumber(100, 3_600_000, "ms"),
    DTC_PURGE_INTERVAL_MS: wholeNumber(1000, 86_400_000, "ms"),
    DTC_RECONCILE_INTERVAL_MS: wholeNumber(100, 3_600_000, "ms"),
    DTC_CHECKPOINT_INTERVAL_MS: wholeNumber(100, 3_600_000, "ms"),
    DTC_OPERATION_TIMEOUT_MS: wholeNumber(100, 86_400_000, "ms"),
    DTC_PLATFORM_TIMEOUT_MS: wholeNumber(100, 600_000, "ms"),
    DTC_NODE_TIER: z.enum(["edge", "mec", "cloud"]),
    DTC_CORS_ORIGINS: origins,
    DTC_AUTH: z.enum(["on", "off"]),
    DTC_ANONYMOUS_DISCOVERY: z.enum(["true", "false"]).transform((s) => s === "true"),
    DTC_OIDC_JWKS: z.string(),
    DTC_OIDC_ISSUER: z.string(),
    DTC_OIDC_AUDIENCE: z.string(),
    DTC_OIDC_ROLES_CLAIM: z.string().min(1, "must not be empty"),
    DTC_TLS_CERT: z.string(),
    DTC_TLS_KEY: z.string(),
    DTC_ALLOWED_HOSTS: list,
    DTC_WRITE_RATE_LIMIT: wholeNumber(1, 1_000_000, "writes per minute"),
    DTC_ALLOWED_IMAGES: list,
    DTC_ALLOWED_OUTBOUND_HOSTS: list,
    DTC_METRICS: z.enum(["on", "off"]),
    DTC_METRICS_MAX_TWINS: wholeNumber(0, 1_000_000, "twins"),
    DTC_METRICS_TOKEN: z.string().refine((s) => !/[\s"]/.test(s), "must not contain spaces or quotes"),
    // Prometheus reads a file_sd file by its extension.
    DTC_PROMETHEUS_SD_FILE: z
      .string()
      .refine(
        (s) => s === "" || s === "off" || s.endsWith(".json"),
        'must be a path ending in .json, or "off"',
      ),
    DTC_LOG_LEVEL: z.enum(LOG_LEVELS),
    DTC_LOG_LEVELS: moduleLevels,
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
    const pairs: [EnvName, EnvName, string][] = [
      ["DTC_MQTT_USERNAME", "DTC_MQTT_PASSWORD", "credentials need both"],
      ["DTC_SPARQL_SEARCH_USER", "DTC_SPARQL_SEARCH_PASSWORD", "credentials need both"],
      ["DTC_TLS_CERT", "DTC_TLS_KEY", "TLS needs the certificate and its key"],
      ["DTC_OIDC_JWKS", "DTC_OIDC_ISSUER", "OIDC needs the JWKS and the issuer"],
    ];
    for (const [a, b, why] of pairs) {
      if ((env[a] === "") !== (env[b] === "")) {
        ctx.addIssue({ code: "custom", path: [env[a] === "" ? a : b], message: `must be set too: ${why}` });
      }
    }
    if (env.DTC_MQTT_USERNAME !== "" && env.DTC_MQTT_URL === "") {
      ctx.addIssue({
        code: "custom",
        path: ["DTC_MQTT_USERNAME"],
        message: "is for an external broker (DTC_MQTT_URL); the embedded broker makes its own credentials",
      });
    }
    if (env.DTC_MQTT_URL !== "" && URL.canParse(env.DTC_MQTT_URL)) {
      const url = new URL(env.DTC_MQTT_URL);
      if (url.username !== "" || url.password !== "") {
        ctx.addIssue({
          code: "custom",
          path: ["DTC_MQTT_URL"],
          message:
            "must not carry credentials (they would reach TDs and logs): use DTC_MQTT_USERNAME and DTC_MQTT_PASSWORD",
        });
      }
    }
    if (env.DTC_MQTT_TLS_PORT !== "" && env.DTC_TLS_CERT === "") {
      ctx.addIssue({
        code: "custom",
        path: ["DTC_MQTT_TLS_PORT"],
        message: "needs DTC_TLS_CERT and DTC_TLS_KEY",
      });
    }
    if (env.DTC_AUTH === "off") {
      const listeners: [string, string][] = [["DTC_HOST", env.DTC_HOST]];
      if (env.DTC_MQTT_URL === "") listeners.push(["DTC_MQTT_HOST", env.DTC_MQTT_HOST]);
      const open = listeners.filter(([, host]) => !isLoopback(host));
      for (const [variable] of open) {
        ctx.addIssue({
          code: "custom",
          path: ["DTC_AUTH"],
          message: `off is accepted only while every listener binds loopback (${variable} is not)`,
        });
      }
    }
  });

/** A loopback address or name: what DTC_AUTH=off and the Host allowlist trust. */
export function isLoopback(host: string): boolean {
  const h = host.replace(/^\[|\]$/g, "").toLowerCase();
  return (
    h === "localhost" || h.endsWith(".localhost") || h === "::1" || /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(h)
  );
}

/** Never trimmed (spaces may be part of them) nor shown in error messages. */
const SECRETS: ReadonlySet<string> = new Set<EnvName>([
  "DTC_SPARQL_PASSWORD",
  "DTC_SPARQL_SEARCH_PASSWORD",
  "DTC_MQTT_PASSWORD",
  "DTC_METRICS_TOKEN",
]);

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
    mqttHost: v.DTC_MQTT_HOST,
    mqttTlsPort: v.DTC_MQTT_TLS_PORT === "" ? undefined : v.DTC_MQTT_TLS_PORT,
    mqttCredentials: v.DTC_MQTT_USERNAME
      ? { username: v.DTC_MQTT_USERNAME, password: v.DTC_MQTT_PASSWORD }
      : undefined,
    sparql: v.DTC_SPARQL_QUERY_URL
      ? {
          queryUrl: v.DTC_SPARQL_QUERY_URL,
          updateUrl: v.DTC_SPARQL_UPDATE_URL,
          auth: v.DTC_SPARQL_USER ? { user: v.DTC_SPARQL_USER, password: v.DTC_SPARQL_PASSWORD } : undefined,
          search: {
            url: v.DTC_SPARQL_SEARCH_URL || v.DTC_SPARQL_QUERY_URL,
            auth: v.DTC_SPARQL_SEARCH_USER
              ? { user: v.DTC_SPARQL_SEARCH_USER, password: v.DTC_SPARQL_SEARCH_PASSWORD }
              : undefined,
          },
        }
      : undefined,
    publicUrl: v.DTC_PUBLIC_URL ? v.DTC_PUBLIC_URL.replace(/\/+$/, "") : undefined,
    entanglementIntervalMs: v.DTC_ENTANGLEMENT_INTERVAL_MS,
    ptClockSkewMs: v.DTC_PT_CLOCK_SKEW_MS,
    directory: {
      searchTimeoutMs: v.DTC_SEARCH_TIMEOUT_MS,
      searchMaxResults: v.DTC_SEARCH_MAX_RESULTS,
      searchIndexCopies: v.DTC_SEARCH_INDEX_COPIES,
      maxBodyBytes: v.DTC_MAX_BODY_BYTES,
      statusIntervalMs: v.DTC_STATUS_INTERVAL_MS,
      purgeIntervalMs: v.DTC_PURGE_INTERVAL_MS,
    },
    manager: {
      reconcileIntervalMs: v.DTC_RECONCILE_INTERVAL_MS,
      checkpointIntervalMs: v.DTC_CHECKPOINT_INTERVAL_MS,
      operationTimeoutMs: v.DTC_OPERATION_TIMEOUT_MS,
      platformTimeoutMs: v.DTC_PLATFORM_TIMEOUT_MS,
      localTier: v.DTC_NODE_TIER,
    },
    corsOrigins: v.DTC_CORS_ORIGINS.includes("*") ? ["*"] : v.DTC_CORS_ORIGINS,
    security: {
      enabled: v.DTC_AUTH === "on",
      anonymousDiscovery: v.DTC_ANONYMOUS_DISCOVERY,
      oidc: v.DTC_OIDC_JWKS
        ? {
            jwks: v.DTC_OIDC_JWKS,
            issuer: v.DTC_OIDC_ISSUER,
            audience: v.DTC_OIDC_AUDIENCE || undefined,
            rolesClaim: v.DTC_OIDC_ROLES_CLAIM,
          }
        : undefined,
      tls: v.DTC_TLS_CERT
        ? { certFile: resolve(v.DTC_TLS_CERT), keyFile: resolve(v.DTC_TLS_KEY) }
        : undefined,
      allowedHosts: v.DTC_ALLOWED_HOSTS,
      writesPerMinute: v.DTC_WRITE_RATE_LIMIT,
      allowedImages: v.DTC_ALLOWED_IMAGES,
      allowedOutboundHosts: v.DTC_ALLOWED_OUTBOUND_HOSTS,
    },
    metrics: v.DTC_METRICS === "on" ? { maxTwins: v.DTC_METRICS_MAX_TWINS } : undefined,
    metricsToken: v.DTC_METRICS_TOKEN || undefined,
    prometheusSdFile:
      v.DTC_PROMETHEUS_SD_FILE === "off"
        ? undefined
        : resolve(v.DTC_PROMETHEUS_SD_FILE || join(v.DTC_DATA_DIR, "prometheus-targets.json")),
    logLevel: v.DTC_LOG_LEVEL,
    logLevels: v.DTC_LOG_LEVELS,
  };
}
