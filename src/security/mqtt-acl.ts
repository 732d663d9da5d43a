/**
 * Who may publish and subscribe to which MQTT topics: a pure policy, asked by the embedded broker on
 * every PUBLISH (the will included) and SUBSCRIBE, and approximated for an external mosquitto. The
 * rules per principal: docs/design.md, "MQTT access policy".
 */
import { physicalInterfaceOf } from "../runtime/physical-interface.js";
import type { JsonObject } from "../wot/rdf.js";
import type { Principal, Role } from "./principal.js";

export type MqttAction = "publish" | "subscribe";

/** A twin's PT topics (placeholders filled in), from its TD's dtc:physicalInterface. */
export interface TwinTopics {
  telemetry: string;
  status?: string;
  command?: string;
}

/** A twin's PT topics by twin id; undefined for an unknown twin or one without a physical interface. */
export type TwinTopicsLookup = (twinId: string) => TwinTopics | undefined;

export interface MqttDecision {
  allowed: boolean;
  /** Why, for logs. */
  reason: string;
}

/** A twin id as the manager accepts it (TWIN_ID in src/runtime/twin.ts). */
const TWIN_ID = /^[a-z0-9][a-z0-9_-]{0,62}$/;
/** The protocol's limit on a topic's UTF-8 length. */
const MAX_TOPIC_BYTES = 65_535;

const allow = (reason: string): MqttDecision => ({ allowed: true, reason });
const deny = (reason: string): MqttDecision => ({ allowed: false, reason });

/** A concrete twin id as a topic level: not a wildcard, not the `dtc/…` namespace, not `$…`. */
const isTwinId = (level: string | undefined): level is string =>
  level !== undefined && level !== "dtc" && TWIN_ID.test(level);

