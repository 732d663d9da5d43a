/**
 * The SPARQL update requests that write a graph, cut to sizes a store compiles quickly: pure
 * functions, no I/O. Blank-node structures stay whole within one operation (a blank node label is
 * fresh in each INSERT template); those too big for one are skolemised first (RDF 1.1 §3.5).
 */
import { randomUUID } from "node:crypto";
import oxigraph from "oxigraph";
import { GENID, iri } from "./terms.js";

// Virtuoso compiles one operation to at most 10000 lines of SQL (~1200 triples), and compile time
// grows faster than linearly: 100 triples take ~10 ms, 1000 take ~300 ms.
export const OPERATION_TRIPLES = 100;
/** A blank-node structure bigger than this is skolemised so that it can be split. */
export const STRUCTURE_TRIPLES = 400;
/** Most triples in one update request (its operations together). */
export const REQUEST_TRIPLES = 500;

/** Serialises the dialect-free N-Triples form of a quad's triple. */
const triple = (q: oxigraph.Quad): string => `${q.subject} ${q.predicate} ${q.object} .`;

/**
 * Splits `quads` into operations of at most OPERATION_TRIPLES triples (bigger only for one blank-node
 * structure), keeping all the triples of a blank-node structure together: a blank node label is fresh
 * in each INSERT template, so a structure split across two would fall apart. Structures bigger than
 * STRUCTURE_TRIPLES get IRIs instead of blank nodes, then split like the rest.
 */
export function operations(quads: oxigraph.Quad[]): oxigraph.Quad[][] {
  const parent = new Map<string, string>();
  const find = (b: string): string => {
    let root = b;
    while (parent.get(root) !== root) root = parent.get(root) ?? root;
    parent.set(b, root);
    return root;
  };
  const blanks = (q: oxigraph.Quad): string[] =>
    [q.subject, q.object].filter((t) => t.termType === "BlankNode").map((t) => t.value);
  for (const q of quads) {
    const [first, ...rest] = blanks(q);
    if (first === undefined) continue;
    if (!parent.has(first)) parent.set(first, first);
    for (const b of rest) {
      if (!parent.has(b)) parent.set(b, b);
      parent.set(find(b), find(first));
    }
  }
  // Units: single triples, and whole structures in the order they first appear.
  const units: oxigraph.Quad[][] = [];
  const structures = new Map<string, oxigraph.Quad[]>();
  for (const q of quads) {
    const [first] = blanks(q);
    if (first === undefined) {
      units.push([q]);
      continue;
    }
    const root = find(first);
    let unit = structures.get(root);
    if (!unit) {
      unit = [];
      structures.set(root, unit);
      units.push(unit);
    }
    unit.push(q);
  }
  const ops: oxigraph.Quad[][] = [];
  let current: oxigraph.Quad[] = [];
  const add = (unit: oxigraph.Quad[]) => {
    if (current.length > 0 && current.length + unit.length > OPERATION_TRIPLES) {
      ops.push(current);
      current = [];
    }
    current.push(...unit);
  };
  for (const unit of units) {
    if (unit.length <= STRUCTURE_TRIPLES) add(unit);
    else for (const q of skolemise(unit)) add([q]);
  }
  if (current.length > 0) ops.push(current);
  return ops;
}

function skolemise(quads: oxigraph.Quad[]): oxigraph.Quad[] {
  const names = new Map<string, oxigraph.NamedNode>();
  const named = <T extends oxigraph.Term>(t: T): T | oxigraph.NamedNode => {
    if (t.termType !== "BlankNode") return t;
    let node = names.get(t.value);
    if (!node) {
      node = oxigraph.namedNode(`${GENID}${randomUUID()}`);
      names.set(t.value, node);
    }
    return node;
  };
  return quads.map((q) =>
    oxigraph.quad(
      named(q.subject) as oxigraph.Quad_Subject,
      q.predicate,
      named(q.object) as oxigraph.Quad_Object,
      q.graph,
    ),
  );
}

/**
 * The update requests that replace graph `graph` with `quads`, at most REQUEST_TRIPLES triples each:
 * the first drops the graph, `last` (more operations) ends the last one. Throws StoreError when
 * `graph` is not an IRI.
 */
export function replaceGraph(graph: string, quads: oxigraph.Quad[], last: string[] = []): string[] {
  const g = iri(graph);
  const requests: string[][] = [[`DROP SILENT GRAPH ${g}`]];
  let size = 0;
  for (const op of operations(quads)) {
    if (size > 0 && size + op.length > REQUEST_TRIPLES) {
      requests.push([]);
      size = 0;
    }
    size += op.length;
    requests.at(-1)?.push(`INSERT { GRAPH ${g} {\n${op.map(triple).join("\n")}\n} } WHERE {}`);
  }
  requests.at(-1)?.push(...last);
  return requests.map((ops) => ops.join(" ;\n"));
}
