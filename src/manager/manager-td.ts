import { PROBLEM_MEDIA_TYPE } from "../http/problem.js";
import { packageVersion } from "../paths.js";
import { TD_CONTEXT_1_1 } from "../wot/jsonld-loader.js";
import type { JsonObject } from "../wot/rdf.js";
import {
  type ApiRoute,
  actionRoutes,
  type HttpMethod,
  JSON_MEDIA_TYPE,
  jsonSchemaOf,
  pathParameters,
  problemDetails,
  queryParameters,
  templatePath,
} from "./routes.js";

/**
 * The DTC Manager's own Thing Description: its HTTP API under /api as WoT actions, one per route of
 * the route table (src/manager/routes.ts): the functions of the seed paper's Table I (Register DTC
 * Node ... Clone DT Instance) plus the reads and removals a client needs around them. A WoT
 * consumer (e.g. node-wot) drives the manager through it.
 *
 * Data schemas are the table's zod schemas as JSON Schema draft-07 (node-wot validates answers
 * with Ajv's default draft), brought into TD's subset: a `type` is one name (a union of types
 * becomes a oneOf).
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

type Schema = JsonObject;

/** TD's DataSchema has one type name per schema: `type: [a, b]` becomes `oneOf: [{type: a}, {type: b}]`. */
function tdSubset(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(tdSubset);
  if (value === null || typeof value !== "object") return value;
  const out: JsonObject = {};
  for (const [key, member] of Object.entries(value)) out[key] = tdSubset(member);
  if (Array.isArray(out.type)) {
    out.oneOf = (out.type as string[]).map((type) => ({ type }));
    delete out.type;
  }
  return out;
}

const dataSchema = (schema: Parameters<typeof jsonSchemaOf>[0], io: "input" | "output"): Schema =>
  tdSubset(jsonSchemaOf(schema, io, "draft-7")) as Schema;

/** Path and query parameters as uriVariables; one that may repeat is described by its items. */
function uriVariables(route: ApiRoute): Record<string, Schema> | undefined {
  const variables: Record<string, Schema> = {};
  const params = route.params ? dataSchema(route.params, "input") : {};
  for (const name of pathParameters(route)) {
    variables[name] = ((params.properties as Record<string, Schema> | undefined)?.[name] ?? {
      type: "string",
    }) as Schema;
  }
  const query = route.query ? dataSchema(route.query, "input") : {};
  for (const name of queryParameters(route)) {
    const schema = (query.properties as Record<string, Schema>)[name] as Schema;
    variables[name] = schema.type === "array" ? (schema.items as Schema) : schema;
  }
  return Object.keys(variables).length > 0 ? variables : undefined;
}

/** Relative to base; a URI template: `api/nodes/{id}`, `api/nodes{?platform,tier}`. */
function href(route: ApiRoute): string {
  const query = queryParameters(route);
  return `api${templatePath(route)}${query.length > 0 ? `{?${query.join(",")}}` : ""}`;
}

function form(route: ApiRoute, contentType: string): JsonObject {
  const [usual, ...others] = route.statuses;
  const produces = route.produces ?? JSON_MEDIA_TYPE;
  const additionalResponses: JsonObject[] = others.map((status) => ({
    success: true,
    description: `Also answered with ${status}`,
    contentType: produces,
    "htv:statusCodeValue": status,
  }));
  for (const [status, description] of Object.entries(route.errors ?? {})) {
    additionalResponses.push({
      success: false,
      description,
      contentType: PROBLEM_MEDIA_TYPE,
      schema: "problem",
      "htv:statusCodeValue": Number(status),
    });
  }
  const f: JsonObject = { href: href(route), "htv:methodName": route.method, contentType };
  if (usual === 204) {
    // TD 1.1 requires contentType on `response`: a bodyless success goes with the additional ones.
    additionalResponses.unshift({
      success: true,
      description: "Done, no content",
      "htv:statusCodeValue": 204,
    });
  } else {
    f.response = { contentType: produces, "htv:statusCodeValue": usual };
  }
  if (additionalResponses.length > 0) f.additionalResponses = additionalResponses;
  return f;
}

function action(route: ApiRoute): JsonObject {
  const a: JsonObject = {
    title: route.title,
    description: route.description,
    safe: route.method === "GET",
    idempotent: route.method !== "POST" || route.idempotent === true,
    synchronous: true,
  };
  const variables = uriVariables(route);
  if (variables) a.uriVariables = variables;
  if (route.input) a.input = dataSchema(route.input, "input");
  if (route.output) a.output = dataSchema(route.output, "output");
  a.forms = (route.accepts ?? [JSON_MEDIA_TYPE]).map((contentType) => form(route, contentType));
  return a;
}

/** The routes the TD describes: name, method and href (relative to base), in TD order. */
export const MANAGER_ROUTES: readonly { name: string; method: HttpMethod; href: string }[] =
  actionRoutes().map((route) => ({ name: route.name, method: route.method, href: href(route) }));

// The same for every base URL: made once, copied per TD.
let described: { actions: JsonObject; problem: Schema } | undefined;
const descriptions = () => {
  described ??= {
    actions: Object.fromEntries(actionRoutes().map((route) => [route.name, action(route)])),
    problem: dataSchema(problemDetails, "output"),
  };
  return described;
};

/** The manager's TD for a server reached at `baseUrl` (absolute http(s); a path is kept). */
export function managerThingDescription(baseUrl: string): JsonObject {
  if (!/^https?:$/.test(URL.parse(baseUrl)?.protocol ?? "")) {
    throw new Error(`the manager's base URL ${JSON.stringify(baseUrl)} is not an absolute http(s) URL`);
  }
  const { actions, problem } = structuredClone(descriptions());
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
    actions,
  };
}
