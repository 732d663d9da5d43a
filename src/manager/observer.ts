import { isDtcError } from "../domain/errors.js";

/**
 * What the manager tells an observer (the gateway's metrics) as it works: no prom-client here, and
 * nothing in the manager waits for or depends on the observer. Outcomes and reasons are error kinds
 * (src/domain/errors.ts), never messages: they become label values.
 */
export interface ManagerObserver {
  /** An operation on an instance (start, stop, move, ...) settled: "ok" or its error's kind. */
  operation(operation: OperationKind, outcome: string, durationMs: number): void;
  /** A reconcile pass ended. */
  reconciled(durationMs: number): void;
  /** Reconcile could not start an instance that should run (`reason`: the error's kind). */
  reconcileFailed(platform: string, reason: string): void;
  /** The platform lost a running instance (crashed, killed, unreachable). */
  instanceLost(platform: string): void;
}

export type OperationKind =
  | "start"
  | "stop"
  | "resume"
  | "restart"
  | "remove"
  | "snapshot"
  | "restore"
  | "move"
  | "clone";

/** The label value of an error: its kind, or "failed" for anything that is not one of dtc's. */
export const outcomeOf = (err: unknown): string => (isDtcError(err) ? err.kind : "failed");
