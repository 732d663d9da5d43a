import { LIFECYCLE_STATES } from "../domain/lifecycle.js";
import { PROBLEM_MEDIA_TYPE } from "../http/problem.js";
import { packageVersion } from "../paths.js";
import { PLATFORMS } from "../platforms/driver.js";
import { TD_CONTEXT_1_1 } from "../wot/jsonld-loader.js";
import type { JsonObject } from "../wot/rdf.js";
import { DESIRED_STATES, ID_PATTERN, MAX_ODTE_WINDOW_S, PARAMETER_TYPES, TIERS } from "./model.js";

/**
 * The DTC Manager's own Thing Description: its HTTP API under /api as WoT actions, one per function
 * of the seed paper's Table I (Register DTC Node ... Clone DT Instance) plus the reads and removals
 * a client needs around them. A WoT consumer (e.g. node-wot) drives the manager through it.
 *
 * Hrefs are relative to `base` (`${baseUrl}/`), so a base URL with a path (behind a proxy) keeps
 * it. Query parameters are RFC 6570 form-style templates (`api/nodes{?platform,tier}`), which
 * node-wot expands from `uriVariables` for actions as for properties.
 *
 * node-wot 0.9.2 has no codec for application/tm+json: it would send a Thing Model given to a
 * tm+json form as "[object Object]", so registerSchema's application/json form comes first (node-wot
 * takes the first form), and reading getSchema's answer needs one registered by the consumer:
 * `ContentSerdes.get().addCodec(new JsonCodec("application/tm+json"))`. It also throws on error
 * statuses ("Client error: Conflict") without the problem details.
 */

export const MANAGER_TD_ID = "urn:dtc:manager";

const JSON_MEDIA_TYPE = "application/json";
const TM_MEDIA_TYPE = "application/tm+json";

type Method = "GET" | "POST" | "DELETE";
type Schema = JsonObject;

// --- data schemas --------------------------------------------------------------------------------

const str = (description: string, extra: Schema = {}): Schema => ({ type: "string", description, ...extra });
const int = (description: string, extra: Schema = {}): Schema => ({ type: "integer", description, ...extra });
const num = (description: string, extra: Schema = {}): Schema => ({ type: "number", description, ...extra });
const bool = (description: string): Schema => ({ type: "boolean", description });
const obj = (description: string, properties: Record<string, Schema>, required: string[] = []): Schema => ({
  type: "object",
  description,
  properties,
  ...(required.length > 0 ? { required } : {}),
});
const arrayOf = (description: string, items: Schema): Schema => ({ type: "array", description, items });
/** A JSON object with arbitrary member names (JSON Schema `additionalProperties`). */
const mapOf = (description: string, values: Schema): Schema => ({
  type: "object",
  description,
  additionalProperties: values,
});

const id = (what: string): Schema =>
  str(`Id of the ${what}: 1-63 lowercase letters, digits, - or _, starting with a letter or digit`, {
    pattern: ID_PATTERN.source,
  });
const dateTime = (description: string): Schema => str(description, { format: "date-time" });
const platform = str("DT platform", { enum: [...PLATFORMS] });
const tier = str("Tier of the continuum the node sits in", { enum: [...TIERS] });
const scalar: Schema = { oneOf: [{ type: "string" }, { type: "number" }, { type: "boolean" }] };

const capabilities = obj(
  "What the node offers",
  {
    cpu: num("CPU cores", { minimum: 0 }),
    memory: int("Memory, MiB", { minimum: 0 }),
    gpu: int("GPUs (default 0)", { minimum: 0 }),
  },
  ["cpu", "memory"],
);

const nodeFields: Record<string, Schema> = {
  id: id("node"),
  platform,
  tier,
  capabilities,
  labels: mapOf("Free-form labels (name to value), matched by the `label` query", { type: "string" }),
  latencyMs: num("Measured one-way latency to the physical side (the PTs' broker), ms", { minimum: 0 }),
  endpoint: {
    type: "object",
    description: "Platform-specific connection, e.g. a Docker engine's { socketPath } or { host, port }",
  },
};
const nodeInput = obj("A DTC Node to register", nodeFields, ["id", "platform", "tier", "capabilities"]);
const node = obj(
  "A registered DTC Node",
  {
    ...nodeFields,
    registeredAt: dateTime("When it was registered"),
    ready: bool("Whether the node's platform can take twins now"),
    reason: str("Why the node is not ready (when it is not)"),
    builtIn: bool("Registered by the gateway itself (cannot be removed)"),
  },
  ["id", "platform", "tier", "capabilities"],
);

