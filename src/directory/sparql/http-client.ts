/**
 * The SPARQL 1.1 Protocol client of the remote store: form POSTs for queries, sparql-update POSTs
 * for updates, each within a time limit; HTTP Basic or Digest, whichever the store's 401 challenge
 * asks for; the store's errors as EndpointError (with Virtuoso's SQLSTATE), and what they mean for
 * a user's query (asQueryError) and for a write (retrying on a deadlock).
 */
import DigestClient from "digest-fetch";
import { errorMessage } from "../../domain/errors.js";
import { QueryError, StoreError } from "../store.js";

/** Times a write is tried when Virtuoso picks it as a deadlock victim. */
const WRITE_ATTEMPTS = 3;

export interface SparqlAuth {
  user: string;
  password: string;
}

/** An answer of the endpoint other than 2xx; `sqlState` is Virtuoso's SQLSTATE when it gave one. */
export class EndpointError extends StoreError {
  readonly status: number;
  readonly sqlState: string | undefined;
  readonly text: string;
  constructor(what: string, status: number, text: string) {
    const brief = errorText(text);
    super(`${what}: the SPARQL store answered ${status}${brief ? `: ${brief}` : ""}`);
    this.name = "StoreError";
    this.status = status;
    this.text = brief;
    this.sqlState = /^Virtuoso (\w{5}) Error/.exec(text)?.[1];
  }
}

/** The store did not answer in time, or stopped the query at its own time limit. */
export class RequestTimeout extends StoreError {}

/** The store's error message without Virtuoso's echo of the query. */
function errorText(text: string): string {
  return (
    text
      .split(/\n\s*\nSPARQL query:/)[0]
      ?.trim()
      .slice(0, 2000) ?? ""
  );
}

/** The Digest challenge of a WWW-Authenticate header (RFC 7235: it may offer several), if any. */
function digestChallenge(header: string | null): string | undefined {
  const at = header?.search(/\bDigest\s/i) ?? -1;
  return at >= 0 ? header?.slice(at) : undefined;
}

/**
 * digest-fetch, given only the Digest challenge of a header: it takes the first challenge's scheme for
 * its own, and would answer `Basic realm=..., Digest ...` with a Digest response labelled Basic.
 */
class DigestAuth extends DigestClient {
  override parseAuth(header: string | null): void {
    super.parseAuth(digestChallenge(header) ?? null);
  }
}

/**
 * The client answering a 401's challenge with `auth`: Digest when offered (it never sends the
 * password), else Basic; undefined when neither is offered. digest-fetch does both schemes; which one
 * is ours to say (its Basic client sends the credentials with every request, so it is only made once
 * the store asked for them).
 */
function authClient(auth: SparqlAuth, header: string | null): DigestClient | undefined {
  const challenge = digestChallenge(header);
  if (challenge !== undefined) {
    // The algorithm the store offers (digest-fetch takes MD5 when none is given, or one it lacks).
    const client = new DigestAuth(auth.user, auth.password, {
      algorithm: DigestClient.parse(challenge, "algorithm"),
    });
    // Takes in this challenge, so that the client's first request already answers it.
    client.parseAuth(challenge);
    return client;
  }
  if (!header || !/\bBasic\b/i.test(header)) return undefined;
  // digest-fetch's base64 encoder takes Latin-1 text only: given the UTF-8 bytes as Latin-1 characters,
  // it sends base64 of the UTF-8 credentials (RFC 7617's charset="UTF-8"), and any character at all.
  const utf8 = (text: string) => Buffer.from(text, "utf8").toString("latin1");
  return new DigestClient(utf8(auth.user), utf8(auth.password), { basic: true });
}

export interface SparqlRequest {
  body: string;
  contentType: string;
  accept: string;
}

/**
 * Requests with one set of credentials (or none) to the endpoints that share them. The first 401
 * decides the scheme: from then on the credentials go up front, in that scheme only.
 */
export class SparqlHttpClient {
  readonly #auth: SparqlAuth | undefined;
  readonly #timeoutMs: number;
  /** Made at the first 401: credentials are only ever sent in the scheme it asked for. */
  #client: DigestClient | undefined;

  /** `timeoutMs`: the longest a request may take unless the call gives its own. */
  constructor(auth: SparqlAuth | undefined, timeoutMs: number) {
    this.#auth = auth;
    this.#timeoutMs = timeoutMs;
  }

  /** A query (or any form of the Query protocol) as a form POST of `params`. */
  query(
    url: string,
    what: string,
    params: Record<string, string>,
    accept: string,
    timeoutMs?: number,
  ): Promise<{ headers: Headers; body: string }> {
    const request = {
      body: new URLSearchParams(params).toString(),
      contentType: "application/x-www-form-urlencoded",
      accept,
    };
    return this.post(url, what, request, timeoutMs);
  }

