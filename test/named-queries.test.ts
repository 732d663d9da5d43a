import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import oxigraph from "oxigraph";
import sparqljs from "sparqljs";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { loadNamedQueries, type NamedQueries, NamedQueryError } from "../src/directory/named-queries.js";
import { instantiate } from "../src/wot/instantiate.js";
import { type JsonObject, toNQuads } from "../src/wot/rdf.js";
import { sample, sampleRegistry, thrown } from "./helpers.js";

const DTC = "https://w3id.org/dtc#";
const XSD = "http://www.w3.org/2001/XMLSchema#";
const SAREF = "https://saref.etsi.org/core/";
const IIOT = sample("iiot-device.tm.jsonld");
const CAMERA = sample("masa-camera.tm.jsonld");

const D1 = "urn:dtc:twin:d1";
const D2 = "urn:dtc:twin:d2";
const C1 = "urn:dtc:twin:c1";
const PLAIN = "urn:example:thermometer";
const FAKE = "urn:dtc:twin:fake";
const EDGE = "urn:dtc:node:edge-1";
const CLOUD = "urn:dtc:node:cloud-1";

/** The status graph of a twin, in the shape the directory writes it. */
const statusGraphOf = (id: string) => `urn:dtc:status:${encodeURIComponent(id)}`;

interface Status {
  state: string;
  odte: number;
  node?: string;
  /** An N-Quads object: an IRI (`<...>`) or a literal (`"..."`). */
  platform?: string;
  /** Extra triples (subject predicate object) for the status graph. */
  extra?: string[];
}

let blank = 0;
function statusQuads(id: string, status: Status): string {
  const g = `<${statusGraphOf(id)}>`;
  const e = `_:e${++blank}`;
  const triples = [
    `<${id}> <${DTC}lifecycleState> <${DTC}${status.state}>`,
    `<${id}> <${DTC}entanglement> ${e}`,
    `${e} <${DTC}odte> "${status.odte}"^^<${XSD}double>`,
    `${e} <${DTC}timeliness> "1"^^<${XSD}double>`,
    `${e} <${DTC}reliability> "${status.odte}"^^<${XSD}double>`,
    `${e} <${DTC}availability> "1"^^<${XSD}double>`,
    `${e} <${DTC}evaluatedAt> "2025-01-01T00:00:00Z"^^<${XSD}dateTime>`,
    ...(status.node ? [`<${id}> <${DTC}node> <${status.node}>`] : []),
    ...(status.platform ? [`<${id}> <${DTC}platform> ${status.platform}`] : []),
    ...(status.extra ?? []),
  ];
  return triples.map((t) => `${t} ${g} .\n`).join("");
}

type Row = Record<string, string>;

