import type { ZodError } from "zod";
import type { ValidationIssue } from "../wot/validation.js";

/**
 * A request the manager refuses or cannot carry out: 400 bad input, 404 unknown id, 409 conflict
 * with what exists, 502 a platform failed doing it, 503 a platform cannot be reached, 504 a
 * platform (or the operation) did not finish in time.
 */
export class ManagerError extends Error {
  constructor(
    readonly status: 400 | 404 | 409 | 502 | 503 | 504,
    message: string,
    readonly validationErrors?: ValidationIssue[],
  ) {
    super(message);
    this.name = "ManagerError";
  }
}

export const notFound = (what: string, id: string) => new ManagerError(404, `no ${what} with id "${id}"`);

/** A 400 naming every field zod found wrong (dotted paths, as the WoT Discovery problems do). */
export function invalid(what: string, error: ZodError, prefix = ""): ManagerError {
  const issues = error.issues.map((issue) => ({
    field: [prefix, ...issue.path.map(String)].filter((p) => p !== "").join(".") || "(body)",
    description: issue.message,
  }));
  return new ManagerError(
    400,
    `${what}: ${issues.map((i) => `${i.field}: ${i.description}`).join("; ")}`,
    issues,
  );
}
