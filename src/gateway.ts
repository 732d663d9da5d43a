import { mkdirSync } from "node:fs";
import type { AddressInfo } from "node:net";
import { join } from "node:path";
import { serve } from "@hono/node-server";
import type { Config } from "./config.js";
import { EmbeddedStore } from "./directory/embedded-store.js";
import type { DirectoryStore } from "./directory/store.js";
import { mountThingsApi } from "./directory/things-api.js";
import { createApp } from "./http/app.js";
import { mountTwinsProxy } from "./http/twins-proxy.js";
import type { Logger } from "./logger.js";
import { type EmbeddedBroker, startEmbeddedBroker } from "./mqtt/embedded-broker.js";
import { packageVersion, thingModelsDir } from "./paths.js";
import { TwinRuntime } from "./runtime/twin-runtime.js";
import { loadThingModels, ThingModelRegistry } from "./wot/model-registry.js";

export interface Gateway {
  /** Base URL the gateway answers on, e.g. http://127.0.0.1:8080 */
  url: string;
  /** The MQTT broker of the twins (embedded, or DTC_MQTT_URL). */
  brokerUrl: string;
  models: ThingModelRegistry;
  /** The directory's store (embedded: SQLite record + Oxigraph index under DTC_DATA_DIR/directory). */
  directory: DirectoryStore;
  /** The twins running in this process, reachable at {url}/twins/{id}. */
  twins: TwinRuntime;
  close(): Promise<void>;
}

/** Wires the parts together and starts listening. */
export async function startGateway(config: Config, logger: Logger): Promise<Gateway> {
  mkdirSync(config.dataDir, { recursive: true });
  const models = new ThingModelRegistry();
  const schemas = await loadThingModels(models, thingModelsDir);
  logger.info({ count: schemas.length }, "DT schemas registered");

  let embedded: EmbeddedBroker | undefined;
  if (config.mqttUrl === undefined) {
    embedded = await startEmbeddedBroker({ port: config.mqttPort, host: config.host });
    logger.info({ url: embedded.url }, "embedded MQTT broker listening");
  }
  const brokerUrl = config.mqttUrl ?? (embedded as EmbeddedBroker).url;

  // The remote SPARQL store adapter is not built yet: DTC_SPARQL_* are validated but not used.
  const directory: DirectoryStore = new EmbeddedStore(join(config.dataDir, "directory"));
  await directory.open();

  const app = createApp({ version: packageVersion, startedAt: Date.now(), logger });
  mountThingsApi(app, { store: directory });
  let twins: TwinRuntime | undefined;
  mountTwinsProxy(app, () => (twins as TwinRuntime).digital.httpListenUrl);
  const server = serve({ fetch: app.fetch, port: config.port, hostname: config.host });
  await new Promise<void>((resolve, reject) => {
    server.once("listening", resolve);
    server.once("error", reject);
  });
  const { port } = server.address() as AddressInfo;
  const host = config.host.includes(":") ? `[${config.host}]` : config.host;
  const url = `http://${host}:${port}`;
  const closeServer = () =>
    new Promise<void>((resolve, reject) => {
      server.close((err) => (err ? reject(err) : resolve()));
      // Keep-alive connections (and pending long polls) would hold close() open.
      if ("closeAllConnections" in server) server.closeAllConnections();
    });

  try {
    // node-wot's HTTP server listens on loopback only; consumers go through {url}/twins/.
    twins = await TwinRuntime.start({
      registry: models,
      brokerUrl,
      http: { port: 0, address: "127.0.0.1", baseUri: `${config.publicUrl ?? url}/twins` },
      pushIntervalMs: config.entanglementIntervalMs,
      logger,
    });
  } catch (err) {
    await closeServer();
    await embedded?.close();
    await directory.close();
    throw err;
  }
  logger.info({ url, version: packageVersion, brokerUrl }, "dtc gateway listening");

  const runtime = twins;
  return {
    url,
    brokerUrl,
    models,
    directory,
    twins: runtime,
    close: async () => {
      await closeServer();
      await runtime.close();
      await embedded?.close();
      await directory.close();
    },
  };
}