const affordanceNames = (kind: string): Schema => arrayOf(`Names of its ${kind}`, { type: "string" });
const fidelityFigures = obj("The schema's fidelity (dtc:fidelity)", {
  desiredTimeliness: num("Td, ms"),
  expectedUpdateRate: num("Re, Hz"),
  odteThreshold: num("ODTE threshold", { minimum: 0, maximum: 1 }),
  odteWindow: num("W, s"),
});
const schemaSummary = obj(
  "A registered DT Schema, summarised",
  {
    id: id("schema"),
    // No format "iri": node-wot's Ajv does not know it and warns on every value().
    iri: str("The schema's IRI (what TDs of its twins link to with rel type)"),
    title: str("The Thing Model's title"),
    description: str("The Thing Model's description"),
    types: arrayOf("The Thing Model's @type", { type: "string" }),
    affordances: obj(
      "Its interaction affordances",
      {
        properties: affordanceNames("properties"),
        actions: affordanceNames("actions"),
        events: affordanceNames("events"),
      },
      ["properties", "actions", "events"],
    ),
    placeholders: arrayOf("The {{PLACEHOLDERS}} the model uses", { type: "string" }),
    fidelity: fidelityFigures,
    builtIn: bool("Loaded from thing-models/ at every start (cannot be removed)"),
    registeredAt: dateTime("When it was registered"),
  },
  ["id", "iri", "title", "types", "affordances", "builtIn"],
);
const thingModel: Schema = {
  type: "object",
  description:
    "A W3C WoT Thing Model (@type tm:ThingModel); a DT Schema may add dtc:fidelity and dtc:physicalInterface",
  properties: {
    "@context": { description: "JSON-LD context, including https://www.w3.org/2022/wot/td/v1.1" },
    "@type": { description: "Types, including tm:ThingModel" },
    title: { type: "string" },
  },
  required: ["@context", "@type"],
};

const parameter = obj(
  "A configuration parameter",
  {
    type: str("Its type", { enum: [...PARAMETER_TYPES] }),
    default: { ...scalar, description: "Value when a start request gives none" },
    required: bool("Whether a start request must give a value (default: when there is no default)"),
    description: str("What it configures"),
    enum: { type: "array", description: "Allowed values", items: scalar, minItems: 1 },
    minimum: num("Smallest allowed value (numbers)"),
    maximum: num("Largest allowed value (numbers)"),
  },
  ["type"],
);
const requirements = obj("Resources the twin needs on its node", {
  cpu: num("CPU cores", { minimum: 0 }),
  memory: int("Memory, MiB", { minimum: 0 }),
  gpu: int("GPUs", { minimum: 0 }),
});
const augmentation = obj(
  "An augmentation function installed in the twin",
  { name: str("Its name", { minLength: 1 }), source: str("Its JavaScript source", { minLength: 1 }) },
  ["name", "source"],
);
const packageFields: Record<string, Schema> = {
  id: id("package"),
  schema: str("The DT Schema it implements: its id or IRI", { minLength: 1 }),
  platform,
  artefact: obj("What runs the twin", {
    module: str("In-process: the twin runtime module (dtc:twin)"),
    image: str("Docker and Kubernetes: the container image of the twin runtime"),
  }),
  parameters: mapOf("The configuration a start request gives values for, by name", parameter),
  requirements,
  augmentations: arrayOf("Augmentation functions", augmentation),
  shadowing: str("JS source `(message, { state, event }) => values` replacing the schema's mapping"),
  historyLimit: int("How many past states and events the twin keeps", { minimum: 1, maximum: 100_000 }),
};
const packageInput = obj("A DT Package to register", packageFields, ["id", "schema", "platform"]);
const dtPackage = obj(
  "A registered DT Package",
  {
    ...packageFields,
    schema: str("The IRI of the DT Schema it implements"),
    registeredAt: dateTime("When it was registered"),
  },
  ["id", "schema", "platform", "artefact"],
);

const candidate = obj(
  "A node considered for the package",
  {
    node,
    fits: bool("Whether the package can be started there"),
    reasons: arrayOf(
      "Why it does not fit (platform, free capacity against the requirements, latency against the schema's desired timeliness); empty when it fits",
      { type: "string" },
    ),
  },
  ["node", "fits", "reasons"],
);

