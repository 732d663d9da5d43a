import type { Context } from "hono";
import type { ContentfulStatusCode } from "hono/utils/http-status";
import { type DtcError, type ErrorKind, isDtcError } from "../domain/errors.js";
import { problem } from "./problem.js";

/**
 * The one place where an error's kind becomes an HTTP status (the domain, ports and adapters
 * know kinds only, src/domain/errors.ts).
 */

export const STATUS_OF_KIND = {
  invalid: 400,
  notFound: 404,
  conflict: 409,
  failed: 502,
  unavailable: 503,
  timeout: 504,
} as const satisfies Record<ErrorKind, ContentfulStatusCode>;

const TITLES: Record<ErrorKind, string> = {
  invalid: "Bad Request",
  notFound: "Not Found",
  conflict: "Conflict",
  failed: "Bad Gateway",
  unavailable: "Service Unavailable",
  timeout: "Gateway Timeout",
};

export const statusOf = (kind: ErrorKind): ContentfulStatusCode => STATUS_OF_KIND[kind];

/** An error of dtc's own as RFC 9457 problem details with the status its kind stands for. */
export function problemOf(c: Context, err: DtcError): Response {
  return problem(c, {
    title: TITLES[err.kind],
    status: statusOf(err.kind),
    detail: err.message,
    ...(err.validationErrors ? { validationErrors: err.validationErrors } : {}),
  });
}

export { isDtcError };
