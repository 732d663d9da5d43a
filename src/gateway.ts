import { mkdirSync } from "node:fs";
import type { AddressInfo } from "node:net";
import { serve } from "@hono/node-server";
import type { Config } from "./config.js";
import { createApp } from "./http/app.js";
import type { Logger } from "./logger.js";
import { packageVersion, thingModelsDir } from "./paths.js";
import { loadThingModels, ThingModelRegistry } from "./wot/model-registry.js";

export interface Gateway {
  /** Base URL the gateway answers on, e.g. http://127.0.0.1:8080 */
  url: string;
  models: ThingModelRegistry;
  close(): Promise<void>;
}

/** Wires the parts together and starts listening. */
export async function startGateway(config: Config, logger: Logger): Promise<Gateway> {
  mkdirSync(config.dataDir, { recursive: true });
  const models = new ThingModelRegistry();
  const schemas = await loadThingModels(models, thingModelsDir);
  logger.info({ count: schemas.length }, "DT schemas registered");

  const app = createApp({ version: packageVersion, startedAt: Date.now(), logger });
  const server = serve({ fetch: app.fetch, port: config.port, hostname: config.host });
  await new Promise<void>((resolve, reject) => {
    server.once("listening", resolve);
    server.once("error", reject);
  });
  const { port } = server.address() as AddressInfo;
  const host = config.host.includes(":") ? `[${config.host}]` : config.host;
  const url = `http://${host}:${port}`;
  logger.info({ url, version: packageVersion }, "dtc gateway listening");

  return {
    url,
    models,
    close: () =>
      new Promise<void>((resolve, reject) => {
        server.close((err) => (err ? reject(err) : resolve()));
        // Keep-alive connections would hold close() open until they time out.
        if ("closeAllConnections" in server) server.closeAllConnections();
      }),
  };
}
