import { readFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { describe, expect, it } from "vitest";
import { ConfigError, ENVIRONMENT, loadConfig } from "../src/config.js";
import { projectRoot } from "../src/paths.js";
import { TWIN_ENVIRONMENT } from "../src/runtime/twin-process-config.js";
import { thrown } from "./helpers.js";

const configError = (env: Record<string, string>): ConfigError => thrown(() => loadConfig(env), ConfigError);

describe("configuration from the environment", () => {
  it("has sensible defaults", () => {
    expect(loadConfig({})).toEqual({
      port: 8080,
      host: "127.0.0.1",
      dataDir: resolve("./data"),
      mqttUrl: undefined,
      mqttPort: 1883,
      mqttHost: "127.0.0.1",
      mqttTlsPort: undefined,
      mqttCredentials: undefined,
      sparql: undefined,
      publicUrl: undefined,
      entanglementIntervalMs: 1000,
      ptClockSkewMs: 60000,
      directory: {
        searchTimeoutMs: 5000,
        searchMaxResults: 10000,
        searchIndexCopies: 2,
        maxBodyBytes: 1048576,
        statusIntervalMs: 5000,
        purgeIntervalMs: 60000,
      },
      manager: {
        reconcileIntervalMs: 10000,
        checkpointIntervalMs: 30000,
        operationTimeoutMs: 300000,
        platformTimeoutMs: 10000,
        localTier: "edge",
      },
      corsOrigins: [],
      security: {
        enabled: true,
        anonymousDiscovery: false,
        oidc: undefined,
        tls: undefined,
        allowedHosts: [],
        writesPerMinute: 1200,
        allowedImages: [],
        allowedOutboundHosts: [],
      },
      metrics: { maxTwins: 1000 },
      metricsToken: undefined,
      prometheusSdFile: resolve("./data/prometheus-targets.json"),
      logLevel: "info",
      logLevels: {},
    });
  });

  it("reads every variable", () => {
    const config = loadConfig({
      DTC_PORT: "0",
      DTC_HOST: "0.0.0.0",
      DTC_DATA_DIR: "/var/lib/dtc",
      DTC_MQTT_URL: "mqtt://broker:1883",
      DTC_MQTT_PORT: "11883",
      DTC_SPARQL_QUERY_URL: "http://store:8890/sparql",
      DTC_SPARQL_UPDATE_URL: "http://store:8890/sparql-auth",
      DTC_SPARQL_USER: "dtc",
      DTC_SPARQL_PASSWORD: " pass word ",
      DTC_PUBLIC_URL: "https://dtc.example.org/",
      DTC_ENTANGLEMENT_INTERVAL_MS: "250",
      DTC_PT_CLOCK_SKEW_MS: "0",
      DTC_SEARCH_TIMEOUT_MS: "2000",
      DTC_SEARCH_MAX_RESULTS: "500",
      DTC_MAX_BODY_BYTES: "65536",
      DTC_STATUS_INTERVAL_MS: "1000",
      DTC_PURGE_INTERVAL_MS: "10000",
      DTC_RECONCILE_INTERVAL_MS: "2000",
      DTC_CHECKPOINT_INTERVAL_MS: "5000",
      DTC_NODE_TIER: "mec",
      DTC_CORS_ORIGINS: "https://app.example, http://localhost:5173",
      DTC_LOG_LEVEL: "debug",
    });
    expect(config).toMatchObject({
      publicUrl: "https://dtc.example.org",
      entanglementIntervalMs: 250,
      ptClockSkewMs: 0,
      port: 0,
      host: "0.0.0.0",
      dataDir: "/var/lib/dtc",
      mqttUrl: "mqtt://broker:1883",
      mqttPort: 11883,
      sparql: {
        queryUrl: "http://store:8890/sparql",
        updateUrl: "http://store:8890/sparql-auth",
        // A password is taken as given, spaces included.
        auth: { user: "dtc", password: " pass word " },
      },
      directory: {
        searchTimeoutMs: 2000,
        searchMaxResults: 500,
        maxBodyBytes: 65536,
        statusIntervalMs: 1000,
        purgeIntervalMs: 10000,
      },
      manager: { reconcileIntervalMs: 2000, checkpointIntervalMs: 5000, localTier: "mec" },
      corsOrigins: ["https://app.example", "http://localhost:5173"],
      logLevel: "debug",
    });
  });

  it("names every bad variable with its value", () => {
    const err = configError({ DTC_PORT: "eighty", DTC_MQTT_PORT: "70000", DTC_LOG_LEVEL: "loud" });
    expect(err.issues.map((i) => i.variable).sort()).toEqual(["DTC_LOG_LEVEL", "DTC_MQTT_PORT", "DTC_PORT"]);
    expect(err.message).toContain('DTC_PORT: must be a port number (0-65535) (got "eighty")');
    expect(err.message).toContain('(got "70000")');
    expect(configError({ DTC_ENTANGLEMENT_INTERVAL_MS: "10" }).message).toContain(
      'DTC_ENTANGLEMENT_INTERVAL_MS: must be between 50 and 60000 ms (got "10")',
    );
  });

  it("refuses directory limits out of range and CORS origins that are not origins", () => {
    expect(configError({ DTC_SEARCH_TIMEOUT_MS: "0" }).message).toContain(
      'DTC_SEARCH_TIMEOUT_MS: must be between 10 and 600000 ms (got "0")',
    );
    expect(configError({ DTC_MAX_BODY_BYTES: "1MB" }).message).toContain("must be a whole number of bytes");
    expect(configError({ DTC_CORS_ORIGINS: "https://app.example/path" }).issues[0]?.variable).toBe(
      "DTC_CORS_ORIGINS",
    );
    expect(loadConfig({ DTC_CORS_ORIGINS: " , " }).corsOrigins).toEqual([]);
    expect(loadConfig({ DTC_CORS_ORIGINS: "https://a.example,*" }).corsOrigins).toEqual(["*"]);
  });

  it("turns authentication off only while every listener binds loopback", () => {
    expect(loadConfig({ DTC_AUTH: "off" }).security.enabled).toBe(false);
    expect(
      loadConfig({ DTC_AUTH: "off", DTC_HOST: "::1", DTC_MQTT_HOST: "localhost" }).security.enabled,
    ).toBe(false);
    expect(configError({ DTC_AUTH: "off", DTC_HOST: "0.0.0.0" }).message).toContain(
      "DTC_AUTH: off is accepted only while every listener binds loopback (DTC_HOST is not)",
    );
    expect(configError({ DTC_AUTH: "off", DTC_MQTT_HOST: "0.0.0.0" }).message).toContain(
      "(DTC_MQTT_HOST is not)",
    );
    // An external broker is not the gateway's listener.
    expect(
      loadConfig({ DTC_AUTH: "off", DTC_MQTT_URL: "mqtt://b:1883", DTC_MQTT_HOST: "0.0.0.0" }).security
        .enabled,
    ).toBe(false);
    expect(configError({ DTC_AUTH: "maybe" }).issues[0]?.variable).toBe("DTC_AUTH");
  });

  it("keeps broker credentials out of URLs and never shows the password", () => {
    const withUrl = configError({ DTC_MQTT_URL: "mqtt://dtc:s3cret@broker:1883" });
    expect(withUrl.issues[0]?.variable).toBe("DTC_MQTT_URL");
    expect(withUrl.issues[0]?.message).toContain("must not carry credentials");
    expect(
      loadConfig({ DTC_MQTT_URL: "mqtts://broker:8883", DTC_MQTT_USERNAME: "dtc", DTC_MQTT_PASSWORD: " s3 " })
        .mqttCredentials,
    ).toEqual({ username: "dtc", password: " s3 " });
    const half = configError({ DTC_MQTT_URL: "mqtt://broker", DTC_MQTT_PASSWORD: "s3cret" });
    expect(half.issues.map((i) => i.variable)).toEqual(["DTC_MQTT_USERNAME"]);
    expect(half.message).not.toContain("s3cret");
    expect(configError({ DTC_MQTT_USERNAME: "dtc", DTC_MQTT_PASSWORD: "p" }).message).toContain(
      "is for an external broker",
    );
  });

  it("needs TLS files and OIDC settings in pairs", () => {
    expect(configError({ DTC_TLS_CERT: "/c.pem" }).issues.map((i) => i.variable)).toEqual(["DTC_TLS_KEY"]);
    expect(configError({ DTC_OIDC_JWKS: "https://idp/jwks" }).issues.map((i) => i.variable)).toEqual([
      "DTC_OIDC_ISSUER",
    ]);
    expect(configError({ DTC_MQTT_TLS_PORT: "8883" }).issues.map((i) => i.variable)).toEqual([
      "DTC_MQTT_TLS_PORT",
    ]);
    const oidc = loadConfig({ DTC_OIDC_JWKS: "https://idp/jwks", DTC_OIDC_ISSUER: "https://idp" }).security
      .oidc;
    expect(oidc).toEqual({
      jwks: "https://idp/jwks",
      issuer: "https://idp",
      audience: undefined,
      rolesClaim: "roles",
    });
  });

  it("refuses URLs of the wrong kind", () => {
    expect(configError({ DTC_MQTT_URL: "http://broker" }).issues[0]?.message).toMatch(/mqtt, mqtts/);
    expect(configError({ DTC_MQTT_URL: "broker:1883" }).issues[0]?.variable).toBe("DTC_MQTT_URL");
  });

  it("takes SPARQL credentials only in full, for a remote store, and never shows the password", () => {
    const store = {
      DTC_SPARQL_QUERY_URL: "http://store/sparql",
      DTC_SPARQL_UPDATE_URL: "http://store/sparql",
    };
    expect(loadConfig(store).sparql?.auth).toBeUndefined();
    expect(configError({ ...store, DTC_SPARQL_USER: "dtc" }).issues).toEqual([
      { variable: "DTC_SPARQL_PASSWORD", message: 'must be set too: credentials need both (got "")' },
    ]);
    const noUser = configError({ ...store, DTC_SPARQL_PASSWORD: "s3cret" });
    expect(noUser.issues.map((i) => i.variable)).toEqual(["DTC_SPARQL_USER"]);
    expect(noUser.message).not.toContain("s3cret");
    expect(configError({ ...store, DTC_SPARQL_USER: "a:b", DTC_SPARQL_PASSWORD: "p" }).message).toContain(
      'DTC_SPARQL_USER: must not contain a colon (got "a:b")',
    );
    expect(configError({ DTC_SPARQL_USER: "dtc", DTC_SPARQL_PASSWORD: "s3cret" }).message).toMatch(
      /DTC_SPARQL_USER: is for a remote SPARQL store/,
    );
  });

  it("takes a log level per module, naming an unknown module or level", () => {
    expect(loadConfig({ DTC_LOG_LEVELS: " manager=debug , directory=warn" }).logLevels).toEqual({
      manager: "debug",
      directory: "warn",
    });
    expect(configError({ DTC_LOG_LEVELS: "manager=loud" }).message).toContain(
      'DTC_LOG_LEVELS: unknown level "loud" for manager (one of fatal, error, warn, info, debug, trace, silent) (got "manager=loud")',
    );
    expect(configError({ DTC_LOG_LEVELS: "managr=debug" }).message).toContain('unknown module "managr"');
    expect(configError({ DTC_LOG_LEVELS: "debug" }).message).toContain('"debug" is not module=level');
    expect(configError({ DTC_LOG_LEVELS: "http=info,http=warn" }).message).toContain("given twice");
  });

  it("turns metrics off, and bounds the twins given series of their own", () => {
    expect(loadConfig({ DTC_METRICS: "off" }).metrics).toBeUndefined();
    expect(loadConfig({ DTC_METRICS_MAX_TWINS: "0" }).metrics).toEqual({ maxTwins: 0 });
    expect(configError({ DTC_METRICS: "yes" }).issues[0]?.variable).toBe("DTC_METRICS");
    expect(configError({ DTC_METRICS_MAX_TWINS: "-1" }).message).toContain(
      'DTC_METRICS_MAX_TWINS: must be a whole number of twins (got "-1")',
    );
    expect(configError({ DTC_METRICS_MAX_TWINS: "2000000" }).message).toContain(
      "must be between 0 and 1000000 twins",
    );
  });

  it("places the Prometheus SD file, or writes none, and keeps the metrics token secret", () => {
    expect(loadConfig({ DTC_DATA_DIR: "/var/lib/dtc" }).prometheusSdFile).toBe(
      "/var/lib/dtc/prometheus-targets.json",
    );
    expect(loadConfig({ DTC_PROMETHEUS_SD_FILE: "sd/targets.json" }).prometheusSdFile).toBe(
      resolve("sd/targets.json"),
    );
    expect(loadConfig({ DTC_PROMETHEUS_SD_FILE: "off" }).prometheusSdFile).toBeUndefined();
    expect(configError({ DTC_PROMETHEUS_SD_FILE: "targets.yml" }).message).toContain(
      "must be a path ending in .json",
    );
    expect(loadConfig({ DTC_METRICS_TOKEN: "s3cret" }).metricsToken).toBe("s3cret");
    const bad = configError({ DTC_METRICS_TOKEN: "two words" });
    expect(bad.issues[0]?.variable).toBe("DTC_METRICS_TOKEN");
    expect(bad.message).not.toContain("two words");
  });

  it("needs both SPARQL endpoints or neither", () => {
    const err = configError({ DTC_SPARQL_QUERY_URL: "http://store/sparql" });
    expect(err.issues).toEqual([
      {
        variable: "DTC_SPARQL_UPDATE_URL",
        message:
          'must be set too: a remote SPARQL store needs both the query and the update endpoint (got "")',
      },
    ]);
  });
});

describe("the README's configuration tables", () => {
  const readme = readFileSync(join(projectRoot, "README.md"), "utf8");
  /** Default cells by variable, from every table row that starts with a `VARIABLE`. */
  const rows = new Map<string, string[]>();
  for (const [, name = "", cell = ""] of readme.matchAll(/^\| `([A-Z_]+)` +\| ([^|]*?) +\|/gm)) {
    rows.set(name, [...(rows.get(name) ?? []), cell]);
  }
  const documented = (table: Record<string, { default: string }>) =>
    Object.entries(table).filter(
      ([name, v]) => !(rows.get(name) ?? []).includes(v.default === "" ? "unset" : `\`${v.default}\``),
    );

  it("lists every gateway variable with its default", () => {
    expect(documented(ENVIRONMENT)).toEqual([]);
  });

  it("lists every twin process variable with its default", () => {
    expect(documented(TWIN_ENVIRONMENT)).toEqual([]);
  });
});
