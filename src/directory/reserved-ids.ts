import { TWIN_TD_PREFIX } from "../domain/vocabulary.js";
import { DIRECTORY_RECORDS_PREFIX, INVENTORY_GRAPH_PREFIX, STATUS_GRAPH_PREFIX } from "./store.js";

/**
 * Ids the gateway owns: the TDs and graphs it writes itself (through the Directory and the store
 * port, never through HTTP). The Things API refuses every write of them (403), whoever asks; this is
 * the one list of them.
 */

/** Prefix of the ids of twins' TDs (the manager registers them: src/manager/manager.ts). */
export { TWIN_TD_PREFIX };

/** Id of the DTC Manager's TD (src/manager/manager-td.ts). */
export const MANAGER_TD_ID = "urn:dtc:manager";

/**
 * Prefixes of ids that name the gateway's own graphs (twins' status, the manager's inventory, the
 * remote store's records): never a TD's id, not even the gateway's (a TD named like one would pass
 * for it, or erase it).
 */
export const GRAPH_ID_PREFIXES: readonly string[] = [
  STATUS_GRAPH_PREFIX,
  INVENTORY_GRAPH_PREFIX,
  DIRECTORY_RECORDS_PREFIX,
];

/** Prefixes of the ids only the gateway writes. */
export const GATEWAY_OWNED_PREFIXES: readonly string[] = [TWIN_TD_PREFIX, ...GRAPH_ID_PREFIXES];

/** Single ids only the gateway writes. */
export const GATEWAY_OWNED_IDS: readonly string[] = [MANAGER_TD_ID];

// URN schemes and namespace ids are case-insensitive (RFC 8141): URN:DTC:twin:x is refused too.
const startsWith = (id: string, prefix: string) =>
  id.slice(0, prefix.length).toLowerCase() === prefix.toLowerCase();

/** The prefix or id that makes `id` the gateway's, or undefined when clients may write it. */
export function gatewayOwner(id: string): string | undefined {
  return (
    GATEWAY_OWNED_IDS.find((owned) => id.toLowerCase() === owned.toLowerCase()) ??
    GATEWAY_OWNED_PREFIXES.find((prefix) => startsWith(id, prefix))
  );
}

/** Whether only the gateway may write the TD with id `id`. */
export const isGatewayOwned = (id: string): boolean => gatewayOwner(id) !== undefined;

/** The prefix under which `id` names a gateway graph (so no TD may have it), or undefined. */
export const graphIdPrefix = (id: string): string | undefined =>
  GRAPH_ID_PREFIXES.find((prefix) => startsWith(id, prefix));
