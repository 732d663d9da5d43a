/**
 * The remote store's own IRIs (record graph, record predicates, skolem IRIs) and the writing of terms
 * into SPARQL text: N-Triples syntax, which SPARQL shares, serialised by Oxigraph (IRIs validated,
 * literals escaped).
 */
import oxigraph from "oxigraph";
import { errorMessage } from "../../domain/errors.js";
import { DIRECTORY_RECORDS_PREFIX, StoreError } from "../store.js";

/**
 * The directory's own IRIs (record graph, records, predicates, skolem IRIs): a TD with an id under
 * it would have its graph collide with them, so put() refuses such ids (the API should reserve the
 * prefix like urn:dtc:status:).
 */
export const DIRECTORY_NAMESPACE = DIRECTORY_RECORDS_PREFIX;
const NS = DIRECTORY_NAMESPACE;
/** The graph holding the directory's records (one per TD) and its revision. */
export const RECORDS_GRAPH = `${NS}records`;
/** The predicates of a record, and of the records graph's revision. */
export const RECORD = {
  id: `${NS}id`,
  td: `${NS}td`,
  created: `${NS}created`,
  modified: `${NS}modified`,
  expires: `${NS}expires`,
  ttl: `${NS}ttl`,
  revision: `${NS}revision`,
};
/** The subject of the record of TD `id`. */
export const recordIri = (id: string): string => `${NS}record:${encodeURIComponent(id)}`;
/** IRIs that replace the blank nodes of a structure too big for one operation (RDF 1.1 skolemisation). */
export const GENID = `${NS}genid:`;
export const XSD_INTEGER = "http://www.w3.org/2001/XMLSchema#integer";
export const XSD_STRING = "http://www.w3.org/2001/XMLSchema#string";

/** Serialises IRIs and literals for SPARQL text (N-Triples syntax); throws StoreError for a bad IRI. */
export function iri(value: string): string {
  try {
    return oxigraph.namedNode(value).toString();
  } catch (err) {
    throw new StoreError(`${JSON.stringify(value)} is not an IRI: ${errorMessage(err)}`, { cause: err });
  }
}

export const isIri = (value: string): boolean => {
  try {
    oxigraph.namedNode(value);
    return true;
  } catch {
    return false;
  }
};

export const literal = (value: string): string => oxigraph.literal(value).toString();

/**
 * A string literal with its datatype written out (Oxigraph omits xsd:string): Virtuoso 7.2 may store
 * a plain literal as an IRI when the same text is an IRI elsewhere in the request, as a TD's id is.
 */
export const typedString = (value: string): string => `${literal(value)}^^<${XSD_STRING}>`;

/** An xsd:integer literal. */
export const integerLiteral = (value: number): string =>
  oxigraph.literal(String(value), oxigraph.namedNode(XSD_INTEGER)).toString();
