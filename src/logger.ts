import { pino } from "pino";
import type { Config } from "./config.js";
import { traceIds } from "./observability/tracing.js";

export type Logger = pino.Logger;

export type LogLevel = Config["logLevel"];

/** The level of each module's logger that differs from the process's (DTC_LOG_LEVELS), by logger. */
const moduleLevels = new WeakMap<Logger, Readonly<Record<string, LogLevel>>>();

/**
 * JSON lines on stdout; a log shipper or `pino-pretty` makes them readable. Each line carries the
 * trace and span ids of the active span, when tracing is on. `levels`: a module's own level
 * (its loggers come from componentLogger()).
 */
export function createLogger(level: LogLevel, levels: Readonly<Record<string, LogLevel>> = {}): Logger {
  const logger = pino({ name: "dtc", level, mixin: traceIds });
  moduleLevels.set(logger, levels);
  return logger;
}

/**
 * The logger of one module (`component` on each line), at the level DTC_LOG_LEVELS gives that
 * module, else at its parent's. Every module's logger is made here, so that the setting applies.
 */
export function componentLogger(parent: Logger, component: string): Logger {
  const levels = moduleLevels.get(parent) ?? {};
  const level = levels[component];
  const child = parent.child({ component }, level === undefined ? {} : { level });
  moduleLevels.set(child, levels);
  return child;
}
