import type { JsonObject } from "../wot/rdf.js";
import type { StoredThing } from "./store.js";

/** A change to the directory's contents, as the notifications of WoT Discovery report them. */
export type ThingChange =
  | { type: "thing_created"; thing: StoredThing }
  /** `previous` is the TD before the update (without registration information). */
  | { type: "thing_updated"; thing: StoredThing; previous?: JsonObject }
  | { type: "thing_deleted"; id: string };

export type ThingChangeType = ThingChange["type"];
