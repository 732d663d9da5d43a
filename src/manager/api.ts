import { type Context, Hono } from "hono";
import type { z } from "zod";
import { errorMessage } from "../domain/errors.js";
import { twinTdId } from "../domain/vocabulary.js";
import { problemOf } from "../http/error-status.js";
import { limitBody, problem } from "../http/problem.js";
import type { Logger } from "../logger.js";
import type { JsonObject } from "../wot/rdf.js";
import { Applier, acceptsJsonFirst, kindsOf, manifestYaml, parseManifest, YAML_MEDIA_TYPE } from "./apply.js";
import { invalid, ManagerError } from "./errors.js";
import { asManagerError, type DtcManager } from "./manager.js";
import { managerThingDescription } from "./manager-td.js";
import { openApiDocument } from "./openapi.js";
import {
  type ApiRoute,
  jsonSchemaOf,
  MANAGER_API,
  type ManagerRoute,
  queryParameters,
  type SuccessStatus,
} from "./routes.js";

/**
 * The manager's HTTP API under /api (JSON; errors as RFC 9457 problem details), mounted from the
 * route table (src/manager/routes.ts): each route's query and body are checked with its schemas,
 * then its handler here parses nothing more: it calls the manager and says what to answer. Links
 * of instance views are made here, from the public base URL.
 */

export interface ManagerApiOptions {
  manager: DtcManager;
  maxBodyBytes: number;
  publicBase: () => string;
  /** Declares the gateway's security in the manager's TD. */
  secure?: (td: JsonObject) => JsonObject;
  logger?: Logger;
}

type Params<R> = R extends { params: infer P extends z.ZodType } ? z.output<P> : Record<string, never>;
type Query<R> = R extends { query: infer Q extends z.ZodType } ? z.output<Q> : Record<string, never>;
type Body<R> = R extends { rawBody: true }
  ? string
  : R extends { input: infer B extends z.ZodType }
    ? z.output<B>
    : undefined;

interface ApiRequest<R> {
  /** As given: an unknown id is the manager's 404. */
  params: Params<R>;
  query: Query<R>;
  body: Body<R>;
  /** The request's Content-Type and Accept ("" when absent). */
  headers: { contentType: string; accept: string };
}

interface Answer {
  status: SuccessStatus;
  body?: unknown;
  /** Where what was created is (201). */
  location?: string;
  /** The body is this media type's text, as is (the route's `producesAlso`, or a `produces` not JSON). */
  type?: string;
}

type Handler<R> = (request: ApiRequest<R>) => Promise<Answer> | Answer;
type Handlers = { [R in ManagerRoute as R["name"]]: Handler<R> };

const ok = (body: unknown): Answer => ({ status: 200, body });
const created = (body: unknown, location: string): Answer => ({ status: 201, body, location });
const DONE: Answer = { status: 204 };

async function body(c: Context): Promise<unknown> {
  const text = await c.req.text();
  if (text.trim() === "") return {};
  try {
    return JSON.parse(text);
  } catch (err) {
    throw new ManagerError("invalid", `the body is not JSON: ${errorMessage(err)}`, { cause: err });
  }
}

/** A query the route's schema refuses: "tier must be one of edge, mec, cloud", per parameter. */
function invalidQuery(error: z.ZodError): ManagerError {
  const issues = error.issues.map((issue) => ({
    field: issue.path.filter((p) => typeof p === "string").join(".") || "(query)",
    description: issue.message,
  }));
  return new ManagerError("invalid", issues.map((i) => `${i.field} ${i.description}`).join("; "), issues);
}

