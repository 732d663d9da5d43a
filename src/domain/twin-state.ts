import type { EntanglementFigures, EntanglementObservations } from "./entanglement.js";
import type { LifecycleChange, LifecycleState } from "./lifecycle.js";

/**
 * What a twin is as data: how an instance is configured, what it records and its full exported
 * state. The runtime produces and consumes them; the platforms, the manager and the stores carry
 * them without needing the runtime.
 */

/** A JSON object (a TD, a state's properties). */
type JsonObject = Record<string, unknown>;

/** Per-instance fidelity overrides (the schema's dtc:fidelity otherwise). */
export interface FidelityOverrides {
  /** Td, ms. */
  desiredTimeliness?: number;
  /** Re, Hz. */
  expectedUpdateRate?: number;
  odteThreshold?: number;
  /** W, s. */
  odteWindow?: number;
}

/** How an instance was configured: everything needed to create it again. */
export interface TwinConfig {
  /** Instance id: lowercase letters, digits, - and _ (it names the twin's URLs and topics). */
  id: string;
  /** IRI of the DT Schema (Thing Model). */
  schema: string;
  /** Values of the schema's placeholders. */
  placeholders?: Record<string, unknown>;
  /** Broker of the physical twin; the runtime's broker when absent. */
  brokerUrl?: string;
  fidelity?: FidelityOverrides;
  /** JS source `(message, { state, event }) => values` replacing the schema's declarative mapping. */
  shadowing?: string;
  /** How many past states and events the twin keeps (default 100 each). */
  historyLimit?: number;
}

export const TWIN_ID = /^[a-z0-9][a-z0-9_-]{0,62}$/;

export interface StateRecord {
  committedAt: number;
  ptTimestamp: number;
  sequence: number | undefined;
  /** The property values this update changed. */
  values: Record<string, unknown>;
}

export type TwinEventType =
  | "lifecycleChanged"
  | "entanglementChanged"
  | "augmentationInstalled"
  | "augmentationRemoved"
  | "augmentationFailed"
  | "augmentationDisabled"
  | "augmentationDropped"
  | "commandSent"
  | "messageRejected";

export interface TwinEventRecord {
  type: TwinEventType;
  at: number;
  data: unknown;
}

/** What the digital interface is told. */
/** Where commands to the PT go. */
export interface TwinCounters {
  messages: number;
  rejected: number;
  /**
   * Updates not after the committed state (reordered or repeated in transit): measured, not
   * committed. By sequence number when the PT sends them, else by PT timestamp.
   */
  stale: number;
  /** Sequence numbers skipped by the PT's messages. */
  lost: number;
  augmentationErrors: number;
  commands: number;
}

/** A twin's full state as JSON: the basis for snapshot, restore, move and clone. */
export interface TwinState {
  format: "dtc-twin-state/1";
  exportedAt: number;
  config: TwinConfig;
  td: JsonObject;
  lifecycle: { state: LifecycleState; history: LifecycleChange[] };
  properties: Record<string, unknown>;
  lastUpdate: StateRecord | undefined;
  /** `disabled`: why the function was disabled; it comes back disabled. */
  augmentations: { name: string; source: string; disabled?: string }[];
  history: { states: StateRecord[]; events: TwinEventRecord[] };
  entanglement: { figures: EntanglementFigures; observations: EntanglementObservations };
  counters: TwinCounters;
}
