import { describe, expect, it } from "vitest";
import { instantiate, toExposedThingInit } from "../src/wot/instantiate.js";
import { ThingModelRegistry } from "../src/wot/model-registry.js";
import type { JsonObject } from "../src/wot/rdf.js";
import { ValidationError, validateThingDescription } from "../src/wot/validation.js";
import { sample, sampleRegistry } from "./helpers.js";

const registry = await sampleRegistry();
const props = (td: JsonObject) => td.properties as Record<string, JsonObject>;
const fidelity = (td: JsonObject) => td["dtc:fidelity"] as Record<string, number>;
const physical = (td: JsonObject) => td["dtc:physicalInterface"] as Record<string, unknown>;

async function failure(promise: Promise<unknown>): Promise<ValidationError> {
  const err = await promise.catch((e: unknown) => e);
  expect(err).toBeInstanceOf(ValidationError);
  return err as ValidationError;
}

describe("TM -> TD instantiation", () => {
  it("fills placeholders, links the schema and produces a valid TD 1.1", async () => {
    const td = await instantiate(registry, sample("iiot-device.tm.jsonld"), {
      id: "urn:dtc:twin:d7",
      base: "http://127.0.0.1:8080/twins/d7/",
      placeholders: { DEVICE_ID: "d7" },
    });
    expect(td.id).toBe("urn:dtc:twin:d7");
    expect(td.title).toBe("IIoT Device d7");
    expect(td["@type"]).toEqual(["Thing", "dtc:DigitalTwin", "saref:Device"]);
    expect(physical(td)["dtc:telemetryTopic"]).toBe("dtc/iiot/d7/telemetry");
    expect(td.links).toEqual([
      { rel: "type", href: sample("iiot-device.tm.jsonld"), type: "application/tm+json" },
    ]);
    expect(td.version).toBeUndefined();
    expect(JSON.stringify(td)).not.toMatch(/\{\{|tm:ThingModel|tm:optional/);
    expect(validateThingDescription(td)).toEqual({ valid: true });
    expect((props(td).temperature?.forms as JsonObject[] | undefined)?.[0]).toEqual({
      href: "properties/temperature",
      op: ["readproperty", "observeproperty", "unobserveproperty"],
    });
    expect(td.security).toBe("nosec_sc");
  });

  it("keeps the type of a whole-value placeholder", async () => {
    const td = await instantiate(registry, sample("masa-camera.tm.jsonld"), {
      placeholders: { CAMERA_ID: "cam-3", LATITUDE: 44.6471, LONGITUDE: 10.9252 },
    });
    expect(td["sdo:geo"]).toEqual({
      "@type": "sdo:GeoCoordinates",
      "sdo:latitude": 44.6471,
      "sdo:longitude": 10.9252,
    });
    expect(String(td.id)).toMatch(/^urn:uuid:[0-9a-f-]{36}$/);
  });

  it("names each missing placeholder and where it is used", async () => {
    const err = await failure(
      instantiate(registry, sample("masa-camera.tm.jsonld"), { placeholders: { CAMERA_ID: "c" } }),
    );
    expect(err.errors.map((e) => e.field)).toEqual(["placeholders.LATITUDE", "placeholders.LONGITUDE"]);
    expect(err.errors[0]?.description).toContain("sdo:geo.sdo:latitude");
  });

  it("resolves tm:extends: inherits affordances and mappings, overrides fidelity", async () => {
    const td = await instantiate(registry, sample("iiot-machine.tm.jsonld"), {
      placeholders: { DEVICE_ID: "m1" },
    });
    expect(Object.keys(props(td)).sort()).toEqual(["energy", "temperature", "updateRate", "vibration"]);
    expect(Object.keys(td.actions as object)).toEqual(["setRate"]);
    expect(fidelity(td)["dtc:desiredTimeliness"]).toBe(5);
    const mapped = (physical(td)["dtc:propertyMapping"] as JsonObject[]).map((m) => m["dtc:affordance"]);
    expect(mapped.sort()).toEqual(["energy", "temperature", "updateRate", "vibration"]);
    expect(physical(td)["dtc:commandTopic"]).toBe("dtc/iiot/m1/commands");
    expect(td.title).toBe("IIoT Machine m1");
    expect(td.links).toEqual([
      { rel: "type", href: sample("iiot-machine.tm.jsonld"), type: "application/tm+json" },
    ]);
    expect(validateThingDescription(td)).toEqual({ valid: true });
  });

  it("resolves tm:ref and links the aggregated twins", async () => {
    const td = await instantiate(registry, sample("masa-area.tm.jsonld"), {
      placeholders: { AREA_ID: "north" },
      links: [
        { rel: "item", href: "urn:dtc:twin:cam-1" },
        { rel: "item", href: "urn:dtc:twin:cam-2" },
      ],
    });
    const recent = props(td).recentDetections as JsonObject;
    expect(recent.title).toBe("Recent detections");
    expect(recent.type).toBe("array");
    expect(recent["tm:ref"]).toBeUndefined();
    expect(td.links).toContainEqual({ rel: "item", href: "urn:dtc:twin:cam-2", type: "application/td+json" });
    expect((td["dtc:aggregation"] as JsonObject)["dtc:schema"]).toBe(sample("masa-camera.tm.jsonld"));
    expect(validateThingDescription(td)).toEqual({ valid: true });
  });

  it("enforces the aggregation's count of links", async () => {
    const err = await failure(
      instantiate(registry, sample("masa-area.tm.jsonld"), { placeholders: { AREA_ID: "a" } }),
    );
    expect(err.errors).toEqual([
      {
        field: "links",
        description: `needs at least 1 links with rel "item" to twins of ${sample("masa-camera.tm.jsonld")}; got 0`,
      },
    ]);
  });

  it("never mutates the registered model or an inline model", async () => {
    const before = registry.get(sample("masa-area.tm.jsonld"));
    const inline = registry.get(sample("iiot-device.tm.jsonld"));
    const snapshot = structuredClone(inline);
    await instantiate(registry, sample("masa-area.tm.jsonld"), {
      placeholders: { AREA_ID: "z" },
      links: [{ rel: "item", href: "urn:x" }],
    });
    await instantiate(
      registry,
      { iri: "https://example.org/inline.tm.jsonld", model: inline },
      { placeholders: { DEVICE_ID: "q" } },
    );
    expect(registry.get(sample("masa-area.tm.jsonld"))).toEqual(before);
    expect(inline).toEqual(snapshot);
  });

  it("gives correct, independent results for concurrent calls", async () => {
    const ids = Array.from({ length: 20 }, (_, i) => `m${i}`);
    const tds = await Promise.all(
      ids.map((id) =>
        instantiate(registry, sample(id.endsWith("0") ? "iiot-machine.tm.jsonld" : "iiot-device.tm.jsonld"), {
          placeholders: { DEVICE_ID: id },
        }),
      ),
    );
    expect(tds.map((td) => physical(td)["dtc:physicalAssetId"] ?? td["dtc:physicalAssetId"])).toEqual(ids);
    expect(tds.filter((td) => "vibration" in props(td)).length).toBe(2);
  });

  it("rejects an unregistered IRI and an invalid inline model", async () => {
    const unknown = await failure(instantiate(registry, "https://example.org/none.tm.jsonld"));
    expect(unknown.errors[0]?.description).toBe("is not a registered Thing Model");
    const bad = await failure(instantiate(registry, { iri: "https://example.org/x", model: { title: "x" } }));
    expect(bad.errors.map((e) => e.field)).toEqual(expect.arrayContaining(["@context", "@type"]));
  });

  it("reports a TD that cannot be valid, e.g. a Thing Model without a title", async () => {
    const reg = new ThingModelRegistry();
    reg.register("https://example.org/untitled.tm.jsonld", {
      "@context": "https://www.w3.org/2022/wot/td/v1.1",
      "@type": "tm:ThingModel",
    });
    const err = await failure(instantiate(reg, "https://example.org/untitled.tm.jsonld"));
    expect(err.errors).toContainEqual({ field: "title", description: "is required" });
  });

  it("toExposedThingInit() strips forms for node-wot", async () => {
    const td = await instantiate(registry, sample("iiot-device.tm.jsonld"), {
      base: "http://h/",
      placeholders: { DEVICE_ID: "d" },
    });
    const init = toExposedThingInit(td);
    expect(JSON.stringify(init)).not.toContain('"forms"');
    expect(init.base).toBeUndefined();
    expect(props(td).temperature?.forms).toBeDefined();
  });
});
