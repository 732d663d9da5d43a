/**
 * The manager's HTTP API as an OpenAPI 3.1 document (GET /api/openapi.json), generated from the
 * route table (src/manager/routes.ts): one operation per route, its zod schemas as JSON Schema
 * 2020-12 (OpenAPI 3.1's dialect), errors as RFC 9457 problem details.
 */
import { PROBLEM_MEDIA_TYPE } from "../http/problem.js";
import { packageVersion } from "../paths.js";
import type { JsonObject } from "../wot/rdf.js";
import {
  type ApiRoute,
  JSON_MEDIA_TYPE,
  jsonSchemaOf,
  MANAGER_API,
  pathParameters,
  problemDetails,
  queryParameters,
  templatePath,
} from "./routes.js";

export interface OpenApiOptions {
  /** Whether the gateway asks for credentials (DTC_AUTH=on): then operations name the schemes. */
  authenticated: boolean;
}

const PROBLEM_REF = { $ref: "#/components/schemas/Problem" };
const problemResponse = (description: string): JsonObject => ({
  description,
  content: { [PROBLEM_MEDIA_TYPE]: { schema: PROBLEM_REF } },
});

const schemaOf = (schema: Parameters<typeof jsonSchemaOf>[0], io: "input" | "output") =>
  jsonSchemaOf(schema, io, "draft-2020-12");

/** A parameter object: the schema's description is the parameter's. */
function parameter(name: string, where: "path" | "query", schema: JsonObject, required: boolean): JsonObject {
  const { description, ...rest } = schema;
  return {
    name,
    in: where,
    required,
    ...(description === undefined ? {} : { description }),
    schema: rest,
    // A repeated query parameter: label=a&label=b.
    ...(rest.type === "array" ? { style: "form", explode: true } : {}),
  };
}

function parameters(route: ApiRoute): JsonObject[] {
  const path = route.params ? schemaOf(route.params, "input") : {};
  const pathProperties = (path.properties ?? {}) as Record<string, JsonObject>;
  const query = route.query ? schemaOf(route.query, "input") : {};
  const queryProperties = (query.properties ?? {}) as Record<string, JsonObject>;
  const requiredQuery = (query.required ?? []) as string[];
  return [
    ...pathParameters(route).map((name) =>
      parameter(name, "path", pathProperties[name] ?? { type: "string" }, true),
    ),
    ...queryParameters(route).map((name) =>
      parameter(name, "query", queryProperties[name] as JsonObject, requiredQuery.includes(name)),
    ),
  ];
}

function operation(route: ApiRoute, { authenticated }: OpenApiOptions): JsonObject {
  const responses: JsonObject = {};
  for (const status of route.statuses) {
    responses[status] =
      status === 204 || route.output === undefined
        ? { description: "Done, no content" }
        : {
            description: route.title,
            content: Object.fromEntries(
              [route.produces ?? JSON_MEDIA_TYPE, ...(route.producesAlso ?? [])].map((type) => [
                type,
                { schema: schemaOf(route.output as Parameters<typeof schemaOf>[0], "output") },
              ]),
            ),
          };
  }
  for (const [status, description] of Object.entries(route.errors ?? {})) {
    responses[status] = problemResponse(description);
  }
  responses.default = problemResponse(
    "Any other error (401 or 403 when authentication is on, 413 for a body too large, 5xx when a platform fails or times out)",
  );
  const params = parameters(route);
  return {
    operationId: route.name,
    summary: route.title,
    description: route.description,
    ...(params.length > 0 ? { parameters: params } : {}),
    ...(route.input
      ? {
          requestBody: {
            required: true,
            content: Object.fromEntries(
              (route.accepts ?? [JSON_MEDIA_TYPE]).map((type) => [
                type,
                { schema: schemaOf(route.input as Parameters<typeof schemaOf>[0], "input") },
              ]),
            ),
          },
        }
      : {}),
    responses,
    ...(authenticated ? { security: route.access === "public" ? [] : [{ bearer: [] }, { basic: [] }] } : {}),
    "x-dtc-role": route.access,
  };
}

function pathsOf(options: OpenApiOptions): Record<string, JsonObject> {
  const paths: Record<string, JsonObject> = {};
  for (const route of MANAGER_API as readonly ApiRoute[]) {
    const path = `/api${templatePath(route)}`;
    paths[path] = { ...paths[path], [route.method.toLowerCase()]: operation(route, options) };
  }
  return paths;
}

// The same for every base URL: made once per security setting, copied per document.
const madePaths = new Map<boolean, Record<string, JsonObject>>();

/** The OpenAPI document of the manager's API served at `baseUrl` (its /api is under it). */
export function openApiDocument(baseUrl: string, options: OpenApiOptions): JsonObject {
  let paths = madePaths.get(options.authenticated);
  if (paths === undefined) {
    paths = pathsOf(options);
    madePaths.set(options.authenticated, paths);
  }
  return {
    openapi: "3.1.0",
    info: {
      title: "DTC Manager API",
      version: packageVersion,
      description:
        "The Digital Twin Continuum manager: inventory (DTC Nodes, DT Schemas, DT Packages), deployment and management of DT Instances, snapshots. The same routes are the actions of its Thing Description (GET /api/td). Errors are RFC 9457 problem details.",
    },
    servers: [{ url: baseUrl.replace(/\/+$/, "") }],
    paths: structuredClone(paths),
    components: {
      schemas: { Problem: schemaOf(problemDetails, "output") },
      ...(options.authenticated
        ? {
            securitySchemes: {
              bearer: {
                type: "http",
                scheme: "bearer",
                description: "A dtc API token (POST /api/tokens) or a JWT of the authorization server",
              },
              basic: {
                type: "http",
                scheme: "basic",
                description: "The same token as the password, any user name",
              },
            },
          }
        : {}),
    },
  };
}
