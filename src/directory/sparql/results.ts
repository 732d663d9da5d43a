/**
 * SPARQL results as the remote store answers them (SPARQL JSON for solutions, N-Triples for graphs)
 * and as the directory serves them: written in the format asked for with Oxigraph's writers, so the
 * remote store answers exactly as the embedded one does.
 */
import oxigraph from "oxigraph";
import { errorMessage } from "../../domain/errors.js";
import { StoreError } from "../store.js";
import { DIRECTORY_NAMESPACE, XSD_INTEGER, XSD_STRING } from "./terms.js";

/** The formats served for SELECT and ASK queries. */
export const SELECT_FORMATS = [
  "application/sparql-results+json",
  "application/sparql-results+xml",
  "text/csv",
  "text/tab-separated-values",
] as const;
/** The formats served for CONSTRUCT and DESCRIBE queries. */
export const GRAPH_FORMATS = ["application/ld+json", "text/turtle", "application/n-triples"] as const;

export type Binding = { type: string; value: unknown; datatype?: string; "xml:lang"?: string };
export type Row = Record<string, Binding | undefined>;
export interface SparqlJson {
  head?: { vars?: string[] };
  boolean?: boolean;
  results?: { bindings: Row[] };
}

/** The value of a binding as text. */
export const str = (b: Binding | undefined): string | undefined =>
  b === undefined ? undefined : String(b.value);

/** Parses SPARQL JSON results; throws StoreError `${failure}: <the start of body>` when it is not JSON. */
export function parseSparqlJson(body: string, failure: string): SparqlJson {
  try {
    return JSON.parse(body) as SparqlJson;
  } catch (err) {
    throw new StoreError(`${failure}: ${body.slice(0, 200)}`, { cause: err });
  }
}

/** Loads a graph answer (N-Triples) into a scratch store, to count and write it. */
export function parseTriples(body: string): oxigraph.Store {
  const scratch = new oxigraph.Store();
  try {
    scratch.load(body, { format: "application/n-triples" });
  } catch (err) {
    throw new StoreError(`query: the SPARQL store's answer is not N-Triples: ${errorMessage(err)}`, {
      cause: err,
    });
  }
  return scratch;
}

/** Writes the triples of `scratch` in one of GRAPH_FORMATS. */
export const writeTriples = (scratch: oxigraph.Store, format: string): string =>
  String(scratch.query("CONSTRUCT WHERE { ?s ?p ?o }", { results_format: format }));

/**
 * Virtuoso's JSON results as SPARQL 1.1 has them, written as the embedded store (Oxigraph) writes
 * them: SPARQL 1.0 "typed-literal" becomes "literal" with its datatype (none for xsd:string, as
 * RDF 1.1 has it), blank nodes get labels of their own (Virtuoso's are "nodeID://b123"), and
 * Virtuoso's extra members ("link", "distinct", "ordered") go.
 */
export function normalised(json: SparqlJson): SparqlJson {
  if (typeof json.boolean === "boolean") return { head: {}, boolean: json.boolean };
  const labels = new Map<string, string>();
  const bindings = (json.results?.bindings ?? []).map((row) => {
    const out: Row = {};
    for (const [name, b] of Object.entries(row)) {
      if (!b) continue;
      const value = String(b.value);
      if (b.type === "uri") out[name] = { type: "uri", value };
      else if (b.type === "bnode") {
        let label = labels.get(value);
        if (label === undefined) {
          label = `b${labels.size}`;
          labels.set(value, label);
        }
        out[name] = { type: "bnode", value: label };
      } else {
        const lang = b["xml:lang"];
        const term: Binding = { type: "literal", value };
        if (lang) term["xml:lang"] = lang;
        else if (b.datatype && b.datatype !== XSD_STRING) term.datatype = b.datatype;
        out[name] = term;
      }
    }
    return out;
  });
  return { head: { vars: json.head?.vars ?? [] }, results: { bindings } };
}

/** A term of normalised JSON results in N-Triples syntax. */
function ntriple(b: Binding): string {
  const value = String(b.value);
  if (b.type === "uri") return `<${value}>`;
  if (b.type === "bnode") return `_:${value}`;
  // JSON.stringify writes a valid N-Triples string: its escapes are all N-Triples ECHARs or UCHARs.
  const quoted = JSON.stringify(value);
  const lang = b["xml:lang"];
  return lang ? `${quoted}@${lang}` : b.datatype ? `${quoted}^^<${b.datatype}>` : quoted;
}

/**
 * Writes normalised JSON results in `format` with Oxigraph's result writers, the embedded store's
 * (Virtuoso's own CSV and TSV are not the SPARQL 1.1 formats): the solutions are loaded into a
 * scratch store as triples, and a query projects them back in order.
 */
export function writeSolutions(json: SparqlJson, format: string): string {
  if (format === "application/sparql-results+json") return JSON.stringify(json);
  const scratch = new oxigraph.Store();
  if (typeof json.boolean === "boolean") {
    return String(
      scratch.query(json.boolean ? "ASK {}" : "ASK { FILTER(false) }", { results_format: format }),
    );
  }
  const vars = json.head?.vars ?? [];
  const rows = json.results?.bindings ?? [];
  if (vars.length === 0) {
    return String(
      scratch.query(`SELECT * WHERE { VALUES () { ${"() ".repeat(rows.length)}} }`, {
        results_format: format,
      }),
    );
  }
  const NS = DIRECTORY_NAMESPACE;
  let row = "row";
  while (vars.includes(row) || vars.includes(`${row}_i`)) row = `${row}_`;
  const triples: string[] = [];
  rows.forEach((solution, i) => {
    const subject = `<${NS}solution:${i}>`;
    triples.push(`${subject} <${NS}solution> "${i}"^^<${XSD_INTEGER}> .`);
    vars.forEach((v, k) => {
      const b = solution[v];
      if (b) triples.push(`${subject} <${NS}var:${k}> ${ntriple(b)} .`);
    });
  });
  try {
    scratch.load(triples.join("\n"), { format: "application/n-triples" });
  } catch (err) {
    throw new StoreError(`query: a term of the SPARQL store's answer is not RDF: ${errorMessage(err)}`, {
      cause: err,
    });
  }
  const optionals = vars.map((v, k) => `OPTIONAL { ?${row} <${NS}var:${k}> ?${v} }`).join(" ");
  const text = `SELECT ${vars.map((v) => `?${v}`).join(" ")} WHERE { ?${row} <${NS}solution> ?${row}_i ${optionals} } ORDER BY ?${row}_i`;
  return String(scratch.query(text, { results_format: format }));
}
