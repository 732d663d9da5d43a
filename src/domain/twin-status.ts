import type { EntanglementFigures } from "./entanglement.js";
import type { LifecycleState } from "./lifecycle.js";

/** How a running twin is doing, as its platform reports it. */
export interface InstanceStatus {
  lifecycle: LifecycleState;
  entanglement?: EntanglementFigures;
  /** Why the platform reports the instance failed (crashed, killed, unreachable); absent while healthy. */
  failed?: string;
}

export interface StatusListener {
  lifecycleChanged?(): void;
  /** Every entanglement evaluation (the status publisher throttles). */
  entanglementEvaluated?(): void;
  /** The platform lost the instance (the manager's reconcile loop starts it again). */
  failed?(reason: string): void;
}
