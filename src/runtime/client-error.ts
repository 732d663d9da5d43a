/**
 * Errors that are the client's fault, carried through node-wot's HTTP binding. node-wot answers
 * 500 with the error's message as the body for anything a handler throws, so a twin's handler
 * marks the message (with the status it stands for, 422 when none is given), and the gateway's
 * twins proxy turns a marked 500 into that status.
 */

export const CLIENT_ERROR_MARKER = "dtc-client-error:";

/** What a marked message says: the status the gateway answers with, and why. */
export interface ClientErrorInfo {
  status: number;
  reason: string;
}

const DEFAULT_STATUS = 422;

/**
 * An error whose message tells the gateway that the request, not the twin, was at fault:
 * `dtc-client-error: reason` (422), or `dtc-client-error:409 reason` for another 4xx status.
 */
export function clientError(message: string, status = DEFAULT_STATUS): Error {
  // 503 too: the twin cannot do it now (its broker is down), and the client may try again.
  if (!Number.isInteger(status) || ((status < 400 || status > 499) && status !== 503)) {
    throw new RangeError(`a client error's status must be 4xx or 503, not ${status}`);
  }
  const code = status === DEFAULT_STATUS ? "" : String(status);
  return new Error(`${CLIENT_ERROR_MARKER}${code} ${message}`);
}

const MARKED = /^dtc-client-error:(4\d\d|503)?[ \t]/;

/** The status and reason of a marked message (a 500 body from a twin), or undefined when it is not marked. */
export function parseClientError(text: string): ClientErrorInfo | undefined {
  const match = MARKED.exec(text);
  if (!match) return undefined;
  return {
    status: match[1] === undefined ? DEFAULT_STATUS : Number(match[1]),
    reason: text.slice(match[0].length).trim(),
  };
}
