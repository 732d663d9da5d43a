import { createRequire } from "node:module";
import jsonld from "jsonld";
import { offlineDocumentLoader, RemoteContextRefusedError } from "./jsonld-loader.js";

export type JsonObject = Record<string, unknown>;

type JsonLdInput = Parameters<typeof jsonld.expand>[0];
type Options = NonNullable<Parameters<typeof jsonld.expand>[1]>;

/*
 * Context caching. jsonld.js resolves a document's @context on every call: without help it loads the
 * TD context again, walks it, and keys it (and every scoped context it meets while expanding) by
 * JSON.stringify of the whole object, about half of a TD's conversion time. Two of its hooks remove
 * that work, with the same output:
 * - a loader result tagged "static" is resolved once and kept (its documented caching contract);
 * - a context resolver of our own (its `contextResolver` option) finds an object context it has seen
 *   before by identity. Contexts are never modified once loaded, and every TD is parsed anew, so an
 *   object seen again is the same context.
 * The resolver is jsonld.js's own class, from an internal module: if a version lacks it, conversions
 * run as before, only slower.
 */

/** The shared cache a resolver keeps static contexts in (an LRU in jsonld.js; bounded here too). */
const shared = new Map<string, unknown>();
const sharedCache = {
  get: (key: string) => shared.get(key),
  set: (key: string, value: unknown) => {
    // Inline contexts of TDs are keyed by their text: many distinct ones would grow without end.
    if (shared.size >= 1000) shared.clear();
    shared.set(key, value);
  },
};
/** What each object context resolved to. */
const resolvedContexts = new WeakMap<object, unknown>();
/** The documents served as static, by URL: a context registered again under a URL clears the cache. */
const served = new Map<string, unknown>();

interface ContextResolver {
  resolve(args: { context?: unknown }): Promise<unknown>;
}
type ContextResolverClass = new (options: { sharedCache: typeof sharedCache }) => ContextResolver;

function identityResolver(): ContextResolverClass | undefined {
  let Base: ContextResolverClass;
  try {
    Base = createRequire(import.meta.url)("jsonld/lib/ContextResolver.js") as ContextResolverClass;
  } catch {
    return undefined;
  }
  if (typeof Base !== "function" || typeof Base.prototype.resolve !== "function") return undefined;
  return class extends Base {
    override async resolve(args: { context?: unknown }): Promise<unknown> {
      const { context } = args;
      // One object context (not a URL, array or wrapper document): its resolution never varies.
      if (context === null || typeof context !== "object" || Array.isArray(context) || "@context" in context)
        return super.resolve(args);
      let resolved = resolvedContexts.get(context);
      if (resolved === undefined) {
        resolved = await super.resolve(args);
        resolvedContexts.set(context, resolved);
      }
      return resolved;
    }
  };
}
const Resolver = identityResolver();

async function staticLoader(url: string) {
  const remote = await offlineDocumentLoader(url);
  served.set(url, remote.document);
  return { ...remote, tag: "static" };
}

/** Options for one jsonld.js call: the offline loader, and the caches (dropped if a context changed). */
async function jsonLdOptions(base: string | undefined): Promise<Options> {
  for (const [url, document] of served) {
    const current = await offlineDocumentLoader(url).then(
      (remote) => remote.document,
      () => undefined,
    );
    if (current !== document) {
      shared.clear();
      served.clear();
      break;
    }
  }
  return {
    // @types/jsonld types the loader with its own Url/RemoteDocument aliases; ours is compatible.
    documentLoader: staticLoader as unknown as Options["documentLoader"],
    base,
    // A resolver per call: it also keeps what it resolved during that call alone.
    ...(Resolver ? { contextResolver: new Resolver({ sharedCache }) } : {}),
  } as Options;
}

/** jsonld.js wraps loader failures; surface our own error so callers see which URL was refused. */
function unwrap(err: unknown): unknown {
  let cause: unknown = err;
  for (let depth = 0; cause && depth < 5; depth++) {
    if (cause instanceof RemoteContextRefusedError) return cause;
    const details = (cause as { details?: { cause?: unknown } }).details;
    cause = details?.cause ?? (cause as { cause?: unknown }).cause;
  }
  return err;
}

/** The base IRI for relative IRIs in a TD (form hrefs): its `base` member, when it has one. */
function baseOf(doc: JsonObject): string | undefined {
  return typeof doc.base === "string" ? doc.base : undefined;
}

/** JSON-LD expansion with the offline loader. */
export async function expand(doc: JsonObject): Promise<JsonObject[]> {
  try {
    return (await jsonld.expand(doc as JsonLdInput, await jsonLdOptions(baseOf(doc)))) as JsonObject[];
  } catch (err) {
    throw unwrap(err);
  }
}

/**
 * Converts a TD (or any JSON-LD document) to N-Quads with no network access. With `graph`, every
 * triple is placed in that named graph (the directory keeps one graph per TD).
 */
export async function toNQuads(doc: JsonObject, options: { graph?: string } = {}): Promise<string> {
  // A named graph wraps the TD's members in @graph; its @context moves up to the wrapper.
  let input: JsonObject = doc;
  if (options.graph !== undefined) {
    const { "@context": context, ...members } = doc;
    input = {
      ...(context === undefined ? {} : { "@context": context }),
      "@id": options.graph,
      "@graph": members,
    };
  }
  try {
    const toRdf = { ...(await jsonLdOptions(baseOf(doc))), format: "application/n-quads" };
    const nquads = await jsonld.toRDF(input as JsonLdInput, toRdf as Parameters<typeof jsonld.toRDF>[1]);
    return nquads as unknown as string;
  } catch (err) {
    throw unwrap(err);
  }
}
