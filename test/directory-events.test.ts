import { mkdtempSync, rmSync } from "node:fs";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { type ServerType, serve } from "@hono/node-server";
import { createParser, type EventSourceMessage } from "eventsource-parser";
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { EmbeddedStore } from "../src/directory/embedded-store.js";
import { DirectoryEvents, EventsGoneError, mergeDiff, type ThingChange } from "../src/directory/events.js";
import { mountNotificationsApi } from "../src/directory/notifications-api.js";
import type { StoredThing } from "../src/directory/store.js";
import { mergePatch, mountThingsApi } from "../src/directory/things-api.js";
import { createApp } from "../src/http/app.js";
import { createLogger } from "../src/logger.js";
import { DISCOVERY_CONTEXT_URL } from "../src/wot/jsonld-loader.js";
import type { JsonObject } from "../src/wot/rdf.js";

/** A small valid TD 1.1. */
const td = (id: string, extra: JsonObject = {}): JsonObject => ({
  "@context": "https://www.w3.org/2022/wot/td/v1.1",
  id,
  title: "Lamp",
  securityDefinitions: { nosec_sc: { scheme: "nosec" } },
  security: "nosec_sc",
  properties: {
    on: { type: "boolean", forms: [{ href: "http://lamp.example/on" }] },
    level: { type: "integer", minimum: 0, forms: [{ href: "http://lamp.example/level" }] },
  },
  ...extra,
});

const stored = (id: string, extra: JsonObject = {}): StoredThing => ({
  id,
  td: td(id, extra),
  registration: { created: "2026-01-01T00:00:00.000Z", modified: "2026-01-01T00:00:00.000Z" },
});

describe("mergeDiff", () => {
  const cases: [string, unknown, unknown][] = [
    ["identical", td("urn:a"), td("urn:a")],
    ["member changed", td("urn:a"), td("urn:a", { title: "Desk lamp" })],
    ["member added", td("urn:a"), td("urn:a", { description: "by the window" })],
    ["member removed", td("urn:a", { description: "x" }), td("urn:a")],
    [
      "nested change and removal",
      td("urn:a"),
      {
        ...td("urn:a"),
        properties: { on: { type: "boolean", readOnly: true, forms: [{ href: "http://l/on" }] } },
      },
    ],
    ["array replaced", { a: [1, 2, 3] }, { a: [1, 3] }],
    ["object becomes a value", { a: { b: 1 } }, { a: "b" }],
    ["value becomes an object", { a: "b" }, { a: { b: { c: [null] } } }],
    ["arrays of objects", { links: [{ href: "x", rel: "a" }] }, { links: [{ href: "x" }] }],
  ];
  it.each(cases)("turns previous into next: %s", (_name, previous, next) => {
    expect(mergePatch(previous, mergeDiff(previous, next))).toEqual(next);
  });

  it("patches only what changed", () => {
    expect(mergeDiff(td("urn:a"), td("urn:a"))).toEqual({});
    expect(mergeDiff({ a: 1, b: { c: 2, d: 3 } }, { a: 1, b: { c: 2 }, e: 4 })).toEqual({
      b: { d: null },
      e: 4,
    });
  });
});

