import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeAll, describe, expect, it } from "vitest";
import { Directory } from "../src/directory/directory.js";
import { EmbeddedStore } from "../src/directory/embedded-store.js";
import type { ThingChange } from "../src/directory/events.js";
import { startPurge } from "../src/directory/purge.js";
import { instantiate } from "../src/wot/instantiate.js";
import type { JsonObject } from "../src/wot/rdf.js";
import { sample, sampleRegistry } from "./helpers.js";

describe("purge of expired TDs", () => {
  let td: JsonObject;
  let store: EmbeddedStore;
  let dir: string;
  beforeAll(async () => {
    td = await instantiate(await sampleRegistry(), sample("iiot-device.tm.jsonld"), {
      placeholders: { DEVICE_ID: "p" },
    });
    delete td.id; // each test names its TDs
  });
  afterEach(async () => {
    await store.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it("deletes what expired, and only that, each with a thing_deleted event", async () => {
    dir = mkdtempSync(join(tmpdir(), "dtc-purge-"));
    store = new EmbeddedStore(dir);
    await store.open();
    let clock = Date.UTC(2026, 0, 1);
    const changes: ThingChange[] = [];
    const directory = new Directory(store, { now: () => clock, onChange: (c) => changes.push(c) });
    await directory.put("urn:p:short", { ...td, registration: { ttl: 60 } });
    await directory.put("urn:p:long", { ...td, registration: { ttl: 3600 } });
    await directory.put("urn:p:forever", td);
    const purge = startPurge({ directory, intervalMs: 3_600_000 });
    try {
      clock += 59_000;
      expect(await purge.purge()).toBe(0);
      clock += 1_000;
      changes.length = 0;
      expect(await purge.purge()).toBe(1);
      expect(changes).toEqual([{ type: "thing_deleted", id: "urn:p:short" }]);
      expect(await store.get("urn:p:short")).toBeUndefined();
      clock += 3_600_000;
      expect(await purge.purge()).toBe(1);
      expect((await store.list(0, 10)).map((t) => t.id)).toEqual(["urn:p:forever"]);
    } finally {
      purge.stop();
    }
  });
});
