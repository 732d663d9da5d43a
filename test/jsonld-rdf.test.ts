import { readFileSync } from "node:fs";
import { join } from "node:path";
import oxigraph from "oxigraph";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ontologyDir } from "../src/paths.js";
import { instantiate } from "../src/wot/instantiate.js";
import {
  offlineDocumentLoader,
  RemoteContextRefusedError,
  registerContext,
} from "../src/wot/jsonld-loader.js";
import type { ThingModelRegistry } from "../src/wot/model-registry.js";
import { expand, type JsonObject, toNQuads } from "../src/wot/rdf.js";
import { cutNetwork, sample, sampleRegistry } from "./helpers.js";

const TD = "https://www.w3.org/2019/wot/td#";
const DTC = "https://w3id.org/dtc#";

function parseQuads(nquads: string) {
  return oxigraph.parse(nquads, { format: "application/n-quads" });
}

describe("JSON-LD and RDF with the network unreachable", () => {
  let network: ReturnType<typeof cutNetwork>;
  let registry: ThingModelRegistry;
  let iiot: JsonObject;

  beforeAll(async () => {
    registry = await sampleRegistry();
    network = cutNetwork();
    iiot = await instantiate(registry, sample("iiot-device.tm.jsonld"), {
      id: "urn:dtc:twin:d1",
      base: "http://127.0.0.1:8080/twins/d1/",
      placeholders: { DEVICE_ID: "d1" },
    });
  });
  afterAll(() => network.restore());

  it("the guard really cuts the network", async () => {
    const before = network.attempts.length;
    await expect(fetch("http://192.0.2.1/")).rejects.toThrow();
    expect(network.attempts.length).toBeGreaterThan(before);
    network.attempts.length = before;
  });

  it("converts a twin's TD to N-Quads that an RDF parser accepts", async () => {
    const quads = parseQuads(await toNQuads(iiot));
    const has = (s: string, p: string, o: string) =>
      quads.some((q) => q.subject.value === s && q.predicate.value === p && q.object.value === o);
    expect(
      has("urn:dtc:twin:d1", "http://www.w3.org/1999/02/22-rdf-syntax-ns#type", `${DTC}DigitalTwin`),
    ).toBe(true);
    expect(has("urn:dtc:twin:d1", `${TD}title`, "IIoT Device d1")).toBe(true);
    expect(has("urn:dtc:twin:d1", `${DTC}physicalAssetId`, "d1")).toBe(true);
    // TD 1.1: form targets are xsd:anyURI literals, relative to the td:baseURI the TD states.
    expect(has("urn:dtc:twin:d1", `${TD}baseURI`, "http://127.0.0.1:8080/twins/d1/")).toBe(true);
    const target = quads.find((q) => q.object.value === "properties/temperature");
    expect((target?.object as oxigraph.Literal | undefined)?.datatype.value).toBe(
      "http://www.w3.org/2001/XMLSchema#anyURI",
    );
    // Fidelity numbers become numeric literals SPARQL can compare.
    const threshold = quads.find((q) => q.predicate.value === `${DTC}odteThreshold`);
    expect(threshold?.object.termType).toBe("Literal");
    expect((threshold?.object as oxigraph.Literal | undefined)?.datatype.value).toBe(
      "http://www.w3.org/2001/XMLSchema#double",
    );
    expect(Number(threshold?.object.value)).toBe(0.9);
    expect(network.attempts).toEqual([]);
  });

  it("every sample schema instantiates and converts offline", async () => {
    const cases: [string, Record<string, unknown>, JsonObject[]?][] = [
      ["iiot-machine.tm.jsonld", { DEVICE_ID: "m1" }],
      ["masa-camera.tm.jsonld", { CAMERA_ID: "c1", LATITUDE: 44.65, LONGITUDE: 10.93 }],
      ["masa-area.tm.jsonld", { AREA_ID: "a1" }, [{ rel: "item", href: "urn:dtc:twin:c1" }]],
    ];
    for (const [file, placeholders, links] of cases) {
      const td = await instantiate(registry, sample(file), {
        placeholders,
        links: links as never,
        base: "http://x/",
      });
      const quads = parseQuads(await toNQuads(td));
      expect(quads.length, file).toBeGreaterThan(20);
    }
    expect(network.attempts).toEqual([]);
  });

  it("puts a TD in a named graph on request", async () => {
    const quads = parseQuads(await toNQuads(iiot, { graph: "urn:dtc:graph:d1" }));
    expect(quads.length).toBeGreaterThan(0);
    expect(new Set(quads.map((q) => q.graph.value))).toEqual(new Set(["urn:dtc:graph:d1"]));
  });

  it("expands TD 1.0, TD 1.1 and discovery contexts from local files", async () => {
    const doc = {
      "@context": ["https://www.w3.org/2019/wot/td/v1", "https://www.w3.org/2022/wot/discovery"],
      id: "urn:x",
      title: "old",
      registration: { created: "2026-01-01T00:00:00Z" },
    };
    const [node] = await expand(doc);
    expect(node?.[`${TD}title`]).toEqual([{ "@value": "old", "@language": "en" }]);
    expect(
      Object.keys(node ?? {}).some((k) => k.startsWith("https://www.w3.org/2022/wot/discovery-ontology#")),
    ).toBe(true);
    expect(network.attempts).toEqual([]);
  });

  it("refuses an unknown remote context with an error naming the URL", async () => {
    const doc = {
      "@context": ["https://www.w3.org/2022/wot/td/v1.1", "https://example.org/ctx.jsonld"],
      title: "x",
    };
    const err = await toNQuads(doc).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(RemoteContextRefusedError);
    expect((err as Error).message).toContain('"https://example.org/ctx.jsonld"');
    expect((err as Error).message).toContain("not available offline");
    await expect(expand(doc)).rejects.toThrow(/https:\/\/example\.org\/ctx\.jsonld/);
    expect(network.attempts).toEqual([]);
  });

  it("serves a context registered at run time", async () => {
    registerContext("https://example.org/registered/v1", { "@context": { ex: "https://example.org/ns#" } });
    const quads = parseQuads(
      await toNQuads({ "@context": "https://example.org/registered/v1", "@id": "urn:a", "ex:p": "v" }),
    );
    expect(quads.map((q) => q.predicate.value)).toEqual(["https://example.org/ns#p"]);
  });

  it("serves the same files as the W3C copies in ontology/w3c", async () => {
    const served = await offlineDocumentLoader("http://www.w3.org/2022/wot/td/v1.1/");
    const file = JSON.parse(readFileSync(join(ontologyDir, "w3c/td-context-1.1.jsonld"), "utf8"));
    expect(served.document).toEqual(file);
  });
});