describe("DirectoryEvents", () => {
  it("numbers events in increasing order and replays them after a given id", async () => {
    const hub = new DirectoryEvents({ firstId: 1 });
    const ids = ["urn:a", "urn:b", "urn:c"].map(
      (id) => hub.publish({ type: "thing_created", thing: stored(id) }).id,
    );
    expect(ids).toEqual([1, 2, 3]);
    const subscription = hub.subscribe({ after: 1 });
    expect((await subscription.next(0))?.thingId).toBe("urn:b");
    expect((await subscription.next(0))?.thingId).toBe("urn:c");
    expect(await subscription.next(0)).toBeUndefined();
    subscription.close();
    expect(hub.subscriberCount).toBe(0);
  });

  it("starts numbering past the ids of an earlier run, and refuses to resume from those", () => {
    const earlier = new DirectoryEvents();
    const last = earlier.publish({ type: "thing_deleted", id: "urn:a" }).id;
    const later = new DirectoryEvents({ firstId: last + 1_000 });
    expect(() => later.subscribe({ after: last })).toThrow(EventsGoneError);
    expect(() => later.subscribe({ after: later.lastEventId + 1 })).toThrow(EventsGoneError);
    expect(new DirectoryEvents().lastEventId).toBeGreaterThan(Date.now() * 1_000 - 1_000_000);
  });

  it("keeps a bounded buffer, and knows which types lost events", () => {
    const hub = new DirectoryEvents({ bufferSize: 3, firstId: 1 });
    hub.publish({ type: "thing_deleted", id: "urn:gone" }); // 1
    for (let i = 0; i < 5; i++) hub.publish({ type: "thing_created", thing: stored(`urn:${i}`) }); // 2..6
    // Events 1..3 are evicted: a thing_created subscriber from 1 missed some, a thing_updated one did not.
    expect(() => hub.subscribe({ after: 1 })).toThrow(EventsGoneError);
    expect(() => hub.subscribe({ types: ["thing_created"], after: 2 })).toThrow(EventsGoneError);
    expect(() => hub.subscribe({ types: ["thing_deleted"], after: 0 })).toThrow(EventsGoneError);
    hub.subscribe({ types: ["thing_deleted"], after: 1 }).close();
    hub.subscribe({ types: ["thing_updated"], after: 0 }).close();
    hub.subscribe({ after: 3 }).close();
  });

  it("bounds the buffer by size of data too, keeping at least the newest event", async () => {
    const hub = new DirectoryEvents({ bufferChars: 10, firstId: 1 });
    const subscription = hub.subscribe({ types: ["thing_created"] });
    hub.publish({ type: "thing_created", thing: stored("urn:big", { description: "x".repeat(1000) }) });
    expect((await subscription.next(0))?.thingId).toBe("urn:big");
    hub.publish({ type: "thing_created", thing: stored("urn:big2") });
    expect(() => hub.subscribe({ after: 0 })).toThrow(EventsGoneError);
  });

  it("closes a subscriber that falls behind the buffer instead of queueing for it", async () => {
    const hub = new DirectoryEvents({ bufferSize: 2, firstId: 1 });
    const slow = hub.subscribe();
    const other = hub.subscribe({ types: ["thing_deleted"] });
    const closed = vi.fn();
    slow.onClose(closed);
    for (let i = 0; i < 3; i++) hub.publish({ type: "thing_created", thing: stored(`urn:${i}`) });
    expect(slow.closeReason).toBe("overflow");
    expect(closed).toHaveBeenCalledWith("overflow");
    expect(await slow.next(0)).toBeUndefined();
    expect(other.closed).toBe(false); // it wanted none of the lost events
    expect(hub.subscriberCount).toBe(1);
    hub.close();
    expect(other.closeReason).toBe("shutdown");
    expect(hub.subscriberCount).toBe(0);
    expect(() => hub.subscribe()).toThrow();
  });

  it("wakes a waiting subscriber on publish, and only for its types", async () => {
    const hub = new DirectoryEvents({ firstId: 1 });
    const subscription = hub.subscribe({ types: ["thing_deleted"] });
    const next = subscription.next();
    hub.publish({ type: "thing_created", thing: stored("urn:a") });
    hub.publish({ type: "thing_deleted", id: "urn:a" });
    expect(await next).toMatchObject({ type: "thing_deleted", thingId: "urn:a", id: 2 });
    const waiting = subscription.next();
    subscription.close();
    expect(await waiting).toBeUndefined();
  });

  it("serialises data once: the Partial TD, the enriched TD, the merge patch with the id", () => {
    const hub = new DirectoryEvents();
    const created = hub.publish({ type: "thing_created", thing: stored("urn:a") });
    expect(JSON.parse(created.data)).toEqual({ id: "urn:a" });
    expect(JSON.parse(created.diffData)).toMatchObject({ id: "urn:a", title: "Lamp", registration: {} });
    const previous = td("urn:a");
    const change: ThingChange = { type: "thing_updated", thing: stored("urn:a", { title: "B" }), previous };
    expect(JSON.parse(hub.publish(change).diffData)).toEqual({ id: "urn:a", title: "B" });
    const unknownPrevious = hub.publish({ type: "thing_updated", thing: stored("urn:a") });
    expect(JSON.parse(unknownPrevious.diffData)).toEqual({ id: "urn:a" });
  });
});

