import { type Context, Hono } from "hono";
import { limitBody, problem } from "../http/problem.js";
import type { Logger } from "../logger.js";
import { TM_MEDIA_TYPE } from "../wot/instantiate.js";
import type { JsonObject } from "../wot/rdf.js";
import { ManagerError } from "./errors.js";
import { asManagerError, type DtcManager } from "./manager.js";
import { managerThingDescription } from "./manager-td.js";

/**
 * The manager's HTTP API under /api (JSON; errors as RFC 9457 problem details): inventory (nodes,
 * schemas, packages), deployment and management of instances, snapshots, and the manager's own TD.
 * Thin: parse, call the manager, answer.
 */

export interface ManagerApiOptions {
  manager: DtcManager;
  maxBodyBytes: number;
  publicBase: () => string;
  /** Declares the gateway's security in the manager's TD. */
  secure?: (td: JsonObject) => JsonObject;
  logger?: Logger;
}

const TITLES = {
  400: "Bad Request",
  404: "Not Found",
  409: "Conflict",
  502: "Bad Gateway",
  503: "Service Unavailable",
  504: "Gateway Timeout",
} as const;

async function body(c: Context): Promise<unknown> {
  const text = await c.req.text();
  if (text.trim() === "") return {};
  try {
    return JSON.parse(text);
  } catch (err) {
    throw new ManagerError(400, `the body is not JSON: ${(err as Error).message}`);
  }
}

function flag(value: string | undefined, name: string): boolean | undefined {
  if (value === undefined) return undefined;
  if (value === "true") return true;
  if (value === "false") return false;
  throw new ManagerError(400, `${name} must be true or false`, [
    { field: name, description: "must be true or false" },
  ]);
}

export function mountManagerApi(
  app: Hono,
  { manager, maxBodyBytes, publicBase, secure = (td) => td, logger }: ManagerApiOptions,
): void {
  const api = new Hono();
  const inventory = manager.inventory;
  api.use("*", limitBody(maxBodyBytes, "manager requests"));
  api.onError((err, c) => {
    const mapped = asManagerError(err);
    if (mapped instanceof ManagerError) {
      return problem(c, {
        title: TITLES[mapped.status],
        status: mapped.status,
        detail: mapped.message,
        ...(mapped.validationErrors ? { validationErrors: mapped.validationErrors } : {}),
      });
    }
    logger?.error({ err, path: c.req.path }, "manager: unhandled error");
    return problem(c, { title: "Internal Server Error", status: 500 });
  });

  // The manager's own Thing Description: every Table I function as an action.
  api.get("/td", (c) =>
    c.body(JSON.stringify(secure(managerThingDescription(publicBase()))), 200, {
      "Content-Type": "application/td+json",
    }),
  );

  // ---- nodes
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
  api.post("/nodes", async (c) => {
    const node = await inventory.registerNode(await body(c));
    c.header("Location", `${publicBase()}/api/nodes/${node.id}`);
    return c.json(await nodeView(node.id), 201);
  });
  api.get("/nodes", async (c) => {
    const nodes = inventory.nodes({
      platform: c.req.query("platform"),
      tier: c.req.query("tier"),
      labels: c.req.queries("label") ?? [],
      gpu: flag(c.req.query("gpu"), "gpu"),
    });
    return c.json(await Promise.all(nodes.map((n) => nodeView(n.id))));
  });
  api.get("/nodes/:id", async (c) => c.json(await nodeView(c.req.param("id"))));
  api.delete("/nodes/:id", async (c) => {
    await manager.removeNode(c.req.param("id"));
    return c.body(null, 204);
  });

  // ---- schemas
  api.post("/schemas", async (c) => {
    const summary = await inventory.registerSchema(await body(c), { id: c.req.query("id") });
    c.header("Location", `${publicBase()}/api/schemas/${summary.id}`);
    return c.json(summary, 201);
  });
  api.get("/schemas", (c) =>
    c.json(
      inventory.schemas({
        q: c.req.query("q"),
        type: c.req.query("type"),
        affordance: c.req.query("affordance"),
      }),
    ),
  );
  api.get("/schemas/:id", (c) =>
    c.body(JSON.stringify(inventory.schema(c.req.param("id")).model), 200, { "Content-Type": TM_MEDIA_TYPE }),
  );
  api.delete("/schemas/:id", async (c) => {
    await inventory.removeSchema(c.req.param("id"));
    return c.body(null, 204);
  });

  // ---- packages
  api.post("/packages", async (c) => {
    const pkg = await inventory.registerPackage(await body(c));
    c.header("Location", `${publicBase()}/api/packages/${pkg.id}`);
    return c.json(pkg, 201);
  });
  api.get("/packages", (c) =>
    c.json(inventory.packages({ schema: c.req.query("schema"), platform: c.req.query("platform") })),
  );
  api.get("/packages/:id", (c) => c.json(inventory.package(c.req.param("id"))));
  api.get("/packages/:id/nodes", async (c) =>
    c.json(await manager.candidates(c.req.param("id"), { all: flag(c.req.query("all"), "all") })),
  );
  api.delete("/packages/:id", async (c) => {
    const id = c.req.param("id");
    inventory.package(id);
    await inventory.removePackage(id, manager.instances({ package: id }).length);
    return c.body(null, 204);
  });

  // ---- instances
  const created = (c: Context, view: { id: string }) => {
    c.header("Location", `${publicBase()}/api/instances/${view.id}`);
    return c.json(view, 201);
  };
  api.post("/instances", async (c) => created(c, await manager.start(await body(c))));
  api.get("/instances", (c) =>
    c.json(
      manager.instances({
        schema: c.req.query("schema"),
        node: c.req.query("node"),
        state: c.req.query("state"),
        package: c.req.query("package"),
      }),
    ),
  );
  api.get("/instances/:id", (c) => c.json(manager.instance(c.req.param("id"))));
  api.delete("/instances/:id", async (c) => {
    await manager.remove(c.req.param("id"));
    return c.body(null, 204);
  });
  api.post("/instances/:id/stop", async (c) => c.json(await manager.stop(c.req.param("id"))));
  api.post("/instances/:id/start", async (c) => c.json(await manager.resume(c.req.param("id"))));
  api.post("/instances/:id/restart", async (c) => c.json(await manager.restart(c.req.param("id"))));
  api.post("/instances/:id/move", async (c) => c.json(await manager.move(c.req.param("id"), await body(c))));
  api.post("/instances/:id/clone", async (c) =>
    created(c, await manager.clone(c.req.param("id"), await body(c))),
  );
  api.post("/instances/:id/snapshots", async (c) => {
    const snapshot = await manager.snapshot(c.req.param("id"));
    c.header("Location", `${publicBase()}/api/snapshots/${snapshot.id}`);
    return c.json(snapshot, 201);
  });

  // ---- snapshots
  api.get("/snapshots", (c) => c.json(manager.snapshots({ instance: c.req.query("instance") })));
  api.get("/snapshots/:id", (c) => c.json(manager.snapshotDetails(c.req.param("id"))));
  api.delete("/snapshots/:id", (c) => {
    manager.removeSnapshot(c.req.param("id"));
    return c.body(null, 204);
  });
  api.post("/snapshots/:id/restore", async (c) => {
    const { view, created: isNew } = await manager.restore(c.req.param("id"), await body(c));
    return isNew ? created(c, view) : c.json(view);
  });

  app.route("/api", api);
}
