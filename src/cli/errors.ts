/**
 * The CLI's exit codes and its one error type: every failure ends as one `dtc: ...` line (and,
 * for a refused manifest, one line per invalid member) and its exit code.
 */

export const EXIT = {
  ok: 0,
  /** The gateway refused the request (4xx), or an operation failed (5xx, a failed step). */
  failed: 1,
  /** The command line is wrong. */
  usage: 2,
  /** The gateway could not be reached. */
  unreachable: 3,
  /** A --wait deadline passed. */
  timeout: 4,
} as const;
export type ExitCode = (typeof EXIT)[keyof typeof EXIT];

export class CliError extends Error {
  readonly exitCode: ExitCode;
  /** Lines shown after the message (e.g. each validation error). */
  readonly details: readonly string[];
  constructor(exitCode: ExitCode, message: string, details: readonly string[] = []) {
    super(message);
    this.name = "CliError";
    this.exitCode = exitCode;
    this.details = details;
  }
}

export const usageError = (message: string): CliError => new CliError(EXIT.usage, message);