const fidelityOverrides = obj("Overrides of the schema's fidelity for this instance", {
  desiredTimeliness: num("Td, ms", { exclusiveMinimum: 0 }),
  expectedUpdateRate: num("Re, Hz", { exclusiveMinimum: 0 }),
  odteThreshold: num("ODTE threshold", { minimum: 0, maximum: 1 }),
  odteWindow: num("W, s", { exclusiveMinimum: 0, maximum: MAX_ODTE_WINDOW_S }),
});
const configuration = mapOf("Values of the package's parameters, by name", scalar);
const startInput = obj(
  "What to start where",
  {
    package: id("package"),
    node: id("node"),
    id: id("new instance (also the twin's id, in its URLs and topics); generated when absent"),
    configuration,
    fidelity: fidelityOverrides,
    brokerUrl: str("Broker of the physical twin (mqtt, mqtts, ws, wss); the gateway's when absent", {
      format: "uri",
    }),
  },
  ["package", "node"],
);
const entanglement = obj("The latest entanglement evaluation (ODTE = T x R x A)", {
  odte: num("ODTE", { minimum: 0, maximum: 1 }),
  timeliness: num("T", { minimum: 0, maximum: 1 }),
  reliability: num("R", { minimum: 0, maximum: 1 }),
  availability: num("A", { minimum: 0, maximum: 1 }),
  entangled: bool("Whether ODTE is at or above the threshold"),
  evaluatedAt: dateTime("When it was evaluated"),
});
const instance = obj(
  "A DT Instance",
  {
    id: id("instance"),
    package: id("package it was started from"),
    schema: str("The IRI of its DT Schema"),
    node: id("node it runs on"),
    platform,
    desired: str("What the manager keeps it at", { enum: [...DESIRED_STATES] }),
    lifecycle: str("Its lifecycle state (dtc:lifecycleState)", { enum: [...LIFECYCLE_STATES] }),
    entanglement,
    configuration,
    td: { type: "object", description: "Its Thing Description (the DT Description)" },
    links: { description: "Links to the twin's resources" },
  },
  ["id", "package", "schema", "node", "platform", "desired", "lifecycle"],
);
const snapshot = obj(
  "A snapshot of an instance: its configuration, state and history",
  {
    id: str("Id of the snapshot"),
    instance: id("instance it was taken of"),
    takenAt: dateTime("When it was taken"),
    node: id("node the instance ran on"),
    package: id("package of the instance"),
    schema: str("The IRI of the instance's DT Schema"),
    lifecycle: str("The instance's lifecycle state when taken", { enum: [...LIFECYCLE_STATES] }),
    history: obj("Past states and events it holds", { states: int("States"), events: int("Events") }),
  },
  ["id", "instance", "takenAt"],
);
const placement = obj(
  "Where to put the copy",
  { node: id("target node"), id: id("new instance; generated when absent") },
  ["node"],
);
const problem = obj(
  "RFC 9457 problem details",
  {
    type: str("Problem type IRI", { format: "uri-reference" }),
    title: str("Summary of the problem type"),
    status: int("HTTP status code"),
    detail: str("What went wrong this time"),
    instance: str("The request path", { format: "uri-reference" }),
    validationErrors: arrayOf(
      "Invalid members of the request",
      obj("An invalid member", { field: str("Its dotted path"), description: str("The problem") }),
    ),
  },
  ["title", "status"],
);

// --- the routes ----------------------------------------------------------------------------------

interface Route {
  name: string;
  /** The function's name in the paper's Table I, or this API's own. */
  title: string;
  description: string;
  method: Method;
  /** Relative to base; a URI template. */
  href: string;
  uriVariables?: Record<string, Schema>;
  input?: Schema;
  /** Request media types; one form each, the first preferred (default application/json). */
  accepts?: string[];
  output?: Schema;
  /** Success status; 204 has no body. */
  status: 200 | 201 | 204;
  /** Media type of a success body (default application/json). */
  produces?: string;
  /** Error statuses this route answers with problem details, and when. */
  errors?: Partial<Record<400 | 404 | 409, string>>;
  /** POST only: whether repeating the request has no further effect. GET and DELETE are. */
  idempotent?: boolean;
}

const pathId = (what: string): Record<string, Schema> => ({ id: id(what) });
const NOT_FOUND = (what: string) => ({ 404: `No ${what} with this id` });
const INVALID = { 400: "The body or a parameter is invalid (see validationErrors)" };

