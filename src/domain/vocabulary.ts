/**
 * The IRIs dtc names things with, in one place: the dtc ontology's namespace (ontology/dtc.ttl)
 * and the ids of the TDs and graphs the gateway owns in the directory.
 */

/** The dtc ontology (prefix `dtc:`). */
export const DTC = "https://w3id.org/dtc#";
export const XSD = "http://www.w3.org/2001/XMLSchema#";
export const RDF_TYPE = "http://www.w3.org/1999/02/22-rdf-syntax-ns#type";
export const RDFS_LABEL = "http://www.w3.org/2000/01/rdf-schema#label";

/** A twin's DT Description is the TD with id `urn:dtc:twin:{instance id}`. */
export const TWIN_TD_PREFIX = "urn:dtc:twin:";
export const twinTdId = (instanceId: string): string => `${TWIN_TD_PREFIX}${instanceId}`;
