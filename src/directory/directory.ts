import { randomUUID } from "node:crypto";
import oxigraph from "oxigraph";
import { DtcError, isDtcError } from "../domain/errors.js";
import { withSpan } from "../observability/tracing.js";
import type { JsonObject } from "../wot/rdf.js";
import { isObject } from "../wot/thing-model.js";
import { ValidationError, validateThingDescription } from "../wot/validation.js";
import type { ThingChange } from "./events.js";
import { graphIdPrefix } from "./reserved-ids.js";
import type { DirectoryStore, Registration, StoredThing } from "./store.js";

/**
 * The directory's write rules, shared by the Things API and the gateway's own registrations (twins'
 * TDs): ids, validation, registration information, expiry, and a change notification after each
 * acknowledged write. Storage is the store port's; HTTP shapes are the Things API's, which also keeps
 * clients off the ids the gateway owns (reserved-ids.ts): this class writes them for the gateway.
 */

/** A write the directory refuses: `invalid` (the id or the TD) or `notFound`. */
export class DirectoryError extends DtcError {
  constructor(kind: "invalid" | "notFound", message: string) {
    super(kind, message);
    this.name = "DirectoryError";
  }
}

/**
 * Ids are absolute IRIs (RFC 3987), as Oxigraph's parser checks them: an id names the TD's graph,
 * so one that is not a valid IRI could not be searched.
 */
