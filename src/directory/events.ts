import { isDeepStrictEqual } from "node:util";
import type { JsonObject } from "../wot/rdf.js";
import { isObject } from "../wot/thing-model.js";
import type { StoredThing } from "./store.js";
import { enriched } from "./things-api.js";

/** A change to the directory's contents, as the notifications of WoT Discovery report them. */
export type ThingChange =
  | { type: "thing_created"; thing: StoredThing }
  /** `previous` is the TD before the update (without registration information). */
  | { type: "thing_updated"; thing: StoredThing; previous?: JsonObject }
  | { type: "thing_deleted"; id: string };

export type ThingChangeType = ThingChange["type"];

/** The event types of WoT Discovery notifications (section 7.3.2.3). */
export const THING_CHANGE_TYPES: readonly ThingChangeType[] = [
  "thing_created",
  "thing_updated",
  "thing_deleted",
];

export const isThingChangeType = (value: string): value is ThingChangeType =>
  (THING_CHANGE_TYPES as readonly string[]).includes(value);

/**
 * An RFC 7396 JSON Merge Patch that turns `previous` into `next`: members `next` lacks are null,
 * changed members are patched recursively, arrays and other values are replaced whole. Limitation of
 * the format (not of this function): a member whose new value is null cannot be expressed (null
 * means "remove"), so for such a `next` applying the patch removes the member instead.
 */
export function mergeDiff(previous: unknown, next: unknown): unknown {
  if (!isObject(previous) || !isObject(next)) return next;
  const patch: JsonObject = {};
  for (const key of Object.keys(previous)) if (!(key in next)) patch[key] = null;
  for (const [key, value] of Object.entries(next)) {
    if (!(key in previous)) patch[key] = value;
    else if (!isDeepStrictEqual(previous[key], value)) patch[key] = mergeDiff(previous[key], value);
  }
  return patch;
}

/** One notification, with its data serialised once for every subscriber. */
export interface DirectoryEvent {
  readonly id: number;
  readonly type: ThingChangeType;
  /** The TD's id. */
  readonly thingId: string;
  /** Event data without `diff`: the Partial TD `{"id": ...}` (JSON text). */
  readonly data: string;
  /**
   * Event data with `diff=true` (JSON text): the enriched TD for thing_created, the merge patch
   * from the previous TD (always with `id`) for thing_updated, `{"id": ...}` for thing_deleted.
   */
  readonly diffData: string;
}

export interface DirectoryEventsOptions {
  /** Most events kept for replay to reconnecting clients (default 1,000). */
  bufferSize?: number;
  /** Most characters of event data kept for replay (default 16 Mi): full TDs can be large. */
  bufferChars?: number;
  /**
   * Id of the first event. Default: the start time in ms × 1,000, so ids keep increasing across
   * restarts and a Last-Event-ID from an earlier run reads as older than the buffer.
   */
  firstId?: number;
}

/** Why a subscription ended. */
export type CloseReason = "unsubscribed" | "overflow" | "shutdown";

/** The events after a Last-Event-ID cannot all be replayed: the client must resynchronise. */
export class EventsGoneError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "EventsGoneError";
  }
}

/**
 * The directory's notification hub: numbers each change, keeps the latest ones in a bounded ring
 * buffer, and lets subscribers read it from a cursor. Subscribers hold no queue of their own, so
 * the memory is the buffer's whatever they do; one that falls behind the buffer (a slow consumer)
 * is closed, and replays what it missed on reconnection or learns it must resynchronise.
 */
export class DirectoryEvents {
  readonly #bufferSize: number;
  readonly #bufferChars: number;
  readonly #firstId: number;
  /** Buffered events, oldest first; ids are consecutive. */
  readonly #buffer: DirectoryEvent[] = [];
  #chars = 0;
  #nextId: number;
  /** Per type, the id of the newest event evicted from the buffer. */
  readonly #evicted = new Map<ThingChangeType, number>();
  readonly #subscriptions = new Set<EventSubscription>();
  #closed = false;

  constructor(options: DirectoryEventsOptions = {}) {
    this.#bufferSize = Math.max(1, options.bufferSize ?? 1_000);
    this.#bufferChars = options.bufferChars ?? 16 * 1024 * 1024;
    this.#firstId = options.firstId ?? Date.now() * 1_000 + 1;
    this.#nextId = this.#firstId;
  }

  /** Open subscriptions. */
  get subscriberCount(): number {
    return this.#subscriptions.size;
  }

  /** Id of the latest event, or of the one before the first when there has been none. */
  get lastEventId(): number {
    return this.#nextId - 1;
  }

  get closed(): boolean {
    return this.#closed;
  }

