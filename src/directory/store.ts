import type { JsonObject } from "../wot/rdf.js";

/**
 * The directory's storage port: a durable record of TDs with their registration information, and a
 * SPARQL index over them (each TD in its own named graph, IRI = the TD id). Two adapters implement
 * it: embedded (SQLite record + in-memory Oxigraph index) and remote (any SPARQL 1.1 store).
 */

/** WoT Discovery registration information (what the directory adds to an enriched TD). */
export interface Registration {
  /** ISO 8601. */
  created: string;
  modified: string;
  /** Absolute expiry (ISO 8601), from the TD's `registration.expires` or `ttl`. */
  expires?: string;
  /** Seconds, as given by the client. */
  ttl?: number;
}

export interface StoredThing {
  id: string;
  /** The TD as registered, without registration information. */
  td: JsonObject;
  registration: Registration;
}

export interface QueryOptions {
  timeoutMs?: number;
  /** The query's form and LIMIT, when the caller parsed it already (the guard): spares a parse. */
  form?: { queryType: "SELECT" | "ASK" | "CONSTRUCT" | "DESCRIBE"; limit?: number | undefined };
}

/** A SPARQL result, serialised in the media type asked for. */
export interface QueryResult {
  body: string;
  contentType: string;
}

export interface DirectoryStore {
  /** Opens the store (rebuilds the embedded index from the record). */
  open(): Promise<void>;
  /** Creates or replaces; resolves once the write is durable. */
  put(thing: StoredThing): Promise<{ created: boolean }>;
  get(id: string): Promise<StoredThing | undefined>;
  delete(id: string): Promise<boolean>;
  /** Ordered by id. */
  list(offset: number, limit: number): Promise<StoredThing[]>;
  count(): Promise<number>;
  /** An opaque value that changes whenever the set of TDs changes (the listing's etag). */
  revision(): Promise<string>;
  /** Ids whose registration expired at `now` (epoch ms). */
  expired(now: number): Promise<string[]>;
  /**
   * Runs a user's SPARQL query (already through the query guard, query-guard.ts) over every graph;
   * answers only after every write acknowledged before it is indexed (read your writes). The remote
   * store sends these to its read-only search endpoint, never with the writer's credentials.
   */
  query(sparql: string, accept: string, options?: QueryOptions): Promise<QueryResult>;
  /**
   * Replaces a gateway-owned graph (a twin's status graph, or an inventory graph: see
   * `isGatewayGraph`) with the triples of `ntriples` (N-Triples). Written by the gateway only,
   * never from client input; not part of the durable record (the gateway rewrites these graphs
   * after a restart).
   */
  putGraph(graph: string, ntriples: string): Promise<void>;
  /** Drops a gateway-owned graph (no-op when there is none). */
  deleteGraph(graph: string): Promise<void>;
  close(): Promise<void>;
}

/** Prefix of the status graph IRIs the gateway writes for twins (lifecycle, entanglement). */
export const STATUS_GRAPH_PREFIX = "urn:dtc:status:";

/** Prefix of the IRIs the remote store keeps its own records under. */
export const DIRECTORY_RECORDS_PREFIX = "urn:dtc:directory:";

/** Prefix of the graphs describing the manager's inventory (schemas, packages, nodes). */
export const INVENTORY_GRAPH_PREFIX = "urn:dtc:inventory:";

/** IRI of the status graph of the twin whose TD has id `tdId`. */
export const statusGraph = (tdId: string): string => `${STATUS_GRAPH_PREFIX}${encodeURIComponent(tdId)}`;

/** IRI of the inventory graph describing `iri` (a DT Schema, DT Package or DTC Node). */
export const inventoryGraph = (iri: string): string => `${INVENTORY_GRAPH_PREFIX}${encodeURIComponent(iri)}`;

/** Whether `graph` is one the gateway writes itself (never a TD's graph). */
export const isGatewayGraph = (graph: string): boolean =>
  graph.startsWith(STATUS_GRAPH_PREFIX) || graph.startsWith(INVENTORY_GRAPH_PREFIX);

export function assertGatewayGraph(graph: string): void {
  if (!isGatewayGraph(graph)) {
    throw new StoreError(
      `${graph} is not a gateway graph (${STATUS_GRAPH_PREFIX}, ${INVENTORY_GRAPH_PREFIX})`,
    );
  }
}

export class StoreError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = "StoreError";
  }
}

/**
 * A query the store refused or gave up on. `timeout`: ran past the time limit; `rejected`: the store
 * found it invalid (both the client's fault, a 4xx); `busy`: every evaluator is taken and the queue
 * full (503, try again).
 */
export class QueryError extends StoreError {
  readonly kind: "timeout" | "rejected" | "busy";
  constructor(kind: "timeout" | "rejected" | "busy", message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = "QueryError";
    this.kind = kind;
  }
}
