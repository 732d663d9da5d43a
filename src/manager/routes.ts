/**
 * The manager's HTTP API under /api, one entry per route: the one list its routes are written in.
 * api.ts mounts them (checking bodies and queries with their zod schemas), manager-td.ts makes the
 * manager's TD actions of them, openapi.ts its OpenAPI document, and src/http/routes.ts takes the
 * role each needs into the gateway's access table. Schemas say what the API takes (`input`,
 * `query`; `params` only describe the path) and what it answers (`output`, src/manager/model.ts).
 *
 * First match wins in the access table, so the order is that of its /api entries (the README's
 * table of roles lists them so); the TD's actions come in the same order.
 */
import { z } from "zod";
import { LIFECYCLE_STATES } from "../domain/lifecycle.js";
import { PLATFORMS } from "../platforms/registry.js";
import type { Access } from "../security/principal.js";
import { TM_MEDIA_TYPE } from "../wot/instantiate.js";
import type { JsonObject } from "../wot/rdf.js";
import {
  APPLY_MEDIA_TYPES,
  applyOutput,
  manifestInput,
  manifestOutput,
  OBJECT_KINDS,
  YAML_MEDIA_TYPE,
} from "./apply.js";
import {
  candidateOutput,
  INSTANCE_LIFECYCLES,
  idOf,
  instanceOutput,
  moveInput,
  nodeInput,
  nodeViewOutput,
  packageInput,
  packageOutput,
  placementInput,
  schemaOutput,
  snapshotDetailsOutput,
  snapshotOutput,
  startInput,
  TIERS,
  thingModel,
} from "./model.js";

export const JSON_MEDIA_TYPE = "application/json";
export const TD_MEDIA_TYPE = "application/td+json";

export type HttpMethod = "GET" | "POST" | "DELETE";
/** 204 has no body. */
export type SuccessStatus = 200 | 201 | 204;
export type ErrorStatus = 400 | 404 | 409;

export interface ApiRoute {
  /** The TD action's name (and the OpenAPI operationId). */
  readonly name: string;
  /** The function's name in the seed paper's Table I, or this API's own. */
  readonly title: string;
  readonly description: string;
  readonly method: HttpMethod;
  /** Under /api, Hono style: `:name` is a path parameter. */
  readonly path: string;
  /** The role it needs (src/security/principal.ts). */
  readonly access: Access;
  /** The path parameters (described, not checked: an unknown id answers 404). */
  readonly params?: z.ZodObject;
  /** Query parameters, checked; an array is a parameter that may repeat. */
  readonly query?: z.ZodObject;
  /** The JSON body, checked. */
  readonly input?: z.ZodType;
  /** What a refused body is called in the 400's detail ("DTC Node: id: ..."). */
  readonly inputName?: string;
  /** Body media types, the first preferred (default application/json). */
  readonly accepts?: readonly string[];
  /**
   * The body reaches the handler as text, unparsed (it is not JSON only, e.g. YAML): the handler
   * checks it; `input` still describes it (as JSON).
   */
  readonly rawBody?: true;
  readonly output?: z.ZodType;
  /** Media type of a success body (default application/json). */
  readonly produces?: string;
  /** Other media types of the same success body, by Accept (the handler chooses). */
  readonly producesAlso?: readonly string[];
  /** The success statuses it answers, the usual one first. */
  readonly statuses: readonly SuccessStatus[];
  /** Error statuses it answers with problem details, and when. */
  readonly errors?: Readonly<Partial<Record<ErrorStatus, string>>>;
  /** POST only: whether repeating the request has no further effect. GET and DELETE are. */
  readonly idempotent?: boolean;
  /** Describes the API itself (its TD, its OpenAPI document): not one of the TD's actions. */
  readonly document?: true;
}

const text = (description: string) => z.string().meta({ description });
const flag = (description: string) => z.boolean({ error: "must be true or false" }).meta({ description });
const oneOf = <const T extends readonly [string, ...string[]]>(values: T, description: string) =>
  z.enum(values, { error: `must be one of ${values.join(", ")}` }).meta({ description });
const byId = (what: string) => z.object({ id: idOf(what) });
const bySnapshotId = z.object({ id: text("Id of the snapshot") });

/** What most reads are: a GET a reader may make, answering 200. */
const READ = { method: "GET", access: "reader", statuses: [200] } as const;

const NOT_FOUND = (what: string) => ({ 404: `No ${what} with this id` });
const INVALID = { 400: "The body or a parameter is invalid (see validationErrors)" };