const ROUTES: Route[] = [
  // Inventory
  {
    name: "registerNode",
    title: "Register DTC Node",
    description: "Registers a DTC Node: a compute node of one DT platform, its tier and capabilities.",
    method: "POST",
    href: "api/nodes",
    input: nodeInput,
    output: node,
    status: 201,
    errors: { ...INVALID, 409: "A node with this id exists" },
  },
  {
    name: "discoverNodes",
    title: "Discover DTC Nodes",
    description: "Finds the DTC Nodes matching every filter given (none: all of them).",
    method: "GET",
    href: "api/nodes{?platform,tier,label,gpu}",
    uriVariables: {
      platform,
      tier,
      label: str("A label the node has, as name=value", { pattern: "^[^=]+=.*$" }),
      gpu: bool("true: only nodes with a GPU; false: only nodes without"),
    },
    output: arrayOf("The matching nodes", node),
    status: 200,
    errors: INVALID,
  },
  {
    name: "getNode",
    title: "Get DTC Node",
    description: "A DTC Node, with its readiness.",
    method: "GET",
    href: "api/nodes/{id}",
    uriVariables: pathId("node"),
    output: node,
    status: 200,
    errors: NOT_FOUND("node"),
  },
  {
    name: "removeNode",
    title: "Remove DTC Node",
    description: "Removes a DTC Node from the inventory.",
    method: "DELETE",
    href: "api/nodes/{id}",
    uriVariables: pathId("node"),
    status: 204,
    errors: { ...NOT_FOUND("node"), 409: "Instances run on the node, or it is built in" },
  },
  {
    name: "registerSchema",
    title: "Register DT Schema",
    description:
      "Registers a DT Schema (a Thing Model) under the id given, or one derived from its title. The Thing Model may be sent as application/json or application/tm+json.",
    method: "POST",
    href: "api/schemas{?id}",
    uriVariables: pathId("schema to register (default: derived from the model's title)"),
    input: thingModel,
    accepts: [JSON_MEDIA_TYPE, TM_MEDIA_TYPE],
    output: schemaSummary,
    status: 201,
    errors: { ...INVALID, 409: "A schema with this id or IRI exists" },
  },
  {
    name: "discoverSchemas",
    title: "Discover DT Schemas",
    description: "Finds the DT Schemas matching every filter given (none: all of them).",
    method: "GET",
    href: "api/schemas{?q,type,affordance}",
    uriVariables: {
      q: str("Text to find in the schema's id, title or description"),
      type: str("A @type the schema has (compact or full IRI)"),
      affordance: str("The name of a property, action or event the schema has"),
    },
    output: arrayOf("The matching schemas", schemaSummary),
    status: 200,
    errors: INVALID,
  },
  {
    name: "getSchema",
    title: "Get DT Schema",
    description: "The Thing Model of a DT Schema, as registered.",
    method: "GET",
    href: "api/schemas/{id}",
    uriVariables: pathId("schema"),
    output: thingModel,
    status: 200,
    produces: TM_MEDIA_TYPE,
    errors: NOT_FOUND("schema"),
  },
  {
    name: "removeSchema",
    title: "Remove DT Schema",
    description: "Removes a DT Schema.",
    method: "DELETE",
    href: "api/schemas/{id}",
    uriVariables: pathId("schema"),
    status: 204,
    errors: { ...NOT_FOUND("schema"), 409: "Packages use the schema, or it is built in" },
  },
  {
    name: "registerPackage",
    title: "Register DT Package",
    description: "Registers a DT Package: an implementation of a DT Schema for one DT platform.",
    method: "POST",
    href: "api/packages",
    input: packageInput,
    output: dtPackage,
    status: 201,
    errors: { ...INVALID, 404: "No schema with this id or IRI", 409: "A package with this id exists" },
  },
  {
    name: "discoverPackages",
    title: "Discover DT Packages",
    description: "Finds the DT Packages of a schema, for a platform (none: all of them).",
    method: "GET",
    href: "api/packages{?schema,platform}",
    uriVariables: { schema: str("The schema's id or IRI"), platform },
    output: arrayOf("The matching packages", dtPackage),
    status: 200,
    errors: INVALID,
  },
  {
    name: "getPackage",
    title: "Get DT Package",
    description: "A DT Package.",
    method: "GET",
    href: "api/packages/{id}",
    uriVariables: pathId("package"),
    output: dtPackage,
    status: 200,
    errors: NOT_FOUND("package"),
  },
  {
    name: "removePackage",
    title: "Remove DT Package",
    description: "Removes a DT Package.",
    method: "DELETE",
    href: "api/packages/{id}",
    uriVariables: pathId("package"),
    status: 204,
    errors: { ...NOT_FOUND("package"), 409: "Instances use the package" },
  },
  // Deployment
  {
    name: "discoverCandidateNodes",
    title: "Discover candidate DTC Nodes",
    description:
      "Every node with whether the package can be started there and why not: platform, free capacity against its requirements, latency against its schema's desired timeliness.",
    method: "GET",
    href: "api/packages/{id}/nodes",
    uriVariables: pathId("package"),
    output: arrayOf("The nodes, judged", candidate),
    status: 200,
    errors: NOT_FOUND("package"),
  },
  {
    name: "startInstance",
    title: "Start DT Instance",
    description: "Starts a DT Instance of a package on a node, with a configuration.",
    method: "POST",
    href: "api/instances",
    input: startInput,
    output: instance,
    status: 201,
    errors: {
      ...INVALID,
      404: "No such package or node",
      409: "The id is in use, or the node cannot take the package",
    },
  },
  {
    name: "stopInstance",
    title: "Stop DT Instance",
    description: "Stops an instance (detached from its physical twin, Done), keeping what it stored.",
    method: "POST",
    href: "api/instances/{id}/stop",
    uriVariables: pathId("instance"),
    output: instance,
    status: 200,
    idempotent: true,
    errors: NOT_FOUND("instance"),
  },
  {
    name: "resumeInstance",
    title: "Resume DT Instance",
    description: "Starts a stopped instance again where it was, with its state.",
    method: "POST",
    href: "api/instances/{id}/start",
    uriVariables: pathId("instance"),
    output: instance,
    status: 200,
    idempotent: true,
    errors: NOT_FOUND("instance"),
  },
  {
    name: "restartInstance",
    title: "Restart DT Instance",
    description: "Restarts an instance, fresh, with its original configuration (same id and URLs).",
    method: "POST",
    href: "api/instances/{id}/restart",
    uriVariables: pathId("instance"),
    output: instance,
    status: 200,
    errors: NOT_FOUND("instance"),
  },
  {
    name: "removeInstance",
    title: "Remove DT Instance",
    description: "Removes an instance and everything the DTC stored of it.",
    method: "DELETE",
    href: "api/instances/{id}",
    uriVariables: pathId("instance"),
    status: 204,
    errors: NOT_FOUND("instance"),
  },
  // Management
  {
    name: "runningInstances",
    title: "Running DT Instances",
    description: "The instances on the DTC, optionally filtered by schema, node, state or package.",
    method: "GET",
    href: "api/instances{?schema,node,state,package}",
    uriVariables: {
      schema: str("The schema's id or IRI"),
      node: id("node"),
      state: str(`A lifecycle state (${LIFECYCLE_STATES.join(", ")}) or desired state (running, stopped)`),
      package: id("package"),
    },
    output: arrayOf("The matching instances", instance),
    status: 200,
    errors: INVALID,
  },
  {
    name: "getInstance",
    title: "Get DT Instance",
    description: "An instance, with its lifecycle state and entanglement.",
    method: "GET",
    href: "api/instances/{id}",
    uriVariables: pathId("instance"),
    output: instance,
    status: 200,
    errors: NOT_FOUND("instance"),
  },
  {
    name: "snapshotInstance",
    title: "Snapshot DT Instance",
    description: "Takes a snapshot of an instance: its configuration, state and stored data.",
    method: "POST",
    href: "api/instances/{id}/snapshots",
    uriVariables: pathId("instance"),
    output: snapshot,
    status: 201,
    errors: { ...NOT_FOUND("instance"), 409: "The instance cannot be snapshotted now" },
  },
  {
    name: "listSnapshots",
    title: "List DT Snapshots",
    description: "The snapshots, optionally of one instance.",
    method: "GET",
    href: "api/snapshots{?instance}",
    uriVariables: { instance: id("instance") },
    output: arrayOf("The snapshots", snapshot),
    status: 200,
    errors: INVALID,
  },
  {
    name: "getSnapshot",
    title: "Get DT Snapshot",
    description: "A snapshot.",
    method: "GET",
    href: "api/snapshots/{id}",
    uriVariables: { id: str("Id of the snapshot") },
    output: snapshot,
    status: 200,
    errors: NOT_FOUND("snapshot"),
  },
  {
    name: "removeSnapshot",
    title: "Remove DT Snapshot",
    description: "Removes a snapshot.",
    method: "DELETE",
    href: "api/snapshots/{id}",
    uriVariables: { id: str("Id of the snapshot") },
    status: 204,
    errors: NOT_FOUND("snapshot"),
  },
  {
    name: "restoreSnapshot",
    title: "Restore DT Snapshot",
    description: "Starts a new instance from a snapshot on a node.",
    method: "POST",
    href: "api/snapshots/{id}/restore",
    uriVariables: { id: str("Id of the snapshot") },
    input: placement,
    output: instance,
    status: 201,
    errors: {
      ...INVALID,
      404: "No such snapshot or node",
      409: "The id is in use, or the node cannot take the package",
    },
  },
  {
    name: "moveInstance",
    title: "Move DT Instance",
    description: "Moves an instance, with its state, to another node (same id and URLs).",
    method: "POST",
    href: "api/instances/{id}/move",
    uriVariables: pathId("instance"),
    input: obj("Where to move it", { node: id("target node") }, ["node"]),
    output: instance,
    status: 200,
    idempotent: true,
    errors: { ...INVALID, 404: "No such instance or node", 409: "The node cannot take the instance" },
  },
  {
    name: "cloneInstance",
    title: "Clone DT Instance",
    description: "Starts a copy of an instance, with its state and stored data, on a node.",
    method: "POST",
    href: "api/instances/{id}/clone",
    uriVariables: pathId("instance"),
    input: placement,
    output: instance,
    status: 201,
    errors: {
      ...INVALID,
      404: "No such instance or node",
      409: "The id is in use, or the node cannot take the package",
    },
  },
];

