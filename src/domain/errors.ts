/**
 * Errors by kind, not by status: the domain, the ports and the adapters say what went wrong, and
 * the HTTP edge alone (src/http/error-status.ts) says which status that is. The cause is always kept.
 */

export const ERROR_KINDS = [
  /** The request is malformed or names something impossible (HTTP 400). */
  "invalid",
  /** What it names does not exist (404). */
  "notFound",
  /** It clashes with what exists or with the object's state (409). */
  "conflict",
  /** Something it needs cannot be reached now; trying again later may work (503). */
  "unavailable",
  /** Something it needs did not answer in time (504). */
  "timeout",
  /** Something it relies on tried and failed (a platform, an engine: 502). */
  "failed",
] as const;
export type ErrorKind = (typeof ERROR_KINDS)[number];

/** A field and what is wrong with it (dotted paths, as WoT Discovery's validationErrors). */
export interface FieldIssue {
  field: string;
  description: string;
}

export interface DtcErrorOptions {
  cause?: unknown;
  /** Every field found wrong (invalid). */
  validationErrors?: FieldIssue[];
}

/** The base of dtc's own errors: a kind, a message that names ids and fields, the cause. */
export class DtcError extends Error {
  readonly validationErrors?: FieldIssue[];

  constructor(
    readonly kind: ErrorKind,
    message: string,
    options: DtcErrorOptions = {},
  ) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = "DtcError";
    if (options.validationErrors !== undefined) this.validationErrors = options.validationErrors;
  }
}

export const isDtcError = (err: unknown): err is DtcError => err instanceof DtcError;

/** The message of anything thrown (an Error's message, else its string form). */
export function errorMessage(err: unknown): string {
  if (err instanceof Error) return err.message;
  if (typeof err === "string") return err;
  try {
    return String(err);
  } catch {
    return "unknown error";
  }
}
