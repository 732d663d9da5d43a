import { z } from "zod";
import { LIFECYCLE_STATES } from "../domain/lifecycle.js";
import { TWIN_ID } from "../domain/twin-state.js";
import { PLATFORMS, type Platform, platformPlugin } from "../platforms/registry.js";
import { BROKER_CREDENTIALS, hasCredentials } from "../security/outbound.js";

/**
 * The manager's inventory and instances as the API takes and gives them: DTC Nodes, DT Schemas,
 * DT Packages, DT Instances and their snapshots. Request bodies are checked with these zod schemas;
 * what is stored is what they produce. The `*Output` schemas describe what the API answers (they
 * check nothing at run time): the manager's TD and OpenAPI document are generated from both
 * (src/manager/routes.ts). Output objects are open (a consumer accepts members added later).
 */

export const TIERS = ["edge", "mec", "cloud"] as const;
export type Tier = (typeof TIERS)[number];

/** Ids of nodes, packages, schemas and instances: they name URLs (and twins' MQTT topics). */
export const ID_PATTERN = TWIN_ID;
const idOnly = z
  .string()
  .regex(
    ID_PATTERN,
    "must be 1-63 characters: lowercase letters, digits, - or _, starting with a letter or digit",
  );
/** An id of `what`, described as such. */
export const idOf = (what: string) =>
  idOnly.meta({
    description: `Id of the ${what}: 1-63 lowercase letters, digits, - or _, starting with a letter or digit`,
  });

const count = z.number().int().nonnegative();
const amount = z.number().nonnegative().finite();
const described = <T extends z.ZodType>(schema: T, description: string): T => schema.meta({ description });
const platform = described(z.enum(PLATFORMS), "DT platform");
/** An ISO 8601 time (outputs only: not checked). */
const timestamp = (description: string) => z.string().meta({ description, format: "date-time" });
const scalar = z.union([z.string(), z.number(), z.boolean()]);

const nodeFields = {
  id: idOf("node"),
  platform,
  tier: described(z.enum(TIERS), "Tier of the continuum the node sits in"),
  capabilities: z
    .strictObject({
      cpu: described(amount, "CPU cores"),
      memory: described(count, "Memory, MiB"),
      gpu: described(count, "GPUs").default(0),
    })
    .meta({ description: "What the node offers" }),
  labels: z
    .record(z.string().min(1), z.string())
    .default({})
    .meta({ description: "Free-form labels (name to value), matched by the `label` query" }),
  latencyMs: described(amount, "Measured one-way latency to the physical side (the PTs' broker), ms").default(
    0,
  ),
  /** Checked by the platform (src/platforms/registry.ts). */
  endpoint: z.record(z.string(), z.unknown()).optional().meta({
    description: "Platform-specific connection, e.g. a Docker engine's { socketPath } or { host, port }",
  }),
};

export const nodeInput = z
  .strictObject(nodeFields)
  .superRefine((node, ctx) => {
    const schema = platformPlugin(node.platform)?.endpoint;
    if (schema === undefined || node.endpoint === undefined) return;
    const parsed = schema.safeParse(node.endpoint);
    for (const issue of parsed.error?.issues ?? []) {
      ctx.addIssue({ code: "custom", path: ["endpoint", ...issue.path.map(String)], message: issue.message });
    }
  })
  .meta({ description: "A DTC Node to register" });
export type NodeInput = z.input<typeof nodeInput>;

export interface DtcNode extends z.output<typeof nodeInput> {
  registeredAt: string;
  /** Registered by the gateway itself (node `local`): cannot be removed. */
  builtIn?: boolean;
}

export const PARAMETER_TYPES = ["string", "number", "integer", "boolean"] as const;

const parameter = z
  .strictObject({
    type: described(z.enum(PARAMETER_TYPES), "Its type"),
    description: described(z.string(), "What it configures").optional(),
    default: described(scalar, "Value when a start request gives none").optional(),
    required: described(
      z.boolean(),
      "Whether a start request must give a value (default: when there is no default)",
    ).optional(),
    enum: described(z.array(scalar).min(1), "Allowed values").optional(),
    minimum: described(z.number(), "Smallest allowed value (numbers)").optional(),
    maximum: described(z.number(), "Largest allowed value (numbers)").optional(),
  })
  .superRefine((p, ctx) => {
    if (p.default !== undefined) {
      const problem = parameterProblem(p, p.default);
      if (problem) ctx.addIssue({ code: "custom", path: ["default"], message: problem });
    }
  })
  .meta({ description: "A configuration parameter" });