describe("named queries", () => {
  let queries: NamedQueries;
  let store: oxigraph.Store;

  /** Binds and runs a named query; each row maps variable names to term values. */
  const run = (name: string, params: Record<string, string>): Row[] => {
    const results = store.query(queries.bind(name, params)) as Map<string, oxigraph.Term>[];
    return results.map((m) => Object.fromEntries([...m].map(([k, v]) => [k, v.value])));
  };
  const things = (name: string, params: Record<string, string>) =>
    [...new Set(run(name, params).map((r) => r.thing))].sort();

  beforeAll(async () => {
    queries = await loadNamedQueries();
    const registry = await sampleRegistry();
    store = new oxigraph.Store();
    const twin = async (
      schema: string,
      id: string,
      placeholders: Record<string, unknown>,
      language?: string,
    ) => {
      const td = await instantiate(registry, schema, { placeholders, id });
      // node-wot exposes TDs with a default language, which makes their strings (a link's rel
      // among them) language-tagged literals: the queries must still see rel "type".
      if (language) td["@context"] = [...(td["@context"] as unknown[]), { "@language": language }];
      store.load(await toNQuads(td, { graph: id }), { format: "application/n-quads" });
    };
    await twin(IIOT, D1, { DEVICE_ID: "d1" });
    await twin(IIOT, D2, { DEVICE_ID: "d2" }, "en");
    await twin(CAMERA, C1, { CAMERA_ID: "c1", LATITUDE: 44.65, LONGITUDE: 10.93 });

    // Not a twin, yet it links the iiot schema and has a saref:Temperature property. Its graph
    // also speaks for others: it claims a twin FAKE exists and that D2 is Entangled.
    const plain: JsonObject = {
      "@context": ["https://www.w3.org/2022/wot/td/v1.1", "https://w3id.org/dtc/v1"],
      "@type": ["Thing", "saref:Sensor"],
      id: PLAIN,
      title: "Plain thermometer",
      securityDefinitions: { nosec_sc: { scheme: "nosec" } },
      security: "nosec_sc",
      properties: {
        temperature: {
          "@type": "saref:Temperature",
          type: "number",
          forms: [{ href: "http://example.org/t" }],
        },
      },
      links: [{ rel: "type", href: IIOT, type: "application/tm+json" }],
    };
    const spoof = [
      `<${FAKE}> <http://www.w3.org/1999/02/22-rdf-syntax-ns#type> <${DTC}DigitalTwin> <${PLAIN}> .`,
      `<${D2}> <${DTC}lifecycleState> <${DTC}Entangled> <${PLAIN}> .`,
    ].join("\n");
    store.load(`${await toNQuads(plain, { graph: PLAIN })}${spoof}\n`, { format: "application/n-quads" });

    const status = [
      statusQuads(D1, { state: "Entangled", odte: 0.97, node: EDGE, platform: `<${DTC}Docker>` }),
      // Bound with a good ODTE: not evaluated as entangled yet.
      statusQuads(D2, { state: "Bound", odte: 0.93, platform: '"in-process"' }),
      statusQuads(C1, {
        state: "Entangled",
        odte: 0.99,
        node: CLOUD,
        extra: [`<${CLOUD}> <${DTC}platform> <${DTC}Kubernetes>`],
      }),
      // Status for things that are not twins must not make them twins.
      statusQuads(PLAIN, { state: "Entangled", odte: 1, node: EDGE, platform: `<${DTC}Docker>` }),
      statusQuads(FAKE, { state: "Entangled", odte: 1, node: EDGE, platform: `<${DTC}Docker>` }),
    ];
    store.load(status.join(""), { format: "application/n-quads" });
  });

  describe("loading", () => {
    it("loads every query of directory/queries, each a parseable SPARQL SELECT", () => {
      expect(queries.list().map((q) => q.name)).toEqual([
        "twins-by-capability",
        "twins-by-entanglement",
        "twins-by-lifecycle",
        "twins-by-node",
        "twins-by-schema",
      ]);
      for (const q of queries.list()) expect(q.description).not.toBe("");
    });

    it("lists each query's parameters from its @param comments", () => {
      const entanglement = queries.list().find((q) => q.name === "twins-by-entanglement");
      expect(entanglement?.params.map(({ name, type, optional }) => ({ name, type, optional }))).toEqual([
        { name: "minOdte", type: "number", optional: false },
        { name: "schema", type: "iri", optional: true },
        { name: "state", type: "state", optional: true },
      ]);
      expect(entanglement?.params[0]?.description).toMatch(/ODTE/);
    });

    describe("a bad query file", () => {
      let dir: string;
      beforeAll(async () => {
        dir = await mkdtemp(join(tmpdir(), "dtc-queries-"));
      });
      afterAll(() => rm(dir, { recursive: true, force: true }));
      const load = async (text: string) => {
        await writeFile(join(dir, "broken.rq"), text);
        return loadNamedQueries(dir);
      };

      it("that does not parse fails loading, naming the file and the parser's message", async () => {
        await expect(load("# Broken.\nSELECT ?x WHERE { ?x ?y }\n")).rejects.toThrow(
          /broken\.rq: not a valid SPARQL query: Parse error/,
        );
      });

      it("with a parameter the query does not use, or of an unknown type, fails loading", async () => {
        await expect(load("# Q.\n# @param y iri Y.\nSELECT ?x WHERE { ?x ?p ?o }\n")).rejects.toThrow(
          /broken\.rq: parameter "y" is not a variable of the query/,
        );
        await expect(load("# Q.\n# @param x date X.\nSELECT ?x WHERE { ?x ?p ?o }\n")).rejects.toThrow(
          /broken\.rq:2: parameter "x" has type "date"/,
        );
      });

      it("that is an update, or has no description, fails loading", async () => {
        await expect(load("# Q.\nDROP ALL\n")).rejects.toThrow(/broken\.rq: a SPARQL update, not a query/);
        await expect(load("SELECT ?x WHERE { ?x ?p ?o }\n")).rejects.toThrow(/broken\.rq: no description/);
      });
    });
  });

  describe("binding", () => {
    const reparse = (text: string) => new sparqljs.Parser().parse(text);

    it("produces queries that parse again, with the values in a VALUES clause", () => {
      const samples: Record<string, Record<string, string>> = {
        "twins-by-schema": { schema: IIOT },
        "twins-by-capability": { type: `${SAREF}Temperature` },
        "twins-by-lifecycle": { state: "Done" },
        "twins-by-entanglement": { minOdte: "0.9", schema: IIOT, state: "Entangled" },
        "twins-by-node": { node: EDGE, platform: "docker" },
      };
      for (const q of queries.list()) {
        const params = samples[q.name];
        expect(params, q.name).toBeDefined();
        const text = queries.bind(q.name, params ?? {});
        const parsed = reparse(text) as sparqljs.SelectQuery;
        expect(parsed.queryType).toBe("SELECT");
        expect(parsed.where?.[0]?.type).toBe("values");
      }
    });

    it("leaves absent optional parameters unbound (no VALUES clause for them)", () => {
      const text = queries.bind("twins-by-entanglement", { minOdte: "0.5" });
      const values = (reparse(text) as sparqljs.SelectQuery).where?.[0] as sparqljs.ValuesPattern;
      expect(values.values).toHaveLength(1);
      expect(Object.keys(values.values[0] ?? {})).toEqual(["?minOdte"]);
    });

    it("rejects an unknown query, an unknown or missing parameter, naming it", () => {
      expect(thrown(() => queries.bind("twins-by-color", {}), NamedQueryError).message).toMatch(
        /"twins-by-color": no such query; known: twins-by-capability/,
      );
      const unknown = thrown(
        () => queries.bind("twins-by-schema", { schema: IIOT, limit: "3" }),
        NamedQueryError,
      );
      expect(unknown.param).toBe("limit");
      expect(unknown.message).toMatch(/unknown parameter "limit"; parameters: schema/);
      const missing = thrown(() => queries.bind("twins-by-entanglement", { schema: IIOT }), NamedQueryError);
      expect(missing.param).toBe("minOdte");
      expect(missing.message).toMatch(/missing parameter "minOdte" \(number\)/);
    });

    it("rejects values not of the parameter's type, saying what was expected", () => {
      const bad = (name: string, params: Record<string, string>) =>
        thrown(() => queries.bind(name, params), NamedQueryError);
      expect(bad("twins-by-schema", { schema: "iiot-device.tm.jsonld" }).message).toMatch(
        /parameter "schema" must be an absolute IRI .*; got "iiot-device.tm.jsonld"/,
      );
      for (const minOdte of ["", "high", "Infinity", "NaN", "1e999", "0x10", "0.9; DROP ALL"]) {
        expect(bad("twins-by-entanglement", { minOdte }).message).toMatch(
          /parameter "minOdte" must be a finite decimal number/,
        );
      }
      expect(bad("twins-by-lifecycle", { state: "Running" }).message).toMatch(
        /parameter "state" must be a lifecycle state \(Unbound, Bound, Entangled, Disentangled, Done, Stopped\); got "Running"/,
      );
    });

    it("refuses an IRI that would break out of <...> instead of writing it into the query", () => {
      for (const schema of [
        "x> } ; DROP ALL ; #",
        `${IIOT}> } ; DROP ALL ; #`,
        "http://example.org/a b",
        "http://example.org/{x}",
        'http://example.org/"',
      ]) {
        const err = thrown(() => queries.bind("twins-by-schema", { schema }), NamedQueryError);
        expect(err.param).toBe("schema");
        expect(err.message).toMatch(/must be an absolute IRI/);
      }
    });

    it("keeps a string with quotes, braces and comments one harmless literal", () => {
      const platform = 'docker" } } ; DROP ALL ; # \\ \n {';
      const text = queries.bind("twins-by-node", { platform });
      const parsed = reparse(text) as sparqljs.SelectQuery;
      const values = parsed.where?.[0] as sparqljs.ValuesPattern;
      expect(values.values[0]?.["?platform"]).toMatchObject({ termType: "Literal", value: platform });
      // Same query as with a plain value: nothing but the literal changed.
      const plain = reparse(queries.bind("twins-by-node", { platform: "docker" })) as sparqljs.SelectQuery;
      expect(parsed.where?.slice(1)).toEqual(plain.where?.slice(1));
      expect(run("twins-by-node", { platform })).toEqual([]);
    });
  });

  describe("results on a directory with twins, a plain TD and status graphs", () => {
    it("twins-by-schema: the twins of a schema, with their title", () => {
      expect(run("twins-by-schema", { schema: IIOT })).toEqual([
        { thing: D1, title: "IIoT Device d1" },
        { thing: D2, title: "IIoT Device d2" },
      ]);
      expect(things("twins-by-schema", { schema: CAMERA })).toEqual([C1]);
      expect(things("twins-by-schema", { schema: sample("masa-area.tm.jsonld") })).toEqual([]);
    });

    it("twins-by-capability: twins with an affordance of the type, or of the type themselves", () => {
      expect(run("twins-by-capability", { type: `${SAREF}Temperature` })).toEqual([
        { thing: D1, affordance: "temperature" },
        { thing: D2, affordance: "temperature" },
      ]);
      // saref:Sensor is the camera's own @type (and the plain TD's, which is no twin).
      expect(run("twins-by-capability", { type: `${SAREF}Sensor` })).toEqual([{ thing: C1 }]);
      expect(things("twins-by-capability", { type: `${DTC}DigitalTwin` })).toEqual([C1, D1, D2]);
    });

    it("twins-by-lifecycle: the twins in a state, from the status graphs only", () => {
      expect(run("twins-by-lifecycle", { state: "Entangled" })).toEqual([
        { thing: C1, state: `${DTC}Entangled` },
        { thing: D1, state: `${DTC}Entangled` },
      ]);
      expect(things("twins-by-lifecycle", { state: "Bound" })).toEqual([D2]);
      expect(things("twins-by-lifecycle", { state: "Stopped" })).toEqual([]);
    });

    it("twins-by-entanglement: twins of a schema with ODTE >= 0.9 that are Entangled", () => {
      expect(run("twins-by-entanglement", { minOdte: "0.9", schema: IIOT, state: "Entangled" })).toEqual([
        { thing: D1, odte: "0.97", state: `${DTC}Entangled` },
      ]);
      // Without the state: the Bound twin too; without the schema: the camera too, best ODTE first.
      expect(run("twins-by-entanglement", { minOdte: "0.9", schema: IIOT }).map((r) => r.thing)).toEqual([
        D1,
        D2,
      ]);
      expect(run("twins-by-entanglement", { minOdte: "0.9" }).map((r) => r.thing)).toEqual([C1, D1, D2]);
      expect(things("twins-by-entanglement", { minOdte: "0.95" })).toEqual([C1, D1]);
      expect(things("twins-by-entanglement", { minOdte: "1" })).toEqual([]);
      expect(things("twins-by-entanglement", { minOdte: "0", schema: CAMERA, state: "Bound" })).toEqual([]);
    });

    it("twins-by-node: the twins on a node or platform", () => {
      expect(things("twins-by-node", { node: EDGE })).toEqual([D1]);
      expect(things("twins-by-node", { node: CLOUD })).toEqual([C1]);
      expect(things("twins-by-node", { platform: "docker" })).toEqual([D1]);
      expect(things("twins-by-node", { platform: "Kubernetes" })).toEqual([C1]); // its node's platform
      expect(things("twins-by-node", { platform: "in-process" })).toEqual([D2]);
      expect(things("twins-by-node", { node: EDGE, platform: "kubernetes" })).toEqual([]);
      expect(things("twins-by-node", {})).toEqual([C1, D1, D2]);
    });
  });
});
