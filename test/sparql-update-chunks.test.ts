import oxigraph from "oxigraph";
import { describe, expect, it } from "vitest";
import { GENID } from "../src/directory/sparql/terms.js";
import {
  OPERATION_TRIPLES,
  operations,
  REQUEST_TRIPLES,
  replaceGraph,
  STRUCTURE_TRIPLES,
} from "../src/directory/sparql/update-chunks.js";
import { StoreError } from "../src/directory/store.js";

/**
 * The update chunks of a write, without a server: each request is applied to an in-memory Oxigraph
 * store, which runs SPARQL Update as any store does.
 */

const GRAPH = "urn:ex:graph";
const { namedNode, blankNode, literal, quad } = oxigraph;
const g = namedNode(GRAPH);
const ex = (local: string) => namedNode(`http://example.org/${local}`);

const plain = (n: number, from = 0): oxigraph.Quad[] =>
  Array.from({ length: n }, (_, i) => quad(ex(`s${from + i}`), ex("p"), literal(`v${from + i}`), g));

/** A chain of `n` triples through blank nodes: one structure (_:b0 -> _:b1 -> ... ). */
const chain = (n: number, label: string): oxigraph.Quad[] =>
  Array.from({ length: n }, (_, i) =>
    quad(
      i === 0 ? ex(`${label}-root`) : blankNode(`${label}${i - 1}`),
      ex("next"),
      blankNode(`${label}${i}`),
      g,
    ),
  );

/** Runs `requests` one after the other on `store` (a fresh one by default). */
function apply(requests: string[], store = new oxigraph.Store()): oxigraph.Store {
  for (const request of requests) store.update(request);
  return store;
}

const graphOf = (store: oxigraph.Store) => store.match(null, null, null, g);

describe("operations", () => {
  it("cuts plain triples into operations of at most OPERATION_TRIPLES, in order", () => {
    const quads = plain(OPERATION_TRIPLES * 2 + 50);
    const ops = operations(quads);
    expect(ops.map((op) => op.length)).toEqual([OPERATION_TRIPLES, OPERATION_TRIPLES, 50]);
    expect(ops.flat()).toEqual(quads);
  });

  it("keeps a blank-node structure within one operation, even past OPERATION_TRIPLES", () => {
    const structure = chain(150, "a");
    const quads = [...plain(OPERATION_TRIPLES - 10), ...structure, ...plain(5, 1000)];
    const ops = operations(quads);
    const holding = ops.filter((op) => op.some((q) => q.object.termType === "BlankNode"));
    expect(holding).toHaveLength(1);
    expect(holding[0]?.filter((q) => q.object.termType === "BlankNode")).toEqual(structure);
    expect(ops.flat()).toHaveLength(quads.length);
  });

  it("joins blank nodes linked through other triples into one structure", () => {
    // _:x and _:y only meet through the third triple, which comes after a plain one.
    const quads = [
      quad(blankNode("x"), ex("p"), literal("1"), g),
      ...plain(OPERATION_TRIPLES - 2),
      quad(blankNode("y"), ex("p"), literal("2"), g),
      quad(blankNode("x"), ex("q"), blankNode("y"), g),
    ];
    const ops = operations(quads);
    const withBlanks = ops.filter((op) =>
      op.some((q) => q.subject.termType === "BlankNode" || q.object.termType === "BlankNode"),
    );
    expect(withBlanks).toHaveLength(1);
    expect(withBlanks[0]?.filter((q) => q.subject.termType === "BlankNode")).toHaveLength(3);
  });

  it("skolemises a structure bigger than STRUCTURE_TRIPLES, then cuts it like plain triples", () => {
    const quads = chain(STRUCTURE_TRIPLES + 1, "big");
    const ops = operations(quads);
    expect(ops.every((op) => op.length <= OPERATION_TRIPLES)).toBe(true);
    const terms = ops.flat().flatMap((q) => [q.subject, q.object]);
    expect(terms.some((t) => t.termType === "BlankNode")).toBe(false);
    // One IRI per blank node, the same wherever the node occurs: the chain holds together.
    const skolems = new Set(terms.filter((t) => t.value.startsWith(GENID)).map((t) => t.value));
    expect(skolems.size).toBe(STRUCTURE_TRIPLES + 1);
    const objects = new Set(ops.flat().map((q) => q.object.value));
    const linked = ops.flat().filter((q) => q.subject.value.startsWith(GENID));
    expect(linked.every((q) => objects.has(q.subject.value))).toBe(true);
  });
});

describe("replaceGraph", () => {
  it("writes exactly the graph given, replacing what it held", () => {
    const store = new oxigraph.Store([quad(ex("old"), ex("p"), literal("stale"), g)]);
    const quads = [
      ...plain(700),
      ...chain(120, "a"),
      quad(ex("s"), ex("label"), literal('quotes " and \\ and\nnew lines', "en"), g),
    ];
    apply(replaceGraph(GRAPH, quads), store);
    expect(store.size).toBe(quads.length);
    // The ground triples are the same; the blank-node chain still hangs together, root to end.
    const ground = (qs: oxigraph.Quad[]) =>
      qs
        .filter((q) => q.subject.termType !== "BlankNode" && q.object.termType !== "BlankNode")
        .map(String)
        .sort();
    expect(ground(graphOf(store))).toEqual(ground(quads));
    const reached = store.query(
      `SELECT (COUNT(DISTINCT ?x) AS ?n) WHERE { GRAPH <${GRAPH}> { ${ex("a-root")} ${ex("next")}+ ?x } }`,
    ) as Map<string, oxigraph.Term>[];
    expect(reached[0]?.get("n")?.value).toBe("120");
  });

  it("sends at most REQUEST_TRIPLES triples a request, the first dropping the graph", () => {
    const quads = [...plain(1200), ...chain(STRUCTURE_TRIPLES, "a"), ...chain(STRUCTURE_TRIPLES + 5, "b")];
    const requests = replaceGraph(GRAPH, quads);
    expect(requests.length).toBeGreaterThan(1);
    expect(requests[0]?.startsWith(`DROP SILENT GRAPH <${GRAPH}>`)).toBe(true);
    expect(requests.slice(1).some((r) => r.includes("DROP"))).toBe(false);
    const sizes = requests.map((r) => apply([r]).size);
    expect(sizes.every((n) => n <= REQUEST_TRIPLES)).toBe(true);
    expect(sizes.reduce((a, b) => a + b, 0)).toBe(quads.length);
  });

  it("ends the last request with the operations given as `last`", () => {
    const last = [`INSERT DATA { GRAPH <urn:ex:records> { <urn:ex:r> <urn:ex:p> "done" } }`];
    const requests = replaceGraph(GRAPH, plain(REQUEST_TRIPLES * 2), last);
    expect(requests.at(-1)?.endsWith(last[0] as string)).toBe(true);
    expect(requests.slice(0, -1).some((r) => r.includes("urn:ex:records"))).toBe(false);
    expect(replaceGraph(GRAPH, [], last)).toEqual([`DROP SILENT GRAPH <${GRAPH}> ;\n${last[0]}`]);
  });

  it("refuses a graph name that is not an IRI", () => {
    expect(() => replaceGraph("not an iri", plain(1))).toThrow(StoreError);
  });
});
