import { randomUUID } from "node:crypto";
import type { Context, Hono } from "hono";
import { bodyLimit } from "hono/body-limit";
import { problem } from "../http/problem.js";
import { DISCOVERY_CONTEXT_URL } from "../wot/jsonld-loader.js";
import type { JsonObject } from "../wot/rdf.js";
import { isObject } from "../wot/thing-model.js";
import { ValidationError, validateThingDescription } from "../wot/validation.js";
import type { ThingChange } from "./events.js";
import { type DirectoryStore, type Registration, STATUS_GRAPH_PREFIX, type StoredThing } from "./store.js";

/**
 * The Things API of W3C WoT Discovery (section 7.3.2.1): create, retrieve, update (replace and
 * merge patch), delete and list TDs, with registration information. Thin: parsing, checks and
 * the HTTP shapes; storage is the store port's.
 */

export const TD_JSON = "application/td+json";
export const LD_JSON = "application/ld+json";
export const MERGE_PATCH = "application/merge-patch+json";

export interface ThingsApiOptions {
  store: DirectoryStore;
  /** Largest request body, bytes (default 1 MiB). */
  maxBodyBytes?: number;
  /** Deepest JSON nesting accepted (default 64). */
  maxDepth?: number;
  /** Largest page of a listing (default 100). */
  maxLimit?: number;
  now?: () => number;
  /** Called after each acknowledged create, update and delete (notifications). */
  onChange?: (change: ThingChange) => void;
}

