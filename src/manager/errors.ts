import type { ZodError } from "zod";
import {
  DtcError,
  type DtcErrorOptions,
  type ErrorKind,
  type FieldIssue,
  isDtcError,
} from "../domain/errors.js";

/**
 * A request the manager refuses or cannot carry out, by kind (src/domain/errors.ts): `invalid`
 * input, an unknown id (`notFound`), a `conflict` with what exists, a platform that `failed`, is
 * `unavailable` or did not answer in time (`timeout`).
 */
export class ManagerError extends DtcError {
  /** `options` as an array: the fields found wrong (an `invalid` error's validationErrors). */
  constructor(kind: ErrorKind, message: string, options?: DtcErrorOptions | FieldIssue[]) {
    super(kind, message, Array.isArray(options) ? { validationErrors: options } : options);
    this.name = "ManagerError";
  }
}

export const notFound = (what: string, id: string) =>
  new ManagerError("notFound", `no ${what} with id "${id}"`);

/** An `invalid` error naming every field zod found wrong (dotted paths, as the WoT Discovery problems do). */
export function invalid(what: string, error: ZodError, prefix = ""): ManagerError {
  const issues = error.issues.map((issue) => ({
    field: [prefix, ...issue.path.map(String)].filter((p) => p !== "").join(".") || "(body)",
    description: issue.message,
  }));
  return new ManagerError(
    "invalid",
    `${what}: ${issues.map((i) => `${i.field}: ${i.description}`).join("; ")}`,
    {
      validationErrors: issues,
    },
  );
}

/** Any error of dtc's own (a kind) as a ManagerError, cause kept; others (dtc's faults) as they are. */
export function asManagerError(err: unknown): unknown {
  if (err instanceof ManagerError || !isDtcError(err)) return err;
  return new ManagerError(err.kind, err.message, {
    cause: err,
    ...(err.validationErrors ? { validationErrors: err.validationErrors } : {}),
  });
}
