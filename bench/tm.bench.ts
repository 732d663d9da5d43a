import { ThingModelHelpers } from "@thingweb/thing-model";
import jsonld from "jsonld";
import { thingModelsDir } from "../src/paths.js";
import { type InstantiateOptions, instantiate } from "../src/wot/instantiate.js";
import { offlineDocumentLoader } from "../src/wot/jsonld-loader.js";
import { loadThingModels, SAMPLE_SCHEMA_BASE, ThingModelRegistry } from "../src/wot/model-registry.js";
import { toNQuads } from "../src/wot/rdf.js";
import type { ThingModel } from "../src/wot/thing-model.js";
import { type Benchmark, type Case, measure } from "./harness.js";

/** Placeholder values and links for each sample schema. */
const SAMPLES: Record<string, InstantiateOptions> = {
  "iiot-device.tm.jsonld": { placeholders: { DEVICE_ID: "d1" } },
  "iiot-machine.tm.jsonld": { placeholders: { DEVICE_ID: "m1" } },
  "masa-camera.tm.jsonld": { placeholders: { CAMERA_ID: "c1", LATITUDE: 44.6, LONGITUDE: 10.9 } },
  "masa-area.tm.jsonld": {
    placeholders: { AREA_ID: "a1" },
    links: [{ rel: "item", href: "urn:dtc:twin:c1" }],
  },
};

/**
 * TM -> TD instantiation and TD -> N-Quads conversion per second for the sample schemas.
 * Baselines of the same run: ThingModelHelpers alone (no validation, no dtc post-processing), and
 * jsonld.js expansion alone (the first half of to-RDF).
 */
export const benchmark: Benchmark = {
  name: "tm",
  description: "TM -> TD instantiation and TD -> N-Quads, per sample schema",
  async run() {
    const registry = new ThingModelRegistry();
    await loadThingModels(registry, thingModelsDir);
    const cases: Case[] = [];
    for (const [file, options] of Object.entries(SAMPLES)) {
      const iri = new URL(file, SAMPLE_SCHEMA_BASE).href;
      const schema = file.replace(".tm.jsonld", "");
      const model = registry.get(iri) as ThingModel;
      const map = registry.helperMap(registry.prepare(model, iri), options.placeholders);
      const td = await instantiate(registry, iri, options);
      cases.push(
        {
          name: `${schema}: ThingModelHelpers only`,
          fn: () =>
            new ThingModelHelpers(registry.resolver()).getPartialTDs(registry.prepare(model, iri), { map }),
        },
        {
          name: `${schema}: instantiate`,
          fn: () => instantiate(registry, iri, options),
          baseline: `${schema}: ThingModelHelpers only`,
        },
        {
          name: `${schema}: jsonld.expand only`,
          fn: () => jsonld.expand(td as never, { documentLoader: offlineDocumentLoader as never }),
        },
        {
          name: `${schema}: TD -> N-Quads`,
          fn: () => toNQuads(td),
          baseline: `${schema}: jsonld.expand only`,
        },
      );
    }
    return measure(cases);
  },
};
