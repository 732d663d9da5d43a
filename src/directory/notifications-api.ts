import type { Context, Hono } from "hono";
import { streamSSE } from "hono/streaming";
import { problem } from "../http/problem.js";
import {
  type DirectoryEvents,
  type EventSubscription,
  EventsGoneError,
  isThingChangeType,
  THING_CHANGE_TYPES,
} from "./events.js";

/**
 * The Notification API of W3C WoT Discovery (section 7.3.2.3): Server-Sent Events at /events (all
 * types) and /events/{type}, `?diff=true` for full TDs and merge patches, and replay of missed
 * events from the hub's buffer after a Last-Event-ID.
 */

export interface NotificationsApiOptions {
  events: DirectoryEvents;
  /** How often an idle stream gets a comment line, ms, so proxies keep it open (default 15,000). */
  keepAliveMs?: number;
  /** The reconnection delay suggested to clients (SSE `retry`), ms (default 3,000). */
  retryMs?: number;
  /** Most open event streams (default MAX_SUBSCRIBERS); the next gets 503 with Retry-After. */
  maxSubscribers?: number;
}

/** Most event streams open at once: each holds a connection and a cursor into the hub. */
export const MAX_SUBSCRIBERS = 1000;

const SSE_HEADERS = {
  "Content-Type": "text/event-stream",
  "Cache-Control": "no-cache",
  // nginx buffers proxied responses unless told not to: events would arrive in bursts.
  "X-Accel-Buffering": "no",
};

export function mountNotificationsApi(app: Hono, options: NotificationsApiOptions): void {
  const { events } = options;
  const keepAliveMs = options.keepAliveMs ?? 15_000;
  const retryMs = options.retryMs ?? 3_000;
  const maxSubscribers = options.maxSubscribers ?? MAX_SUBSCRIBERS;
  const badRequest = (c: Context, detail: string) =>
    problem(c, { title: "Bad Request", status: 400, detail });

  app.get("/events/:type?", (c) => {
    const type = c.req.param("type");
    if (type !== undefined && !isThingChangeType(type)) {
      return badRequest(
        c,
        `unknown event type ${JSON.stringify(type)}; types: ${THING_CHANGE_TYPES.join(", ")}`,
      );
    }
    const diffParam = c.req.query("diff");
    if (diffParam !== undefined && diffParam !== "true" && diffParam !== "false") {
      return badRequest(c, `diff must be true or false, not ${JSON.stringify(diffParam)}`);
    }
    const diff = diffParam === "true";
    // EventSource sends Last-Event-ID when reconnecting; the query form is for first connections.
    const lastEventId = c.req.header("last-event-id") ?? c.req.query("lastEventId");
    let after: number | undefined;
    if (lastEventId !== undefined && lastEventId !== "") {
      if (!/^\d{1,16}$/.test(lastEventId)) {
        return badRequest(
          c,
          `Last-Event-ID must be an event id (a whole number), not ${JSON.stringify(lastEventId)}`,
        );
      }
      after = Number(lastEventId);
    }
    if (events.closed) {
      return problem(c, {
        title: "Service Unavailable",
        status: 503,
        detail: "the directory is shutting down",
      });
    }

    if (events.subscriberCount >= maxSubscribers) {
      c.header("Retry-After", String(Math.ceil(retryMs / 1000)));
      return problem(c, {
        title: "Service Unavailable",
        status: 503,
        detail: `${maxSubscribers} event streams are open, the most this directory serves at once: try again later`,
      });
    }

    let subscription: EventSubscription;
    try {
      subscription = events.subscribe({ types: type === undefined ? THING_CHANGE_TYPES : [type], after });
    } catch (err) {
      if (!(err instanceof EventsGoneError)) throw err;
      return problem(c, {
        title: "Gone",
        status: 410,
        detail: `${err.message}: list the Thing Descriptions again (GET /things), then subscribe without Last-Event-ID`,
      });
    }
    // Hono answers HEAD with the GET route and drops the body unread: nothing would end the stream.
    if (c.req.method === "HEAD") {
      subscription.close();
      return c.body(null, 200, SSE_HEADERS);
    }
    for (const [name, value] of Object.entries(SSE_HEADERS)) c.header(name, value);

    return streamSSE(c, async (stream) => {
      // Client gone: stop reading the hub. Subscription closed by the hub (slow consumer, shutdown):
      // end the response, even if a write is stuck behind a client that stopped reading.
      stream.onAbort(() => subscription.close());
      subscription.onClose(() => stream.abort());
      // Sends the headers at once (Node holds them until the first write) and the retry hint.
      await stream.write(`retry: ${retryMs}\n: subscribed to ${type ?? "all events"}\n\n`);
      for (;;) {
        const event = await subscription.next(keepAliveMs);
        if (subscription.closed) break;
        if (event === undefined) {
          await stream.write(": keep-alive\n\n");
          continue;
        }
        await stream.writeSSE({
          id: String(event.id),
          event: event.type,
          data: diff ? event.diffData : event.data,
        });
      }
    });
  });
}
