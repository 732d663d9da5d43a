/**
 * Where callers may point the gateway: allowlists of the hosts it connects to on their behalf
 * (Docker engines, brokers: DTC_ALLOWED_OUTBOUND_HOSTS) and of the images it runs
 * (DTC_ALLOWED_IMAGES), and URL redaction for messages and logs. Pure functions, no I/O.
 *
 * Globs: `*` stands for any characters within one segment (a host name's label, an image path
 * component, a tag) and never crosses a `.` in a host or a `/` in an image, so `*.example.com`
 * covers `a.example.com` but not `a.b.example.com`, and `10.0.0.*` covers 10.0.0.0/24. An empty
 * allowlist allows everything.
 */

const escapeRegExp = (text: string) => text.replace(/[.+?^${}()|[\]\\]/g, "\\$&");

/** A glob as a regular expression, `*` matching anything but the characters of `stops`. */
function globRegExp(glob: string, stops: string): RegExp {
  const any = stops === "" ? ".*" : `[^${escapeRegExp(stops)}]*`;
  return new RegExp(`^${glob.split("*").map(escapeRegExp).join(any)}$`);
}

/** Lowercase, without IPv6 brackets or a trailing dot (a DNS name with it is the same name). */
function normalizeHost(host: string): string {
  let h = host.trim().toLowerCase();
  if (h.startsWith("[") && h.endsWith("]")) h = h.slice(1, -1);
  if (h.endsWith(".")) h = h.slice(0, -1);
  return h;
}

/** Whether `host` (a name or an address, IPv6 with or without brackets) matches an entry of `allowlist`. */
export function hostAllowed(host: string, allowlist: string[]): boolean {
  if (allowlist.length === 0) return true;
  const wanted = normalizeHost(host);
  if (wanted === "") return false;
  return allowlist.some((entry) => {
    const glob = normalizeHost(entry);
    return glob !== "" && globRegExp(glob, ".").test(wanted);
  });
}

interface ImageRef {
  /** registry/path, Docker Hub names spelled out (docker.io/library/nginx). */
  name: string;
  tag: string | undefined;
  digest: string | undefined;
}

/** An image reference's parts, or undefined when it is not one (globs allowed, for entries). */
function parseImage(ref: string): ImageRef | undefined {
  const text = ref.trim();
  if (text === "" || /\s/.test(text)) return undefined;
  const at = text.indexOf("@");
  const digest = at < 0 ? undefined : text.slice(at + 1);
  const rest = at < 0 ? text : text.slice(0, at);
  // A tag's colon comes after the last slash; an earlier one is a registry's port.
  const colon = rest.lastIndexOf(":");
  const tagged = colon > rest.lastIndexOf("/");
  const tag = tagged ? rest.slice(colon + 1) : undefined;
  const name = tagged ? rest.slice(0, colon) : rest;
  if (name === "" || tag === "" || digest === "" || name.split("/").some((c) => c === "")) return undefined;
  const components = name.split("/");
  const first = components[0] as string;
  // Docker's rule: a first component with a dot or a port, or "localhost", is a registry.
  const registry =
    components.length > 1 && (first.includes(".") || first.includes(":") || first === "localhost");
  let full: string;
  if (!registry) full = `docker.io/${components.length === 1 ? "library/" : ""}${name}`;
  else if (first.toLowerCase() === "index.docker.io") full = `docker.io/${components.slice(1).join("/")}`;
  else full = `${first.toLowerCase()}/${components.slice(1).join("/")}`;
  return { name: full, tag, digest };
}

/**
 * Whether `image` matches an entry of `allowlist`: `registry.example/dtc/*` covers
 * `registry.example/dtc/twin:1.2`; an entry without a tag covers every tag and digest, one with a
 * tag (`dtc/twin:1.*`) the matching tags, one with a digest that digest. Docker Hub names match
 * either way they are written (`nginx` = `docker.io/library/nginx`).
 */
export function imageAllowed(image: string, allowlist: string[]): boolean {
  if (allowlist.length === 0) return true;
  const ref = parseImage(image);
  if (ref === undefined || ref.name.includes("*")) return false;
  // What the engine pulls for a reference without tag or digest.
  const tag = ref.tag ?? (ref.digest === undefined ? "latest" : undefined);
  return allowlist.some((entry) => {
    const glob = parseImage(entry);
    if (glob === undefined || !globRegExp(glob.name, "/").test(ref.name)) return false;
    if (glob.tag !== undefined && (tag === undefined || !globRegExp(glob.tag, "").test(tag))) return false;
    if (glob.digest !== undefined && glob.digest !== ref.digest) return false;
    return true;
  });
}

/** Why a broker URL with a user name or password is refused (per-instance broker credentials are not supported). */
export const BROKER_CREDENTIALS =
  "must not carry credentials: they would appear in the twin's TD, logs and answers; " +
  "use a broker that authenticates the gateway's credentials (DTC_MQTT_USERNAME)";

/** Whether a URL carries a user name or password (they would reach TDs, logs and answers). */
export function hasCredentials(url: string): boolean {
  if (!URL.canParse(url)) return false;
  const parsed = new URL(url);
  return parsed.username !== "" || parsed.password !== "";
}

/** A URL fit for messages and logs: without user name, password, query and fragment. */
export function redactUrl(url: string): string {
  if (!URL.canParse(url)) return "(not a URL)";
  const parsed = new URL(url);
  // Without a host ("user:secret@host" parses as scheme "user:") everything after the scheme may be secret.
  if (parsed.host === "") return `${parsed.protocol}(redacted)`;
  parsed.username = "";
  parsed.password = "";
  parsed.search = "";
  parsed.hash = "";
  return parsed.href;
}

/** The host of a URL (IPv6 without brackets), or undefined when it is not a URL with a host. */
export function urlHost(url: string): string | undefined {
  if (!URL.canParse(url)) return undefined;
  const host = new URL(url).hostname;
  return host === "" ? undefined : normalizeHost(host);
}
