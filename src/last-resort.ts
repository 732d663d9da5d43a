import type { Logger } from "./logger.js";

/**
 * The process-level last resort. Every error dtc can foresee is caught where dtc hands control to a
 * library (node-wot's servers, mqtt.js and aedes handlers, timers, streams); this catches what
 * still escapes, so that one request a library mishandles does not take every twin down with it.
 *
 * A rejected promise nobody awaited leaves no state half-changed: it is logged and the process goes
 * on. An uncaught exception may have left the code that threw half-way, so the process keeps
 * serving only while such errors stay rare: past `maxPerMinute` in one minute it is in a loop it
 * will not leave by itself, and it exits (status 70, EX_SOFTWARE) for its supervisor to restart it
 * (a Docker restart policy, systemd, a Kubernetes pod) from its saved state.
 */
export interface LastResortOptions {
  /** Uncaught exceptions tolerated in a sliding minute before the process exits (default 10). */
  maxPerMinute?: number;
  /** Called before exiting (e.g. to save twins' states); its time is bounded by `exitDeadlineMs`. */
  beforeExit?: () => Promise<void>;
  /** Longest `beforeExit` may take (default 5 s). */
  exitDeadlineMs?: number;
}

export const EXIT_SOFTWARE = 70;

export function installLastResort(logger: Logger, options: LastResortOptions = {}): () => void {
  const maxPerMinute = options.maxPerMinute ?? 10;
  const recent: number[] = [];
  let exiting = false;

  const onException = (err: unknown, origin: string) => {
    const now = Date.now();
    recent.push(now);
    while (recent.length > 0 && (recent[0] as number) < now - 60_000) recent.shift();
    logger.error(
      { err, origin, inLastMinute: recent.length },
      "uncaught exception (last resort): still serving",
    );
    if (recent.length <= maxPerMinute || exiting) return;
    exiting = true;
    logger.fatal({ maxPerMinute }, "too many uncaught exceptions in a minute: exiting for a restart");
    const exit = () => process.exit(EXIT_SOFTWARE);
    setTimeout(exit, options.exitDeadlineMs ?? 5000).unref();
    (options.beforeExit?.() ?? Promise.resolve()).then(exit, exit);
  };
  const onRejection = (reason: unknown) => {
    logger.error({ err: reason }, "unhandled promise rejection (last resort): still serving");
  };
  process.on("uncaughtException", onException);
  process.on("unhandledRejection", onRejection);
  return () => {
    process.off("uncaughtException", onException);
    process.off("unhandledRejection", onRejection);
  };
}
