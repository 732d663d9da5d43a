import { describe, expect, it } from "vitest";
import { DIRECTORY_ID, DIRECTORY_TM_IRI, mountWellKnown } from "../src/directory/well-known.js";
import { createApp } from "../src/http/app.js";
import { createLogger } from "../src/logger.js";
import { DISCOVERY_CONTEXT_URL } from "../src/wot/jsonld-loader.js";
import type { JsonObject } from "../src/wot/rdf.js";
import { AFFORDANCE_KINDS, type Link, typesOf } from "../src/wot/thing-model.js";
import { validateThingDescription } from "../src/wot/validation.js";

const BASE = "http://dtc.example:8080";

function appWith(options: Partial<Parameters<typeof mountWellKnown>[1]> = {}) {
  const app = createApp({ version: "test", startedAt: 0, logger: createLogger("silent") });
  mountWellKnown(app, { baseUrl: () => BASE, ...options });
  return app;
}

const forms = (td: JsonObject): (JsonObject & { name: string })[] =>
  AFFORDANCE_KINDS.flatMap((kind) =>
    Object.entries((td[kind] as Record<string, JsonObject> | undefined) ?? {}).flatMap(([name, affordance]) =>
      (affordance.forms as JsonObject[]).map((form) => ({ ...form, name })),
    ),
  );

describe("the directory's Thing Description at /.well-known/wot", () => {
  it("is a valid ThingDirectory TD served as application/td+json with 200", async () => {
    const res = await appWith().request("/.well-known/wot");
    expect(res.status).toBe(200);
    expect(res.headers.get("content-type")).toBe("application/td+json");
    const td = (await res.json()) as JsonObject;
    expect(validateThingDescription(td)).toEqual({ valid: true });
    expect(td["@context"]).toContain(DISCOVERY_CONTEXT_URL);
    expect(typesOf(td)).toContain("ThingDirectory");
    expect(td.id).toBe(DIRECTORY_ID);
    expect(td.links).toContainEqual({ rel: "type", href: DIRECTORY_TM_IRI, type: "application/tm+json" });
  });

  it("points every form at this server with an absolute href", async () => {
    const td = (await (await appWith().request("/.well-known/wot")).json()) as JsonObject;
    const all = forms(td);
    for (const form of all) expect(String(form.href).startsWith(`${BASE}/`)).toBe(true);
    const href = (name: string) => all.filter((f) => f.name === name).map((f) => f.href);
    expect(href("things")).toEqual([`${BASE}/things{?offset,limit,format}`]);
    expect(href("retrieveThing")).toEqual([`${BASE}/things/{id}`]);
    expect(href("searchSPARQL")).toEqual([`${BASE}/search/sparql?query={query}`, `${BASE}/search/sparql`]);
    expect(href("searchJSONPath")).toEqual([`${BASE}/search/jsonpath?query={query}`]);
    expect(href("thingCreated")).toEqual([`${BASE}/events/thing_created{?diff}`]);
    expect(href("searchXPath")).toEqual([]); // not implemented, not offered
    expect((td.properties as Record<string, JsonObject>).things?.readOnly).toBe(true);
  });

  it("keeps a path in the base URL (behind a proxy) and follows the base URL per request", async () => {
    let base = "https://gw.example/dtc/";
    const app = appWith({ baseUrl: () => base });
    const first = (await (await app.request("/.well-known/wot")).json()) as JsonObject;
    expect(forms(first).map((f) => f.href)).toContain("https://gw.example/dtc/things/{id}");
    base = "http://10.0.0.5:8080";
    const second = (await (await app.request("/.well-known/wot")).json()) as JsonObject;
    expect(forms(second).map((f) => f.href)).toContain("http://10.0.0.5:8080/things/{id}");
    expect(second.id).toBe(first.id); // the id does not follow the address
  });

  it("answers HEAD with the headers of GET and no body", async () => {
    const app = appWith();
    const get = await app.request("/.well-known/wot");
    const head = await app.request("/.well-known/wot", { method: "HEAD" });
    expect(head.status).toBe(200);
    expect([...head.headers]).toEqual([...get.headers]);
    expect(await head.text()).toBe("");
  });

  it("adds the links of the hook on every request, and leaves out the APIs not served", async () => {
    const links: Link[] = [];
    const app = appWith({ links: () => links, sparql: false, notifications: false, id: "urn:example:tdd" });
    const before = (await (await app.request("/.well-known/wot")).json()) as JsonObject;
    links.push({ rel: "service-desc", href: `${BASE}/manager/td`, type: "application/td+json" });
    const after = (await (await app.request("/.well-known/wot")).json()) as JsonObject;
    expect(before.links).not.toContainEqual(links[0]);
    expect(after.links).toContainEqual(links[0]);
    expect(validateThingDescription(after)).toEqual({ valid: true });
    expect(after.id).toBe("urn:example:tdd");
    const names = forms(after).map((f) => f.name);
    expect(names).toContain("searchJSONPath");
    expect(names).not.toContain("searchSPARQL");
    expect(names.filter((n) => n.startsWith("thing") && n !== "things")).toEqual([]);
  });

  it("fails loudly (500 problem) on a base URL that is not absolute", async () => {
    const res = await appWith({ baseUrl: () => "localhost:8080" }).request("/.well-known/wot");
    expect(res.status).toBe(500);
    expect(res.headers.get("content-type")).toBe("application/problem+json");
  });
});
