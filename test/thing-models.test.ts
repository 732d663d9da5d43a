import { readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it, onTestFinished } from "vitest";
import { thingModelsDir } from "../src/paths.js";
import { loadThingModels, ThingModelRegistry, thingModelFiles } from "../src/wot/model-registry.js";
import { type ThingModel, validateThingModel } from "../src/wot/thing-model.js";
import { ValidationError, type ValidationResult } from "../src/wot/validation.js";
import { thrown } from "./helpers.js";

const read = (file: string): ThingModel => JSON.parse(readFileSync(join(thingModelsDir, file), "utf8"));
const fields = (r: ValidationResult) => (r.valid ? [] : r.errors.map((e) => e.field));

describe("sample DT Schemas in thing-models/", () => {
  const files = thingModelFiles(thingModelsDir);

  it("has the IIoT device, the MASA camera, a composed area and one that extends another", () => {
    expect(files).toEqual(
      expect.arrayContaining(["iiot-device.tm.jsonld", "masa-camera.tm.jsonld", "masa-area.tm.jsonld"]),
    );
    const extending = files.filter((f) => read(f).links?.some((l) => l.rel === "tm:extends"));
    expect(extending.length).toBeGreaterThan(0);
  });

  it.each(files)("%s is a valid Thing Model with dtc fidelity", (file) => {
    const tm = read(file);
    expect(validateThingModel(tm)).toEqual({ valid: true });
    expect(tm["@type"]).toContain("dtc:DigitalTwinSchema");
  });

  it("all register and resolve (extends, refs, mappings) together", async () => {
    const registry = new ThingModelRegistry();
    const iris = await loadThingModels(registry, thingModelsDir);
    expect(iris).toHaveLength(files.length);
    for (const iri of iris) expect(await registry.check(iri)).toEqual([]);
  });
});

