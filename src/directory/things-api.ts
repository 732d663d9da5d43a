import { createHash } from "node:crypto";
import type { Context, Hono } from "hono";
import { errorMessage } from "../domain/errors.js";
import { problemOf } from "../http/error-status.js";
import { limitBody, problem } from "../http/problem.js";
import { DISCOVERY_CONTEXT_URL } from "../wot/jsonld-loader.js";
import type { JsonObject } from "../wot/rdf.js";
import { isObject } from "../wot/thing-model.js";
import { Directory, DirectoryError } from "./directory.js";
import type { ThingChange } from "./events.js";
import { gatewayOwner } from "./reserved-ids.js";
import type { DirectoryStore, StoredThing } from "./store.js";

export { isIri, mergePatch } from "./directory.js";

/**
 * The Things API of W3C WoT Discovery (section 7.3.2.1): create, retrieve, update (replace and
 * merge patch), delete and list TDs, with registration information. Thin: parsing, checks and
 * the HTTP shapes; storage is the store port's. Ids the gateway owns (its twins' and manager's TDs,
 * its graphs: reserved-ids.ts) are read-only here for every client, whatever its role: the gateway
 * writes them through the Directory, never over HTTP.
 *
 * Lost updates: GET answers an `ETag` (a hash of the stored TD and its registration, so it changes
 * with every write), and PUT, PATCH and DELETE take `If-Match` (412 when the TD is not that one any
 * more). If-Match stays optional, as WoT Discovery does not ask for it.
 */

export const TD_JSON = "application/td+json";
export const LD_JSON = "application/ld+json";
export const MERGE_PATCH = "application/merge-patch+json";

