import { ConfigError } from "./config.js";
import { installLastResort } from "./last-resort.js";
import { createLogger, type Logger } from "./logger.js";
import { startTracing, type Tracing } from "./observability/tracing.js";
import { startTwinProcess, type TwinProcess } from "./runtime/twin-process.js";
import { loadTwinProcessSettings, type TwinProcessSettings } from "./runtime/twin-process-config.js";

/**
 * Entry of a standalone twin process (`node dist/src/twin-main.js`): one twin, as a container
 * platform runs it, steered through its management endpoint. Exit status: 0 after SIGINT/SIGTERM
 * or POST /shutdown, 2 for a configuration that cannot work (a platform should not retry it
 * unchanged), 1 for anything else.
 */

const fail = (code: 1 | 2, message: string): never => {
  process.stderr.write(`dtc-twin: ${message}\n`);
  process.exit(code);
};

async function main(): Promise<void> {
  let settings: TwinProcessSettings;
  try {
    settings = loadTwinProcessSettings();
  } catch (err) {
    if (err instanceof ConfigError) fail(2, err.message);
    throw err;
  }
  const logger = createLogger(settings.logLevel);
  // Off unless OTEL_EXPORTER_OTLP_ENDPOINT is set (a platform passes the gateway's OTEL_* on).
  const tracing = await startTracing({ serviceName: "dtc-twin", logger });
  installLastResort(logger, {
    beforeExit: async () => {
      await proc?.close();
      await tracing.shutdown();
    },
  });

  // A signal during start is remembered and honoured once started (the twin's retained TD must
  // still be cleared), rather than killing the process half-way.
  let proc: TwinProcess | undefined;
  let stopping = false;
  const stop = (reason: string) => {
    if (stopping) return;
    stopping = true;
    if (proc) close(proc, tracing, logger, reason);
  };
  process.once("SIGINT", () => stop("SIGINT"));
  process.once("SIGTERM", () => stop("SIGTERM"));

  try {
    proc = await startTwinProcess(settings, logger);
  } catch (err) {
    if (err instanceof ConfigError) fail(2, err.message);
    fail(1, `failed to start: ${err instanceof Error ? err.message : String(err)}`);
    return;
  }
  const started = proc;
  started.shutdownRequested.then(() => stop("shutdown requested"));
  if (stopping) close(started, tracing, logger, "signal during start");
}

/** Longest a close may take before the process exits anyway (a platform would kill it soon after). */
const CLOSE_DEADLINE_MS = 8000;

function close(proc: TwinProcess, tracing: Tracing, logger: Logger, reason: string): void {
  logger.info({ reason }, "stopping");
  setTimeout(() => {
    logger.warn({ deadlineMs: CLOSE_DEADLINE_MS }, "closing took too long; exiting");
    process.exit(1);
  }, CLOSE_DEADLINE_MS).unref();
  proc.close().then(
    // The last spans (the shutdown's) are exported before the process exits.
    () => tracing.shutdown().then(() => process.exit(0)),
    (err: unknown) => {
      logger.error({ err }, "error while stopping");
      process.exit(1);
    },
  );
}

main().catch((err) => fail(1, `failed to start: ${err instanceof Error ? err.message : String(err)}`));