describe("Thing Model validation names the field at fault", () => {
  const base = read("iiot-device.tm.jsonld");
  const variant = (change: (tm: ThingModel) => void): ThingModel => {
    const tm = structuredClone(base);
    change(tm);
    return tm;
  };

  it("rejects a document that is not a Thing Model", () => {
    expect(fields(validateThingModel(variant((tm) => (tm["@type"] = ["Thing"]))))).toContain("@type");
    expect(fields(validateThingModel([]))).toEqual(["(root)"]);
    expect(
      fields(validateThingModel(variant((tm) => delete (tm as Partial<ThingModel>)["@context"]))),
    ).toContain("@context");
  });

  it("rejects a bad affordance with its path", () => {
    const bad = variant((tm) => {
      (tm.properties as Record<string, Record<string, unknown>>).temperature = { type: "celsius" };
    });
    expect(fields(validateThingModel(bad))).toContain("properties.temperature.type");
  });

  it("rejects bad dtc fidelity and physical interface members", () => {
    const bad = variant((tm) => {
      (tm["dtc:fidelity"] as Record<string, unknown>)["dtc:odteThreshold"] = 1.5;
      (tm["dtc:fidelity"] as Record<string, unknown>)["dtc:desiredTimeliness"] = -1;
      (tm["dtc:physicalInterface"] as Record<string, unknown>)["dtc:telemetryTopic"] = "plant/+/telemetry";
      (tm["dtc:physicalInterface"] as Record<string, unknown>)["dtc:timestampField"] = "ts";
    });
    expect(fields(validateThingModel(bad))).toEqual(
      expect.arrayContaining([
        "dtc:fidelity.dtc:odteThreshold",
        "dtc:fidelity.dtc:desiredTimeliness",
        "dtc:physicalInterface.dtc:telemetryTopic",
        "dtc:physicalInterface.dtc:timestampField",
      ]),
    );
  });

  it("accepts placeholders where the model leaves a number open", () => {
    const open = variant((tm) => {
      (tm["dtc:fidelity"] as Record<string, unknown>)["dtc:expectedUpdateRate"] = "{{RATE}}";
    });
    expect(validateThingModel(open)).toEqual({ valid: true });
  });

  it("register() throws a ValidationError carrying every issue", () => {
    const registry = new ThingModelRegistry();
    const bad = variant((tm) => {
      tm["@type"] = "Thing";
      (tm["dtc:fidelity"] as Record<string, unknown>)["dtc:odteWindow"] = 0;
    });
    const err = thrown(() => registry.register("https://example.org/bad.tm.jsonld", bad), ValidationError);
    expect(err.errors.map((e) => e.field)).toEqual(
      expect.arrayContaining(["@type", "dtc:fidelity.dtc:odteWindow"]),
    );
    expect(registry.has("https://example.org/bad.tm.jsonld")).toBe(false);
  });

  /** Registers a variant of the IIoT device alone and returns what check() finds. */
  const checkVariant = (change: (tm: ThingModel) => void) => {
    const registry = new ThingModelRegistry();
    registry.register("https://example.org/variant.tm.jsonld", variant(change));
    return registry.check("https://example.org/variant.tm.jsonld");
  };

  it("check() finds a mapping to an affordance the model lacks", async () => {
    const issues = await checkVariant((tm) => {
      const pi = tm["dtc:physicalInterface"] as Record<string, Record<string, unknown>[]>;
      (pi["dtc:propertyMapping"] as Record<string, unknown>[])[0] = {
        "dtc:affordance": "temprature",
        "dtc:sourcePointer": "/t",
      };
    });
    expect(issues).toEqual([
      {
        field: "dtc:physicalInterface.dtc:propertyMapping.0.dtc:affordance",
        description: 'names "temprature", which is not one of the model\'s properties',
      },
    ]);
  });

  it("check() requires the complete dtc members once inheritance is resolved", async () => {
    const issues = await checkVariant((tm) => {
      delete (tm["dtc:physicalInterface"] as Record<string, unknown>)["dtc:telemetryTopic"];
    });
    expect(issues).toEqual([
      { field: "dtc:physicalInterface.dtc:telemetryTopic", description: "is required" },
    ]);
  });

  it("check() reports an unregistered tm:extends target and a circular extends", async () => {
    const registry = new ThingModelRegistry();
    const child = (href: string) => ({
      "@context": ["https://www.w3.org/2022/wot/td/v1.1"],
      "@type": "tm:ThingModel",
      title: "child",
      links: [{ rel: "tm:extends", href, type: "application/tm+json" }],
    });
    registry.register("https://example.org/a.tm.jsonld", child("./missing.tm.jsonld"));
    const [missing] = await registry.check("https://example.org/a.tm.jsonld");
    expect(missing?.description).toContain(
      '"https://example.org/missing.tm.jsonld", which is not a registered',
    );

    registry.register("https://example.org/b.tm.jsonld", child("./c.tm.jsonld"));
    registry.register("https://example.org/c.tm.jsonld", child("./b.tm.jsonld"));
    const [cycle] = await registry.check("https://example.org/b.tm.jsonld");
    expect(cycle?.description).toMatch(/circular reference/);
  });

  it("loadThingModels() names the file at fault", async () => {
    const { mkdtempSync, rmSync, writeFileSync } = await import("node:fs");
    const { tmpdir } = await import("node:os");
    const dir = mkdtempSync(join(tmpdir(), "dtc-tm-"));
    onTestFinished(() => rmSync(dir, { recursive: true, force: true }));
    writeFileSync(join(dir, "ok.tm.jsonld"), JSON.stringify(base));
    writeFileSync(join(dir, "broken.tm.json"), JSON.stringify({ ...base, "@type": "Thing" }));
    writeFileSync(join(dir, "notes.txt"), "not a model");
    const err = await loadThingModels(new ThingModelRegistry(), dir).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ValidationError);
    expect((err as ValidationError).errors).toEqual([
      { field: "broken.tm.json: @type", description: 'must be "tm:ThingModel", or must be array' },
    ]);
  });
});