  async update(url: string, text: string, what: string): Promise<void> {
    await this.post(url, what, {
      body: text,
      contentType: "application/sparql-update; charset=UTF-8",
      accept: "application/sparql-results+json, */*;q=0.1",
    });
  }

  /**
   * POSTs to the store and reads its 2xx answer, all within `timeoutMs`. Throws RequestTimeout,
   * EndpointError (another status), or StoreError (unreachable).
   */
  async post(
    url: string,
    what: string,
    request: SparqlRequest,
    timeoutMs = this.#timeoutMs,
  ): Promise<{ headers: Headers; body: string }> {
    const signal = AbortSignal.timeout(timeoutMs);
    // A new init for each request: digest-fetch sets the Authorization header in the one it is given.
    const init = (): RequestInit => ({
      method: "POST",
      headers: { "content-type": request.contentType, accept: request.accept },
      body: request.body,
      signal,
    });
    // digest-fetch calls the global fetch (Node's), so its answers are the global Response.
    const send = (client: DigestClient | undefined): Promise<Response> =>
      client ? (client.fetch(url, init()) as Promise<Response>) : fetch(url, init());
    let res: Response;
    let body: string;
    try {
      const client = this.#client;
      const auth = this.#auth;
      res = await send(client);
      // The first 401: answer it in the scheme asked for, and from then on send the credentials up front
      // (a Digest client answers later challenges itself, e.g. for a new nonce).
      if (res.status === 401 && auth && !client) {
        const next = authClient(auth, res.headers.get("www-authenticate"));
        if (next) {
          await res.arrayBuffer();
          this.#client = next;
          res = await send(next);
        }
      }
      body = await res.text();
    } catch (err) {
      if (err instanceof StoreError) throw err;
      if (signal.aborted) {
        throw new RequestTimeout(`${what}: the SPARQL store did not answer within ${timeoutMs} ms`, {
          cause: err,
        });
      }
      const cause = (err as { cause?: { message?: string } }).cause?.message ?? errorMessage(err);
      throw new StoreError(`${what}: cannot reach the SPARQL store at ${new URL(url).origin}: ${cause}`, {
        cause: err,
      });
    }
    if (res.status === 401 || res.status === 403) {
      const why = this.#auth
        ? "the credentials were refused"
        : "the store asks for credentials, none are set";
      throw new EndpointError(`${what}: ${why}`, res.status, "");
    }
    if (!res.ok) throw new EndpointError(what, res.status, body);
    // Virtuoso's anytime queries: past the `timeout` parameter it answers 200 with partial results.
    if (res.headers.get("x-sql-state") === "S1TAT") {
      throw new RequestTimeout(`${what}: the SPARQL store stopped the query at its time limit`);
    }
    return { headers: res.headers, body };
  }
}

/** Runs a write again when Virtuoso chose it as a deadlock victim (SQLSTATE 40001); writes are idempotent. */
export async function retrying<T>(write: () => Promise<T>): Promise<T> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await write();
    } catch (err) {
      if (!(err instanceof EndpointError && err.sqlState === "40001") || attempt >= WRITE_ATTEMPTS) throw err;
    }
  }
}

/**
 * What a failed request of a user's query means for the user: a QueryError "timeout" or "rejected"
 * where the store's answer says so, else `err` as it is. `elapsedMs`: how long the request took.
 */
export function asQueryError(err: unknown, timeoutMs: number, elapsedMs: number): unknown {
  if (err instanceof RequestTimeout) {
    return new QueryError("timeout", `the query ran longer than ${timeoutMs} ms`, { cause: err });
  }
  if (!(err instanceof EndpointError)) return err;
  // Virtuoso: S1T00 transaction timeout (MaxQueryExecutionTime), 42000 refused on its cost estimate.
  if (
    err.status === 408 ||
    err.status === 504 ||
    err.sqlState === "S1T00" ||
    err.sqlState === "S1TAT" ||
    /estimated execution time/i.test(err.text) ||
    // A server error once the limit has passed: the store gave up on the query (Virtuoso answers
    // some of its own timeouts so, depending on where in the query its 2 s tick falls).
    (err.status >= 500 && elapsedMs >= timeoutMs)
  ) {
    return new QueryError("timeout", err.text || `the query ran longer than ${timeoutMs} ms`, {
      cause: err,
    });
  }
  // Virtuoso reports some faults of the query only when running it, as 500: data exceptions
  // (22xxx: arithmetic on strings...), compiler errors (37xxx), unknown functions (42001).
  const clientFault = err.sqlState !== undefined && /^(22|37)|^42001$/.test(err.sqlState);
  if ([400, 413, 414, 422].includes(err.status) || clientFault) {
    return new QueryError("rejected", err.text || `the SPARQL store refused the query (${err.status})`, {
      cause: err,
    });
  }
  return err;
}