export type PackageParameter = z.output<typeof parameter>;

const augmentation = z
  .strictObject({
    name: described(z.string().min(1), "Its name"),
    source: described(z.string().min(1), "Its JavaScript source"),
  })
  .meta({ description: "An augmentation function installed in the twin" });

const packageFields = {
  id: idOf("package"),
  schema: described(z.string().min(1), "The DT Schema it implements: its id or IRI"),
  platform,
  artefact: z
    .strictObject({
      /** Only the built-in `dtc:twin` today. */
      module: described(z.string().min(1), "In-process: the twin runtime module (dtc:twin)").optional(),
      image: described(
        z.string().min(1),
        "Docker and Kubernetes: the container image of the twin runtime",
      ).optional(),
    })
    .default({})
    .meta({ description: "What runs the twin" }),
  parameters: described(
    z.record(z.string().regex(/^[A-Za-z_][A-Za-z0-9_]*$/, "must be an identifier"), parameter),
    "The configuration a start request gives values for, by name; by default one string per placeholder of the schema",
  ).optional(),
  requirements: z
    .strictObject({
      cpu: described(amount, "CPU cores").optional(),
      memory: described(count, "Memory, MiB").optional(),
      gpu: described(count, "GPUs").optional(),
    })
    .default({})
    .meta({ description: "Resources the twin needs on its node" }),
  augmentations: described(z.array(augmentation), "Augmentation functions").default([]),
  shadowing: described(
    z.string().min(1),
    "JS source `(message, { state, event }) => values` replacing the schema's mapping",
  ).optional(),
  historyLimit: described(
    z.number().int().min(1).max(100_000),
    "How many past states and events the twin keeps",
  ).optional(),
};

export const packageInput = z
  .strictObject(packageFields)
  .superRefine((p, ctx) => {
    const artefact = platformPlugin(p.platform)?.artefact;
    if (artefact === "module" && p.artefact.image !== undefined) {
      ctx.addIssue({
        code: "custom",
        path: ["artefact", "image"],
        message: `${p.platform} packages have a module, not an image`,
      });
    }
    if (artefact === "image" && p.artefact.image === undefined) {
      ctx.addIssue({
        code: "custom",
        path: ["artefact", "image"],
        message: `is required for platform ${p.platform}`,
      });
    }
  })
  .meta({ description: "A DT Package to register" });
export type PackageInput = z.input<typeof packageInput>;

/** The twin runtime module of in-process packages. */
export const BUILTIN_TWIN_MODULE = "dtc:twin";

export interface DtPackage extends Omit<z.output<typeof packageInput>, "parameters" | "schema"> {
  /** The schema's IRI. */
  schema: string;
  parameters: Record<string, PackageParameter>;
  registeredAt: string;
  /** The in-process package of a built-in schema, registered at every start. */
  builtIn?: boolean;
}

export interface SchemaSummary {
  id: string;
  iri: string;
  title: string;
  description?: string;
  types: string[];
  affordances: { properties: string[]; actions: string[]; events: string[] };
  /** Placeholders the model uses ({{NAME}}). */
  placeholders: string[];
  fidelity?: Record<string, number>;
  /** Registered from thing-models/ at every start: cannot be removed. */
  builtIn: boolean;
  registeredAt: string;
}

/**
 * Longest ODTE window W, s. A twin keeps every update of its window (in memory and in each saved
 * state): W = 600 s of a 100 Hz PT is 60,000 of them. A schema or an instance asking for more is
 * refused (400).
 */
export const MAX_ODTE_WINDOW_S = 600;

const fidelity = z
  .strictObject({
    desiredTimeliness: described(z.number().positive().finite(), "Td, ms").optional(),
    expectedUpdateRate: described(z.number().positive().finite(), "Re, Hz").optional(),
    odteThreshold: described(z.number().min(0).max(1), "ODTE threshold").optional(),
    odteWindow: described(
      z.number().positive().max(MAX_ODTE_WINDOW_S, `must be at most ${MAX_ODTE_WINDOW_S} s`),
      "W, s",
    ).optional(),
  })
  .meta({ description: "Overrides of the schema's fidelity for this instance" });

/** The URL schemes a PT's broker may have (`brokerUrl`). */
export const BROKER_URL_SCHEMES = ["mqtt", "mqtts", "ws", "wss", "tcp", "ssl"] as const;
const brokerScheme = BROKER_URL_SCHEMES.join("|");