/** A node's label as a query: `name=value`, or `name` (has the label). */
export const LABEL_QUERY_PATTERN = /^[^=]+(=.*)?$/;
/** Labels to have, comma-separated: `a=1,b`. */
const LABEL_SELECTOR_PATTERN = /^[^=,]+(=[^,]*)?(,[^=,]+(=[^,]*)?)*$/;

/** RFC 9457 problem details, as every error is answered (src/http/problem.ts). */
export const problemDetails = z
  .looseObject({
    type: z.string().meta({ description: "Problem type IRI", format: "uri-reference" }).optional(),
    title: text("Summary of the problem type"),
    status: z.number().int().meta({ description: "HTTP status code" }),
    detail: text("What went wrong this time").optional(),
    instance: z.string().meta({ description: "The request path", format: "uri-reference" }).optional(),
    validationErrors: z
      .array(
        z
          .looseObject({ field: text("Its dotted path"), description: text("The problem") })
          .meta({ description: "An invalid member" }),
      )
      .optional()
      .meta({ description: "Invalid members of the request" }),
  })
  .meta({ description: "RFC 9457 problem details" });

export const MANAGER_API = [
  // The API's own descriptions.
  {
    name: "getThingDescription",
    title: "The manager's TD",
    description: "The manager's Thing Description: every route below as a WoT action.",
    ...READ,
    path: "/td",
    output: z.record(z.string(), z.unknown()).meta({ description: "A W3C WoT Thing Description 1.1" }),
    produces: TD_MEDIA_TYPE,
    document: true,
  },
  {
    name: "getOpenApiDocument",
    title: "The manager's OpenAPI document",
    description: "The manager's HTTP API as an OpenAPI 3.1 document.",
    ...READ,
    path: "/openapi.json",
    output: z.record(z.string(), z.unknown()).meta({ description: "An OpenAPI 3.1 document" }),
    document: true,
  },
  // Inventory: nodes.
  {
    name: "discoverNodes",
    title: "Discover DTC Nodes",
    description: "Finds the DTC Nodes matching every filter given (none: all of them).",
    ...READ,
    path: "/nodes",
    query: z.object({
      platform: oneOf(PLATFORMS, "DT platform").optional(),
      tier: oneOf(TIERS, "Tier of the continuum the node sits in").optional(),
      label: z
        .array(
          z
            .string()
            .regex(LABEL_QUERY_PATTERN, "must be name=value or name")
            .meta({ description: "A label the node has: name=value, or name (any value); may repeat" }),
        )
        .optional(),
      gpu: flag("true: only nodes with a GPU; false: only nodes without").optional(),
    }),
    output: z.array(nodeViewOutput).meta({ description: "The matching nodes" }),
    errors: INVALID,
  },
  {
    name: "getNode",
    title: "Get DTC Node",
    description: "A DTC Node, with its readiness.",
    ...READ,
    path: "/nodes/:id",
    params: byId("node"),
    output: nodeViewOutput,
    errors: NOT_FOUND("node"),
  },
  {
    name: "registerNode",
    title: "Register DTC Node",
    description: "Registers a DTC Node: a compute node of one DT platform, its tier and capabilities.",
    method: "POST",
    path: "/nodes",
    access: "admin",
    input: nodeInput,
    inputName: "DTC Node",
    output: nodeViewOutput,
    statuses: [201],
    errors: { ...INVALID, 409: "A node with this id exists" },
  },
  {
    name: "removeNode",
    title: "Remove DTC Node",
    description: "Removes a DTC Node from the inventory.",
    method: "DELETE",
    path: "/nodes/:id",
    access: "admin",
    params: byId("node"),
    statuses: [204],
    errors: { ...NOT_FOUND("node"), 409: "Instances run on the node, or it is built in" },
  },
  // Inventory: schemas.
  {
    name: "discoverSchemas",
    title: "Discover DT Schemas",
    description: "Finds the DT Schemas matching every filter given (none: all of them).",
    ...READ,
    path: "/schemas",
    query: z.object({
      q: text("Text to find in the schema's id, title or description").optional(),
      type: text("A @type the schema has (as written in the model, e.g. saref:Device)").optional(),
      affordance: text("The name or @type of a property, action or event the schema has").optional(),
    }),
    output: z.array(schemaOutput).meta({ description: "The matching schemas" }),
    errors: INVALID,
  },
  {
    name: "getSchema",
    title: "Get DT Schema",
    description: "The Thing Model of a DT Schema, as registered.",
    ...READ,
    path: "/schemas/:id",
    params: byId("schema"),
    output: thingModel,
    produces: TM_MEDIA_TYPE,
    errors: NOT_FOUND("schema"),
  },
  {
    name: "registerSchema",
    title: "Register DT Schema",
    description:
      "Registers a DT Schema (a Thing Model) under the id given, or one derived from its title. The Thing Model may be sent as application/json or application/tm+json.",
    method: "POST",
    path: "/schemas",
    access: "admin",
    query: z.object({ id: idOf("schema to register (default: derived from the model's title)").optional() }),
    input: thingModel,
    inputName: "DT Schema",
    accepts: [JSON_MEDIA_TYPE, TM_MEDIA_TYPE],
    output: schemaOutput,
    statuses: [201],
    errors: { ...INVALID, 409: "A schema with this id or IRI exists" },
  },
  {
    name: "removeSchema",
    title: "Remove DT Schema",
    description: "Removes a DT Schema.",
    method: "DELETE",
    path: "/schemas/:id",
    access: "admin",
    params: byId("schema"),
    statuses: [204],
    errors: { ...NOT_FOUND("schema"), 409: "Packages use the schema, or it is built in" },
  },
  // Inventory: packages.
  {
    name: "discoverPackages",
    title: "Discover DT Packages",
    description: "Finds the DT Packages of a schema, for a platform (none: all of them).",
    ...READ,
    path: "/packages",
    query: z.object({
      schema: text("The schema's id or IRI").optional(),
      // Not an enum: an unknown platform finds nothing (it is not refused).
      platform: text(`DT platform (${PLATFORMS.join(", ")})`).optional(),
    }),
    output: z.array(packageOutput).meta({ description: "The matching packages" }),
    errors: INVALID,
  },
  {
    name: "getPackage",
    title: "Get DT Package",
    description: "A DT Package.",
    ...READ,
    path: "/packages/:id",
    params: byId("package"),
    output: packageOutput,
    errors: NOT_FOUND("package"),
  },
  {
    name: "discoverCandidateNodes",
    title: "Discover candidate DTC Nodes",
    description:
      "The nodes the package can be started on, lowest latency first; with all=true every node, with why it does not fit: platform, readiness, free capacity against its requirements, latency against its schema's desired timeliness.",
    ...READ,
    path: "/packages/:id/nodes",
    params: byId("package"),
    query: z.object({
      all: flag("true: every node, those that do not fit too; default: only those that fit").optional(),
    }),
    output: z.array(candidateOutput).meta({ description: "The nodes, judged" }),
    errors: { ...INVALID, ...NOT_FOUND("package") },
  },
  {
    name: "registerPackage",
    title: "Register DT Package",
    description: "Registers a DT Package: an implementation of a DT Schema for one DT platform.",
    method: "POST",
    path: "/packages",
    access: "admin",
    input: packageInput,
    inputName: "DT Package",
    output: packageOutput,
    statuses: [201],
    errors: { ...INVALID, 404: "No schema with this id or IRI", 409: "A package with this id exists" },
  },
  {
    name: "removePackage",
    title: "Remove DT Package",
    description: "Removes a DT Package.",
    method: "DELETE",
    path: "/packages/:id",
    access: "admin",
    params: byId("package"),
    statuses: [204],
    errors: { ...NOT_FOUND("package"), 409: "Instances use the package, or it is built in" },
  },
  // Deployment and management of instances.
  {
    name: "runningInstances",
    title: "Running DT Instances",
    description: "The instances on the DTC, optionally filtered by schema, node, lifecycle state or package.",
    ...READ,
    path: "/instances",
    query: z.object({
      schema: text("The schema's id or IRI").optional(),
      node: text("Id of the node").optional(),
      state: oneOf(
        INSTANCE_LIFECYCLES,
        `A lifecycle state (${LIFECYCLE_STATES.join(", ")}), or NotRunning`,
      ).optional(),
      package: text("Id of the package").optional(),
    }),
    output: z.array(instanceOutput).meta({ description: "The matching instances" }),
    errors: INVALID,
  },
  {
    name: "getInstance",
    title: "Get DT Instance",
    description: "An instance, with its lifecycle state, entanglement and TD.",
    ...READ,
    path: "/instances/:id",
    params: byId("instance"),
    output: instanceOutput,
    errors: NOT_FOUND("instance"),
  },
  {
    name: "startInstance",
    title: "Start DT Instance",
    description: "Starts a DT Instance of a package on a node, with a configuration.",
    method: "POST",
    path: "/instances",
    access: "operator",
    input: startInput,
    inputName: "start request",
    output: instanceOutput,
    statuses: [201],
    errors: {
      ...INVALID,
      404: "No such package or node",
      409: "The id is in use, or the node cannot take the package",
    },
  },
  {
    name: "removeInstance",
    title: "Remove DT Instance",
    description: "Removes an instance and everything the DTC stored of it.",
    method: "DELETE",
    path: "/instances/:id",
    access: "operator",
    params: byId("instance"),
    statuses: [204],
    errors: NOT_FOUND("instance"),
  },
  {
    name: "stopInstance",
    title: "Stop DT Instance",
    description: "Stops an instance (detached from its physical twin, Done), keeping what it stored.",
    method: "POST",
    path: "/instances/:id/stop",
    access: "operator",
    params: byId("instance"),
    output: instanceOutput,
    statuses: [200],
    idempotent: true,
    errors: NOT_FOUND("instance"),
  },
  {
    name: "resumeInstance",
    title: "Resume DT Instance",
    description: "Starts a stopped instance again where it was, with its state.",
    method: "POST",
    path: "/instances/:id/start",
    access: "operator",
    params: byId("instance"),
    output: instanceOutput,
    statuses: [200],
    idempotent: true,
    errors: { ...NOT_FOUND("instance"), 409: "The instance is not stopped" },
  },
  {
    name: "restartInstance",
    title: "Restart DT Instance",
    description: "Restarts an instance, fresh, with its original configuration (same id and URLs).",
    method: "POST",
    path: "/instances/:id/restart",
    access: "operator",
    params: byId("instance"),
    output: instanceOutput,
    statuses: [200],
    errors: NOT_FOUND("instance"),
  },
  {
    name: "moveInstance",
    title: "Move DT Instance",
    description: "Moves an instance, with its state, to another node (same id and URLs).",
    method: "POST",
    path: "/instances/:id/move",
    access: "operator",
    params: byId("instance"),
    input: moveInput,
    inputName: "move request",
    output: instanceOutput,
    statuses: [200],
    idempotent: true,
    errors: { ...INVALID, 404: "No such instance or node", 409: "The node cannot take the instance" },
  },
  {
    name: "cloneInstance",
    title: "Clone DT Instance",
    description: "Starts a copy of an instance, with its state and stored data, on a node.",
    method: "POST",
    path: "/instances/:id/clone",
    access: "operator",
    params: byId("instance"),
    input: placementInput,
    inputName: "clone request",
    output: instanceOutput,
    statuses: [201],
    errors: {
      ...INVALID,
      404: "No such instance or node",
      409: "The id is in use, or the node cannot take the package",
    },
  },
  {
    name: "snapshotInstance",
    title: "Snapshot DT Instance",
    description: "Takes a snapshot of an instance: its configuration, state and stored data.",
    method: "POST",
    path: "/instances/:id/snapshots",
    access: "operator",
    params: byId("instance"),
    output: snapshotOutput,
    statuses: [201],
    errors: { ...NOT_FOUND("instance"), 409: "The instance cannot be snapshotted now" },
  },
  // Snapshots.
  {
    name: "listSnapshots",
    title: "List DT Snapshots",
    description: "The snapshots, oldest first, optionally of one instance.",
    ...READ,
    path: "/snapshots",
    query: z.object({ instance: text("Id of the instance").optional() }),
    output: z.array(snapshotOutput).meta({ description: "The snapshots" }),
    errors: INVALID,
  },
  {
    name: "getSnapshot",
    title: "Get DT Snapshot",
    description: "A snapshot in full: the instance as kept, and its twin's state.",
    ...READ,
    path: "/snapshots/:id",
    params: bySnapshotId,
    output: snapshotDetailsOutput,
    errors: NOT_FOUND("snapshot"),
  },
  {
    name: "removeSnapshot",
    title: "Remove DT Snapshot",
    description: "Removes a snapshot.",
    method: "DELETE",
    path: "/snapshots/:id",
    access: "operator",
    params: bySnapshotId,
    statuses: [204],
    errors: NOT_FOUND("snapshot"),
  },
  {
    name: "restoreSnapshot",
    title: "Restore DT Snapshot",
    description:
      "Runs the snapshot's twin on a node with the snapshot's state. Under a new id it is a new instance (201); under the snapshot's own it rolls the instance back (200), or brings it back if it was removed (201).",
    method: "POST",
    path: "/snapshots/:id/restore",
    access: "operator",
    params: bySnapshotId,
    input: placementInput,
    inputName: "restore request",
    output: instanceOutput,
    statuses: [201, 200],
    errors: {
      ...INVALID,
      404: "No such snapshot or node",
      409: "The id is in use, or the node cannot take the package",
    },
  },
  // Declarative apply (src/manager/apply.ts).
  {
    name: "applyManifest",
    title: "Apply a manifest",
    description:
      "Applies a manifest of documents (apiVersion dtc/v1; kind Schema, Node, Package, Instance) as YAML or JSON: checked whole first (400 naming every problem by document index and field, nothing changed), then carried out in dependency order, idempotently; answers per object created, updated (with the diff), unchanged or pruned. dryRun=true answers the plan and changes nothing; prune=true removes the objects labelled dtc.apply/manifest with the manifest's name that it no longer names.",
    method: "POST",
    path: "/apply",
    access: "admin",
    query: z.object({
      dryRun: flag("true: answer the plan, change nothing").optional(),
      prune: flag(
        "true: remove the objects carrying the manifest's dtc.apply/manifest label that it no longer names",
      ).optional(),
    }),
    input: manifestInput,
    inputName: "manifest",
    accepts: APPLY_MEDIA_TYPES,
    rawBody: true,
    output: applyOutput,
    statuses: [200],
    idempotent: true,
    errors: {
      ...INVALID,
      404: "An object the manifest needs went away while it was applied",
      409: "An object cannot be changed as the manifest says now (e.g. a node cannot take an instance)",
    },
  },
  {
    name: "getManifest",
    title: "Get the manifest",
    description:
      "The current objects (not the built-in ones) as manifest documents, in apply order: a YAML stream (default), or { items } as JSON (Accept: application/json). Applied back, it changes nothing.",
    ...READ,
    path: "/manifest",
    query: z.object({
      kind: z
        .string()
        .regex(
          new RegExp(`^(${OBJECT_KINDS.join("|")})(,(${OBJECT_KINDS.join("|")}))*$`),
          "must be a comma-separated list of Node, Schema, Package, Instance",
        )
        .meta({ description: "Only these kinds, comma-separated (e.g. Node,Package)" })
        .optional(),
      selector: z
        .string()
        .regex(LABEL_SELECTOR_PATTERN, "must be name=value or name, comma-separated")
        .meta({ description: "Only objects with these labels: name=value or name, comma-separated" })
        .optional(),
    }),
    output: manifestOutput,
    produces: YAML_MEDIA_TYPE,
    producesAlso: [JSON_MEDIA_TYPE],
    errors: INVALID,
  },
] as const satisfies readonly ApiRoute[];

