import { afterAll, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { type Directory, DirectoryError } from "../src/directory/directory.js";
import type { ThingChange } from "../src/directory/events.js";
import {
  GATEWAY_OWNED_PREFIXES,
  isGatewayOwned,
  MANAGER_TD_ID,
  TWIN_TD_PREFIX,
} from "../src/directory/reserved-ids.js";
import { type DirectoryStore, INVENTORY_GRAPH_PREFIX, STATUS_GRAPH_PREFIX } from "../src/directory/store.js";
import { mountThingsApi } from "../src/directory/things-api.js";
import { createApp } from "../src/http/app.js";
import { createLogger } from "../src/logger.js";
import * as manager from "../src/manager/manager.js";
import * as managerTd from "../src/manager/manager-td.js";
import { TD_CONTEXT_1_1 } from "../src/wot/jsonld-loader.js";
import type { JsonObject } from "../src/wot/rdf.js";
import { storeAdapters } from "./directory-stores.js";

const td = (id: string | undefined, href: string): JsonObject => ({
  "@context": TD_CONTEXT_1_1,
  ...(id === undefined ? {} : { id }),
  title: "Thing",
  securityDefinitions: { nosec_sc: { scheme: "nosec" } },
  security: "nosec_sc",
  properties: { temperature: { type: "number", forms: [{ href, op: ["readproperty"] }] } },
});

const TWIN = `${TWIN_TD_PREFIX}press-1`;
const GATEWAY_HREF = "http://127.0.0.1:8080/twins/press-1/properties/temperature";
const ATTACKER_HREF = "http://attacker.example/collect";

describe.each(storeAdapters())("ids the gateway owns, on the %s store", (_name, adapter) => {
  const skip = adapter.unavailable();
  let store: DirectoryStore | undefined;
  let directory: Directory;
  let app: ReturnType<typeof createApp>;
  const changes: ThingChange[] = [];

  const request = (method: string, path: string, body?: unknown, type = "application/td+json") =>
    app.request(path, {
      method,
      headers: body === undefined ? {} : { "Content-Type": type },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  const path = (id: string) => `/things/${encodeURIComponent(id)}`;
  /** Everything a client could observe of the directory's content. */
  const snapshot = async () => {
    const opened = store as DirectoryStore;
    return { things: await opened.list(0, 100), revision: await opened.revision() };
  };
  /** A 403 problem details naming the id and its owner. */
  const expectForbidden = async (res: Response, id: string) => {
    expect(res.status).toBe(403);
    expect(res.headers.get("content-type")).toBe("application/problem+json");
    const body = (await res.json()) as { title: string; status: number; detail: string };
    expect(body).toMatchObject({ title: "Forbidden", status: 403 });
    expect(body.detail).toContain(id);
    expect(body.detail).toContain("the gateway owns");
  };

  beforeAll(async () => {
    if (skip) return;
    await adapter.start();
    store = await adapter.fresh();
    app = createApp({ version: "test", startedAt: 0, logger: createLogger("silent") });
    directory = mountThingsApi(app, { store });
    // The gateway registers its twins' and manager's TDs through the Directory, as gateway.ts does.
    await directory.put(TWIN, td(TWIN, GATEWAY_HREF));
    await directory.put(MANAGER_TD_ID, td(MANAGER_TD_ID, "http://127.0.0.1:8080/api/td"));
    directory.onChange((change) => changes.push(change));
  });
  afterAll(async () => {
    await store?.close();
    if (!skip) await adapter.stop();
  });
  beforeEach((ctx) => {
    if (skip) ctx.skip(skip);
    changes.length = 0;
  });

  it("refuses to replace, patch or delete a running twin's TD (403), and leaves it as the gateway wrote it", async () => {
    const before = await snapshot();
    await expectForbidden(await request("PUT", path(TWIN), td(TWIN, ATTACKER_HREF)), TWIN);
    const patch = { properties: { temperature: { forms: [{ href: ATTACKER_HREF }] } } };
    await expectForbidden(await request("PATCH", path(TWIN), patch, "application/merge-patch+json"), TWIN);
    await expectForbidden(await request("DELETE", path(TWIN)), TWIN);
    // However it is spelled: not percent-encoded, URN scheme and namespace in upper case.
    await expectForbidden(await request("PUT", `/things/${TWIN}`, td(TWIN, ATTACKER_HREF)), TWIN);
    const shouted = TWIN.replace("urn:dtc:", "URN:DTC:");
    await expectForbidden(await request("PUT", path(shouted), td(shouted, ATTACKER_HREF)), shouted);
    // A twin that does not exist yet cannot be claimed either.
    const unborn = `${TWIN_TD_PREFIX}press-9`;
    await expectForbidden(await request("PUT", path(unborn), td(unborn, ATTACKER_HREF)), unborn);

    expect(await snapshot()).toEqual(before);
    expect((await request("GET", path(unborn))).status).toBe(404);
    const served = JSON.stringify(await (await request("GET", path(TWIN))).json());
    expect(served).toContain(GATEWAY_HREF);
    expect(served).not.toContain(ATTACKER_HREF);
    expect(changes).toEqual([]);
  });

  it("refuses to delete or replace the manager's TD", async () => {
    const before = await snapshot();
    await expectForbidden(await request("DELETE", path(MANAGER_TD_ID)), MANAGER_TD_ID);
    await expectForbidden(
      await request("PUT", path(MANAGER_TD_ID), td(MANAGER_TD_ID, ATTACKER_HREF)),
      MANAGER_TD_ID,
    );
    await expectForbidden(
      await request("PATCH", path(MANAGER_TD_ID), { title: "x" }, "application/merge-patch+json"),
      MANAGER_TD_ID,
    );
    expect(await snapshot()).toEqual(before);
    expect((await request("GET", path(MANAGER_TD_ID))).status).toBe(200);
    expect(changes).toEqual([]);
  });

  it("refuses TDs named like the gateway's graphs, by PUT or in a POSTed TD", async () => {
    const before = await snapshot();
    for (const id of [
      `${INVENTORY_GRAPH_PREFIX}x`,
      `${STATUS_GRAPH_PREFIX}${encodeURIComponent(TWIN)}`,
      "urn:dtc:directory:records",
      `${TWIN_TD_PREFIX}posted`,
      MANAGER_TD_ID,
    ]) {
      await expectForbidden(await request("POST", "/things", td(id, ATTACKER_HREF)), id);
      await expectForbidden(await request("PUT", path(id), td(id, ATTACKER_HREF)), id);
    }
    expect(await snapshot()).toEqual(before);
    expect(changes).toEqual([]);
    // Other ids are the clients': reads of the gateway's are open, writes of the rest work.
    expect((await request("GET", path(TWIN))).status).toBe(200);
    expect((await request("PUT", path("urn:ex:mine"), td("urn:ex:mine", ATTACKER_HREF))).status).toBe(201);
    expect((await request("DELETE", path("urn:ex:mine"))).status).toBe(204);
  });

  it("lets the gateway itself write its TDs, but never one named like its graphs", async () => {
    const { created } = await directory.put(TWIN, td(TWIN, `${GATEWAY_HREF}?moved`));
    expect(created).toBe(false);
    expect(changes.map((c) => c.type)).toEqual(["thing_updated"]);
    const graphId = `${STATUS_GRAPH_PREFIX}x`;
    const err = await directory.put(graphId, td(graphId, GATEWAY_HREF)).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(DirectoryError);
    expect((err as DirectoryError).kind).toBe("invalid");
  });
});

describe("the list of gateway-owned ids", () => {
  it("covers the ids the manager registers", () => {
    expect(manager.TWIN_TD_PREFIX).toBe(TWIN_TD_PREFIX);
    expect(managerTd.MANAGER_TD_ID).toBe(MANAGER_TD_ID);
    expect(isGatewayOwned(`${manager.TWIN_TD_PREFIX}any`)).toBe(true);
    expect(isGatewayOwned(managerTd.MANAGER_TD_ID)).toBe(true);
    expect(GATEWAY_OWNED_PREFIXES).toEqual(
      expect.arrayContaining([TWIN_TD_PREFIX, STATUS_GRAPH_PREFIX, INVENTORY_GRAPH_PREFIX]),
    );
    // Only the exact manager id: ids that merely begin like it are the clients'.
    expect(isGatewayOwned(`${MANAGER_TD_ID}-fan`)).toBe(false);
    expect(isGatewayOwned("urn:ex:thing")).toBe(false);
  });
});