/** Reads a route's query as its schema takes it: a repeatable parameter as a list, true/false as booleans. */
function queryReader(route: ApiRoute): (c: Context) => unknown {
  const schema = route.query;
  if (schema === undefined) return () => ({});
  const properties = jsonSchemaOf(schema, "input", "draft-2020-12").properties as Record<string, JsonObject>;
  const kinds = queryParameters(route).map((name) => [name, properties[name]?.type] as const);
  return (c) => {
    const raw: Record<string, unknown> = {};
    for (const [name, kind] of kinds) {
      const values = c.req.queries(name);
      const first = values?.[0];
      if (values === undefined || first === undefined) continue;
      raw[name] = kind === "array" ? values : kind === "boolean" ? (BOOLEANS[first] ?? first) : first;
    }
    const parsed = schema.safeParse(raw);
    if (!parsed.success) throw invalidQuery(parsed.error);
    return parsed.data;
  };
}
const BOOLEANS: Record<string, boolean> = { true: true, false: false };

async function readBody(c: Context, route: ApiRoute): Promise<unknown> {
  if (route.input === undefined) return undefined;
  if (route.rawBody) return c.req.text();
  const parsed = route.input.safeParse(await body(c));
  if (!parsed.success) throw invalid(route.inputName ?? "request body", parsed.error);
  return parsed.data;
}

/** Where an instance's resources are (the same ids as the twin's URLs and DT Description). */
function instanceLinks(base: string, id: string) {
  return {
    self: `${base}/api/instances/${id}`,
    twin: `${base}/twins/${id}`,
    description: `${base}/things/${encodeURIComponent(twinTdId(id))}`,
  };
}

function handlers(
  manager: DtcManager,
  publicBase: () => string,
  secure: (td: JsonObject) => JsonObject,
  maxBodyBytes: number,
): Handlers {
  const inventory = manager.inventory;
  const applier = new Applier(manager, publicBase);
  const url = (path: string) => `${publicBase()}/api${path}`;
  const linked = <V extends { id: string }>(view: V) => ({
    ...view,
    links: instanceLinks(publicBase(), view.id),
  });
  const createdInstance = (view: { id: string }) => created(linked(view), url(`/instances/${view.id}`));
  const nodeView = async (id: string) => {
    const node = inventory.node(id);
    const readiness = await manager.readiness(node);
    return {
      ...node,
      ready: readiness.ready,
      ...(readiness.ready ? {} : { reason: readiness.reason }),
      instances: manager.countOn(id),
      free: manager.free(node),
    };
  };
  // Whether the gateway asks for credentials: what secure() does to a TD says so.
  const authenticated = secure({ security: "nosec_sc" }).security !== "nosec_sc";

  return {
    getThingDescription: () => ok(secure(managerThingDescription(publicBase()))),
    getOpenApiDocument: () => ok(openApiDocument(publicBase(), { authenticated })),

    discoverNodes: async ({ query }) => {
      const nodes = inventory.nodes({
        platform: query.platform,
        tier: query.tier,
        labels: query.label ?? [],
        gpu: query.gpu,
      });
      return ok(await Promise.all(nodes.map((n) => nodeView(n.id))));
    },
    getNode: async ({ params }) => ok(await nodeView(params.id)),
    registerNode: async ({ body }) => {
      const node = await inventory.registerNode(body);
      return created(await nodeView(node.id), url(`/nodes/${node.id}`));
    },
    removeNode: async ({ params }) => {
      await manager.removeNode(params.id);
      return DONE;
    },

    discoverSchemas: ({ query }) => ok(inventory.schemas(query)),
    getSchema: ({ params }) => ok(inventory.schema(params.id).model),
    registerSchema: async ({ query, body }) => {
      const summary = await inventory.registerSchema(body, { id: query.id });
      return created(summary, url(`/schemas/${summary.id}`));
    },
    removeSchema: async ({ params }) => {
      await inventory.removeSchema(params.id);
      return DONE;
    },

    discoverPackages: ({ query }) => ok(inventory.packages(query)),
    getPackage: ({ params }) => ok(inventory.package(params.id)),
    discoverCandidateNodes: async ({ params, query }) =>
      ok(await manager.candidates(params.id, { all: query.all })),
    registerPackage: async ({ body }) => {
      const pkg = await inventory.registerPackage(body);
      return created(pkg, url(`/packages/${pkg.id}`));
    },
    removePackage: async ({ params }) => {
      inventory.package(params.id);
      await inventory.removePackage(params.id, manager.instances({ package: params.id }).length);
      return DONE;
    },

    runningInstances: ({ query }) => ok(manager.instances(query).map(linked)),
    getInstance: ({ params }) => ok(linked(manager.instance(params.id))),
    startInstance: async ({ body }) => createdInstance(await manager.start(body)),
    removeInstance: async ({ params }) => {
      await manager.remove(params.id);
      return DONE;
    },
    stopInstance: async ({ params }) => ok(linked(await manager.stop(params.id))),
    resumeInstance: async ({ params }) => ok(linked(await manager.resume(params.id))),
    restartInstance: async ({ params }) => ok(linked(await manager.restart(params.id))),
    moveInstance: async ({ params, body }) => ok(linked(await manager.move(params.id, body))),
    cloneInstance: async ({ params, body }) => createdInstance(await manager.clone(params.id, body)),
    snapshotInstance: async ({ params }) => {
      const snapshot = await manager.snapshot(params.id);
      return created(snapshot, url(`/snapshots/${snapshot.id}`));
    },

    listSnapshots: ({ query }) => ok(manager.snapshots(query)),
    getSnapshot: ({ params }) => ok(manager.snapshotDetails(params.id)),
    removeSnapshot: ({ params }) => {
      manager.removeSnapshot(params.id);
      return DONE;
    },
    restoreSnapshot: async ({ params, body }) => {
      const { view, created: isNew } = await manager.restore(params.id, body);
      return isNew ? createdInstance(view) : ok(linked(view));
    },

    applyManifest: async ({ query, body, headers }) =>
      ok(
        await applier.apply(parseManifest(body, headers.contentType, maxBodyBytes), {
          dryRun: query.dryRun,
          prune: query.prune,
        }),
      ),
    getManifest: ({ query, headers }) => {
      const items = applier.manifest({
        kinds: kindsOf(query.kind),
        selector: query.selector?.split(","),
      });
      if (acceptsJsonFirst(headers.accept)) return { status: 200, body: { items }, type: "application/json" };
      return { status: 200, body: manifestYaml(items), type: YAML_MEDIA_TYPE };
    },
  };
}