export const startInput = z
  .strictObject({
    package: idOf("package"),
    node: idOf("node"),
    id: idOf(
      "new instance (also the twin's id, in its URLs and topics); generated from the package when absent",
    ).optional(),
    configuration: z
      .record(z.string(), z.unknown())
      .default({})
      .meta({ description: "Values of the package's parameters, by name (strings, numbers, booleans)" }),
    fidelity: fidelity.optional(),
    /** No credentials: it is in the TD. The JSON Schema's pattern says the schemes `protocol` checks. */
    brokerUrl: z
      .url({ protocol: new RegExp(`^(${brokerScheme})$`) })
      .refine((url) => !hasCredentials(url), BROKER_CREDENTIALS)
      .meta({
        description: `Broker of the physical twin (${BROKER_URL_SCHEMES.join(", ")}; no credentials); the gateway's when absent`,
        pattern: `^(${brokerScheme})://`,
      })
      .optional(),
  })
  .meta({ description: "What to start where" });
export type StartInput = z.input<typeof startInput>;

export const DESIRED_STATES = ["running", "stopped"] as const;
export type DesiredState = (typeof DESIRED_STATES)[number];

/** What the manager keeps of an instance: enough to start it again anywhere. */
export interface InstanceRecord {
  id: string;
  package: string;
  /** The schema's IRI. */
  schema: string;
  node: string;
  platform: Platform;
  /** The parameter values it was started with (defaults filled in). */
  configuration: Record<string, string | number | boolean>;
  fidelity?: z.output<typeof fidelity>;
  brokerUrl?: string;
  desired: DesiredState;
  createdAt: string;
  updatedAt: string;
  /** Where it came from when not started fresh. */
  origin?: { clonedFrom?: string; restoredFrom?: string };
  /** Times its platform lost it (a container that died), and the last one. */
  failures?: { count: number; last: { reason: string; at: string } };
  /** The reconciler gave up starting it (a terminal failure: it cannot run as things are); tried again after a gateway restart. */
  gaveUp?: { reason: string; at: string };
}

export const placementInput = z
  .strictObject({
    node: idOf("target node"),
    id: idOf("new instance; the snapshot's own (restore) or a generated one (clone) when absent").optional(),
  })
  .meta({ description: "Where to put the copy" });
export const moveInput = z
  .strictObject({ node: idOf("target node") })
  .meta({ description: "Where to move it" });

export interface SnapshotSummary {
  id: string;
  instance: string;
  takenAt: string;
  node: string;
  package: string;
  schema: string;
  lifecycle: string;
  /** Past states and events it holds. */
  history: { states: number; events: number };
}

/** Why `value` does not fit `p`, or undefined when it does. */
export function parameterProblem(p: PackageParameter, value: unknown): string | undefined {
  switch (p.type) {
    case "string":
      if (typeof value !== "string") return "must be a string";
      break;
    case "boolean":
      if (typeof value !== "boolean") return "must be a boolean";
      break;
    case "integer":
      if (typeof value !== "number" || !Number.isInteger(value)) return "must be an integer";
      break;
    case "number":
      if (typeof value !== "number" || !Number.isFinite(value)) return "must be a number";
      break;
  }
  if (p.enum !== undefined && !p.enum.includes(value as string | number | boolean)) {
    return `must be one of ${p.enum.map((v) => JSON.stringify(v)).join(", ")}`;
  }
  if (typeof value === "number") {
    if (p.minimum !== undefined && value < p.minimum) return `must be >= ${p.minimum}`;
    if (p.maximum !== undefined && value > p.maximum) return `must be <= ${p.maximum}`;
  }
  return undefined;
}

// ---- what the API answers (documentation: the TD's and OpenAPI's output schemas)

const resources = (description: string) =>
  z
    .looseObject({
      cpu: described(z.number(), "CPU cores"),
      memory: described(z.number(), "Memory, MiB"),
      gpu: described(z.number(), "GPUs"),
    })
    .meta({ description });

/** A registered node (DtcNode). */
export const nodeOutput = z
  .looseObject({
    ...nodeFields,
    registeredAt: timestamp("When it was registered"),
    builtIn: described(z.boolean(), "Registered by the gateway itself (cannot be removed)").optional(),
  })
  .meta({ description: "A registered DTC Node" });