export interface ThingsApiOptions {
  /** The directory to serve; or a store, for which one is made with `now` and `onChange`. */
  directory?: Directory;
  store?: DirectoryStore;
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

function depth(value: unknown, limit: number, level = 0): boolean {
  if (level > limit) return false;
  if (Array.isArray(value)) return value.every((v) => depth(v, limit, level + 1));
  if (isObject(value)) return Object.values(value).every((v) => depth(v, limit, level + 1));
  return true;
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

/**
 * The entity tag of a stored TD: strong, from its canonical JSON (keys sorted), so the same stored
 * document has the same tag whatever store read it back. `retrieved` is not part of it.
 */
export function thingEtag(thing: StoredThing): string {
  const canonical = (value: unknown): unknown => {
    if (Array.isArray(value)) return value.map(canonical);
    if (!isObject(value)) return value;
    return Object.fromEntries(
      Object.keys(value)
        .sort()
        .map((key) => [key, canonical(value[key])]),
    );
  };
  const digest = createHash("sha256")
    .update(JSON.stringify(canonical({ td: thing.td, registration: thing.registration })))
    .digest("base64url");
  return `"${digest.slice(0, 27)}"`;
}

/** Whether an If-Match header value (`*` or entity tags) matches `current` (strong comparison). */
function ifMatches(header: string, current: StoredThing | undefined): boolean {
  if (current === undefined) return false;
  if (header.trim() === "*") return true;
  const etag = thingEtag(current);
  // Entity tags are quoted strings, optionally weak (W/), separated by commas; weak never match.
  for (const [, weak, tag] of header.matchAll(/\s*(W\/)?("[^"]*")\s*,?/g))
    if (!weak && tag === etag) return true;
  return false;
}

export function mountThingsApi(app: Hono, options: ThingsApiOptions): Directory {
  const directory =
    options.directory ??
    new Directory(options.store as DirectoryStore, { now: options.now, onChange: options.onChange });
  const { store } = directory;
  const maxDepth = options.maxDepth ?? 64;
  const maxLimit = options.maxLimit ?? 100;
  const maxBodyBytes = options.maxBodyBytes ?? 1024 * 1024;
  const limited = limitBody(maxBodyBytes);

  const badRequest = (c: Context, detail: string) =>
    problem(c, { title: "Bad Request", status: 400, detail });
  const notFound = (c: Context, id: string) =>
    problem(c, { title: "Not Found", status: 404, detail: `no Thing Description with id ${id}` });
  /** A DirectoryError as problem details; anything else propagates (validation: app.onError). */
  const refused = (c: Context, err: unknown): Response => {
    if (!(err instanceof DirectoryError)) throw err;
    return problemOf(c, err);
  };

  /** A 403 when the gateway owns `id` (checked before the body is read: nothing of it is used). */
  const owned = (c: Context, id: unknown): Response | undefined => {
    const owner = typeof id === "string" ? gatewayOwner(id) : undefined;
    if (owner === undefined) return undefined;
    return problem(c, {
      title: "Forbidden",
      status: 403,
      detail: `the gateway owns the id ${id}${owner.endsWith(":") ? ` (as every id under ${owner})` : ""} and writes its TD itself: it cannot be created, replaced, patched or deleted through the Things API`,
    });
  };

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
      return badRequest(c, `the body is not JSON: ${errorMessage(err)}`);
    }
    if (!depth(body, maxDepth)) return badRequest(c, `the body nests deeper than ${maxDepth} levels`);
    return body;
  }

  const location = (id: string) => `/things/${encodeURIComponent(id)}`;

  /**
   * Runs a client's write of `id` after its other writes (so an If-Match check and the write it
   * guards see no write in between), or answers 412 when If-Match names another version.
   */
  const writes = new Map<string, Promise<unknown>>();
  const conditional = (c: Context, id: string, write: () => Promise<Response>): Promise<Response> => {
    const ifMatch = c.req.header("if-match");
    const guarded = async () => {
      if (ifMatch !== undefined && !ifMatches(ifMatch, await directory.get(id))) {
        return problem(c, {
          title: "Precondition Failed",
          status: 412,
          detail: `the Thing Description ${id} is not the one If-Match names (${ifMatch}): it changed, or is gone; GET it again for its ETag`,
        });
      }
      return write();
    };
    const previous = writes.get(id) ?? Promise.resolve();
    const next = previous.then(guarded, guarded);
    // The caller gets `next`'s rejection; the tail only orders the writes, and must not stop at one.
    const tail = next.catch(() => undefined);
    writes.set(id, tail);
    void tail.then(() => {
      if (writes.get(id) === tail) writes.delete(id);
    });
    return next;
  };

  app.put("/things/:id", limited, async (c) => {
    const id = c.req.param("id");
    const forbidden = owned(c, id);
    if (forbidden) return forbidden;
    const body = await readJson(c, [TD_JSON, "application/json"]);
    if (body instanceof Response) return body;
    return conditional(c, id, async () => {
      try {
        const { created } = await directory.put(id, body);
        return c.body(null, created ? 201 : 204, created ? { Location: location(id) } : {});
      } catch (err) {
        return refused(c, err);
      }
    });
  });

  app.post("/things", limited, async (c) => {
    const body = await readJson(c, [TD_JSON, "application/json"]);
    if (body instanceof Response) return body;
    const forbidden = isObject(body) ? owned(c, body.id) : undefined;
    if (forbidden) return forbidden;
    try {
      const thing = await directory.create(body);
      return c.body(null, 201, { Location: location(thing.id) });
    } catch (err) {
      return refused(c, err);
    }
  });

  app.get("/things/:id", async (c) => {
    const id = c.req.param("id");
    const thing = await directory.get(id);
    if (!thing) return notFound(c, id);
    return c.body(JSON.stringify(enriched(thing, directory.now())), 200, {
      "Content-Type": TD_JSON,
      ETag: thingEtag(thing),
    });
  });

  app.patch("/things/:id", limited, async (c) => {
    const id = c.req.param("id");
    const forbidden = owned(c, id);
    if (forbidden) return forbidden;
    const body = await readJson(c, [MERGE_PATCH]);
    if (body instanceof Response) return body;
    return conditional(c, id, async () => {
      try {
        await directory.patch(id, body);
        return c.body(null, 204);
      } catch (err) {
        return refused(c, err);
      }
    });
  });

  app.delete("/things/:id", async (c) => {
    const id = c.req.param("id");
    const forbidden = owned(c, id);
    if (forbidden) return forbidden;
    return conditional(c, id, async () =>
      (await directory.delete(id)) ? c.body(null, 204) : notFound(c, id),
    );
  });

  app.get("/things", async (c) => {
    const format = c.req.query("format") ?? "array";
    if (format !== "array" && format !== "collection") {
      return badRequest(c, `format must be "array" or "collection", not ${JSON.stringify(format)}`);
    }
    const offset = Number(c.req.query("offset") ?? 0);
    const limit = Number(c.req.query("limit") ?? maxLimit);
    // Safe integers only: a larger one (1e20) is a whole number to JavaScript, not to SQLite.
    if (!Number.isSafeInteger(offset) || offset < 0)
      return badRequest(c, "offset must be a whole number from 0 to 2^53-1");
    if (!Number.isSafeInteger(limit) || limit < 1)
      return badRequest(c, "limit must be a whole number from 1 to 2^53-1");
    // The server's page may be smaller than the limit asked for; links carry the client's limit.
    const page = Math.min(limit, maxLimit);
    const [things, total, revision] = await Promise.all([
      store.list(offset, page),
      store.count(),
      store.revision(),
    ]);
    const at = directory.now();
    const tds = things.map((thing) => enriched(thing, at));
    const links = [
      `</things${format === "collection" ? "?format=collection" : ""}>; rel="canonical"; etag="${revision}"`,
    ];
    if (offset + things.length < total) {
      links.push(
        `</things?offset=${offset + things.length}&limit=${limit}${format === "collection" ? "&format=collection" : ""}>; rel="next"`,
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
              ? { next: `/things?offset=${offset + things.length}&limit=${limit}&format=collection` }
              : {}),
          };
    return c.body(JSON.stringify(body), 200, { "Content-Type": LD_JSON, Link: links.join(", ") });
  });
  return directory;
}
