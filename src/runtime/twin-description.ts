import { LIFECYCLE_EVENTS, LIFECYCLE_STATES } from "../domain/lifecycle.js";
import type { FidelityOverrides } from "../domain/twin-state.js";
import type { JsonObject } from "../wot/rdf.js";
import { AFFORDANCE_KINDS, isObject } from "../wot/thing-model.js";

/**
 * The affordances every twin has on top of its schema's (dtc ontology terms as @type): its
 * lifecycle and entanglement, observable, their change events, and the management of its
 * augmentation functions.
 */

const share = { type: "number", minimum: 0, maximum: 1, readOnly: true };

export const ENTANGLEMENT_SCHEMA = {
  type: "object",
  properties: {
    odte: { ...share, "@type": "dtc:odte", description: "ODTE = timeliness x reliability x availability" },
    timeliness: { ...share, "@type": "dtc:timeliness" },
    reliability: { ...share, "@type": "dtc:reliability" },
    availability: { ...share, "@type": "dtc:availability" },
    updates: { type: "integer", minimum: 0, description: "Updates counted in the window" },
    windowSeconds: { type: "number", minimum: 0, unit: "om:second", description: "The window evaluated" },
    desiredTimeliness: { type: "number", unit: "om:millisecond", "@type": "dtc:desiredTimeliness" },
    expectedUpdateRate: { type: "number", unit: "om:hertz", "@type": "dtc:expectedUpdateRate" },
    threshold: { type: "number", minimum: 0, maximum: 1, "@type": "dtc:odteThreshold" },
    evaluatedAt: { type: "string", format: "date-time", "@type": "dtc:evaluatedAt" },
    entangled: { type: "boolean", description: "odte >= threshold" },
    windowFilled: { type: "boolean", description: "Whether a whole window has been observed" },
  },
  required: ["odte", "timeliness", "reliability", "availability", "evaluatedAt"],
};

const LIFECYCLE_CHANGE_SCHEMA = {
  type: "object",
  properties: {
    from: { type: "string", enum: [...LIFECYCLE_STATES] },
    to: { type: "string", enum: [...LIFECYCLE_STATES] },
    event: { type: "string", enum: [...LIFECYCLE_EVENTS] },
    at: { type: "string", format: "date-time" },
  },
  required: ["from", "to", "event", "at"],
};

const FUNCTION_NAME = { type: "string", pattern: "^[A-Za-z_][A-Za-z0-9_-]{0,63}$" };

export const TWIN_AFFORDANCES = {
  properties: {
    lifecycleState: {
      "@type": "dtc:LifecycleState",
      title: "Lifecycle state",
      description: "Where the twin is in its entanglement-aware lifecycle.",
      type: "string",
      enum: [...LIFECYCLE_STATES],
      readOnly: true,
      observable: true,
    },
    entanglement: {
      "@type": "dtc:Entanglement",
      title: "Entanglement",
      description:
        "The latest ODTE evaluation over the sliding window (pushed at most once per push interval).",
      ...ENTANGLEMENT_SCHEMA,
      readOnly: true,
      observable: true,
    },
    history: {
      title: "History",
      description:
        "The twin's recent past, oldest first: committed states (the values each update changed) and events (lifecycle and entanglement changes, functions installed, commands sent, messages rejected). Bounded by the instance's historyLimit.",
      type: "object",
      properties: {
        states: {
          type: "array",
          items: {
            type: "object",
            properties: {
              committedAt: { type: "string", format: "date-time" },
              ptTimestamp: { type: "string", format: "date-time" },
              sequence: { type: "integer" },
              values: { type: "object" },
            },
          },
        },
        events: {
          type: "array",
          items: {
            type: "object",
            properties: { type: { type: "string" }, at: { type: "string", format: "date-time" }, data: {} },
          },
        },
      },
      readOnly: true,
    },
    augmentations: {
      title: "Augmentation functions",
      description: "The functions run after shadowing, in order.",
      type: "array",
      items: {
        type: "object",
        properties: {
          name: FUNCTION_NAME,
          source: { type: "string" },
          installedAt: { type: "string", format: "date-time" },
          failures: { type: "integer", minimum: 0 },
          disabled: {
            type: "boolean",
            description:
              "A function that overran its limits too often no longer runs until it is installed again.",
          },
          disabledReason: { type: "string" },
        },
      },
      readOnly: true,
    },
  },
  actions: {
    installAugmentation: {
      "@type": "dtc:InstallAugmentation",
      title: "Install an augmentation function",
      description:
        "Installs or replaces a named function `(values, { state, event }) => extraValues`, given as JavaScript source. It is checked on the current state first; a bad function is refused and the one installed before keeps running.",
      input: {
        type: "object",
        properties: { name: FUNCTION_NAME, source: { type: "string", minLength: 1 } },
        required: ["name", "source"],
      },
      output: { type: "object", properties: { name: FUNCTION_NAME, replaced: { type: "boolean" } } },
      idempotent: true,
      safe: false,
    },
    removeAugmentation: {
      "@type": "dtc:RemoveAugmentation",
      title: "Remove an augmentation function",
      input: { type: "object", properties: { name: FUNCTION_NAME }, required: ["name"] },
      output: { type: "object", properties: { removed: { type: "boolean" } } },
      idempotent: true,
      safe: false,
    },
  },
  events: {
    lifecycleChanged: {
      "@type": "dtc:LifecycleChange",
      title: "Lifecycle changed",
      data: LIFECYCLE_CHANGE_SCHEMA,
    },
    entanglementChanged: {
      "@type": "dtc:EntanglementChange",
      title: "Entanglement threshold crossed",
      description: "The twin became entangled (ODTE >= threshold) or disentangled.",
      data: ENTANGLEMENT_SCHEMA,
    },
  },
} as const;

export class TwinDescriptionError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "TwinDescriptionError";
  }
}

/**
 * The twin's TD: the instantiated schema plus the twin affordances, with the instance's fidelity
 * overrides written into dtc:fidelity (so the directory sees the figures the twin is judged by).
 */
export function describeTwin(td: JsonObject, fidelity: FidelityOverrides = {}): JsonObject {
  const out = structuredClone(td);
  for (const kind of AFFORDANCE_KINDS) {
    const own = (out[kind] ?? {}) as Record<string, JsonObject>;
    for (const [name, affordance] of Object.entries(TWIN_AFFORDANCES[kind])) {
      if (name in own) {
        throw new TwinDescriptionError(
          `the schema's ${kind} "${name}" clashes with the twin affordance of that name`,
        );
      }
      own[name] = structuredClone(affordance) as unknown as JsonObject;
    }
    out[kind] = own;
  }
  const f = isObject(out["dtc:fidelity"]) ? out["dtc:fidelity"] : {};
  const names = {
    desiredTimeliness: "dtc:desiredTimeliness",
    expectedUpdateRate: "dtc:expectedUpdateRate",
    odteThreshold: "dtc:odteThreshold",
    odteWindow: "dtc:odteWindow",
  } as const;
  for (const [key, term] of Object.entries(names)) {
    const value = fidelity[key as keyof FidelityOverrides];
    if (value !== undefined) f[term] = value;
  }
  out["dtc:fidelity"] = f;
  return out;
}