/** A node as the node routes answer it: with its readiness and what is placed on it. */
export const nodeViewOutput = nodeOutput
  .extend({
    ready: described(z.boolean(), "Whether the node's platform can take twins now"),
    reason: described(z.string(), "Why the node is not ready (when it is not)").optional(),
    instances: described(count, "Instances placed on the node (running or stopped)"),
    free: resources("CPU, memory and GPUs not taken by the requirements of the instances on it"),
  })
  .meta({ description: "A registered DTC Node, with its readiness" });

const names = (description: string) => described(z.array(z.string()), description);

export const schemaOutput = z
  .looseObject({
    id: idOf("schema"),
    // No format "iri": node-wot's Ajv does not know it and warns on every value().
    iri: described(z.string(), "The schema's IRI (what TDs of its twins link to with rel type)"),
    title: described(z.string(), "The Thing Model's title"),
    description: described(z.string(), "The Thing Model's description").optional(),
    types: names("The Thing Model's @type"),
    affordances: z
      .looseObject({
        properties: names("Names of its properties"),
        actions: names("Names of its actions"),
        events: names("Names of its events"),
      })
      .meta({ description: "Its interaction affordances" }),
    placeholders: names("The {{PLACEHOLDERS}} the model uses"),
    fidelity: z.record(z.string(), z.number()).optional().meta({
      description:
        "The schema's fidelity (dtc:fidelity): desiredTimeliness (Td, ms), expectedUpdateRate (Re, Hz), odteThreshold, odteWindow (W, s)",
    }),
    builtIn: described(z.boolean(), "Loaded from thing-models/ at every start (cannot be removed)"),
    registeredAt: timestamp("When it was registered"),
  })
  .meta({ description: "A registered DT Schema, summarised" });

/** A Thing Model: checked by the inventory (src/wot/validation.ts), not by this schema. */
export const thingModel = z.record(z.string(), z.unknown(), { error: "must be a JSON object" }).meta({
  description:
    "A W3C WoT Thing Model (@type tm:ThingModel, @context including https://www.w3.org/2022/wot/td/v1.1); a DT Schema may add dtc:fidelity and dtc:physicalInterface",
  required: ["@context", "@type"],
});

export const packageOutput = z
  .looseObject({
    ...packageFields,
    schema: described(z.string(), "The IRI of the DT Schema it implements"),
    parameters: packageFields.parameters.unwrap(),
    registeredAt: timestamp("When it was registered"),
    builtIn: described(
      z.boolean(),
      "The in-process package of a built-in schema (registered at every start)",
    ).optional(),
  })
  .meta({ description: "A registered DT Package" });

export const candidateOutput = z
  .looseObject({
    node: nodeOutput,
    fits: described(z.boolean(), "Whether the package can be started there"),
    reasons: names(
      "Why it does not fit (platform, readiness, free capacity against the requirements, latency against the schema's desired timeliness); empty when it fits",
    ),
    free: resources("CPU, memory and GPUs of the node not taken yet"),
  })
  .meta({ description: "A node considered for the package" });

/** What an instance's lifecycle can be: a state of its twin, or NotRunning (no twin runs for it now). */
export const INSTANCE_LIFECYCLES = [...LIFECYCLE_STATES, "NotRunning"] as const;

const ratio = (description: string) => described(z.number().min(0).max(1), description);
const reason = z.looseObject({
  reason: described(z.string(), "Why"),
  at: timestamp("When"),
});

export const entanglementOutput = z
  .looseObject({
    odte: ratio("ODTE"),
    timeliness: ratio("T"),
    reliability: ratio("R"),
    availability: ratio("A"),
    updates: described(count, "Updates counted in the window"),
    windowSeconds: described(z.number(), "The window the figures cover, s (W once it has filled)"),
    desiredTimeliness: described(z.number(), "Td, ms"),
    expectedUpdateRate: described(z.number(), "Re, Hz"),
    threshold: ratio("ODTE threshold"),
    evaluatedAt: timestamp("When it was evaluated"),
    entangled: described(z.boolean(), "Whether ODTE is at or above the threshold"),
    windowFilled: described(z.boolean(), "Whether a whole W has passed since measuring began"),
  })
  .meta({ description: "The latest entanglement evaluation (ODTE = T x R x A)" });