  /** Records a change and wakes the subscribers. Never throws for a well-formed change. */
  publish(change: ThingChange): DirectoryEvent {
    const thingId = change.type === "thing_deleted" ? change.id : change.thing.id;
    const data = JSON.stringify({ id: thingId });
    let diffData = data;
    if (change.type === "thing_created") diffData = JSON.stringify(enriched(change.thing));
    else if (change.type === "thing_updated" && change.previous !== undefined) {
      // WoT Discovery: an update's merge patch always carries the id, changed or not.
      diffData = JSON.stringify({
        ...(mergeDiff(change.previous, change.thing.td) as JsonObject),
        id: thingId,
      });
    }
    const event: DirectoryEvent = { id: this.#nextId++, type: change.type, thingId, data, diffData };
    this.#buffer.push(event);
    this.#chars += data.length + diffData.length;
    // Keep at least the newest event, however large, so live subscribers still get it.
    while (
      this.#buffer.length > 1 &&
      (this.#buffer.length > this.#bufferSize || this.#chars > this.#bufferChars)
    ) {
      this.#evict();
    }
    for (const subscription of this.#subscriptions) subscription.wake();
    return event;
  }

  #evict(): void {
    const old = this.#buffer.shift() as DirectoryEvent;
    this.#chars -= old.data.length + old.diffData.length;
    this.#evicted.set(old.type, old.id);
    for (const subscription of this.#subscriptions) {
      if (subscription.cursor < old.id && subscription.accepts(old.type)) subscription.close("overflow");
    }
  }

  /**
   * Opens a subscription to the events of `types` (default all) after event `after` (default: the
   * latest, i.e. only new events). Throws EventsGoneError when some events after `after` that it
   * would have received are no longer buffered, or `after` is not an id this hub issued.
   */
  subscribe(options: { types?: readonly ThingChangeType[]; after?: number } = {}): EventSubscription {
    if (this.#closed) throw new Error("the notification hub is closed");
    const types = new Set(options.types ?? THING_CHANGE_TYPES);
    const after = options.after ?? this.lastEventId;
    if (after > this.lastEventId) {
      throw new EventsGoneError(`event ${after} was not issued by this run of the directory`);
    }
    if (after < this.#firstId - 1) {
      throw new EventsGoneError(`event ${after} is from an earlier run of the directory`);
    }
    for (const type of types) {
      if ((this.#evicted.get(type) ?? -1) > after) {
        throw new EventsGoneError(`events after ${after} are no longer buffered`);
      }
    }
    const subscription = new EventSubscription(this, types, after, (s) => this.#subscriptions.delete(s));
    this.#subscriptions.add(subscription);
    return subscription;
  }

  /**
   * The first buffered event after `cursor` among `types`, and the id scanning got to (a cursor can
   * skip the events of other types).
   */
  scan(cursor: number, types: ReadonlySet<ThingChangeType>): { event?: DirectoryEvent; scanned: number } {
    const oldest = this.#buffer[0]?.id ?? this.#nextId;
    for (let i = Math.max(0, cursor + 1 - oldest); i < this.#buffer.length; i++) {
      const event = this.#buffer[i] as DirectoryEvent;
      if (types.has(event.type)) return { event, scanned: event.id };
    }
    return { scanned: Math.max(cursor, this.lastEventId) };
  }

  /** Ends every subscription (their streams end) and refuses new ones: for shutdown. */
  close(): void {
    this.#closed = true;
    for (const subscription of this.#subscriptions) subscription.close("shutdown");
  }
}

/** A reader of the hub's events from a cursor. */
export class EventSubscription {
  readonly #hub: DirectoryEvents;
  readonly #types: ReadonlySet<ThingChangeType>;
  readonly #detach: (s: EventSubscription) => void;
  #cursor: number;
  #wake: (() => void) | undefined;
  #closeReason: CloseReason | undefined;
  readonly #onClose: Array<(reason: CloseReason) => void> = [];

  constructor(
    hub: DirectoryEvents,
    types: ReadonlySet<ThingChangeType>,
    after: number,
    detach: (s: EventSubscription) => void,
  ) {
    this.#hub = hub;
    this.#types = types;
    this.#cursor = after;
    this.#detach = detach;
  }

  /** Id of the last event delivered (or the subscription's starting point). */
  get cursor(): number {
    return this.#cursor;
  }

  get closeReason(): CloseReason | undefined {
    return this.#closeReason;
  }

  get closed(): boolean {
    return this.#closeReason !== undefined;
  }

  accepts(type: ThingChangeType): boolean {
    return this.#types.has(type);
  }

  /**
   * The next event; waits for one up to `waitMs` (default: indefinitely). Resolves undefined when
   * the wait elapsed or the subscription closed meanwhile.
   */
  async next(waitMs?: number): Promise<DirectoryEvent | undefined> {
    const deadline = waitMs === undefined ? Number.POSITIVE_INFINITY : performance.now() + waitMs;
    for (;;) {
      if (this.closed) return undefined;
      const { event, scanned } = this.#hub.scan(this.#cursor, this.#types);
      this.#cursor = scanned;
      if (event) return event;
      const remaining = deadline - performance.now();
      if (remaining <= 0) return undefined;
      // Woken by a publish (maybe of another type: scan again) or by close().
      await new Promise<void>((resolve) => {
        const timer = Number.isFinite(remaining) ? setTimeout(resolve, remaining) : undefined;
        this.#wake = () => {
          clearTimeout(timer);
          resolve();
        };
      });
      this.#wake = undefined;
    }
  }

  /** Called by the hub after a publish (and on close). */
  wake(): void {
    this.#wake?.();
  }

  /** Calls `listener` once when the subscription closes (for any reason). */
  onClose(listener: (reason: CloseReason) => void): void {
    if (this.#closeReason !== undefined) listener(this.#closeReason);
    else this.#onClose.push(listener);
  }

  close(reason: CloseReason = "unsubscribed"): void {
    if (this.#closeReason !== undefined) return;
    this.#closeReason = reason;
    this.#detach(this);
    this.wake();
    for (const listener of this.#onClose.splice(0)) listener(reason);
  }
}
