import { ConfigError, loadConfig } from "./config.js";
import { startGateway } from "./gateway.js";
import { installLastResort } from "./last-resort.js";
import { componentLogger, createLogger } from "./logger.js";
import { startTracing } from "./observability/tracing.js";

/** Process entry: configuration, wiring, and a clean exit on SIGINT/SIGTERM. */
async function main(): Promise<void> {
  let config: ReturnType<typeof loadConfig>;
  try {
    config = loadConfig();
  } catch (err) {
    if (err instanceof ConfigError) {
      process.stderr.write(`dtc: ${err.message}\n`);
      process.exit(2);
    }
    throw err;
  }
  const logger = createLogger(config.logLevel, config.logLevels);
  // Off unless OTEL_EXPORTER_OTLP_ENDPOINT is set; first, so that the gateway's start is traced too.
  const tracing = await startTracing({
    serviceName: "dtc-gateway",
    logger: componentLogger(logger, "tracing"),
  });
  // Before the gateway starts: an error a library throws while twins start is caught too.
  let gateway: Awaited<ReturnType<typeof startGateway>> | undefined;
  // The last spans (the close's) are exported before the process exits.
  const close = async () => {
    try {
      await gateway?.close();
    } finally {
      await tracing.shutdown();
    }
  };
  installLastResort(logger, { beforeExit: close });

  // A signal during start is remembered and honoured once started (twins' states are saved then),
  // rather than killing the process half-way.
  let signalled = false;
  const closeAndExit = () =>
    gateway &&
    close().then(
      () => process.exit(0),
      (err) => {
        logger.error({ err }, "error while stopping");
        process.exit(1);
      },
    );
  const stop = (signal: NodeJS.Signals) => {
    if (signalled) return;
    signalled = true;
    logger.info({ signal }, "stopping");
    closeAndExit();
  };
  process.once("SIGINT", stop);
  process.once("SIGTERM", stop);
  gateway = await startGateway(config, logger);
  if (signalled) closeAndExit();
}

main().catch((err) => {
  process.stderr.write(`dtc: failed to start: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exit(1);
});
