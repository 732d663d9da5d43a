import { join } from "node:path";
import { DTC } from "../domain/vocabulary.js";
import { ontologyDir, readJsonFile } from "../paths.js";

/** The namespace of the dtc vocabulary and the URL of its JSON-LD context. */
export const DTC_NS = DTC;
export const DTC_CONTEXT_URL = "https://w3id.org/dtc/v1";
export const TD_CONTEXT_1_1 = "https://www.w3.org/2022/wot/td/v1.1";
export const TD_CONTEXT_1_0 = "https://www.w3.org/2019/wot/td/v1";
export const DISCOVERY_CONTEXT_URL = "https://www.w3.org/2022/wot/discovery";

/**
 * Contexts served from ontology/. For the TD 1.0 URL we serve what W3C serves for it today (the
 * 1.1 context, a superset), so a TD 1.0 expands here exactly as it does online.
 */
const BUILT_IN: Readonly<Record<string, string>> = {
  [TD_CONTEXT_1_1]: "w3c/td-context-1.1.jsonld",
  [TD_CONTEXT_1_0]: "w3c/td-context-1.1.jsonld",
  [DISCOVERY_CONTEXT_URL]: "w3c/discovery-core.jsonld",
  [DTC_CONTEXT_URL]: "dtc-context.jsonld",
};

/** Raised for any context URL that is not served offline: dtc never fetches a context. */
export class RemoteContextRefusedError extends Error {
  readonly url: string;
  constructor(url: string) {
    super(
      `JSON-LD context "${url}" is not available offline and dtc does not fetch remote contexts. ` +
        `Known contexts: ${knownContextUrls().join(", ")}. Inline the context in the document or register it ` +
        "with registerContext().",
    );
    this.name = "RemoteContextRefusedError";
    this.url = url;
  }
}

export interface RemoteDocument {
  contextUrl: null;
  documentUrl: string;
  document: unknown;
}

const registered = new Map<string, unknown>();

/** http/https, trailing "/" and "#" are not significant for the W3C context URLs. */
function normalise(url: string): string {
  return url.replace(/^http:\/\//, "https://").replace(/[/#]+$/, "");
}

/** Makes a context document available to the loader under `url` (e.g. a domain ontology's context). */
export function registerContext(url: string, document: unknown): void {
  registered.set(normalise(url), document);
}

export function knownContextUrls(): string[] {
  return [...Object.keys(BUILT_IN), ...registered.keys()];
}

function lookup(url: string): unknown {
  const key = normalise(url);
  const cached = registered.get(key);
  if (cached !== undefined) return cached;
  const file = BUILT_IN[key];
  if (file === undefined) return undefined;
  const document = readJsonFile(join(ontologyDir, file));
  registered.set(key, document);
  return document;
}

/** A jsonld.js document loader that serves known contexts from disk and refuses everything else. */
export async function offlineDocumentLoader(url: string): Promise<RemoteDocument> {
  const document = lookup(url);
  if (document === undefined) throw new RemoteContextRefusedError(url);
  return { contextUrl: null, documentUrl: url, document };
}
