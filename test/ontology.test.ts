import { readFileSync } from "node:fs";
import { join } from "node:path";
import oxigraph from "oxigraph";
import { describe, expect, it } from "vitest";
import { ontologyDir, projectRoot, thingModelsDir } from "../src/paths.js";
import { thingModelFiles } from "../src/wot/model-registry.js";

const DTC = "https://w3id.org/dtc#";
const read = (file: string) => readFileSync(join(ontologyDir, file), "utf8");

describe("the dtc ontology", () => {
  const store = new oxigraph.Store();
  store.load(read("dtc.ttl"), { format: "text/turtle" });
  const defined = new Set(
    store
      .match(null, oxigraph.namedNode("http://www.w3.org/1999/02/22-rdf-syntax-ns#type"), null)
      .map((q) => q.subject.value)
      .filter((s) => s.startsWith(DTC))
      .map((s) => `dtc:${s.slice(DTC.length)}`),
  );

  it("parses as Turtle and declares the lifecycle states as individuals", () => {
    const states = store
      .match(
        null,
        oxigraph.namedNode("http://www.w3.org/1999/02/22-rdf-syntax-ns#type"),
        oxigraph.namedNode(`${DTC}LifecycleState`),
      )
      .map((q) => q.subject.value.slice(DTC.length))
      .sort();
    expect(states).toEqual(["Bound", "Disentangled", "Done", "Entangled", "Stopped", "Unbound"]);
  });

  it("defines every dtc term the context, the extension schema and the sample schemas use", () => {
    const used = new Set<string>();
    const texts = [
      read("dtc-context.jsonld"),
      read("dtc-extensions.schema.json"),
      ...thingModelFiles(thingModelsDir).map((f) => readFileSync(join(thingModelsDir, f), "utf8")),
      // The affordances every twin's TD gets.
      readFileSync(join(projectRoot, "src/runtime/twin-description.ts"), "utf8"),
    ];
    for (const text of texts) for (const m of text.matchAll(/"dtc:([A-Za-z]+)"/g)) used.add(`dtc:${m[1]}`);
    expect(used.size).toBeGreaterThan(20);
    expect([...used].filter((t) => !defined.has(t))).toEqual([]);
  });

  it("documents every term in ontology/README.md", () => {
    const readme = read("README.md");
    expect([...defined].filter((t) => !readme.includes(`\`${t}\``))).toEqual([]);
  });

  it("says where terms follow the WoDT vocabulary", () => {
    expect(read("dtc.ttl")).toMatch(/Follows wodt:/);
    expect(store.match(null, null, oxigraph.namedNode("https://purl.org/wodt/physicalAssetId")).length).toBe(
      1,
    );
  });
});