/** A Server-Sent Events reader over fetch, parsing with eventsource-parser. */
async function subscribeSse(url: string, headers: Record<string, string> = {}) {
  const controller = new AbortController();
  const res = await fetch(url, { headers, signal: controller.signal });
  const events: EventSourceMessage[] = [];
  const comments: string[] = [];
  const retries: number[] = [];
  let ended = false;
  let waiters: (() => void)[] = [];
  const notify = () => {
    const ready = waiters;
    waiters = [];
    for (const wake of ready) wake();
  };
  const parser = createParser({
    onEvent: (event) => {
      events.push(event);
      notify();
    },
    onComment: (comment) => {
      comments.push(comment);
      notify();
    },
    onRetry: (ms) => retries.push(ms),
  });
  if (res.ok && res.body) {
    const reader = res.body.getReader();
    const decoder = new TextDecoder();
    void (async () => {
      try {
        for (;;) {
          const { done, value } = await reader.read();
          if (done) break;
          parser.feed(decoder.decode(value, { stream: true }));
        }
      } catch {
        // aborted by the test
      } finally {
        ended = true;
        notify();
      }
    })();
  }
  /** Waits (for arrivals, with a deadline) until `done()` holds. */
  const until = async (what: string, done: () => boolean, ms = 5_000) => {
    const deadline = performance.now() + ms;
    while (!done()) {
      const left = deadline - performance.now();
      if (ended || left <= 0) throw new Error(`${ended ? "stream ended" : "timed out"} waiting for ${what}`);
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, left);
        waiters.push(() => {
          clearTimeout(timer);
          resolve();
        });
      });
    }
  };
  return {
    res,
    events,
    comments,
    retries,
    until,
    /** The first `n` events, once they are in. */
    take: async (n: number) => {
      await until(`${n} events`, () => events.length >= n);
      return events.slice(0, n);
    },
    ended: () => ended,
    close: () => controller.abort(),
  };
}

