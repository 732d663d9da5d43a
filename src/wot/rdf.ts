import jsonld from "jsonld";
import { offlineDocumentLoader, RemoteContextRefusedError } from "./jsonld-loader.js";

export type JsonObject = Record<string, unknown>;

type JsonLdInput = Parameters<typeof jsonld.expand>[0];
// @types/jsonld types the loader with its own Url/RemoteDocument aliases; ours is compatible.
const documentLoader = offlineDocumentLoader as unknown as NonNullable<
  Parameters<typeof jsonld.expand>[1]
>["documentLoader"];

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
    return (await jsonld.expand(doc as JsonLdInput, { documentLoader, base: baseOf(doc) })) as JsonObject[];
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
    const nquads = await jsonld.toRDF(
      input as JsonLdInput,
      {
        format: "application/n-quads",
        documentLoader,
        base: baseOf(doc),
      } as Parameters<typeof jsonld.toRDF>[1],
    );
    return nquads as unknown as string;
  } catch (err) {
    throw unwrap(err);
  }
}
