import { describe, expect, it } from "vitest";
import {
  cachedTwinTopics,
  filterCovers,
  type MqttAction,
  mqttAccess,
  mqttDecision,
  type TwinTopics,
  twinTopicsOf,
} from "../src/security/mqtt-acl.js";
import type { Principal } from "../src/security/principal.js";

const TOPICS: Record<string, TwinTopics> = {
  d1: { telemetry: "dtc/iiot/d1/telemetry", status: "dtc/iiot/d1/status", command: "dtc/iiot/d1/commands" },
  d2: { telemetry: "dtc/iiot/d2/telemetry", status: "dtc/iiot/d2/status", command: "dtc/iiot/d2/commands" },
  cam: { telemetry: "dtc/masa/cameras/cam/detections" },
};
const lookup = (id: string) => TOPICS[id];

const gateway: Principal = { kind: "internal", id: "dtc-gateway" };
const container: Principal = { kind: "internal", id: "dtc-twin:d1", twin: "d1" };
const device: Principal = { kind: "device", id: "token:1", twin: "d1", via: "token" };
const camera: Principal = { kind: "device", id: "token:2", twin: "cam", via: "token" };
const orphan: Principal = { kind: "device", id: "token:3", twin: "gone", via: "token" };
const user = (role: "reader" | "operator" | "admin"): Principal => ({
  kind: "user",
  id: `token:${role}`,
  role,
  via: "token",
});
const reader = user("reader");
const operator = user("operator");
const admin = user("admin");

type Row = [string, Principal, MqttAction, string, boolean];

const P = "publish" as const;
const S = "subscribe" as const;