export type ManagerRoute = (typeof MANAGER_API)[number];
export type ManagerRouteName = ManagerRoute["name"];

/** The routes that are the TD's actions (all but the API's own descriptions). */
export const actionRoutes = (): ApiRoute[] => (MANAGER_API as readonly ApiRoute[]).filter((r) => !r.document);

// ---- JSON Schema of the table's zod schemas (the TD's and the OpenAPI document's)

export type SchemaTarget = "draft-7" | "draft-2020-12";

/** `schema` as JSON Schema: `input` for what the API takes, `output` for what it answers. */
export function jsonSchemaOf(schema: z.ZodType, io: "input" | "output", target: SchemaTarget): JsonObject {
  const json = z.toJSONSchema(schema, { io, target, unrepresentable: "any" }) as JsonObject;
  delete json.$schema;
  return json;
}

/** The path parameters' names, in order: `/instances/:id/stop` → ["id"]. */
export const pathParameters = (route: ApiRoute): string[] =>
  [...route.path.matchAll(/:([A-Za-z_]+)/g)].map((m) => m[1] as string);

/** The query parameters' names, in their schema's order. */
export const queryParameters = (route: ApiRoute): string[] => Object.keys(route.query?.shape ?? {});

/** The path with `{name}` for `:name` (RFC 6570 and OpenAPI alike): `/instances/{id}/stop`. */
export const templatePath = (route: ApiRoute): string => route.path.replace(/:([A-Za-z_]+)/g, "{$1}");
