import { pino } from "pino";
import type { Config } from "./config.js";

export type Logger = pino.Logger;

/** JSON lines on stdout; a log shipper or `pino-pretty` makes them readable. */
export function createLogger(level: Config["logLevel"]): Logger {
  return pino({ name: "dtc", level });
}
