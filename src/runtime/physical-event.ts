import jsonpointer from "jsonpointer";
import type { PhysicalInterface } from "./physical-interface.js";

/** A telemetry message of the physical twin, normalised ([dt-microservices]: the physicalEventHandler's output). */
export interface PhysicalEvent {
  topic: string;
  /** When the twin received it (epoch ms). */
  receivedAt: number;
  /** When the PT says it happened (epoch ms); the receive time when the message carries none. */
  ptTimestamp: number;
  ptTimestampSource: "message" | "received";
  sequence: number | undefined;
  message: unknown;
}

/** A message the twin cannot use; the reason says why, for the logs and the twin's error counter. */
export class PhysicalMessageError extends Error {
  constructor(topic: string, reason: string) {
    super(`physical message on "${topic}": ${reason}`);
    this.name = "PhysicalMessageError";
  }
}

const utf8 = new TextDecoder();

/** The earliest time a Date can hold, ms (ECMA-262 TimeClip): the twin's history shows times as ISO 8601. */
const MIN_DATE_MS = -8.64e15;

/**
 * Epoch milliseconds from a number (milliseconds) or an ISO 8601 string; undefined for anything
 * else, for non-finite numbers (JSON's 1e400 is Infinity) and for times before any Date. (Times
 * after any Date are far in the future: refused as such.)
 */
function toEpochMs(value: unknown): number | undefined {
  const ms = typeof value === "number" ? value : typeof value === "string" ? Date.parse(value) : Number.NaN;
  return Number.isFinite(ms) && ms >= MIN_DATE_MS ? ms : undefined;
}

/**
 * How far ahead of the twin's clock a PT timestamp may be, ms. One message stamped in the future
 * (`ts: 1e308`) would otherwise make every genuine message after it look older than the state, so
 * none would be committed again: such a message is refused as malformed instead.
 */
export const MAX_FUTURE_SKEW_MS = 60_000;

/** A value as a rejection reason quotes it: short (reasons are kept in the twin's history). */
function shown(value: unknown): string {
  const text = JSON.stringify(value) ?? String(value);
  return text.length > 64 ? `${text.slice(0, 64)}...` : text;
}

/** Parses and normalises one raw MQTT payload against the schema's physical interface. */
export function normalisePhysicalMessage(
  topic: string,
  payload: Uint8Array | string,
  iface: Pick<PhysicalInterface, "timestampField" | "sequenceField">,
  receivedAt: number,
  maxFutureSkewMs = MAX_FUTURE_SKEW_MS,
): PhysicalEvent {
  let message: unknown;
  try {
    // mqtt.js hands over Buffers: decode in place (Buffer.from(uint8array) would copy every payload).
    message = JSON.parse(
      typeof payload === "string"
        ? payload
        : Buffer.isBuffer(payload)
          ? payload.toString("utf8")
          : utf8.decode(payload),
    );
  } catch {
    throw new PhysicalMessageError(topic, "payload is not JSON");
  }
  if (typeof message !== "object" || message === null) {
    throw new PhysicalMessageError(topic, "payload is not a JSON object or array");
  }
  let ptTimestamp = receivedAt;
  let ptTimestampSource: PhysicalEvent["ptTimestampSource"] = "received";
  if (iface.timestampField !== undefined) {
    const raw = jsonpointer.get(message, iface.timestampField);
    if (raw !== undefined) {
      const ms = toEpochMs(raw);
      if (ms === undefined) {
        throw new PhysicalMessageError(
          topic,
          `${iface.timestampField} is ${shown(raw)}, not epoch milliseconds or an ISO 8601 time`,
        );
      }
      if (ms > receivedAt + maxFutureSkewMs) {
        throw new PhysicalMessageError(
          topic,
          `${iface.timestampField} is ${Math.round((ms - receivedAt) / 1000)} s ahead of the twin's clock (at most ${maxFutureSkewMs / 1000} s taken)`,
        );
      }
      ptTimestamp = ms;
      ptTimestampSource = "message";
    }
  }
  const seq = iface.sequenceField === undefined ? undefined : jsonpointer.get(message, iface.sequenceField);
  // The twin orders messages by their sequence number: one that is not an integer (1e300, "7")
  // would be compared, and counted as lost, on a scale that means nothing.
  if (seq !== undefined && seq !== null && !Number.isSafeInteger(seq)) {
    throw new PhysicalMessageError(
      topic,
      `${iface.sequenceField} is ${shown(seq)}, not an integer sequence number`,
    );
  }
  return { topic, receivedAt, ptTimestamp, ptTimestampSource, sequence: seq ?? undefined, message };
}

/**
 * The declarative shadowing function: TD property values picked from the message by the schema's
 * mappings. Properties absent from a message are left out (the twin keeps their last value).
 */
export function shadow(
  event: PhysicalEvent,
  iface: Pick<PhysicalInterface, "properties">,
): Record<string, unknown> {
  const values: Record<string, unknown> = {};
  for (const { affordance, get } of iface.properties) {
    const value = get(event.message);
    if (value !== undefined) values[affordance] = value;
  }
  return values;
}
