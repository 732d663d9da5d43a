import { z } from "zod";
import { dockerEndpoint } from "../platforms/docker/endpoint.js";
import { PLATFORMS, type Platform } from "../platforms/driver.js";
import { TWIN_ID } from "../runtime/twin.js";
import { BROKER_CREDENTIALS, hasCredentials } from "../security/outbound.js";

/**
 * The manager's inventory and instances as the API takes and gives them: DTC Nodes, DT Schemas,
 * DT Packages, DT Instances and their snapshots. Request bodies are checked with these zod schemas;
 * what is stored is what they produce.
 */

export const TIERS = ["edge", "mec", "cloud"] as const;
export type Tier = (typeof TIERS)[number];

/** Ids of nodes, packages, schemas and instances: they name URLs (and twins' MQTT topics). */
export const ID_PATTERN = TWIN_ID;
const id = z
  .string()
  .regex(
    ID_PATTERN,
    "must be 1-63 characters: lowercase letters, digits, - or _, starting with a letter or digit",
  );

const count = z.number().int().nonnegative();
const amount = z.number().nonnegative().finite();

export const nodeInput = z
  .strictObject({
    id,
    platform: z.enum(PLATFORMS),
    tier: z.enum(TIERS),
    capabilities: z.strictObject({
      /** Cores. */
      cpu: amount,
      /** MiB. */
      memory: count,
      gpu: count.default(0),
    }),
    labels: z.record(z.string().min(1), z.string()).default({}),
    /** Measured one-way latency to the physical side (the PTs' broker), ms. */
    latencyMs: amount.default(0),
    /** Platform-specific connection, e.g. a Docker engine's { socketPath } or { host, port }. */
    endpoint: z.record(z.string(), z.unknown()).optional(),
  })
  .superRefine((node, ctx) => {
    if (node.platform !== "docker" || node.endpoint === undefined) return;
    const parsed = dockerEndpoint.safeParse(node.endpoint);
    for (const issue of parsed.error?.issues ?? []) {
      ctx.addIssue({ code: "custom", path: ["endpoint", ...issue.path.map(String)], message: issue.message });
    }
  });
export type NodeInput = z.input<typeof nodeInput>;

export interface DtcNode extends z.output<typeof nodeInput> {
  registeredAt: string;
  /** Registered by the gateway itself (node `local`): cannot be removed. */
  builtIn?: boolean;
}

export const PARAMETER_TYPES = ["string", "number", "integer", "boolean"] as const;

const parameter = z
  .strictObject({
    type: z.enum(PARAMETER_TYPES),
    description: z.string().optional(),
    default: z.union([z.string(), z.number(), z.boolean()]).optional(),
    /** Required when it has no default (the default). */
    required: z.boolean().optional(),
    enum: z
      .array(z.union([z.string(), z.number(), z.boolean()]))
      .min(1)
      .optional(),
    minimum: z.number().optional(),
    maximum: z.number().optional(),
  })
  .superRefine((p, ctx) => {
    if (p.default !== undefined) {
      const problem = parameterProblem(p, p.default);
      if (problem) ctx.addIssue({ code: "custom", path: ["default"], message: problem });
    }
  });
export type PackageParameter = z.output<typeof parameter>;

const augmentation = z.strictObject({ name: z.string().min(1), source: z.string().min(1) });

export const packageInput = z
  .strictObject({
    id,
    /** The schema's id or IRI. */
    schema: z.string().min(1),
    platform: z.enum(PLATFORMS),
    artefact: z
      .strictObject({
        /** In-process: the twin runtime module (only the built-in `dtc:twin` today). */
        module: z.string().min(1).optional(),
        /** Docker and Kubernetes: the image of the twin runtime. */
        image: z.string().min(1).optional(),
      })
      .default({}),
    /** The configuration a start request gives values for; by default one string per placeholder. */
    parameters: z
      .record(z.string().regex(/^[A-Za-z_][A-Za-z0-9_]*$/, "must be an identifier"), parameter)
      .optional(),
    requirements: z
      .strictObject({ cpu: amount.optional(), memory: count.optional(), gpu: count.optional() })
      .default({}),
    augmentations: z.array(augmentation).default([]),
    shadowing: z.string().min(1).optional(),
    historyLimit: z.number().int().min(1).max(100_000).optional(),
  })
  .superRefine((p, ctx) => {
    if (p.platform === "in-process" && p.artefact.image !== undefined) {
      ctx.addIssue({
        code: "custom",
        path: ["artefact", "image"],
        message: "in-process packages have a module, not an image",
      });
    }
    if (p.platform !== "in-process" && p.artefact.image === undefined) {
      ctx.addIssue({
        code: "custom",
        path: ["artefact", "image"],
        message: `is required for platform ${p.platform}`,
      });
    }
  });
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

const fidelity = z.strictObject({
  desiredTimeliness: z.number().positive().finite().optional(),
  expectedUpdateRate: z.number().positive().finite().optional(),
  odteThreshold: z.number().min(0).max(1).optional(),
  odteWindow: z
    .number()
    .positive()
    .max(MAX_ODTE_WINDOW_S, `must be at most ${MAX_ODTE_WINDOW_S} s`)
    .optional(),
});

export const startInput = z.strictObject({
  package: id,
  node: id,
  /** The instance id (the twin's URLs and topics); generated from the package when absent. */
  id: id.optional(),
  configuration: z.record(z.string(), z.unknown()).default({}),
  fidelity: fidelity.optional(),
  /** Broker of the physical twin; the gateway's broker when absent. No credentials: it is in the TD. */
  brokerUrl: z
    .url({ protocol: /^(mqtts?|wss?|tcp|ssl)$/ })
    .refine((url) => !hasCredentials(url), BROKER_CREDENTIALS)
    .optional(),
});
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
}

export const placementInput = z.strictObject({ node: id, id: id.optional() });
export const moveInput = z.strictObject({ node: id });

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
