import oxigraph from "oxigraph";
import type { DirectoryStore } from "../directory/store.js";
import { inventoryGraph } from "../directory/store.js";
import { DTC, RDF_TYPE, RDFS_LABEL } from "../domain/vocabulary.js";
import type { Logger } from "../logger.js";
import { PLATFORMS, platformIndividual, platformPlugin } from "../platforms/registry.js";
import {
  BROKER_CREDENTIALS,
  hasCredentials,
  hostAllowed,
  imageAllowed,
  urlHost,
} from "../security/outbound.js";
import type { ThingModelRegistry } from "../wot/model-registry.js";
import { type JsonObject, toNQuads } from "../wot/rdf.js";
import { AFFORDANCE_KINDS, isObject, type ThingModel, typesOf } from "../wot/thing-model.js";
import { ValidationError } from "../wot/validation.js";
import { invalid, ManagerError, notFound } from "./errors.js";
import type { ManagerStore, StoredLabels, StoredSchema } from "./manager-store.js";
import {
  BUILTIN_TWIN_MODULE,
  type DtcNode,
  type DtPackage,
  ID_PATTERN,
  MAX_ODTE_WINDOW_S,
  nodeInput,
  type PackageParameter,
  packageInput,
  type SchemaSummary,
  TIERS,
} from "./model.js";

/**
 * The DTC inventory ([dt-continuum] Table I, first group): DTC Nodes, DT Schemas and DT Packages,
 * kept in the manager's store and described in the directory's inventory graphs, so SPARQL sees
 * schemas, packages and nodes next to the twins' TDs.
 */

export interface NodeFilter {
  platform?: string;
  tier?: string;
  /** "key=value" or "key" (has the label). */
  labels?: string[];
  gpu?: boolean;
}

export interface SchemaFilter {
  /** Case-insensitive text in the id, title or description. */
  q?: string;
  /** A @type of the schema (as written in the model, e.g. "saref:Device"). */
  type?: string;
  /** An affordance name or an affordance @type. */
  affordance?: string;
}

export interface InventoryOptions {
  store: ManagerStore;
  registry: ThingModelRegistry;
  directory: DirectoryStore;
  /** The gateway's public base URL (node and package IRIs are under {base}/api/). */
  publicBase: () => string;
  /**
   * What callers may point the gateway at (globs, src/security/outbound.ts; [] = anything): the
   * images of packages (DTC_ALLOWED_IMAGES), the hosts of Docker engines, published ports and
   * brokers of nodes and instances (DTC_ALLOWED_OUTBOUND_HOSTS). Default: anything.
   */
  outbound?: { allowedImages: string[]; allowedOutboundHosts: string[] };
  logger?: Logger;
}

/** A slug for a schema: the file name of its IRI, or its title without placeholders. */
export function slugOf(text: string): string {
  const slug = text
    .replace(/\{\{[^{}]*\}\}/g, "")
    .toLowerCase()
    .replace(/[^a-z0-9_-]+/g, "-")
    .replace(/^[-_]+|[-_]+$/g, "")
    .slice(0, 63)
    .replace(/[-_]+$/, "");
  return slug === "" ? "schema" : slug;
}

const fileSlug = (iri: string) =>
  slugOf(iri.slice(iri.lastIndexOf("/") + 1).replace(/\.tm\.jsonld?$|\.jsonld?$/, ""));

/** Where the labels of a schema, package or instance are kept. */
export const labelKey = (kind: StoredLabels["kind"], name: string) => `${kind}/${name}`;

export class Inventory {
  readonly #store: ManagerStore;
  readonly #registry: ThingModelRegistry;
  readonly #directory: DirectoryStore;
  readonly #publicBase: () => string;
  readonly #outbound: { allowedImages: string[]; allowedOutboundHosts: string[] };
  readonly #logger: Logger | undefined;

  constructor(options: InventoryOptions) {
    this.#store = options.store;
    this.#registry = options.registry;
    this.#directory = options.directory;
    this.#publicBase = options.publicBase;
    this.#outbound = options.outbound ?? { allowedImages: [], allowedOutboundHosts: [] };
    this.#logger = options.logger;
  }

