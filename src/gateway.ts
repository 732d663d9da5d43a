import { chmodSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { createServer as createHttpsServer } from "node:https";
import type { AddressInfo } from "node:net";
import { availableParallelism, totalmem } from "node:os";
import { join } from "node:path";
import { serve } from "@hono/node-server";
import type { Config } from "./config.js";
import { Directory } from "./directory/directory.js";
import { EmbeddedStore } from "./directory/embedded-store.js";
import { DirectoryEvents } from "./directory/events.js";
import { mountJsonPathSearch } from "./directory/jsonpath-search.js";
import { loadNamedQueries } from "./directory/named-queries.js";
import { mountNotificationsApi } from "./directory/notifications-api.js";
import { startPurge } from "./directory/purge.js";
import { mountSearchApi } from "./directory/search-api.js";
import { SparqlStore } from "./directory/sparql-store.js";
import type { DirectoryStore } from "./directory/store.js";
import { mountThingsApi } from "./directory/things-api.js";
import { TwinStatusPublisher } from "./directory/twin-status.js";
import { mountWellKnown } from "./directory/well-known.js";
import { twinTdId } from "./domain/vocabulary.js";
import { createApp } from "./http/app.js";
import { mountTwinsProxy } from "./http/twins-proxy.js";
import { mountUi } from "./http/ui.js";
import { componentLogger, type Logger } from "./logger.js";
import { mountManagerApi } from "./manager/api.js";
import { Inventory } from "./manager/inventory.js";
import { DtcManager } from "./manager/manager.js";
import { ManagerStore } from "./manager/manager-store.js";
import { MANAGER_TD_ID, managerThingDescription } from "./manager/manager-td.js";
import { type EmbeddedBroker, startEmbeddedBroker } from "./mqtt/embedded-broker.js";
import { measureBrokerLatency } from "./mqtt/latency.js";
import { GatewayMetrics, mountMetrics } from "./observability/metrics.js";
import { watchTwinProcesses } from "./observability/prometheus-sd.js";
import { packageVersion, thingModelsDir } from "./paths.js";
import { DockerDriver } from "./platforms/docker/driver.js";
import type { PlatformDriver } from "./platforms/driver.js";
import { InProcessDriver } from "./platforms/in-process/driver.js";
import { createDrivers } from "./platforms/registry.js";
import { Authenticator, INTERNAL_USER, TWIN_USER_PREFIX } from "./security/authenticator.js";
import { createJwtVerifier } from "./security/jwt.js";
import { twinTopicsOf } from "./security/mqtt-acl.js";
import { secureTd } from "./security/td-security.js";
import { TokenService } from "./security/tokens.js";
import { mountTokensApi } from "./security/tokens-api.js";
import { instantiate } from "./wot/instantiate.js";
import { loadThingModels, ThingModelRegistry } from "./wot/model-registry.js";
import type { JsonObject } from "./wot/rdf.js";

export interface Gateway {
  /** Base URL the gateway answers on, e.g. http://127.0.0.1:8080 */
  url: string;
  /** The MQTT broker of the twins (embedded, or DTC_MQTT_URL). */
  brokerUrl: string;
  models: ThingModelRegistry;
  /** The Thing Description Directory (store: embedded under DTC_DATA_DIR/directory, or remote SPARQL). */
  directory: Directory;
  /** Twins' status graphs in the directory. */
  twinStatus: TwinStatusPublisher;
  /** The DTC Manager: inventory, deployment and management of twins (the /api routes). */
  manager: DtcManager;
  /** The platform drivers, one per registered platform that has one (src/platforms/registry.ts). */
  drivers: PlatformDriver[];
  /** The in-process platform driver (twins in this process: node `local` and other in-process nodes). */
  inProcess: InProcessDriver;
  /** The Docker platform driver (twins as containers on the engines of docker nodes). */
  docker: DockerDriver;
  /** Every route the HTTP app mounted (method, path), as Hono lists them: the access table's test. */
  routes: { method: string; path: string }[];
  /** API tokens (src/security/tokens.ts). */
  tokens: TokenService;
  /** undefined when DTC_AUTH=off. */
  authenticator: Authenticator | undefined;
  /** Where the first admin token was written (auth on), e.g. DTC_DATA_DIR/admin.token. */
  adminTokenFile: string | undefined;
  close(): Promise<void>;
}

/** The first admin token, made once (when no admin token exists) and written for the operator only. */
function bootstrapAdmin(tokens: TokenService, dataDir: string, logger: Logger): string {
  const file = join(dataDir, "admin.token");
  if (!tokens.hasAdmin()) {
    const created = tokens.create({ name: "bootstrap admin", role: "admin" });
    writeFileSync(file, `${created.token}\n`, { mode: 0o600 });
    // writeFileSync's mode applies only to a new file.
    chmodSync(file, 0o600);
    logger.info({ file }, "created the first admin token: read it from this file (shown nowhere else)");
  }
  return file;
}

/** Wires the parts together and starts listening. */
export async function startGateway(config: Config, logger: Logger): Promise<Gateway> {
  // Each module's lines name it (component) and take its level from DTC_LOG_LEVELS.
  const log = {
    directory: componentLogger(logger, "directory"),
    manager: componentLogger(logger, "manager"),
    platform: componentLogger(logger, "platform"),
    http: componentLogger(logger, "http"),
  };
  mkdirSync(config.dataDir, { recursive: true });
  const models = new ThingModelRegistry();
  const schemas = await loadThingModels(models, thingModelsDir);
  logger.info({ count: schemas.length }, "DT schemas registered");

  // Stored but not searchable (e.g. a context not available offline): said, never silent.
  const onIndexFailure = (id: string, message: string) =>
    log.directory.warn({ td: id }, `directory: the TD is stored but not searchable: ${message}`);
  const store: DirectoryStore = config.sparql
    ? new SparqlStore({ ...config.sparql, onIndexFailure })
    : new EmbeddedStore(join(config.dataDir, "directory"), {
        onIndexFailure,
        indexReplicas: config.directory.searchIndexCopies,
      });
  await store.open();
  // GET /metrics (DTC_METRICS); each part below gets its hook, none when off.
  const metrics = config.metrics
    ? new GatewayMetrics({ maxTwins: config.metrics.maxTwins, logger: componentLogger(logger, "metrics") })
    : undefined;
  const directory = new Directory(store, metrics ? { observeWrite: metrics.observeWrite } : {});
  metrics?.watchDirectory(directory);
  const events = new DirectoryEvents();
  directory.onChange((change) => events.publish(change));
  const named = await loadNamedQueries();
  const limits = config.directory;
  const purge = startPurge({ directory, intervalMs: limits.purgeIntervalMs, logger: log.directory });
  const twinStatus = new TwinStatusPublisher({
    store,
    intervalMs: limits.statusIntervalMs,
    logger: log.directory,
  });

  // Known once listening; the routes read it per request.
  let publicBase = "";
  const base = () => publicBase;
  const managerStore = new ManagerStore(join(config.dataDir, "manager.sqlite"));
  const security = config.security;
  const tokens = new TokenService(managerStore);
  let authenticator: Authenticator | undefined;
  let adminTokenFile: string | undefined;
  if (security.enabled) {
    const jwt = security.oidc ? await createJwtVerifier(security.oidc) : undefined;
    authenticator = new Authenticator({
      tokens,
      internalSecret: managerStore.secret("internal"),
      ...(jwt ? { jwt } : {}),
    });
    adminTokenFile = bootstrapAdmin(tokens, config.dataDir, logger);
  } else {
    logger.warn(
      "DTC_AUTH=off: no authentication; anyone who reaches the loopback listeners controls the gateway",
    );
  }
  const tdSecurity = {
    enabled: security.enabled,
    ...(security.oidc ? { authorization: security.oidc.issuer } : {}),
  };
  const secure = (td: JsonObject) => secureTd(td, tdSecurity);

  // Bound once the manager exists; the broker asks it for twins' PT topics (its ACLs).
  let manager: DtcManager | undefined;
  let embedded: EmbeddedBroker | undefined;
  if (config.mqttUrl === undefined) {
    embedded = await startEmbeddedBroker({
      port: config.mqttPort,
      host: config.mqttHost,
      ...(authenticator
        ? {
            security: {
              authenticator,
              logger: componentLogger(logger, "mqtt-broker"),
              twinTopics: (id: string) => twinTopicsFor(id),
            },
          }
        : {}),
      ...(security.tls && config.mqttTlsPort !== undefined
        ? { tls: { ...security.tls, port: config.mqttTlsPort } }
        : {}),
    });
    logger.info({ url: embedded.url, tlsUrl: embedded.tlsUrl }, "embedded MQTT broker listening");
  }
  if (embedded) metrics?.watchBroker(embedded);
  const brokerUrl = config.mqttUrl ?? (embedded as EmbeddedBroker).url;
  const internal = (user: string) =>
    authenticator ? { username: user, password: authenticator.internalPassword(user) } : undefined;
  // The embedded broker knows the gateway's internal users; an external one the operator's user.
  const brokerCredentials = embedded ? internal(INTERNAL_USER) : config.mqttCredentials;
  /** An instance's PT topics whether or not it runs yet: a container subscribes while it starts. */
  const twinTopicsFor = async (id: string) => {
    if (!manager) return undefined;
    const running = manager.runningDescription(id);
    if (running) return twinTopicsOf(running);
    let record: ReturnType<DtcManager["instance"]>;
    try {
      record = manager.instance(id);
    } catch {
      return undefined;
    }
    const td = await instantiate(models, record.schema, {
      placeholders: record.configuration,
      id: twinTdId(id),
    });
    return twinTopicsOf(td);
  };
  const inventory = new Inventory({
    store: managerStore,
    registry: models,
    directory: store,
    publicBase: base,
    outbound: { allowedImages: security.allowedImages, allowedOutboundHosts: security.allowedOutboundHosts },
    logger: log.manager,
  });
  const drivers = createDrivers({
    registry: models,
    brokerUrl,
    ...(brokerCredentials ? { gatewayBrokerCredentials: brokerCredentials } : {}),
    twinBrokerCredentials: (id) => (embedded ? internal(`${TWIN_USER_PREFIX}${id}`) : config.mqttCredentials),
    // node-wot's HTTP servers listen on loopback only; consumers go through {url}/twins/.
    httpBaseUri: () => `${publicBase}/twins`,
    gatewayId: managerStore.gatewayId,
    pushIntervalMs: config.entanglementIntervalMs,
    ptClockSkewMs: config.ptClockSkewMs,
    platformTimeoutMs: config.manager.platformTimeoutMs,
    ...(config.metricsToken !== undefined ? { metricsToken: config.metricsToken } : {}),
    ...(metrics ? { commitObserver: metrics.commitObserver } : {}),
    logger: log.platform,
  });
  manager = new DtcManager({
    store: managerStore,
    inventory,
    drivers,
    directory,
    twinStatus,
    secureTd: secure,
    reconcileIntervalMs: config.manager.reconcileIntervalMs,
    checkpointIntervalMs: config.manager.checkpointIntervalMs,
    operationTimeoutMs: config.manager.operationTimeoutMs,
    ...(metrics ? { observer: metrics.manager } : {}),
    logger: log.manager,
  });
  metrics?.watch({ inProcess: driverOf(drivers, InProcessDriver), manager });
  // Prometheus file-based service discovery of the twin containers (DTC_PROMETHEUS_SD_FILE).
  const scrapeTargets = config.prometheusSdFile
    ? watchTwinProcesses(manager, { file: config.prometheusSdFile, logger })
    : undefined;

  const app = createApp({
    version: packageVersion,
    startedAt: Date.now(),
    logger: log.http,
    corsOrigins: config.corsOrigins,
    authenticator,
    anonymousDiscovery: security.anonymousDiscovery,
    allowedHosts: [
      ...security.allowedHosts,
      ...(config.publicUrl ? [new URL(config.publicUrl).hostname] : []),
      // Listening on a named address: its name is ours too.
      ...(config.host === "0.0.0.0" || config.host === "::" ? [] : [config.host]),
    ],
    writesPerMinute: security.writesPerMinute,
    ...(metrics ? { observeRequest: metrics.observeRequest } : {}),
  });
  if (metrics) mountMetrics(app, metrics);
  mountWellKnown(app, {
    baseUrl: base,
    secure,
    links: () => [{ rel: "service-desc", href: `${publicBase}/api/td`, type: "application/td+json" }],
  });
  mountThingsApi(app, { directory, maxBodyBytes: limits.maxBodyBytes });
  mountSearchApi(app, {
    store,
    named,
    timeoutMs: limits.searchTimeoutMs,
    maxResults: limits.searchMaxResults,
  });
  mountJsonPathSearch(app, { store, timeoutMs: limits.searchTimeoutMs });
  mountNotificationsApi(app, { events });
  mountTokensApi(app, { tokens, publicBase: base });
  mountManagerApi(app, {
    manager,
    maxBodyBytes: limits.maxBodyBytes,
    publicBase: base,
    secure,
    logger: log.http,
  });
  mountUi(app);
  mountTwinsProxy(app, (id) => manager.httpTarget(id), secure, {
    description: (id) => manager.runningDescription(id),
    maxBodyBytes: limits.maxBodyBytes,
  });
  const tls = security.tls;
  const server = tls
    ? serve({
        fetch: app.fetch,
        port: config.port,
        hostname: config.host,
        createServer: createHttpsServer,
        serverOptions: { cert: readFileSync(tls.certFile), key: readFileSync(tls.keyFile) },
      })
    : serve({ fetch: app.fetch, port: config.port, hostname: config.host });
  await new Promise<void>((resolve, reject) => {
    server.once("listening", resolve);
    server.once("error", reject);
  });
  const { port } = server.address() as AddressInfo;
  const host = config.host.includes(":") ? `[${config.host}]` : config.host;
  const url = `${tls ? "https" : "http"}://${host}:${port}`;
  publicBase = config.publicUrl ?? url;
  const closeServer = () =>
    new Promise<void>((resolve, reject) => {
      server.close((err) => (err ? reject(err) : resolve()));
      // Keep-alive connections (and pending long polls) would hold close() open.
      if ("closeAllConnections" in server) server.closeAllConnections();
    });

  try {
    await inventory.open(schemas);
    // The gateway's own node: in-process twins, as far from the PTs as the broker is.
    const latencyMs = await measureBrokerLatency(brokerUrl, 5, {
      ...(brokerCredentials ? { credentials: brokerCredentials } : {}),
    }).catch((err) => {
      logger.warn(
        { err: (err as Error).message },
        "could not measure the broker's latency; node local says 0 ms",
      );
      return 0;
    });
    await inventory.registerNode(
      {
        id: "local",
        platform: "in-process",
        tier: config.manager.localTier,
        capabilities: { cpu: availableParallelism(), memory: Math.floor(totalmem() / 2 ** 20), gpu: 0 },
        labels: { gateway: "true" },
        latencyMs,
      },
      { builtIn: true, replace: true },
    );
    await directory.put(MANAGER_TD_ID, secure(managerThingDescription(publicBase)));
    await manager.open();
  } catch (err) {
    events.close();
    await closeServer();
    await scrapeTargets?.close();
    await manager.close().catch(() => undefined);
    await embedded?.close();
    purge.stop();
    twinStatus.close();
    await store.close();
    managerStore.close();
    throw err;
  }
  logger.info({ url, version: packageVersion, brokerUrl }, "dtc gateway listening");

  return {
    url,
    brokerUrl,
    models,
    directory,
    twinStatus,
    manager,
    drivers,
    inProcess: driverOf(drivers, InProcessDriver),
    docker: driverOf(drivers, DockerDriver),
    routes: app.routes.map(({ method, path }) => ({ method, path })),
    tokens,
    authenticator,
    adminTokenFile,
    close: async () => {
      // Open event streams would hold the server's close open.
      events.close();
      await closeServer();
      purge.stop();
      await twinStatus.flush();
      twinStatus.close();
      await scrapeTargets?.close();
      // Saves every twin's state; the instances stay desired, so the next start brings them back.
      await manager.close();
      await embedded?.close();
      await store.close();
      managerStore.close();
    },
  };
}

/** The driver of one class among `drivers` (the composition root knows the concrete ones). */
function driverOf<D extends PlatformDriver>(
  drivers: PlatformDriver[],
  type: abstract new (...args: never[]) => D,
): D {
  const driver = drivers.find((d): d is D => d instanceof type);
  if (driver === undefined) throw new Error(`no ${type.name} among the platform drivers`);
  return driver;
}