/** Ids are absolute IRIs without the characters IRIs exclude (RFC 3987). */
export function isIri(id: string): boolean {
  return /^[A-Za-z][A-Za-z0-9+.-]*:[^\s<>"{}|\\^`]+$/.test(id);
}

function depth(value: unknown, limit: number, level = 0): boolean {
  if (level > limit) return false;
  if (Array.isArray(value)) return value.every((v) => depth(v, limit, level + 1));
  if (isObject(value)) return Object.values(value).every((v) => depth(v, limit, level + 1));
  return true;
}

/** RFC 7396 JSON Merge Patch. */
export function mergePatch(target: unknown, patch: unknown): unknown {
  if (!isObject(patch)) return patch;
  const out: JsonObject = isObject(target) ? { ...target } : {};
  for (const [key, value] of Object.entries(patch)) {
    if (value === null) delete out[key];
    else out[key] = mergePatch(out[key], value);
  }
  return out;
}

/** The TD as the directory serves it: with the discovery context and its registration information. */
export function enriched(thing: StoredThing, retrieved?: number): JsonObject {
  const td = structuredClone(thing.td);
  const context = Array.isArray(td["@context"]) ? [...td["@context"]] : [td["@context"]];
  if (!context.includes(DISCOVERY_CONTEXT_URL)) context.push(DISCOVERY_CONTEXT_URL);
  td["@context"] = context;
  td.registration = {
    ...thing.registration,
    ...(retrieved === undefined ? {} : { retrieved: new Date(retrieved).toISOString() }),
  };
  return td;
}

export function mountThingsApi(app: Hono, options: ThingsApiOptions): void {
  const { store } = options;
  const now = options.now ?? Date.now;
  const changed = (change: ThingChange) => options.onChange?.(change);
  const maxDepth = options.maxDepth ?? 64;
  const maxLimit = options.maxLimit ?? 100;
  const limited = bodyLimit({
    maxSize: options.maxBodyBytes ?? 1024 * 1024,
    onError: (c) =>
      problem(c, {
        title: "Content Too Large",
        status: 413,
        detail: `request bodies are limited to ${options.maxBodyBytes ?? 1024 * 1024} bytes`,
      }),
  });

  const badRequest = (c: Context, detail: string) =>
    problem(c, { title: "Bad Request", status: 400, detail });
  const notFound = (c: Context, id: string) =>
    problem(c, { title: "Not Found", status: 404, detail: `no Thing Description with id ${id}` });

  /** The JSON body, or a problem response saying what is wrong with it. */
  async function readJson(c: Context, mediaTypes: string[]): Promise<unknown | Response> {
    const type = (c.req.header("content-type") ?? "").split(";")[0]?.trim().toLowerCase() ?? "";
    if (!mediaTypes.includes(type)) {
      return problem(c, {
        title: "Unsupported Media Type",
        status: 415,
        detail: `expected ${mediaTypes.join(" or ")}, got ${type || "no content type"}`,
      });
    }
    let body: unknown;
    try {
      body = JSON.parse(await c.req.text());
    } catch (err) {
      return badRequest(c, `the body is not JSON: ${(err as Error).message}`);
    }
    if (!depth(body, maxDepth)) return badRequest(c, `the body nests deeper than ${maxDepth} levels`);
    return body;
  }

  /** Validates a TD and works out its registration; throws ValidationError. */
  function prepare(
    td: JsonObject,
    previous: StoredThing | undefined,
  ): { td: JsonObject; registration: Registration } {
    const { registration: given, ...plain } = td;
    const result = validateThingDescription(td);
    if (!result.valid) throw new ValidationError("Thing Description", result.errors);
    const at = now();
    const registration: Registration = {
      created: previous?.registration.created ?? new Date(at).toISOString(),
      modified: new Date(at).toISOString(),
    };
    if (isObject(given)) {
      if (typeof given.ttl === "number" && given.ttl > 0) {
        registration.ttl = given.ttl;
        registration.expires = new Date(at + given.ttl * 1000).toISOString();
      } else if (typeof given.expires === "string" && !Number.isNaN(Date.parse(given.expires))) {
        registration.expires = new Date(Date.parse(given.expires)).toISOString();
      }
    }
    // The discovery context is the directory's to add; store the TD as the client sent it otherwise.
    return { td: plain, registration };
  }

  app.put("/things/:id", limited, async (c) => {
    const id = c.req.param("id");
    if (!isIri(id)) return badRequest(c, `the id ${JSON.stringify(id)} is not an absolute IRI`);
    // Twins' status graphs are named urn:dtc:status:...; a TD there would pass for one.
    if (id.startsWith(STATUS_GRAPH_PREFIX))
      return badRequest(c, `ids under ${STATUS_GRAPH_PREFIX} are reserved`);
    const body = await readJson(c, [TD_JSON, "application/json"]);
    if (body instanceof Response) return body;
    if (!isObject(body)) return badRequest(c, "the body is not a JSON object (a Thing Description)");
    if (body.id !== undefined && body.id !== id) {
      return badRequest(c, `the TD's id ${JSON.stringify(body.id)} differs from the id in the URL ${id}`);
    }
    const previous = await store.get(id);
    const { td, registration } = prepare({ ...body, id }, previous);
    const thing = { id, td, registration };
    const { created } = await store.put(thing);
    changed(
      created ? { type: "thing_created", thing } : { type: "thing_updated", thing, previous: previous?.td },
    );
    return c.body(
      null,
      created ? 201 : 204,
      created ? { Location: `/things/${encodeURIComponent(id)}` } : {},
    );
  });

  app.post("/things", limited, async (c) => {
    const body = await readJson(c, [TD_JSON, "application/json"]);
    if (body instanceof Response) return body;
    if (!isObject(body)) return badRequest(c, "the body is not a JSON object (a Thing Description)");
    if (body.id !== undefined) {
      return badRequest(
        c,
        "POST /things registers anonymous TDs: this one has an id, PUT it to /things/{id}",
      );
    }
    const id = `urn:uuid:${randomUUID()}`;
    const { td, registration } = prepare({ ...body, id }, undefined);
    const thing = { id, td, registration };
    await store.put(thing);
    changed({ type: "thing_created", thing });
    return c.body(null, 201, { Location: `/things/${encodeURIComponent(id)}` });
  });

  app.get("/things/:id", async (c) => {
    const id = c.req.param("id");
    const thing = await store.get(id);
    if (!thing) return notFound(c, id);
    return c.body(JSON.stringify(enriched(thing, now())), 200, { "Content-Type": TD_JSON });
  });

  app.patch("/things/:id", limited, async (c) => {
    const id = c.req.param("id");
    const body = await readJson(c, [MERGE_PATCH]);
    if (body instanceof Response) return body;
    if (!isObject(body)) return badRequest(c, "a merge patch of a TD must be a JSON object");
    const previous = await store.get(id);
    if (!previous) return notFound(c, id);
    const patched = mergePatch(previous.td, body) as JsonObject;
    if (patched.id !== id) return badRequest(c, "a patch must not change the TD's id");
    const { td, registration } = prepare(patched, previous);
    const thing = { id, td, registration };
    await store.put(thing);
    changed({ type: "thing_updated", thing, previous: previous.td });
    return c.body(null, 204);
  });

  app.delete("/things/:id", async (c) => {
    const id = c.req.param("id");
    if (!(await store.delete(id))) return notFound(c, id);
    changed({ type: "thing_deleted", id });
    return c.body(null, 204);
  });

  app.get("/things", async (c) => {
    const format = c.req.query("format") ?? "array";
    if (format !== "array" && format !== "collection") {
      return badRequest(c, `format must be "array" or "collection", not ${JSON.stringify(format)}`);
    }
    const offset = Number(c.req.query("offset") ?? 0);
    const limit = Number(c.req.query("limit") ?? maxLimit);
    if (!Number.isInteger(offset) || offset < 0) return badRequest(c, "offset must be a whole number >= 0");
    if (!Number.isInteger(limit) || limit < 1) return badRequest(c, "limit must be a whole number >= 1");
    const page = Math.min(limit, maxLimit);
    const [things, total, revision] = await Promise.all([
      store.list(offset, page),
      store.count(),
      store.revision(),
    ]);
    const at = now();
    const tds = things.map((thing) => enriched(thing, at));
    const links = [
      `</things?offset=0&limit=${page}${format === "collection" ? "&format=collection" : ""}>; rel="canonical"; etag="${revision}"`,
    ];
    if (offset + things.length < total) {
      links.push(
        `</things?offset=${offset + things.length}&limit=${page}${format === "collection" ? "&format=collection" : ""}>; rel="next"`,
      );
    }
    const body =
      format === "array"
        ? tds
        : {
            "@context": DISCOVERY_CONTEXT_URL,
            "@type": "ThingCollection",
            total,
            members: tds,
            ...(offset + things.length < total
              ? { next: `/things?offset=${offset + things.length}&limit=${page}&format=collection` }
              : {}),
          };
    return c.body(JSON.stringify(body), 200, { "Content-Type": LD_JSON, Link: links.join(", ") });
  });
}
