import { type Directory, DirectoryError } from "../directory/directory.js";
import type { TwinPlacement, TwinStatusPublisher } from "../directory/twin-status.js";
import { DTC, TWIN_TD_PREFIX, twinTdId } from "../domain/vocabulary.js";
import type { InstanceHandle } from "../platforms/driver.js";
import { platformIndividual } from "../platforms/registry.js";
import type { JsonObject } from "../wot/rdf.js";
import type { Link } from "../wot/thing-model.js";
import type { InstanceRecord } from "./model.js";

/**
 * Twin publication: a running instance's DT Description (its TD with its placement links, security
 * declared) and its status graph in the directory; apart from the decisions about what runs where.
 */

export { TWIN_TD_PREFIX };

const JSON_TYPE = "application/json";

export interface TwinPublicationOptions {
  directory: Directory;
  twinStatus: TwinStatusPublisher;
  /** The IRIs of nodes and packages in the inventory graph. */
  iris: { nodeIri(id: string): string; packageIri(id: string): string };
  /** Declares the gateway's security in the twins' TDs; default: as is. */
  secureTd?: (td: JsonObject) => JsonObject;
}

export class TwinPublication {
  readonly #options: TwinPublicationOptions;
  readonly #secureTd: (td: JsonObject) => JsonObject;

  constructor(options: TwinPublicationOptions) {
    this.#options = options;
    this.#secureTd = options.secureTd ?? ((td) => td);
  }

  /** The TD with its placement links (schema, package, node, platform), as the directory has it. */
  description(record: InstanceRecord, handle: InstanceHandle): JsonObject {
    const { iris } = this.#options;
    const td = this.#secureTd(structuredClone(handle.description()));
    const links = ((td.links as Link[] | undefined) ?? []).filter((l) => !String(l.rel).startsWith(DTC));
    links.push(
      { rel: `${DTC}package`, href: iris.packageIri(record.package), type: JSON_TYPE },
      { rel: `${DTC}node`, href: iris.nodeIri(record.node), type: JSON_TYPE },
      { rel: `${DTC}platform`, href: `${DTC}${platformIndividual(record.platform)}` },
    );
    td.links = links;
    return td;
  }

  /** Puts the TD in the directory and follows the instance's status into its status graph. */
  async publish(record: InstanceRecord, handle: InstanceHandle): Promise<void> {
    const { directory, twinStatus, iris } = this.#options;
    const td = this.description(record, handle);
    const tdId = td.id as string;
    await directory.put(tdId, td);
    const placement: TwinPlacement = {
      node: iris.nodeIri(record.node),
      package: iris.packageIri(record.package),
      platform: platformIndividual(record.platform),
    };
    await twinStatus.watch(handle, tdId, placement);
  }

  /** Takes the TD and status graph out of the directory (none there is fine). */
  async unpublish(instanceId: string): Promise<void> {
    const { directory, twinStatus } = this.#options;
    const tdId = twinTdId(instanceId);
    await twinStatus.unwatch(tdId);
    await directory.delete(tdId).catch((err) => {
      if (!(err instanceof DirectoryError && err.kind === "notFound")) throw err;
    });
  }
}
