import { describe, expect, it } from "vitest";
import { normalisePhysicalMessage, PhysicalMessageError, shadow } from "../src/runtime/physical-event.js";
import { type PhysicalInterface, physicalInterfaceOf } from "../src/runtime/physical-interface.js";
import { instantiate } from "../src/wot/instantiate.js";
import { sample, sampleRegistry } from "./helpers.js";

const registry = await sampleRegistry();
const machineTd = await instantiate(registry, sample("iiot-machine.tm.jsonld"), {
  placeholders: { DEVICE_ID: "m9" },
});
const machine = physicalInterfaceOf(machineTd) as PhysicalInterface;
const NOW = Date.UTC(2026, 10, 20, 12);

describe("physical interface of a twin", () => {
  it("is read from the TD with its placeholders filled and inherited mappings", () => {
    expect(machine).toMatchObject({
      telemetryTopic: "dtc/iiot/m9/telemetry",
      commandTopic: "dtc/iiot/m9/commands",
      statusTopic: "dtc/iiot/m9/status",
      timestampField: "/ts",
      sequenceField: "/seq",
    });
    expect(machine.properties.map((p) => p.affordance).sort()).toEqual([
      "energy",
      "temperature",
      "updateRate",
      "vibration",
    ]);
    expect(machine.actions.get("setRate")).toEqual({ commandName: "setRate", inputPointer: "/rate" });
  });

  it("is absent for a composed twin without a physical side", async () => {
    const area = await instantiate(registry, sample("masa-area.tm.jsonld"), {
      placeholders: { AREA_ID: "a" },
      links: [{ rel: "item", href: "urn:c" }],
    });
    expect(physicalInterfaceOf(area)).toBeUndefined();
  });
});

describe("physical event handler and shadowing", () => {
  it("normalises a message with an epoch-ms timestamp and a sequence number", () => {
    const payload = JSON.stringify({
      ts: NOW - 3,
      seq: 41,
      temperature: 21.5,
      energy: 3.2,
      vibration: { rms: 0.7 },
    });
    const event = normalisePhysicalMessage("dtc/iiot/m9/telemetry", Buffer.from(payload), machine, NOW);
    expect(event).toMatchObject({
      ptTimestamp: NOW - 3,
      ptTimestampSource: "message",
      sequence: 41,
      receivedAt: NOW,
    });
    expect(shadow(event, machine)).toEqual({ temperature: 21.5, energy: 3.2, vibration: 0.7 });
  });

  it("accepts ISO 8601 timestamps and falls back to the receive time when there is none", () => {
    const iso = normalisePhysicalMessage(
      "t",
      JSON.stringify({ ts: new Date(NOW - 5).toISOString() }),
      machine,
      NOW,
    );
    expect(iso.ptTimestamp).toBe(NOW - 5);
    const none = normalisePhysicalMessage("t", JSON.stringify({ temperature: 1 }), machine, NOW);
    expect(none).toMatchObject({ ptTimestamp: NOW, ptTimestampSource: "received", sequence: undefined });
  });

  it("decodes a plain Uint8Array payload as well as a Buffer", () => {
    const bytes = new TextEncoder().encode(JSON.stringify({ ts: NOW - 1, temperature: 19 }));
    const event = normalisePhysicalMessage("t", bytes, machine, NOW);
    expect(shadow(event, machine)).toEqual({ temperature: 19 });
  });

  it("rejects what it cannot use, saying why", () => {
    expect(() => normalisePhysicalMessage("t", "not json", machine, NOW)).toThrow(PhysicalMessageError);
    expect(() => normalisePhysicalMessage("t", "42", machine, NOW)).toThrow(/not a JSON object/);
    expect(() => normalisePhysicalMessage("t", JSON.stringify({ ts: "yesterday" }), machine, NOW)).toThrow(
      '/ts is "yesterday", not epoch milliseconds or an ISO 8601 time',
    );
  });

  it("refuses a timestamp far ahead of the twin's clock (one such message froze the twin for good)", () => {
    for (const ts of [1e308, NOW + 61_000, "9999-01-01T00:00:00Z"]) {
      expect(() => normalisePhysicalMessage("t", JSON.stringify({ ts }), machine, NOW), String(ts)).toThrow(
        /ahead of the twin's clock/,
      );
    }
    expect(
      normalisePhysicalMessage("t", JSON.stringify({ ts: NOW + 59_000 }), machine, NOW).ptTimestamp,
    ).toBe(NOW + 59_000);
    expect(() =>
      normalisePhysicalMessage("t", JSON.stringify({ ts: NOW + 2000 }), machine, NOW, 1000),
    ).toThrow();
  });

  it("refuses timestamps that are no time: non-finite (JSON's 1e400), before any date, or not a number or string", () => {
    for (const ts of [-1e308, -8.7e15, true, { at: NOW }, [NOW]]) {
      expect(() => normalisePhysicalMessage("t", JSON.stringify({ ts }), machine, NOW), String(ts)).toThrow(
        /not epoch milliseconds or an ISO 8601 time/,
      );
    }
    // JSON.stringify cannot write these: the PT's own text can.
    for (const text of ['{"ts": 1e400}', '{"ts": -1e400}']) {
      expect(() => normalisePhysicalMessage("t", text, machine, NOW), text).toThrow(/not epoch milliseconds/);
    }
    // Old times are times: measured as late, not refused.
    expect(normalisePhysicalMessage("t", JSON.stringify({ ts: 0 }), machine, NOW).ptTimestamp).toBe(0);
  });

  it("refuses a sequence number that is not an integer (it orders the messages) and quotes what it got, briefly", () => {
    for (const seq of [1e300, 1.5, "7", -0.5, { n: 1 }]) {
      expect(
        () => normalisePhysicalMessage("t", JSON.stringify({ ts: NOW, seq }), machine, NOW),
        String(seq),
      ).toThrow(/\/seq is .*, not an integer sequence number/);
    }
    expect(() => normalisePhysicalMessage("t", '{"seq": 1e400}', machine, NOW)).toThrow(/not an integer/);
    const long = () =>
      normalisePhysicalMessage("t", JSON.stringify({ seq: "x".repeat(10_000) }), machine, NOW);
    expect(long).toThrow(PhysicalMessageError);
    expect(() => long()).toThrow(/^.{0,160}$/);
    // Absent or null: no sequence.
    expect(
      normalisePhysicalMessage("t", JSON.stringify({ seq: null }), machine, NOW).sequence,
    ).toBeUndefined();
    expect(normalisePhysicalMessage("t", JSON.stringify({ seq: 0 }), machine, NOW).sequence).toBe(0);
  });

  it("leaves out properties a message does not carry", () => {
    const event = normalisePhysicalMessage("t", JSON.stringify({ ts: NOW, rate: 5 }), machine, NOW);
    expect(shadow(event, machine)).toEqual({ updateRate: 5 });
  });
});
