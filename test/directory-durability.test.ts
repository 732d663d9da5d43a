import { once } from "node:events";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeAll, describe, expect, it, onTestFinished } from "vitest";
import { instantiate } from "../src/wot/instantiate.js";
import type { JsonObject } from "../src/wot/rdf.js";
import { type GatewayProcess, gatewayMain, startGatewayProcess } from "./gateway-process.js";
import { sample, sampleRegistry, waitFor } from "./helpers.js";

const WRITERS = 16;
const TD_TYPE = "https://www.w3.org/2019/wot/td#Thing";

describe("directory durability (kill -9 of the gateway process)", () => {
  let td: JsonObject;
  const gateways: GatewayProcess[] = [];
  beforeAll(async () => {
    if (!existsSync(gatewayMain))
      throw new Error(`${gatewayMain} is missing: run "npm run build" (npm test builds first)`);
    td = await instantiate(await sampleRegistry(), sample("iiot-device.tm.jsonld"), {
      placeholders: { DEVICE_ID: "d" },
    });
  });
  afterEach(() => Promise.all(gateways.splice(0).map((g) => g.kill())));

  it("keeps every write that got a 2xx while 16 clients wrote concurrently", async () => {
    const dataDir = mkdtempSync(join(tmpdir(), "dtc-kill-"));
    // After afterEach: the gateways are gone by then.
    onTestFinished(() => rmSync(dataDir, { recursive: true, force: true }));
    const first = await startGatewayProcess({ DTC_DATA_DIR: dataDir });
    gateways.push(first);
    const { url } = first;

    // Each writer owns its ids: creates, replaces (version in the title) and deletes them. What
    // the directory acknowledged is the floor of what must survive: a write in flight at the kill
    // may or may not have landed, an acknowledged one must have.
    const acked = new Map<string, number>(); // id -> last acknowledged version (-1: deleted)
    // The one request per writer that was unanswered at the kill: an in-flight DELETE may have
    // landed, so its id may be gone even though its last acknowledged write was a PUT.
    const unanswered = new Set<string>();
    let acknowledged = 0;
    let stop = false;
    const writer = async (w: number) => {
      for (let n = 0; !stop; n++) {
        const id = `urn:dtc:test:w${w}-${n % 40}`;
        const version = Math.floor(n / 40);
        const remove = version > 0 && n % 7 === 0;
        if (remove) unanswered.add(id);
        try {
          const res = remove
            ? await fetch(`${url}/things/${id}`, { method: "DELETE" })
            : await fetch(`${url}/things/${id}`, {
                method: "PUT",
                headers: { "Content-Type": "application/td+json" },
                body: JSON.stringify({ ...td, id, title: `v${version}` }),
              });
          unanswered.delete(id);
          if (res.ok) {
            acked.set(id, remove ? -1 : version);
            acknowledged++;
          }
        } catch {
          return; // the gateway is gone
        }
      }
    };
    const writing = Array.from({ length: WRITERS }, (_, w) => writer(w));
    await waitFor("1,500 acknowledged writes", () => acknowledged >= 1_500, 60_000);
    first.child.kill("SIGKILL");
    await once(first.child, "exit");
    stop = true;
    await Promise.all(writing);

    const second = await startGatewayProcess({ DTC_DATA_DIR: dataDir });
    gateways.push(second);
    const again = second.url;
    const missing: string[] = [];
    for (const [id, version] of acked) {
      const res = await fetch(`${again}/things/${id}`);
      if (version === -1) continue; // deleted, unless a later write in flight recreated it
      if (res.status === 404 && unanswered.has(id)) continue; // its DELETE was in flight
      if (res.status !== 200) {
        missing.push(`${id}: ${res.status}`);
        continue;
      }
      const title = ((await res.json()) as { title: string }).title;
      if (Number(title.slice(1)) < version) missing.push(`${id}: ${title} < v${version}`);
    }
    expect(missing).toEqual([]);
    // The SPARQL index was rebuilt from the record: it holds every TD the record holds.
    const listed = (await (await fetch(`${again}/things?format=collection&limit=1`)).json()) as {
      total: number;
    };
    const query = `SELECT (COUNT(DISTINCT ?t) AS ?n) WHERE { ?t a <${TD_TYPE}> }`;
    const counted = (await (
      await fetch(`${again}/search/sparql?query=${encodeURIComponent(query)}`)
    ).json()) as {
      results: { bindings: { n: { value: string } }[] };
    };
    expect(Number(counted.results.bindings[0]?.n.value)).toBe(listed.total);
    await second.stop();
  }, 120_000);
});
