/**
 * The gateway's API as the dashboard calls it: same origin, every request with the user's token.
 * What a role may do mirrors src/security/principal.ts (the gateway decides; the UI only hides).
 */

export type Role = "reader" | "operator" | "admin";
const ROLES: Role[] = ["reader", "operator", "admin"];

export interface Session {
  token: string | undefined;
  id: string;
  role: Role;
}

const TOKEN_KEY = "dtc.token";

export const storedToken = (): string | undefined => sessionStorage.getItem(TOKEN_KEY) ?? undefined;
export const storeToken = (token: string | undefined) =>
  token === undefined ? sessionStorage.removeItem(TOKEN_KEY) : sessionStorage.setItem(TOKEN_KEY, token);

/** Whether `role` may do what needs `needed`. */
export const may = (role: Role, needed: Role) => ROLES.indexOf(role) >= ROLES.indexOf(needed);

export class ApiError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
  }
}

let token: string | undefined;
export const setToken = (t: string | undefined) => {
  token = t;
};

export interface CallOptions {
  method?: string;
  body?: unknown;
  accept?: string;
  signal?: AbortSignal;
  /** Send the body as is with this content type (a SPARQL query). */
  rawType?: string;
}

/** Calls `path`, answering the parsed JSON (or text); a problem answer throws its detail. */
export async function api<T = unknown>(path: string, options: CallOptions = {}): Promise<T> {
  const headers: Record<string, string> = { Accept: options.accept ?? "application/json" };
  if (token !== undefined) headers.Authorization = `Bearer ${token}`;
  let body: string | undefined;
  if (options.body !== undefined) {
    headers["Content-Type"] = options.rawType ?? "application/json";
    body = options.rawType ? String(options.body) : JSON.stringify(options.body);
  }
  const res = await fetch(path, {
    method: options.method ?? "GET",
    headers,
    ...(body === undefined ? {} : { body }),
    ...(options.signal ? { signal: options.signal } : {}),
  });
  const text = await res.text();
  const type = res.headers.get("content-type") ?? "";
  const parsed = type.includes("json") && text !== "" ? JSON.parse(text) : text;
  if (!res.ok) {
    const p = parsed as { title?: string; detail?: string };
    throw new ApiError(res.status, p?.detail ?? p?.title ?? `${res.status} ${res.statusText}`);
  }
  return parsed as T;
}

/** Who the token is, or why it is refused. Without a token: the gateway runs with auth off. */
export async function whoami(t: string | undefined): Promise<Session> {
  setToken(t);
  const p = await api<{ kind: string; id?: string; role?: string }>("/api/whoami");
  if (p.kind !== "user" || !ROLES.includes(p.role as Role)) {
    throw new ApiError(403, "this token is not a user's (a device or anonymous)");
  }
  return { token: t, id: p.id ?? "", role: p.role as Role };
}

export const errorText = (err: unknown) => (err instanceof Error ? err.message : String(err));

// ---- what the API answers (src/manager/model.ts), the members the dashboard shows

export interface Entanglement {
  odte: number;
  timeliness: number;
  reliability: number;
  availability: number;
  evaluatedAt: string;
  entangled?: boolean;
  threshold?: number;
}

export interface Instance {
  id: string;
  package: string;
  schema: string;
  node: string;
  platform: string;
  desired: string;
  lifecycle: string;
  entanglement?: Entanglement;
  failed?: string;
  td?: ThingDescription;
}

export interface Resources {
  cpu: number;
  memory: number;
  gpu: number;
}

export interface NodeView {
  id: string;
  platform: string;
  tier: string;
  capabilities: Resources;
  free: Resources;
  labels?: Record<string, string>;
  latencyMs?: number;
  ready: boolean;
  reason?: string;
  instances: number;
  builtIn?: boolean;
}

export interface PackageParam {
  type: "string" | "integer" | "number" | "boolean";
  default?: unknown;
  description?: string;
  enum?: unknown[];
}

export interface Package {
  id: string;
  schema: string;
  platform: string;
  parameters: Record<string, PackageParam>;
}

export interface DataSchema {
  type?: string;
  title?: string;
  description?: string;
  enum?: unknown[];
  minimum?: number;
  maximum?: number;
  exclusiveMinimum?: number;
  exclusiveMaximum?: number;
  unit?: string;
  properties?: Record<string, DataSchema>;
  required?: string[];
  readOnly?: boolean;
  default?: unknown;
}

export interface Affordance extends DataSchema {
  input?: DataSchema;
  observable?: boolean;
}

export interface ThingDescription {
  id?: string;
  title?: string;
  description?: string;
  properties?: Record<string, Affordance>;
  actions?: Record<string, Affordance>;
  events?: Record<string, Affordance>;
}

export interface NamedQuery {
  name: string;
  description: string;
  params: { name: string; type: string; optional: boolean; description: string }[];
}

export interface SparqlResults {
  head?: { vars?: string[] };
  boolean?: boolean;
  results?: { bindings: Record<string, { type: string; value: string }>[] };
}

export const LIFECYCLE_STATES = ["Unbound", "Bound", "Entangled", "Disentangled", "Done", "Stopped"];
export const TIERS = ["edge", "mec", "cloud"];

/** The twin actions only an admin may invoke (src/http/routes.ts). */
export const ADMIN_ACTIONS = new Set(["installAugmentation", "removeAugmentation"]);

export const enc = encodeURIComponent;