  nodeIri(id: string): string {
    return `${this.#publicBase()}/api/nodes/${id}`;
  }

  packageIri(id: string): string {
    return `${this.#publicBase()}/api/packages/${id}`;
  }

  /**
   * Loads the registered schemas into the model registry (the built-in ones, from thing-models/,
   * are there already: `builtIn` lists their IRIs) and writes every inventory graph again (the
   * directory does not keep them across restarts).
   */
  async open(builtIn: string[]): Promise<void> {
    const now = new Date().toISOString();
    const stored = new Map(this.#store.schemas.all().map((s) => [s.summary.iri, s]));
    for (const iri of builtIn) {
      const previous = stored.get(iri);
      const model = this.#registry.get(iri) as ThingModel;
      const id = previous?.summary.id ?? this.#freeSchemaId(fileSlug(iri));
      const entry = {
        summary: this.#summarise(id, iri, model, true, previous?.summary.registeredAt ?? now),
        model,
      };
      this.#store.schemas.put(id, entry);
    }
    for (const entry of this.#store.schemas.all()) {
      if (builtIn.includes(entry.summary.iri)) continue;
      // A model that was built in once and whose file is gone stays, as a registered one.
      if (entry.summary.builtIn)
        this.#store.schemas.put(entry.summary.id, {
          ...entry,
          summary: { ...entry.summary, builtIn: false },
        });
      this.#registry.register(entry.summary.iri, entry.model);
    }
    // Each built-in schema comes with an in-process package of the same id, to start twins at once.
    for (const iri of builtIn) {
      const { summary } = this.schema(iri);
      const existing = this.#store.packages.get(summary.id);
      if (existing && !existing.builtIn) continue;
      const pkg: DtPackage = {
        id: summary.id,
        schema: iri,
        platform: "in-process",
        artefact: { module: BUILTIN_TWIN_MODULE },
        parameters: Object.fromEntries(summary.placeholders.map((p) => [p, { type: "string" as const }])),
        requirements: {},
        augmentations: [],
        registeredAt: existing?.registeredAt ?? now,
        builtIn: true,
      };
      this.#store.packages.put(pkg.id, pkg);
    }
    for (const entry of this.#store.schemas.all()) await this.#publishSchema(entry);
    for (const node of this.#store.nodes.all()) await this.#publishNode(node);
    for (const pkg of this.#store.packages.all()) await this.#publishPackage(pkg);
  }

  // ---- nodes

  async registerNode(
    input: unknown,
    options: { builtIn?: boolean; replace?: boolean } = {},
  ): Promise<DtcNode> {
    const parsed = nodeInput.safeParse(input);
    if (!parsed.success) throw invalid("DTC Node", parsed.error);
    // Before the id check: no await between it and the write, or two registrations could both pass it.
    await this.#checkEndpoint(parsed.data);
    if (!options.replace && this.#store.nodes.get(parsed.data.id)) {
      throw new ManagerError("conflict", `a DTC Node with id "${parsed.data.id}" is already registered`);
    }
    const node: DtcNode = {
      ...parsed.data,
      registeredAt: new Date().toISOString(),
      ...(options.builtIn ? { builtIn: true } : {}),
    };
    this.#store.nodes.put(node.id, node);
    await this.#publishNode(node);
    return node;
  }

  /**
   * Refuses (400) a broker URL an instance is to use (started, cloned or restored) that carries
   * credentials or whose host DTC_ALLOWED_OUTBOUND_HOSTS does not allow. Records made before
   * these rules are checked too.
   */
  checkBrokerUrl(url: string | undefined): void {
    if (url === undefined) return;
    if (hasCredentials(url)) {
      throw new ManagerError("invalid", `brokerUrl: ${BROKER_CREDENTIALS}`, [
        { field: "brokerUrl", description: BROKER_CREDENTIALS },
      ]);
    }
    const description = this.#hostRefused(urlHost(url));
    if (description !== undefined) {
      throw new ManagerError("invalid", `brokerUrl: ${description}`, [{ field: "brokerUrl", description }]);
    }
  }

  /** Why DTC_ALLOWED_OUTBOUND_HOSTS refuses `host` (none: a URL without one, which it cannot allow). */
  #hostRefused(host: string | undefined): string | undefined {
    const allowlist = this.#outbound.allowedOutboundHosts;
    if (host === undefined ? allowlist.length === 0 : hostAllowed(host, allowlist)) return undefined;
    return `host ${host ?? "(none)"} is not in DTC_ALLOWED_OUTBOUND_HOSTS`;
  }

  /** What the node's platform finds wrong with its endpoint: files, hosts it points the gateway at (400 naming each). */
  async #checkEndpoint(node: {
    platform: string;
    endpoint?: Record<string, unknown> | undefined;
  }): Promise<void> {
    const check = platformPlugin(node.platform)?.checkEndpoint;
    if (check === undefined) return;
    const issues = await check(node.endpoint, (host) => this.#hostRefused(host));
    if (issues.length > 0) {
      throw new ManagerError(
        "invalid",
        `DTC Node: ${issues.map((i) => `${i.field}: ${i.description}`).join("; ")}`,
        issues,
      );
    }
  }

  node(id: string): DtcNode {
    const node = this.#store.nodes.get(id);
    if (!node) throw notFound("DTC Node", id);
    return node;
  }

  nodes(filter: NodeFilter = {}): DtcNode[] {
    if (filter.platform !== undefined && !(PLATFORMS as readonly string[]).includes(filter.platform)) {
      throw new ManagerError("invalid", `platform must be one of ${PLATFORMS.join(", ")}`, [
        { field: "platform", description: `must be one of ${PLATFORMS.join(", ")}` },
      ]);
    }
    if (filter.tier !== undefined && !(TIERS as readonly string[]).includes(filter.tier)) {
      throw new ManagerError("invalid", `tier must be one of ${TIERS.join(", ")}`, [
        { field: "tier", description: `must be one of ${TIERS.join(", ")}` },
      ]);
    }
    const labels = (filter.labels ?? []).map((l) => {
      const at = l.indexOf("=");
      return at < 0 ? { key: l, value: undefined } : { key: l.slice(0, at), value: l.slice(at + 1) };
    });
    return this.#store.nodes
      .all()
      .filter(
        (n) =>
          (filter.platform === undefined || n.platform === filter.platform) &&
          (filter.tier === undefined || n.tier === filter.tier) &&
          (filter.gpu === undefined || n.capabilities.gpu > 0 === filter.gpu) &&
          labels.every(
            ({ key, value }) => key in n.labels && (value === undefined || n.labels[key] === value),
          ),
      );
  }

  /** Removes a node; `instances` counts the instances placed on it (refused while any are). */
  async removeNode(id: string, instances: number): Promise<void> {
    const node = this.node(id);
    if (node.builtIn)
      throw new ManagerError("conflict", `node "${id}" is the gateway's own node and cannot be removed`);
    if (instances > 0) {
      throw new ManagerError(
        "conflict",
        `node "${id}" has ${instances} instance(s); move or remove them first`,
      );
    }
    this.#store.nodes.delete(id);
    await this.#directory.deleteGraph(inventoryGraph(this.nodeIri(id)));
  }

  // ---- schemas

  /** Registers a Thing Model as a DT Schema. Its IRI is its `id` when absolute, else {base}/api/schemas/{id}. */
  async registerSchema(model: unknown, options: { id?: string } = {}): Promise<SchemaSummary> {
    if (!isObject(model)) throw new ManagerError("invalid", "a DT Schema is a Thing Model: a JSON object");
    if (options.id !== undefined && !ID_PATTERN.test(options.id)) {
      throw new ManagerError("invalid", "id must be 1-63 lowercase letters, digits, - or _", [
        { field: "id", description: "must be 1-63 lowercase letters, digits, - or _" },
      ]);
    }
    const own = typeof model.id === "string" && URL.canParse(model.id) ? model.id : undefined;
    const id = options.id ?? (own ? fileSlug(own) : slugOf(String(model.title ?? "")));
    if (this.#store.schemas.get(id))
      throw new ManagerError("conflict", `a DT Schema with id "${id}" is already registered`);
    const iri = own ?? `${this.#publicBase()}/api/schemas/${id}`;
    if (this.#registry.has(iri))
      throw new ManagerError("conflict", `a DT Schema with IRI ${iri} is already registered`);
    try {
      this.#registry.register(iri, model);
    } catch (err) {
      if (err instanceof ValidationError) throw new ManagerError("invalid", err.message, err.errors);
      throw err;
    }
    // The complete model (tm:extends resolved among registered schemas) must make sense too.
    const issues = await this.#registry.check(iri);
    if (issues.length > 0) {
      this.#registry.delete(iri);
      throw new ManagerError("invalid", new ValidationError(`Thing Model ${iri}`, issues).message, issues);
    }
    const entry: StoredSchema = {
      summary: this.#summarise(id, iri, model as ThingModel, false, new Date().toISOString()),
      model: model as ThingModel,
    };
    const window = entry.summary.fidelity?.odteWindow;
    if (window !== undefined && !(window <= MAX_ODTE_WINDOW_S)) {
      this.#registry.delete(iri);
      const description = `must be at most ${MAX_ODTE_WINDOW_S} s (the twin keeps every update of its window)`;
      throw new ManagerError("invalid", `Thing Model ${iri}: dtc:fidelity.dtc:odteWindow ${description}`, [
        { field: "dtc:fidelity.dtc:odteWindow", description },
      ]);
    }
    this.#store.schemas.put(id, entry);
    await this.#publishSchema(entry);
    return entry.summary;
  }

  /** A schema by id or IRI. */
  schema(ref: string): StoredSchema {
    const entry =
      this.#store.schemas.get(ref) ?? this.#store.schemas.all().find((s) => s.summary.iri === ref);
    if (!entry) throw notFound("DT Schema", ref);
    return entry;
  }

  schemas(filter: SchemaFilter = {}): SchemaSummary[] {
    const q = filter.q?.toLowerCase();
    return this.#store.schemas
      .all()
      .filter(({ summary, model }) => {
        const text = `${summary.id}\n${summary.title}\n${summary.description ?? ""}`.toLowerCase();
        if (q !== undefined && !text.includes(q)) return false;
        if (filter.type !== undefined && !summary.types.includes(filter.type)) return false;
        if (filter.affordance !== undefined && !this.#hasAffordance(summary, model, filter.affordance))
          return false;
        return true;
      })
      .map((s) => s.summary);
  }

  #hasAffordance(summary: SchemaSummary, model: ThingModel, wanted: string): boolean {
    if (AFFORDANCE_KINDS.some((kind) => summary.affordances[kind].includes(wanted))) return true;
    const prepared = this.#prepared(summary.iri, model);
    return AFFORDANCE_KINDS.some((kind) =>
      Object.values((prepared[kind] as Record<string, unknown>) ?? {}).some(
        (a) => isObject(a) && typesOf(a).includes(wanted),
      ),
    );
  }

  /** Removes a schema; refused while packages implement it. */
  async removeSchema(ref: string): Promise<void> {
    const { summary } = this.schema(ref);
    if (summary.builtIn) {
      throw new ManagerError(
        "conflict",
        `DT Schema "${summary.id}" is registered from thing-models/ at every start`,
      );
    }
    const users = this.packages({ schema: summary.iri }).map((p) => p.id);
    if (users.length > 0) {
      throw new ManagerError(
        "conflict",
        `DT Schema "${summary.id}" is used by package(s) ${users.join(", ")}`,
      );
    }
    this.#store.transaction(() => {
      this.#store.schemas.delete(summary.id);
      this.#store.labels.delete(labelKey("Schema", summary.id));
    });
    this.#registry.delete(summary.iri);
    await this.#directory.deleteGraph(inventoryGraph(summary.iri));
  }

  // ---- packages

  /** Registers a DT Package; `replace`: one with its id is replaced (not a built-in one). */
  async registerPackage(input: unknown, options: { replace?: boolean } = {}): Promise<DtPackage> {
    const parsed = packageInput.safeParse(input);
    if (!parsed.success) throw invalid("DT Package", parsed.error);
    const data = parsed.data;
    const existing = this.#store.packages.get(data.id);
    if (existing && (!options.replace || existing.builtIn)) {
      throw new ManagerError("conflict", `a DT Package with id "${data.id}" is already registered`);
    }
    const image = data.artefact.image;
    if (image !== undefined && !imageAllowed(image, this.#outbound.allowedImages)) {
      const description = `image ${image} is not in DTC_ALLOWED_IMAGES`;
      throw new ManagerError("invalid", `DT Package: artefact.image: ${description}`, [
        { field: "artefact.image", description },
      ]);
    }
    const schema = this.schema(data.schema).summary;
    if (data.platform === "in-process") {
      const module = data.artefact.module ?? BUILTIN_TWIN_MODULE;
      if (module !== BUILTIN_TWIN_MODULE) {
        throw new ManagerError("invalid", `artefact.module: in-process packages run ${BUILTIN_TWIN_MODULE}`, [
          {
            field: "artefact.module",
            description: `must be "${BUILTIN_TWIN_MODULE}" (the gateway's twin runtime)`,
          },
        ]);
      }
      data.artefact.module = module;
    }
    // By default a package takes one required string per placeholder of its schema.
    const parameters: Record<string, PackageParameter> =
      data.parameters ?? Object.fromEntries(schema.placeholders.map((p) => [p, { type: "string" as const }]));
    const missing = schema.placeholders.filter((p) => !(p in parameters));
    if (missing.length > 0) {
      const issues = missing.map((p) => ({
        field: `parameters.${p}`,
        description: `is a placeholder of ${schema.id} and needs a parameter`,
      }));
      throw new ManagerError(
        "invalid",
        `DT Package: ${issues.map((i) => `${i.field} ${i.description}`).join("; ")}`,
        issues,
      );
    }
    const pkg: DtPackage = {
      ...data,
      schema: schema.iri,
      parameters,
      registeredAt: new Date().toISOString(),
    };
    this.#store.packages.put(pkg.id, pkg);
    await this.#publishPackage(pkg);
    return pkg;
  }

  package(id: string): DtPackage {
    const pkg = this.#store.packages.get(id);
    if (!pkg) throw notFound("DT Package", id);
    return pkg;
  }

  /** Packages, by schema (id or IRI) and platform. */
  packages(filter: { schema?: string; platform?: string } = {}): DtPackage[] {
    const schemaIri =
      filter.schema === undefined
        ? undefined
        : (this.#store.schemas.get(filter.schema)?.summary.iri ?? filter.schema);
    return this.#store.packages
      .all()
      .filter(
        (p) =>
          (schemaIri === undefined || p.schema === schemaIri) &&
          (filter.platform === undefined || p.platform === filter.platform),
      );
  }

  /** Removes a package; `instances` counts the instances started from it (refused while any are). */
  async removePackage(id: string, instances: number): Promise<void> {
    if (this.package(id).builtIn) {
      throw new ManagerError(
        "conflict",
        `package "${id}" comes with a built-in schema and is registered at every start`,
      );
    }
    if (instances > 0)
      throw new ManagerError("conflict", `package "${id}" has ${instances} instance(s); remove them first`);
    this.#store.transaction(() => {
      this.#store.packages.delete(id);
      this.#store.labels.delete(labelKey("Package", id));
    });
    await this.#directory.deleteGraph(inventoryGraph(this.packageIri(id)));
  }

  // ---- labels of schemas, packages and instances (a node's are its own)

  /** The labels a manifest gave the object ({} when none). */
  labelsOf(kind: StoredLabels["kind"], name: string): Record<string, string> {
    return this.#store.labels.get(labelKey(kind, name))?.labels ?? {};
  }

  /** Every labelled schema, package and instance. */
  labelled(): StoredLabels[] {
    return this.#store.labels.all();
  }

  setLabels(kind: StoredLabels["kind"], name: string, labels: Record<string, string>): void {
    if (Object.keys(labels).length === 0) this.#store.labels.delete(labelKey(kind, name));
    else this.#store.labels.put(labelKey(kind, name), { kind, name, labels });
  }

  // ---- summaries and graphs

  #prepared(iri: string, model: ThingModel): ThingModel {
    return this.#registry.prepare(structuredClone(model), iri);
  }

  #freeSchemaId(slug: string): string {
    let id = slug;
    for (let n = 2; this.#store.schemas.get(id); n++) id = `${slug.slice(0, 60)}-${n}`;
    return id;
  }

  #summarise(
    id: string,
    iri: string,
    model: ThingModel,
    builtIn: boolean,
    registeredAt: string,
  ): SchemaSummary {
    const prepared = this.#prepared(iri, model);
    const names = (kind: (typeof AFFORDANCE_KINDS)[number]) =>
      Object.keys((prepared[kind] as Record<string, unknown> | undefined) ?? {}).sort();
    const fidelity = isObject(prepared["dtc:fidelity"]) ? prepared["dtc:fidelity"] : undefined;
    const numbers = fidelity
      ? Object.fromEntries(
          Object.entries(fidelity)
            .filter(([, v]) => typeof v === "number")
            .map(([k, v]) => [k.replace(/^dtc:/, ""), v as number]),
        )
      : undefined;
    return {
      id,
      iri,
      title: String(model.title ?? id),
      ...(typeof model.description === "string" ? { description: model.description } : {}),
      types: typesOf(model),
      affordances: { properties: names("properties"), actions: names("actions"), events: names("events") },
      placeholders: [...this.#registry.placeholders(prepared).keys()].sort(),
      ...(numbers ? { fidelity: numbers } : {}),
      builtIn,
      registeredAt,
    };
  }

  async #publishSchema({ summary, model }: StoredSchema): Promise<void> {
    // The model with its IRI as subject, so a twin's link rel "type" joins it.
    const doc: JsonObject = { ...structuredClone(model), id: summary.iri };
    try {
      const triples = await toNQuads(doc);
      await this.#directory.putGraph(inventoryGraph(summary.iri), triples);
    } catch (err) {
      this.#logger?.warn(
        { err, schema: summary.iri },
        "the schema is registered but not searchable in the directory",
      );
    }
  }

  async #publishNode(node: DtcNode): Promise<void> {
    const subject = this.nodeIri(node.id);
    await this.#putTriples(subject, [
      [RDF_TYPE, `${DTC}Node`],
      [`${DTC}platform`, `${DTC}${platformIndividual(node.platform)}`],
      [`${DTC}tier`, `${DTC}${node.tier[0]?.toUpperCase()}${node.tier.slice(1)}`],
      [RDFS_LABEL, oxigraph.literal(node.id)],
    ]);
  }

  async #publishPackage(pkg: DtPackage): Promise<void> {
    await this.#putTriples(this.packageIri(pkg.id), [
      [RDF_TYPE, `${DTC}DigitalTwinPackage`],
      [`${DTC}schema`, pkg.schema],
      [`${DTC}platform`, `${DTC}${platformIndividual(pkg.platform)}`],
      [RDFS_LABEL, oxigraph.literal(pkg.id)],
    ]);
  }

  async #putTriples(subject: string, pairs: [string, string | oxigraph.Literal][]): Promise<void> {
    const s = oxigraph.namedNode(subject);
    const ntriples = pairs
      .map(
        ([p, o]) => `${s} ${oxigraph.namedNode(p)} ${typeof o === "string" ? oxigraph.namedNode(o) : o} .\n`,
      )
      .join("");
    try {
      await this.#directory.putGraph(inventoryGraph(subject), ntriples);
    } catch (err) {
      this.#logger?.warn({ err, subject }, "writing an inventory graph to the directory failed");
    }
  }
}