describe("the Notification API over HTTP (Server-Sent Events)", () => {
  let store: EmbeddedStore;
  let hub: DirectoryEvents;
  let server: ServerType;
  let base: string;
  const streams: { close(): void }[] = [];

  const call = (method: string, path: string, body?: unknown, type = "application/td+json") =>
    fetch(`${base}${path}`, {
      method,
      headers: body === undefined ? {} : { "Content-Type": type },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  const listen = async (path: string, headers?: Record<string, string>) => {
    const stream = await subscribeSse(`${base}${path}`, headers);
    streams.push(stream);
    return stream;
  };

  let dir: string;
  beforeEach(async () => {
    dir = mkdtempSync(join(tmpdir(), "dtc-events-"));
    store = new EmbeddedStore(dir);
    await store.open();
    hub = new DirectoryEvents({ bufferSize: 5 });
    const app = createApp({ version: "test", startedAt: 0, logger: createLogger("silent") });
    mountThingsApi(app, { store, onChange: (change) => hub.publish(change) });
    mountNotificationsApi(app, { events: hub, keepAliveMs: 100 });
    server = serve({ fetch: app.fetch, port: 0, hostname: "127.0.0.1" });
    await new Promise<void>((resolve) => server.once("listening", resolve));
    base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });

  afterEach(async () => {
    for (const stream of streams.splice(0)) stream.close();
    hub.close();
    await new Promise<void>((resolve) => {
      server.close(() => resolve());
      if ("closeAllConnections" in server) server.closeAllConnections();
    });
    await store.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it("streams thing_created, thing_updated and thing_deleted with ids and Partial TD data", async () => {
    const stream = await listen("/events");
    expect(stream.res.status).toBe(200);
    expect(stream.res.headers.get("content-type")).toBe("text/event-stream");
    expect(stream.res.headers.get("cache-control")).toBe("no-cache");
    expect(hub.subscriberCount).toBe(1);

    expect((await call("PUT", "/things/urn:lamp:1", td("urn:lamp:1"))).status).toBe(201);
    expect((await call("PUT", "/things/urn:lamp:1", td("urn:lamp:1", { title: "Desk" }))).status).toBe(204);
    const patch = { title: "Patched" };
    expect((await call("PATCH", "/things/urn:lamp:1", patch, "application/merge-patch+json")).status).toBe(
      204,
    );
    expect((await call("DELETE", "/things/urn:lamp:1")).status).toBe(204);

    const events = await stream.take(4);
    expect(events.map((e) => e.event)).toEqual([
      "thing_created",
      "thing_updated",
      "thing_updated",
      "thing_deleted",
    ]);
    for (const event of events) expect(JSON.parse(event.data)).toEqual({ id: "urn:lamp:1" });
    const ids = events.map((e) => Number(e.id));
    expect(ids.every((id, i) => Number.isSafeInteger(id) && (i === 0 || id > (ids[i - 1] as number)))).toBe(
      true,
    );
    expect(stream.retries).toEqual([3000]);
  });

  it("filters by the event type in the path", async () => {
    const updates = await listen("/events/thing_updated");
    const deletions = await listen("/events/thing_deleted");
    await call("PUT", "/things/urn:lamp:1", td("urn:lamp:1"));
    await call("PUT", "/things/urn:lamp:2", td("urn:lamp:2"));
    await call("PUT", "/things/urn:lamp:2", td("urn:lamp:2", { title: "B" }));
    await call("DELETE", "/things/urn:lamp:1");
    const [update] = await updates.take(1);
    expect(update).toMatchObject({ event: "thing_updated", data: '{"id":"urn:lamp:2"}' });
    const [deletion] = await deletions.take(1);
    expect(deletion).toMatchObject({ event: "thing_deleted", data: '{"id":"urn:lamp:1"}' });
    // The later deletion arrived, so the update stream has had its chance to see more: it did not.
    expect(updates.events).toHaveLength(1);
    expect(deletions.events).toHaveLength(1);
  });

  it("with diff=true: the full enriched TD on creation, a merge patch with the id on update", async () => {
    const stream = await listen("/events?diff=true");
    const created = await listen("/events/thing_created?diff=true");
    const first = td("urn:lamp:1", { description: "old" });
    await call("PUT", "/things/urn:lamp:1", first);
    const second = {
      ...td("urn:lamp:1", { title: "Desk" }),
      properties: { on: (first.properties as JsonObject).on },
    };
    await call("PUT", "/things/urn:lamp:1", second);
    await call("DELETE", "/things/urn:lamp:1");
    const [onCreate, onUpdate, onDelete] = await stream.take(3);

    const full = JSON.parse(onCreate?.data ?? "") as JsonObject;
    expect(full).toMatchObject({ ...first, "@context": [first["@context"], DISCOVERY_CONTEXT_URL] });
    expect(full.registration).toMatchObject({ created: expect.any(String), modified: expect.any(String) });
    expect(JSON.parse((await created.take(1))[0]?.data ?? "")).toEqual(full);

    const diff = JSON.parse(onUpdate?.data ?? "") as JsonObject;
    expect(diff).toEqual({ id: "urn:lamp:1", title: "Desk", description: null, properties: { level: null } });
    expect(mergePatch(first, diff)).toEqual(second);

    // diff is ignored for deletions.
    expect(JSON.parse(onDelete?.data ?? "")).toEqual({ id: "urn:lamp:1" });
  });

  it("replays the events missed since Last-Event-ID, and only those", async () => {
    const stream = await listen("/events");
    await call("PUT", "/things/urn:lamp:1", td("urn:lamp:1"));
    const [seen] = await stream.take(1);
    stream.close();
    await call("PUT", "/things/urn:lamp:2", td("urn:lamp:2"));
    await call("DELETE", "/things/urn:lamp:1");

    const resumed = await listen("/events", { "Last-Event-ID": seen?.id ?? "" });
    const replayed = await resumed.take(2);
    expect(replayed.map((e) => [e.event, e.data])).toEqual([
      ["thing_created", '{"id":"urn:lamp:2"}'],
      ["thing_deleted", '{"id":"urn:lamp:1"}'],
    ]);
    // Live events follow the replay on the same stream.
    await call("PUT", "/things/urn:lamp:3", td("urn:lamp:3"));
    expect((await resumed.take(3))[2]?.data).toBe('{"id":"urn:lamp:3"}');

    // Filtered replay, with the id in the query string (for a first connection from a browser).
    const deletions = await listen(`/events/thing_deleted?lastEventId=${seen?.id}`);
    expect((await deletions.take(1))[0]).toMatchObject({
      event: "thing_deleted",
      data: '{"id":"urn:lamp:1"}',
    });
  });

  it("answers 410 Gone when the missed events are no longer buffered, 400 for a malformed id", async () => {
    const stream = await listen("/events");
    await call("PUT", "/things/urn:lamp:0", td("urn:lamp:0"));
    const [first] = await stream.take(1);
    for (let i = 1; i <= 6; i++) await call("PUT", `/things/urn:lamp:${i}`, td(`urn:lamp:${i}`));
    await stream.take(7);

    const gone = await fetch(`${base}/events`, { headers: { "Last-Event-ID": first?.id ?? "" } });
    expect(gone.status).toBe(410);
    expect(gone.headers.get("content-type")).toBe("application/problem+json");
    expect(((await gone.json()) as { detail: string }).detail).toMatch(/no longer buffered.*GET \/things/);
    const bad = await fetch(`${base}/events`, { headers: { "Last-Event-ID": "yesterday" } });
    expect(bad.status).toBe(400);
    expect(bad.headers.get("content-type")).toBe("application/problem+json");
    expect(hub.subscriberCount).toBe(1);
  });

  it("refuses unknown event types and diff values with a 400 problem", async () => {
    for (const path of ["/events/thing_renamed", "/events?diff=yes"]) {
      const res = await fetch(`${base}${path}`);
      expect(res.status).toBe(400);
      expect(res.headers.get("content-type")).toBe("application/problem+json");
      expect(await res.json()).toMatchObject({ status: 400, title: "Bad Request" });
    }
    expect(hub.subscriberCount).toBe(0);
  });

  it("sends keep-alive comments on an idle stream", async () => {
    const stream = await listen("/events");
    await stream.until("a keep-alive comment", () => stream.comments.some((c) => c.trim() === "keep-alive"));
    expect(stream.events).toEqual([]);
  });

  it("drops a subscriber as soon as its client disconnects", async () => {
    const many = await Promise.all(
      Array.from({ length: 10 }, (_, i) => listen(i % 2 ? "/events" : "/events/thing_created")),
    );
    expect(hub.subscriberCount).toBe(10);
    for (const stream of many) stream.close();
    await vi.waitFor(() => expect(hub.subscriberCount).toBe(0), { timeout: 5_000, interval: 10 });
    // The hub still works for the next subscriber.
    const next = await listen("/events");
    await call("PUT", "/things/urn:lamp:1", td("urn:lamp:1"));
    expect((await next.take(1))[0]?.event).toBe("thing_created");
  });

  it("answers HEAD with the headers of GET and keeps no subscriber", async () => {
    const res = await fetch(`${base}/events/thing_created`, { method: "HEAD" });
    expect(res.status).toBe(200);
    expect(res.headers.get("content-type")).toBe("text/event-stream");
    expect(await res.text()).toBe("");
    expect(hub.subscriberCount).toBe(0);
    expect((await fetch(`${base}/events/nope`, { method: "HEAD" })).status).toBe(400);
  });

  it("ends open streams when the hub closes (shutdown)", async () => {
    const stream = await listen("/events");
    hub.close();
    await stream.until("the end of the stream", () => stream.ended());
    const refused = await fetch(`${base}/events`);
    expect(refused.status).toBe(503);
    expect(refused.headers.get("content-type")).toBe("application/problem+json");
  });
});
