/**
 * Errors that are the client's fault, carried through node-wot's HTTP binding. node-wot answers
 * 500 with the error's message as the body for anything an action handler throws, so a twin's
 * handler marks the message, and the gateway's twins proxy turns a marked 500 into a 422.
 */

export const CLIENT_ERROR_MARKER = "dtc-client-error:";

/** An error whose message tells the gateway that the request, not the twin, was at fault. */
export function clientError(message: string): Error {
  return new Error(`${CLIENT_ERROR_MARKER} ${message}`);
}

/** The reason of a marked message (a 500 body from a twin), or undefined when it is not marked. */
export function parseClientError(text: string): string | undefined {
  return text.startsWith(CLIENT_ERROR_MARKER) ? text.slice(CLIENT_ERROR_MARKER.length).trim() : undefined;
}