export function mountManagerApi(
  app: Hono,
  { manager, maxBodyBytes, publicBase, secure = (td) => td, logger }: ManagerApiOptions,
): void {
  const api = new Hono();
  api.use("*", limitBody(maxBodyBytes, "manager requests"));
  api.onError((err, c) => {
    const mapped = asManagerError(err);
    if (mapped instanceof ManagerError) return problemOf(c, mapped);
    logger?.error({ err, path: c.req.path }, "manager: unhandled error");
    return problem(c, { title: "Internal Server Error", status: 500 });
  });

  const handlerOf = handlers(manager, publicBase, secure, maxBodyBytes) as Record<string, Handler<ApiRoute>>;
  for (const route of MANAGER_API as readonly ApiRoute[]) {
    const handle = handlerOf[route.name] as Handler<ApiRoute>;
    const query = queryReader(route);
    api.on(route.method, route.path, async (c) => {
      const answer = await handle({
        params: c.req.param() as ApiRequest<ApiRoute>["params"],
        query: query(c) as ApiRequest<ApiRoute>["query"],
        body: (await readBody(c, route)) as ApiRequest<ApiRoute>["body"],
        headers: { contentType: c.req.header("content-type") ?? "", accept: c.req.header("accept") ?? "" },
      });
      if (answer.location !== undefined) c.header("Location", answer.location);
      if (answer.status === 204) return c.body(null, 204);
      if (answer.type === "application/json") return c.json(answer.body, answer.status);
      if (answer.type !== undefined)
        return c.body(answer.body as string, answer.status, { "Content-Type": answer.type });
      if (route.produces === undefined) return c.json(answer.body, answer.status);
      return c.body(JSON.stringify(answer.body), answer.status, { "Content-Type": route.produces });
    });
  }

  app.route("/api", api);
}