const rows: Row[] = [
  // The gateway: everything, $SYS included.
  ["gateway", gateway, S, "#", true],
  ["gateway", gateway, S, "$SYS/#", true],
  ["gateway", gateway, P, "d1", true],
  ["gateway", gateway, P, "dtc/iiot/d1/commands", true],
  ["gateway", gateway, P, "dtc/twins/d1/augmentations", true],
  // A twin container: its own topics, its PT's.
  ["container", container, P, "d1", true],
  ["container", container, P, "d1/properties/temperature", true],
  ["container", container, S, "d1/actions/setRate", true],
  ["container", container, S, "d1/#", true],
  ["container", container, S, "dtc/twins/d1/augmentations", true],
  ["container", container, P, "dtc/twins/d1/augmentations/result", true],
  ["container", container, S, "dtc/iiot/d1/telemetry", true],
  ["container", container, S, "dtc/iiot/d1/status", true],
  ["container", container, P, "dtc/iiot/d1/commands", true],
  ["container", container, P, "dtc/iiot/d1/telemetry", false],
  ["container", container, S, "dtc/iiot/d1/commands", false],
  ["container", container, P, "d2", false],
  ["container", container, S, "d2/properties/temperature", false],
  ["container", container, S, "dtc/twins/+/augmentations", false],
  ["container", container, S, "dtc/iiot/d2/telemetry", false],
  ["container", container, S, "#", false],
  ["container", container, S, "+/#", false],
  ["container", container, S, "$SYS/#", false],
  // A device of d1: its telemetry and status out, its commands in.
  ["device", device, P, "dtc/iiot/d1/telemetry", true],
  ["device", device, P, "dtc/iiot/d1/status", true],
  ["device", device, S, "dtc/iiot/d1/commands", true],
  ["device", device, P, "dtc/iiot/d2/telemetry", false],
  ["device", device, P, "dtc/iiot/d1/commands", false],
  ["device", device, S, "dtc/iiot/d1/telemetry", false],
  ["device", device, S, "dtc/iiot/d1/#", false],
  ["device", device, S, "dtc/iiot/+/commands", false],
  ["device", device, P, "d1", false],
  ["device", device, P, "d1/actions/setRate", false],
  ["device", device, P, "d1/properties/temperature", false],
  ["device", device, P, "dtc/twins/d1/augmentations", false],
  ["device", device, S, "d1/properties/temperature", false],
  ["device", device, S, "#", false],
  ["device", device, S, "$SYS/#", false],
  ["camera", camera, P, "dtc/masa/cameras/cam/detections", true],
  ["camera", camera, S, "dtc/masa/cameras/cam/commands", false],
  ["device of an unknown twin", orphan, P, "dtc/iiot/gone/telemetry", false],
  // Readers: TDs, properties and events of concrete twins.
  ["reader", reader, S, "d1", true],
  ["reader", reader, S, "d1/properties/temperature", true],
  ["reader", reader, S, "d1/properties/+", true],
  ["reader", reader, S, "d1/properties/#", true],
  ["reader", reader, S, "d1/events/lifecycleChanged", true],
  ["reader", reader, S, "d1/events/#", true],
  ["reader", reader, S, "#", false],
  ["reader", reader, S, "+/#", false],
  ["reader", reader, S, "$SYS/#", false],
  ["reader", reader, S, "+", false],
  ["reader", reader, S, "+/properties/temperature", false],
  ["reader", reader, S, "d1/+/temperature", false],
  ["reader", reader, S, "d1/#", false],
  ["reader", reader, S, "d1/properties", false],
  ["reader", reader, S, "d1/actions/setRate", false],
  ["reader", reader, S, "dtc", false],
  ["reader", reader, S, "dtc/properties/x", false],
  ["reader", reader, S, "dtc/iiot/d1/telemetry", false],
  ["reader", reader, S, "dtc/twins/d1/augmentations/result", false],
  ["reader", reader, S, "D1/properties/x", false],
  ["reader", reader, P, "d1/actions/setRate", false],
  ["reader", reader, P, "d1/properties/temperature/writeproperty", false],
  // Operators: a reader's, plus actions and property writes.
  ["operator", operator, S, "d1/properties/temperature", true],
  ["operator", operator, P, "d1/actions/setRate", true],
  ["operator", operator, P, "d1/properties/rate/writeproperty", true],
  ["operator", operator, P, "d1", false],
  ["operator", operator, P, "d1/properties/temperature", false],
  ["operator", operator, P, "d1/events/lifecycleChanged", false],
  ["operator", operator, P, "d1/actions/setRate/extra", false],
  ["operator", operator, P, "d1/actions/", false],
  ["operator", operator, P, "dtc/actions/x", false],
  ["operator", operator, P, "dtc/iiot/d1/commands", false],
  ["operator", operator, P, "dtc/twins/d1/augmentations", false],
  ["operator", operator, S, "dtc/twins/d1/augmentations/result", false],
  ["operator", operator, S, "#", false],
  // Admins: an operator's, plus the management topic.
  ["admin", admin, P, "d1/actions/setRate", true],
  ["admin", admin, P, "dtc/twins/d1/augmentations", true],
  ["admin", admin, S, "dtc/twins/d1/augmentations/result", true],
  ["admin", admin, S, "dtc/twins/+/augmentations/result", false],
  ["admin", admin, S, "dtc/twins/d1/augmentations", false],
  ["admin", admin, P, "dtc/twins/d1/augmentations/result", false],
  ["admin", admin, P, "dtc/iiot/d1/telemetry", false],
  ["admin", admin, P, "d1", false],
  ["admin", admin, S, "#", false],
  ["admin", admin, S, "+/#", false],
  ["admin", admin, S, "$SYS/#", false],
  ["admin", admin, S, "$share/g/d1/properties/x", false],
  // Malformed topics, for anyone.
  ["gateway", gateway, P, "d1/+/x", false],
  ["gateway", gateway, P, "", false],
  ["gateway", gateway, S, "d1/#/x", false],
  ["gateway", gateway, S, "d1/a+", false],
  ["admin", admin, P, "d1/actions/a#", false],
];