export function isIri(id: string): boolean {
  if (!/^[A-Za-z][A-Za-z0-9+.-]*:/.test(id)) return false;
  try {
    oxigraph.namedNode(id);
    return true;
  } catch {
    return false;
  }
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

/**
 * Epoch ms of an RFC 3339 date-time (the schema checked its syntax). JavaScript dates have no leap
 * seconds: 23:59:60 is read as the second after 23:59:59, the same instant in UTC-smeared time.
 */
/** The longest registration ttl taken, seconds: 100 years. */
const MAX_TTL_SECONDS = 100 * 365 * 86_400;

function expiryOf(dateTime: string): number {
  const parsed = Date.parse(dateTime);
  if (!Number.isNaN(parsed)) return parsed;
  const leap = Date.parse(dateTime.replace(/(T\d{2}:\d{2}:)60/i, "$159"));
  if (!Number.isNaN(leap)) return leap + 1000;
  throw new DirectoryError(
    "invalid",
    `registration.expires ${JSON.stringify(dateTime)} is not a date-time this directory can read`,
  );
}

export interface DirectoryOptions {
  now?: () => number;
  /** Called after each acknowledged create, update and delete (notifications). */
  onChange?: (change: ThingChange) => void;
  /** Told of every write and its outcome, "ok" or the error's kind (the gateway's metrics). */
  observeWrite?: (operation: DirectoryWrite, outcome: string) => void;
}

export type DirectoryWrite = "create" | "update" | "patch" | "delete";

export class Directory {
  readonly store: DirectoryStore;
  readonly #now: () => number;
  readonly #listeners = new Set<(change: ThingChange) => void>();
  readonly #observeWrite: DirectoryOptions["observeWrite"];

  constructor(store: DirectoryStore, options: DirectoryOptions = {}) {
    this.store = store;
    this.#now = options.now ?? Date.now;
    if (options.onChange) this.#listeners.add(options.onChange);
    this.#observeWrite = options.observeWrite;
  }

  /** `write`, told to the observer: `ok` names the operation a success was (a PUT creates or updates). */
  async #observed<T>(
    operation: DirectoryWrite,
    write: () => Promise<T>,
    ok: (result: T) => [DirectoryWrite, string] = () => [operation, "ok"],
  ): Promise<T> {
    const observe = this.#observeWrite;
    if (!observe) return write();
    let result: T;
    try {
      result = await write();
    } catch (err) {
      observe(operation, isDtcError(err) ? err.kind : "failed");
      throw err;
    }
    observe(...ok(result));
    return result;
  }

  now(): number {
    return this.#now();
  }

  /** Calls `listener` after every acknowledged change; returns a function that stops it. */
  onChange(listener: (change: ThingChange) => void): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  #changed(change: ThingChange): void {
    for (const listener of this.#listeners) listener(change);
  }

  /** Validates a TD and works out its registration information; throws ValidationError. */
  #prepare(td: JsonObject, previous: StoredThing | undefined): StoredThing {
    const { registration: given, ...plain } = td;
    const result = validateThingDescription(td);
    if (!result.valid) throw new ValidationError("Thing Description", result.errors);
    const at = this.#now();
    const registration: Registration = {
      created: previous?.registration.created ?? new Date(at).toISOString(),
      modified: new Date(at).toISOString(),
    };
    if (isObject(given)) {
      // WoT Discovery: with a ttl, the server computes expires and ignores the client's.
      if (typeof given.ttl === "number" && given.ttl > 0) {
        // Far beyond any use, and past the last instant a Date holds (8.64e15 ms) expires could not be written.
        if (!Number.isFinite(given.ttl) || given.ttl > MAX_TTL_SECONDS) {
          throw new ValidationError("Thing Description", [
            {
              field: "registration.ttl",
              description: `must be at most ${MAX_TTL_SECONDS} seconds (100 years)`,
            },
          ]);
        }
        registration.ttl = given.ttl;
        registration.expires = new Date(at + given.ttl * 1000).toISOString();
      } else if (typeof given.expires === "string") {
        registration.expires = new Date(expiryOf(given.expires)).toISOString();
      }
    }
    // The discovery context is the directory's to add; store the TD as the client sent it otherwise.
    return { id: td.id as string, td: plain, registration };
  }

  #checkId(id: string): void {
    if (!isIri(id))
      throw new DirectoryError("invalid", `the id ${JSON.stringify(id)} is not an absolute IRI`);
    // A TD named like a status graph would pass for one; one named like a record could erase them.
    const reserved = graphIdPrefix(id);
    if (reserved) throw new DirectoryError("invalid", `ids under ${reserved} are reserved`);
  }

  /** Creates or replaces the TD with id `id` (a refused one counts as an update). */
  put(id: string, td: unknown): Promise<{ created: boolean; thing: StoredThing }> {
    return withSpan("dtc.directory.put", { "dtc.td": id }, () =>
      this.#observed(
        "update",
        () => this.#put(id, td),
        (r) => [r.created ? "create" : "update", "ok"],
      ),
    );
  }

  async #put(id: string, td: unknown): Promise<{ created: boolean; thing: StoredThing }> {
    this.#checkId(id);
    if (!isObject(td))
      throw new DirectoryError("invalid", "the body is not a JSON object (a Thing Description)");
    if (td.id !== undefined && td.id !== id) {
      throw new DirectoryError(
        "invalid",
        `the TD's id ${JSON.stringify(td.id)} differs from the id in the URL ${id}`,
      );
    }
    const previous = await this.store.get(id);
    const thing = this.#prepare({ ...td, id }, previous);
    const { created } = await this.store.put(thing);
    this.#changed(
      created ? { type: "thing_created", thing } : { type: "thing_updated", thing, previous: previous?.td },
    );
    return { created, thing };
  }

  /** Registers an anonymous TD under a new `urn:uuid:` id (UUID v4, as WoT Discovery recommends). */
  create(td: unknown): Promise<StoredThing> {
    return withSpan("dtc.directory.create", {}, () => this.#observed("create", () => this.#create(td)));
  }

  async #create(td: unknown): Promise<StoredThing> {
    if (!isObject(td))
      throw new DirectoryError("invalid", "the body is not a JSON object (a Thing Description)");
    if (td.id !== undefined) {
      throw new DirectoryError(
        "invalid",
        "POST /things registers anonymous TDs: this one has an id, PUT it to /things/{id}",
      );
    }
    const thing = this.#prepare({ ...td, id: `urn:uuid:${randomUUID()}` }, undefined);
    await this.store.put(thing);
    this.#changed({ type: "thing_created", thing });
    return thing;
  }

  /** Applies an RFC 7396 merge patch to the TD with id `id`. */
  patch(id: string, patch: unknown): Promise<StoredThing> {
    return withSpan("dtc.directory.patch", { "dtc.td": id }, () =>
      this.#observed("patch", () => this.#patch(id, patch)),
    );
  }

  async #patch(id: string, patch: unknown): Promise<StoredThing> {
    if (!isObject(patch)) throw new DirectoryError("invalid", "a merge patch of a TD must be a JSON object");
    const previous = await this.store.get(id);
    if (!previous) throw new DirectoryError("notFound", `no Thing Description with id ${id}`);
    const patched = mergePatch(previous.td, patch) as JsonObject;
    if (patched.id !== id) throw new DirectoryError("invalid", "a patch must not change the TD's id");
    const thing = this.#prepare(patched, previous);
    await this.store.put(thing);
    this.#changed({ type: "thing_updated", thing, previous: previous.td });
    return thing;
  }

  /** Deletes the TD with id `id`; false when there was none. */
  delete(id: string): Promise<boolean> {
    return withSpan("dtc.directory.delete", { "dtc.td": id }, () =>
      this.#observed(
        "delete",
        () => this.#delete(id),
        (deleted) => ["delete", deleted ? "ok" : "notFound"],
      ),
    );
  }

  async #delete(id: string): Promise<boolean> {
    if (!(await this.store.delete(id))) return false;
    this.#changed({ type: "thing_deleted", id });
    return true;
  }

  get(id: string): Promise<StoredThing | undefined> {
    return this.store.get(id);
  }
}
