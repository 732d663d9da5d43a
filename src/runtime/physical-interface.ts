import jsonpointer from "jsonpointer";
import type { JsonObject } from "../wot/rdf.js";
import { isObject } from "../wot/thing-model.js";

/** A twin's MQTT physical interface, read from its TD's dtc:physicalInterface (placeholders filled). */
export interface PhysicalInterface {
  telemetryTopic: string;
  commandTopic: string | undefined;
  statusTopic: string | undefined;
  timestampField: string | undefined;
  sequenceField: string | undefined;
  /** TD property name -> where its value is in a telemetry message (compiled JSON Pointer). */
  properties: { affordance: string; pointer: string; get: (message: unknown) => unknown }[];
  /** TD action name -> the command it becomes. */
  actions: Map<string, { commandName: string; inputPointer: string | undefined }>;
}

const asString = (v: unknown): string | undefined => (typeof v === "string" ? v : undefined);
const asObjects = (v: unknown): JsonObject[] =>
  Array.isArray(v) ? v.filter(isObject) : isObject(v) ? [v] : [];

/** Reads the physical interface of a TD; undefined for a twin without one (e.g. a composed twin). */
export function physicalInterfaceOf(td: JsonObject): PhysicalInterface | undefined {
  const pi = td["dtc:physicalInterface"];
  if (!isObject(pi)) return undefined;
  const telemetryTopic = asString(pi["dtc:telemetryTopic"]);
  if (telemetryTopic === undefined) throw new Error("dtc:physicalInterface has no dtc:telemetryTopic");
  return {
    telemetryTopic,
    commandTopic: asString(pi["dtc:commandTopic"]),
    statusTopic: asString(pi["dtc:statusTopic"]),
    timestampField: asString(pi["dtc:timestampField"]),
    sequenceField: asString(pi["dtc:sequenceField"]),
    properties: asObjects(pi["dtc:propertyMapping"]).map((m) => {
      const pointer = String(m["dtc:sourcePointer"]);
      const compiled = jsonpointer.compile(pointer);
      return {
        affordance: String(m["dtc:affordance"]),
        pointer,
        get: (message: unknown) => compiled.get(message as object),
      };
    }),
    actions: new Map(
      asObjects(pi["dtc:actionMapping"]).map((m) => [
        String(m["dtc:affordance"]),
        { commandName: String(m["dtc:commandName"]), inputPointer: asString(m["dtc:inputPointer"]) },
      ]),
    ),
  };
}
