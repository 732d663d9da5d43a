import { join } from "node:path";
import type { Context, Hono } from "hono";
import { errorMessage } from "../domain/errors.js";
import { ontologyDir, packageVersion, readJsonFile } from "../paths.js";
import { instantiate, TD_MEDIA_TYPE } from "../wot/instantiate.js";
import { ThingModelRegistry } from "../wot/model-registry.js";
import type { JsonObject } from "../wot/rdf.js";
import { AFFORDANCE_KINDS, isObject, type Link, type ThingModel } from "../wot/thing-model.js";

/**
 * The directory's own Thing Description at /.well-known/wot (WoT Discovery sections 6.2 and 7.3):
 * the W3C Thing Description Directory Thing Model instantiated for this server, with absolute form
 * hrefs under its base URL.
 */

/** The W3C TDD Thing Model's IRI (served from ontology/w3c/directory.tm.jsonld here). */
export const DIRECTORY_TM_IRI = "https://www.w3.org/2022/wot/discovery/model/directory";
export const WELL_KNOWN_PATH = "/.well-known/wot";
/**
 * Default id. Not derived from the base URL: the TD is answered with whatever base URL a deployment
 * is reached at, and its id must not change with it. Federated deployments set their own.
 */
export const DIRECTORY_ID = "urn:dtc:directory";

export interface DirectoryTdOptions {
  /** The TD's id (default urn:dtc:directory). */
  id?: string;
  /** Default "dtc Thing Description Directory". */
  title?: string;
  /** Whether the TD offers the SPARQL search, the JSONPath search and the notifications (default all). */
  sparql?: boolean;
  jsonpath?: boolean;
  notifications?: boolean;
}

export interface WellKnownOptions extends DirectoryTdOptions {
  /** This server's base URL as clients reach it (e.g. the public URL); hrefs are built on it. */
  baseUrl: (c: Context) => string;
  /** Extra links, read on every request (e.g. the manager's TD once it runs). */
  links?: () => Link[];
  /** Declares the gateway's security in the TD (src/security/td-security.ts). */
  secure?: (td: JsonObject) => JsonObject;
}

let directoryModel: ThingModel | undefined;

/** The W3C model, adapted where it does not make a valid TD 1.1 or says less than this server does. */
function model(options: DirectoryTdOptions): ThingModel {
  directoryModel ??= readJsonFile(join(ontologyDir, "w3c/directory.tm.jsonld")) as ThingModel;
  const tm = structuredClone(directoryModel);
  const omit = new Set(["searchXPath"]); // not implemented
  if (options.sparql === false) omit.add("searchSPARQL");
  if (options.jsonpath === false) omit.add("searchJSONPath");
  if (options.notifications === false)
    for (const name of ["thingCreated", "thingUpdated", "thingDeleted"]) omit.add(name);
  for (const kind of AFFORDANCE_KINDS) {
    const affordances = tm[kind] ?? {};
    for (const name of Object.keys(affordances)) if (omit.has(name)) delete affordances[name];
    for (const affordance of Object.values(affordances)) {
      for (const form of (affordance.forms as JsonObject[] | undefined) ?? []) {
        // TD 1.1 requires contentType on `response`; the model's 201/204 responses have no body,
        // so keep their status code and headers as an additional success response instead.
        if (isObject(form.response) && form.response.contentType === undefined) {
          const additional = Array.isArray(form.additionalResponses) ? form.additionalResponses : [];
          form.additionalResponses = [{ success: true, ...form.response }, ...additional];
          delete form.response;
        }
      }
    }
  }
  tm["tm:optional"] = ((tm["tm:optional"] as string[] | undefined) ?? []).filter(
    (pointer) => !omit.has(pointer.split("/")[2] ?? ""),
  );
  // The listing is read-only: without this, its form would default to readproperty and writeproperty.
  if (tm.properties?.things) tm.properties.things.readOnly = true;
  tm.title = options.title ?? "dtc Thing Description Directory";
  // The model's version is the model's; a TD's names its instance (set after instantiation).
  delete tm.version;
  return tm;
}

/** The directory's TD for a server at `baseUrl`; validated (instantiate throws otherwise). */
export async function directoryThingDescription(
  baseUrl: string,
  options: DirectoryTdOptions = {},
): Promise<JsonObject> {
  if (!/^https?:$/.test(URL.parse(baseUrl)?.protocol ?? "")) {
    throw new Error(`the directory's base URL ${JSON.stringify(baseUrl)} is not an absolute http(s) URL`);
  }
  const base = baseUrl.replace(/\/+$/, "");
  let td: JsonObject;
  try {
    td = await instantiate(
      new ThingModelRegistry(),
      { iri: DIRECTORY_TM_IRI, model: model(options) },
      { placeholders: { DIRECTORY_BASE_URL: base }, id: options.id ?? DIRECTORY_ID, base },
    );
  } catch (err) {
    // Our fault, not the client's: keep a ValidationError from turning into a 400.
    throw new Error(`cannot build the directory's Thing Description: ${errorMessage(err)}`, {
      cause: err,
    });
  }
  td.version = { instance: packageVersion };
  // Absolute hrefs, by concatenation: they are URI templates ("{?offset,limit}"), which URL
  // resolution would percent-encode, and a base with a path (behind a proxy) must keep it.
  for (const kind of AFFORDANCE_KINDS) {
    for (const affordance of Object.values((td[kind] as Record<string, JsonObject> | undefined) ?? {})) {
      for (const form of affordance.forms as JsonObject[]) {
        if (typeof form.href === "string" && form.href.startsWith("/")) form.href = `${base}${form.href}`;
      }
    }
  }
  return td;
}

export function mountWellKnown(app: Hono, options: WellKnownOptions): void {
  // One TD per base URL seen; a few, unless the base URL comes from request headers.
  const cache = new Map<string, Promise<JsonObject>>();
  const tdFor = (base: string): Promise<JsonObject> => {
    let td = cache.get(base);
    if (!td) {
      if (cache.size >= 16) cache.delete(cache.keys().next().value as string);
      td = directoryThingDescription(base, options);
      // A failed build is not kept; the request awaiting it gets the error.
      td.catch(() => cache.delete(base));
      cache.set(base, td);
    }
    return td;
  };

  // Hono serves HEAD from this GET route with the same headers and no body (WoT Discovery).
  app.get(WELL_KNOWN_PATH, async (c) => {
    const td = { ...(await tdFor(options.baseUrl(c))) };
    const secured = options.secure ? options.secure(td) : td;
    const extra = options.links?.() ?? [];
    if (extra.length > 0) secured.links = [...((secured.links as Link[] | undefined) ?? []), ...extra];
    return c.body(JSON.stringify(secured), 200, { "Content-Type": TD_MEDIA_TYPE });
  });
}