describe("mqttAccess", () => {
  it.each(rows)("%s: %s %s -> %s", (_who, principal, action, topic, expected) => {
    const decision = mqttDecision(principal, action, topic, lookup);
    expect(decision.allowed, decision.reason).toBe(expected);
    expect(mqttAccess(principal, action, topic, lookup)).toBe(expected);
    expect(decision.reason).not.toBe("");
  });

  it("refuses nobody, a twin principal without a twin id, and a failing lookup", () => {
    expect(mqttAccess(undefined, "subscribe", "d1", lookup)).toBe(false);
    const bad: Principal = { kind: "internal", id: "dtc-twin:+", twin: "+" };
    expect(mqttAccess(bad, "subscribe", "x/#", lookup)).toBe(false);
    expect(mqttAccess(bad, "publish", "+", lookup)).toBe(false);
    const throwing = () => {
      throw new Error("store closed");
    };
    expect(mqttAccess(device, "publish", "dtc/iiot/d1/telemetry", throwing)).toBe(false);
    expect(mqttAccess(container, "publish", "d1", throwing)).toBe(true);
  });

  it("matches PT topics that are filters themselves", () => {
    const wild = (id: string) =>
      id === "w" ? { telemetry: "plant/+/w/data", command: "plant/w/cmd/#" } : undefined;
    const w: Principal = { kind: "device", id: "token:w", twin: "w", via: "token" };
    expect(mqttAccess(w, "publish", "plant/line1/w/data", wild)).toBe(true);
    expect(mqttAccess(w, "publish", "plant/line1/x/data", wild)).toBe(false);
    expect(mqttAccess(w, "subscribe", "plant/w/cmd/#", wild)).toBe(true);
    expect(mqttAccess(w, "subscribe", "plant/w/cmd/rate", wild)).toBe(true);
    expect(mqttAccess(w, "subscribe", "plant/w/#", wild)).toBe(false);
  });
});

describe("filterCovers", () => {
  it.each([
    ["a/#", "a", true],
    ["a/#", "a/b/+", true],
    ["a/#", "a/#", true],
    ["a/+", "a/b", true],
    ["a/+", "a/+", true],
    ["a/+", "a/#", false],
    ["a/+", "a/b/c", false],
    ["a/b", "a/b", true],
    ["a/b", "a/+", false],
    ["a/b", "a", false],
    ["#", "anything/at/all", true],
    ["+/x", "y/x", true],
  ])("%s covers %s: %s", (pattern, filter, expected) => {
    expect(filterCovers(pattern, filter)).toBe(expected);
  });
});

describe("twin topics", () => {
  it("caches an asynchronous source, one lookup for callers waiting together", async () => {
    let calls = 0;
    const cached = cachedTwinTopics(async (id) => {
      calls++;
      await new Promise((resolve) => setTimeout(resolve, 5));
      if (id === "boom") throw new Error("store closed");
      return TOPICS[id];
    });
    const first = cached("d1");
    const second = cached("d1");
    expect(first).toBeInstanceOf(Promise);
    expect(second).toBe(first);
    expect(await first).toEqual(TOPICS.d1);
    // Known now: answered at once.
    expect(cached("d1")).toEqual(TOPICS.d1);
    expect(await cached("boom")).toBeUndefined();
    expect(calls).toBe(2);
  });

  it("reads a TD's physical interface, and nothing from one without", () => {
    const td = {
      "dtc:physicalInterface": {
        "dtc:telemetryTopic": "dtc/iiot/d1/telemetry",
        "dtc:statusTopic": "dtc/iiot/d1/status",
        "dtc:commandTopic": "dtc/iiot/d1/commands",
      },
    };
    expect(twinTopicsOf(td)).toEqual(TOPICS.d1);
    expect(twinTopicsOf({ "dtc:physicalInterface": { "dtc:telemetryTopic": "t" } })).toEqual({
      telemetry: "t",
    });
    expect(twinTopicsOf({})).toBeUndefined();
    expect(twinTopicsOf({ "dtc:physicalInterface": {} })).toBeUndefined();
  });

  it("caches lookups for a while, and misses for less", () => {
    let calls = 0;
    let now = 0;
    const cached = cachedTwinTopics(
      (id) => {
        calls++;
        return TOPICS[id];
      },
      { ttlMs: 1000, missTtlMs: 100, now: () => now },
    );
    expect(cached("d1")).toEqual(TOPICS.d1);
    expect(cached("d1")).toEqual(TOPICS.d1);
    expect(cached("nope")).toBeUndefined();
    expect(cached("nope")).toBeUndefined();
    expect(calls).toBe(2);
    now = 100;
    expect(cached("nope")).toBeUndefined();
    expect(cached("d1")).toEqual(TOPICS.d1);
    expect(calls).toBe(3);
    now = 1000;
    cached("d1");
    expect(calls).toBe(4);
  });
});