/** The routes the TD describes: name, method and href (relative to base), in TD order. */
export const MANAGER_ROUTES: readonly { name: string; method: Method; href: string }[] = ROUTES.map(
  ({ name, method, href }) => ({ name, method, href }),
);

function form(route: Route, contentType: string): JsonObject {
  const additionalResponses: JsonObject[] = Object.entries(route.errors ?? {}).map(
    ([status, description]) => ({
      success: false,
      description,
      contentType: PROBLEM_MEDIA_TYPE,
      schema: "problem",
      "htv:statusCodeValue": Number(status),
    }),
  );
  const f: JsonObject = { href: route.href, "htv:methodName": route.method, contentType };
  if (route.status === 204) {
    // TD 1.1 requires contentType on `response`: a bodyless success goes with the additional ones.
    additionalResponses.unshift({
      success: true,
      description: "Done, no content",
      "htv:statusCodeValue": 204,
    });
  } else {
    f.response = { contentType: route.produces ?? JSON_MEDIA_TYPE, "htv:statusCodeValue": route.status };
  }
  if (additionalResponses.length > 0) f.additionalResponses = additionalResponses;
  return f;
}

function action(route: Route): JsonObject {
  const safe = route.method === "GET";
  const a: JsonObject = {
    title: route.title,
    description: route.description,
    safe,
    idempotent: route.method !== "POST" || route.idempotent === true,
    synchronous: true,
  };
  if (route.uriVariables) a.uriVariables = route.uriVariables;
  if (route.input) a.input = route.input;
  if (route.output) a.output = route.output;
  a.forms = (route.accepts ?? [JSON_MEDIA_TYPE]).map((contentType) => form(route, contentType));
  return a;
}

/** The manager's TD for a server reached at `baseUrl` (absolute http(s); a path is kept). */
export function managerThingDescription(baseUrl: string): JsonObject {
  if (!/^https?:$/.test(URL.parse(baseUrl)?.protocol ?? "")) {
    throw new Error(`the manager's base URL ${JSON.stringify(baseUrl)} is not an absolute http(s) URL`);
  }
  return {
    "@context": [TD_CONTEXT_1_1, { dtc: "https://w3id.org/dtc#" }],
    "@type": ["Thing", "dtc:Manager"],
    id: MANAGER_TD_ID,
    title: "DTC Manager",
    description:
      "The Digital Twin Continuum manager: registers and discovers DTC Nodes, DT Schemas and DT Packages; starts, stops, restarts and removes DT Instances; snapshots, restores, moves and clones them. Errors are RFC 9457 problem details (application/problem+json).",
    version: { instance: packageVersion },
    base: `${baseUrl.replace(/\/+$/, "")}/`,
    securityDefinitions: { nosec_sc: { scheme: "nosec" } },
    security: "nosec_sc",
    schemaDefinitions: { problem },
    actions: Object.fromEntries(ROUTES.map((route) => [route.name, action(route)])),
  };
}