/** What the manager keeps of an instance (InstanceRecord). */
export const instanceRecordOutput = z
  .looseObject({
    id: idOf("instance"),
    package: idOf("package it was started from"),
    schema: described(z.string(), "The IRI of its DT Schema"),
    node: idOf("node it runs on"),
    platform,
    configuration: described(
      z.record(z.string(), scalar),
      "The parameter values it was started with (defaults filled in)",
    ),
    fidelity: fidelity.optional(),
    brokerUrl: described(z.string(), "Broker of its physical twin (absent: the gateway's)").optional(),
    desired: described(z.enum(DESIRED_STATES), "What the manager keeps it at"),
    createdAt: timestamp("When it was created"),
    updatedAt: timestamp("When it last changed"),
    origin: z
      .looseObject({
        clonedFrom: described(z.string(), "The instance it is a clone of").optional(),
        restoredFrom: described(z.string(), "The snapshot it was restored from").optional(),
      })
      .optional()
      .meta({ description: "Where it came from when not started fresh" }),
    failures: z
      .looseObject({ count: described(count, "How many"), last: reason })
      .optional()
      .meta({ description: "Times its platform lost it (a container that died), and the last one" }),
    gaveUp: reason
      .optional()
      .meta({ description: "Why the reconciler gave up starting it (tried again after a gateway restart)" }),
  })
  .meta({ description: "An instance as the manager keeps it" });

const link = (description: string) => z.string().meta({ description, format: "uri" });

export const instanceOutput = instanceRecordOutput
  .extend({
    lifecycle: described(
      z.enum(INSTANCE_LIFECYCLES),
      "Its lifecycle state (dtc:lifecycleState), or NotRunning when no twin runs for it",
    ),
    entanglement: entanglementOutput.optional(),
    failed: described(
      z.string(),
      "Why it is not running as it should (a failed start, a platform failure)",
    ).optional(),
    links: z
      .looseObject({
        self: link("This instance in the manager's API"),
        twin: link("The twin's TD (node-wot's HTTP binding behind the gateway)"),
        description: link("The twin's DT Description in the directory"),
      })
      .meta({ description: "Links to the twin's resources" }),
    td: z
      .record(z.string(), z.unknown())
      .optional()
      .meta({ description: "Its Thing Description (the DT Description), on single-instance answers" }),
  })
  .meta({ description: "A DT Instance" });

const snapshotFields = {
  id: described(z.string(), "Id of the snapshot"),
  instance: idOf("instance it was taken of"),
  takenAt: timestamp("When it was taken"),
};

export const snapshotOutput = z
  .looseObject({
    ...snapshotFields,
    node: idOf("node the instance ran on"),
    package: idOf("package of the instance"),
    schema: described(z.string(), "The IRI of the instance's DT Schema"),
    lifecycle: described(z.enum(LIFECYCLE_STATES), "The instance's lifecycle state when taken"),
    history: z
      .looseObject({ states: described(count, "States"), events: described(count, "Events") })
      .meta({ description: "Past states and events it holds" }),
  })
  .meta({ description: "A snapshot of an instance, summarised" });

const anyObject = (description: string) => z.record(z.string(), z.unknown()).meta({ description });
const records = (description: string) => described(z.array(anyObject("One of them")), description);

/** A twin's saved state (TwinState, src/runtime/twin.ts): members it holds, their insides open. */
export const twinStateOutput = z
  .looseObject({
    format: described(z.literal("dtc-twin-state/1"), "The state's format"),
    exportedAt: described(z.number(), "When it was exported, ms since the epoch"),
    config: anyObject("The twin's configuration"),
    td: anyObject("The twin's TD"),
    lifecycle: z
      .looseObject({
        state: described(z.enum(LIFECYCLE_STATES), "Its lifecycle state"),
        history: records("Its lifecycle changes"),
      })
      .meta({ description: "Its lifecycle" }),
    properties: anyObject("Its property values"),
    lastUpdate: anyObject("The last update it committed").optional(),
    augmentations: described(
      z.array(
        z.looseObject({
          name: described(z.string(), "Its name"),
          source: described(z.string(), "Its JavaScript source"),
          disabled: described(z.string(), "Why it was disabled").optional(),
        }),
      ),
      "Its augmentation functions",
    ),
    history: z
      .looseObject({ states: records("Past states"), events: records("Past events") })
      .meta({ description: "Its history" }),
    entanglement: z
      .looseObject({ figures: entanglementOutput, observations: anyObject("What the figures come from") })
      .meta({ description: "Its entanglement evaluation" }),
    counters: anyObject("Its counters"),
  })
  .meta({ description: "The twin's saved state" });

export const snapshotDetailsOutput = z
  .looseObject({
    ...snapshotFields,
    record: instanceRecordOutput,
    state: twinStateOutput,
  })
  .meta({ description: "A snapshot in full: the instance as kept, and its twin's state" });
