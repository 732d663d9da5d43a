import { errorMessage } from "../domain/errors.js";
import type { Connection } from "./contexts.js";
import { CliError, EXIT } from "./errors.js";

/** RFC 9457 problem details, as the gateway answers every error. */
export interface Problem {
  title?: string;
  status?: number;
  detail?: string;
  validationErrors?: { field: string; description: string }[];
}

/** The gateway answered with an error status: exit 1, shown as `dtc: title: detail`. */
export class ApiError extends CliError {
  readonly status: number;
  readonly problem: Problem;
  constructor(status: number, problem: Problem, details: readonly string[] = []) {
    const title = problem.title ?? `HTTP ${status}`;
    super(EXIT.failed, problem.detail ? `${title}: ${problem.detail}` : title, [
      ...(problem.validationErrors ?? []).map((e) => `  ${e.field}: ${e.description}`),
      ...details,
    ]);
    this.name = "ApiError";
    this.status = status;
    this.problem = problem;
  }
}

export interface RequestOptions {
  query?: Record<string, string | number | boolean | undefined | readonly string[]>;
  /** JSON-encoded unless a string (sent as is, with `contentType`). */
  body?: unknown;
  contentType?: string;
  accept?: string;
  signal?: AbortSignal;
}

/** A small client of the gateway's HTTP API: fetch with the token, errors as CliErrors. */
export class ApiClient {
  readonly server: string;
  readonly #token: string | undefined;

  constructor(connection: Pick<Connection, "server" | "token">) {
    this.server = connection.server;
    this.#token = connection.token;
  }

  url(path: string, query: RequestOptions["query"] = {}): string {
    const url = new URL(`${this.server}${path}`);
    for (const [name, value] of Object.entries(query)) {
      if (value === undefined) continue;
      if (Array.isArray(value)) for (const v of value) url.searchParams.append(name, String(v));
      else url.searchParams.set(name, String(value));
    }
    return url.href;
  }

  headers(extra: Record<string, string> = {}): Record<string, string> {
    return { ...extra, ...(this.#token ? { Authorization: `Bearer ${this.#token}` } : {}) };
  }

  /** The response, whatever its status; a gateway that cannot be reached is exit 3. */
  async fetch(method: string, path: string, options: RequestOptions = {}): Promise<Response> {
    const { body } = options;
    const headers = this.headers({
      Accept: options.accept ?? "application/json",
      ...(body === undefined
        ? {}
        : {
            "Content-Type":
              options.contentType ?? (typeof body === "string" ? "text/plain" : "application/json"),
          }),
    });
    try {
      return await fetch(this.url(path, options.query), {
        method,
        headers,
        body: body === undefined ? undefined : typeof body === "string" ? body : JSON.stringify(body),
        signal: options.signal,
      });
    } catch (err) {
      if (options.signal?.aborted) throw err;
      const cause = (err as { cause?: unknown }).cause;
      throw new CliError(
        EXIT.unreachable,
        `cannot reach the gateway: ${this.server}: ${cause ? errorMessage(cause) : errorMessage(err)}`,
      );
    }
  }

  /** The parsed body of a success, or an ApiError. */
  async request<T = unknown>(method: string, path: string, options: RequestOptions = {}): Promise<T> {
    const res = await this.fetch(method, path, options);
    const text = await res.text();
    if (!res.ok) throw new ApiError(res.status, problemOf(res.status, text));
    if (text === "") return undefined as T;
    const type = res.headers.get("content-type") ?? "";
    if (!type.includes("json")) return text as T;
    try {
      return JSON.parse(text) as T;
    } catch (err) {
      throw new CliError(EXIT.failed, `bad answer from the gateway: ${method} ${path}: ${errorMessage(err)}`);
    }
  }

  get<T = unknown>(path: string, query?: RequestOptions["query"]): Promise<T> {
    return this.request<T>("GET", path, query ? { query } : {});
  }

  post<T = unknown>(path: string, body?: unknown, query?: RequestOptions["query"]): Promise<T> {
    return this.request<T>("POST", path, { body, ...(query ? { query } : {}) });
  }

  delete(path: string): Promise<unknown> {
    return this.request("DELETE", path);
  }
}

/** The answer's problem details, or a made-up one for a body that is not. */
export function problemOf(status: number, text: string): Problem {
  try {
    const parsed = JSON.parse(text) as Problem;
    if (parsed && typeof parsed === "object" && (parsed.title || parsed.detail)) return parsed;
  } catch {
    // not JSON: the body itself is the detail
  }
  const detail = text.trim().slice(0, 300);
  return { title: `HTTP ${status}`, status, ...(detail ? { detail } : {}) };
}

export const enc = encodeURIComponent;