function validTopic(action: MqttAction, topic: string): boolean {
  if (topic === "" || topic.includes("\u0000") || Buffer.byteLength(topic) > MAX_TOPIC_BYTES) return false;
  const levels = topic.split("/");
  if (action === "publish") return !/[+#]/.test(topic);
  return levels.every((level, i) =>
    level === "#" ? i === levels.length - 1 : level === "+" || !/[+#]/.test(level),
  );
}

/**
 * Whether every topic `filter` matches is also matched by `pattern` (both MQTT topic filters; a
 * topic name is a filter without wildcards): `a/#` covers `a`, `a/b/+`, `a/#`; `a/+` covers `a/b`
 * but not `a/#`.
 */
export function filterCovers(pattern: string, filter: string): boolean {
  const p = pattern.split("/");
  const f = filter.split("/");
  for (let i = 0; i < p.length; i++) {
    const pl = p[i] as string;
    // `#` matches the rest, the parent level included.
    if (pl === "#") return true;
    const fl = f[i];
    if (fl === undefined || fl === "#") return false;
    if (pl === "+") continue;
    if (fl === "+" || fl !== pl) return false;
  }
  return f.length === p.length;
}

/** The decision, with its reason for logs. */
export function mqttDecision(
  principal: Principal | undefined,
  action: MqttAction,
  topic: string,
  twinTopics: TwinTopicsLookup,
): MqttDecision {
  if (principal === undefined) return deny("not authenticated");
  if (!validTopic(action, topic)) {
    return deny(`${JSON.stringify(topic)} is not a valid topic ${action === "publish" ? "name" : "filter"}`);
  }
  if (principal.kind === "internal" && principal.twin === undefined)
    return allow("the gateway may do anything");
  if (topic.startsWith("$")) return deny("$ topics are the broker's and the gateway's");
  if (principal.kind !== "user" && !TWIN_ID.test(principal.twin ?? "")) {
    // A twin id that is not one would turn the patterns below into wildcards.
    return deny(`${JSON.stringify(principal.twin)} is not a twin id`);
  }
  switch (principal.kind) {
    case "internal":
      return twinContainer(principal.twin as string, action, topic, twinTopics);
    case "device":
      return device(principal.twin, action, topic, twinTopics);
    case "user":
      return user(principal.role, action, topic);
  }
}

/** Whether `principal` may `action` on `topic` (see mqttDecision for the reason). */
export function mqttAccess(
  principal: Principal | undefined,
  action: MqttAction,
  topic: string,
  twinTopics: TwinTopicsLookup,
): boolean {
  return mqttDecision(principal, action, topic, twinTopics).allowed;
}

/** The lookup's answer, or undefined when it fails (an unknown twin is refused, not an error). */
function topicsOf(twinTopics: TwinTopicsLookup, id: string): TwinTopics | undefined {
  try {
    return twinTopics(id);
  } catch {
    return undefined;
  }
}

function twinContainer(
  id: string,
  action: MqttAction,
  topic: string,
  lookup: TwinTopicsLookup,
): MqttDecision {
  if (filterCovers(`${id}/#`, topic) || filterCovers(`dtc/twins/${id}/#`, topic)) {
    return allow(`twin ${id}'s own topics`);
  }
  const pt = topicsOf(lookup, id);
  if (pt === undefined)
    return deny(`twin ${id} has no known physical interface, and the topic is not its own`);
  if (action === "subscribe") {
    if (filterCovers(pt.telemetry, topic) || (pt.status !== undefined && filterCovers(pt.status, topic))) {
      return allow(`twin ${id}'s PT telemetry or status`);
    }
    return deny(`twin ${id} subscribes only its own topics and its PT's telemetry and status`);
  }
  if (pt.command !== undefined && filterCovers(pt.command, topic)) return allow(`twin ${id}'s PT commands`);
  return deny(`twin ${id} publishes only on its own topics and its PT's command topic`);
}

function device(id: string, action: MqttAction, topic: string, lookup: TwinTopicsLookup): MqttDecision {
  const pt = topicsOf(lookup, id);
  if (pt === undefined) return deny(`the device's twin ${id} is unknown or has no physical interface`);
  if (action === "publish") {
    if (filterCovers(pt.telemetry, topic) || (pt.status !== undefined && filterCovers(pt.status, topic))) {
      return allow(`the PT telemetry or status of twin ${id}`);
    }
    return deny(`a device of twin ${id} publishes only its telemetry and status topics`);
  }
  if (pt.command !== undefined && filterCovers(pt.command, topic))
    return allow(`the PT commands of twin ${id}`);
  return deny(`a device of twin ${id} subscribes only its command topic`);
}

function user(role: Role, action: MqttAction, topic: string): MqttDecision {
  const levels = topic.split("/");
  const [first, second, third, fourth] = levels;
  if (action === "subscribe") {
    if (
      isTwinId(first) &&
      (levels.length === 1 || ((second === "properties" || second === "events") && levels.length >= 3))
    ) {
      return allow(`${role}: a twin's TD, properties or events`);
    }
    if (role === "admin" && augmentations(levels, 5) && levels[4] === "result") {
      return allow("admin: the answers of a twin's management topic");
    }
    return deny(
      `${role} may subscribe only {twin id}, {twin id}/properties/… and {twin id}/events/…${role === "admin" ? " and dtc/twins/{twin id}/augmentations/result" : ""}`,
    );
  }
  if (role === "reader") return deny("a reader may not publish");
  if (isTwinId(first) && third !== undefined && third !== "") {
    if (levels.length === 3 && second === "actions") return allow(`${role}: invoke an action`);
    if (levels.length === 4 && second === "properties" && fourth === "writeproperty")
      return allow(`${role}: write a property`);
  }
  if (role === "admin" && augmentations(levels, 4)) return allow("admin: a twin's management topic");
  return deny(
    `${role} may publish only {twin id}/actions/{action} and {twin id}/properties/{property}/writeproperty${role === "admin" ? " and dtc/twins/{twin id}/augmentations" : ""}`,
  );
}

/** `dtc/twins/{concrete id}/augmentations[/…]` with `length` levels. */
function augmentations(levels: string[], length: number): boolean {
  return (
    levels.length === length &&
    levels[0] === "dtc" &&
    levels[1] === "twins" &&
    TWIN_ID.test(levels[2] ?? "") &&
    levels[3] === "augmentations"
  );
}

/** A twin's PT topics read from its TD (dtc:physicalInterface); undefined without one or when malformed. */
export function twinTopicsOf(td: JsonObject): TwinTopics | undefined {
  try {
    const pi = physicalInterfaceOf(td);
    if (pi === undefined) return undefined;
    return {
      telemetry: pi.telemetryTopic,
      ...(pi.statusTopic !== undefined ? { status: pi.statusTopic } : {}),
      ...(pi.commandTopic !== undefined ? { command: pi.commandTopic } : {}),
    };
  } catch {
    return undefined;
  }
}

/**
 * Where a broker finds a twin's PT topics: at once, or asynchronously (e.g. making the TD of a twin
 * that is not running yet from its schema and configuration).
 */
export type TwinTopicsSource = (
  twinId: string,
) => TwinTopics | undefined | PromiseLike<TwinTopics | undefined>;

const isPromiseLike = (value: unknown): value is PromiseLike<TwinTopics | undefined> =>
  typeof (value as { then?: unknown } | undefined)?.then === "function";

/** Most twins a cache remembers before it forgets the stale ones (or all). */
const CACHE_LIMIT = 100_000;

/**
 * Asks `source` at most once per twin per `ttlMs` (default 5 s), and about a twin it did not know at
 * most once per `missTtlMs` (default 0.5 s, so that a twin just created is soon found): a broker asks
 * on every publish, and reading a TD each time would cost more than the message. Answers at once
 * when it has the answer (the broker's checks then stay synchronous, in packet order), else with
 * the one promise every caller waits on. A source that fails is a miss.
 */
export function cachedTwinTopics(
  source: TwinTopicsSource,
  options: { ttlMs?: number; missTtlMs?: number; now?: () => number } = {},
): (twinId: string) => TwinTopics | undefined | Promise<TwinTopics | undefined> {
  const { ttlMs = 5000, missTtlMs = 500, now = Date.now } = options;
  const cache = new Map<
    string,
    { topics: TwinTopics | undefined; until: number; pending?: Promise<TwinTopics | undefined> }
  >();
  const remember = (id: string, topics: TwinTopics | undefined) => {
    const t = now();
    if (cache.size >= CACHE_LIMIT) {
      for (const [key, entry] of cache)
        if (entry.pending === undefined && entry.until <= t) cache.delete(key);
      if (cache.size >= CACHE_LIMIT) cache.clear();
    }
    cache.set(id, { topics, until: t + (topics === undefined ? missTtlMs : ttlMs) });
  };
  return (id) => {
    const hit = cache.get(id);
    if (hit?.pending) return hit.pending;
    if (hit !== undefined && hit.until > now()) return hit.topics;
    let answer: ReturnType<TwinTopicsSource>;
    try {
      answer = source(id);
    } catch {
      answer = undefined;
    }
    if (!isPromiseLike(answer)) {
      remember(id, answer);
      return answer;
    }
    const pending = Promise.resolve(answer).then(
      (topics) => {
        remember(id, topics);
        return topics;
      },
      () => {
        remember(id, undefined);
        return undefined;
      },
    );
    cache.set(id, { topics: undefined, until: Number.POSITIVE_INFINITY, pending });
    return pending;
  };
}
