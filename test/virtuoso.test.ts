import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startVirtuoso, type TestVirtuoso, virtuosoUnavailable, writerFetch } from "./virtuoso.js";

interface Binding {
  type: string;
  value: string;
  datatype?: string;
}
interface SelectResults {
  head: { vars: string[] };
  results: { bindings: Record<string, Binding>[] };
}

describe("Virtuoso test server", () => {
  const skip = virtuosoUnavailable();
  let server: TestVirtuoso;

  beforeAll(async () => {
    if (skip) return;
    server = await startVirtuoso();
  });

  afterAll(async () => {
    if (skip) return;
    await server?.stop();
  });

  /** SPARQL 1.1 Update protocol: POST with an application/sparql-update body. */
  function update(text: string): Promise<Response> {
    return fetch(server.updateUrl, {
      method: "POST",
      headers: { "content-type": "application/sparql-update", accept: "application/sparql-results+json" },
      body: text,
    });
  }

  /** SPARQL 1.1 Query protocol: GET ?query=. */
  function query(text: string, accept = "application/sparql-results+json"): Promise<Response> {
    return fetch(`${server.queryUrl}?query=${encodeURIComponent(text)}`, { headers: { accept } });
  }

  async function ask(text: string): Promise<boolean> {
    const res = await query(text);
    expect(res.status).toBe(200);
    return ((await res.json()) as { boolean: boolean }).boolean;
  }

  it("starts within the deadline on loopback without credentials", (ctx) => {
    if (skip) ctx.skip(skip);
    expect(server.queryUrl).toMatch(/^http:\/\/127\.0\.0\.1:\d+\/sparql$/);
    expect(server.updateUrl).toBe(server.queryUrl);
    expect(server.searchUrl).toBe(server.queryUrl);
    expect(server.auth).toBeUndefined();
    expect(server.startupMs).toBeLessThan(60_000);
  });

  it("inserts into a named graph, selects it back, drops the graph", async (ctx) => {
    if (skip) ctx.skip(skip);
    const inserted = await update('INSERT DATA { GRAPH <urn:test:g1> { <urn:a> <urn:p> "x" } }');
    expect(inserted.status, await inserted.clone().text()).toBe(200);

    const res = await query("SELECT ?s ?o WHERE { GRAPH <urn:test:g1> { ?s <urn:p> ?o } }");
    expect(res.status).toBe(200);
    expect(res.headers.get("content-type")).toMatch(/^application\/sparql-results\+json/);
    const body = (await res.json()) as SelectResults;
    expect(body.head.vars).toEqual(["s", "o"]);
    expect(body.results.bindings).toEqual([
      { s: { type: "uri", value: "urn:a" }, o: { type: "literal", value: "x" } },
    ]);

    // Virtuoso refuses a plain DROP of a graph that was never CREATEd (500, SPARUL_DROP); SILENT drops it.
    const dropped = await update("DROP SILENT GRAPH <urn:test:g1>");
    expect(dropped.status, await dropped.clone().text()).toBe(200);
    expect(await ask("ASK { GRAPH <urn:test:g1> { ?s ?p ?o } }")).toBe(false);
  });

  it("answers a syntax error with 400 and a text/plain Virtuoso error, for queries and updates", async (ctx) => {
    if (skip) ctx.skip(skip);
    const badQuery = await query("SELECT ?s WHERE { ?s ");
    expect(badQuery.status).toBe(400);
    expect(badQuery.headers.get("content-type")).toMatch(/^text\/plain/);
    expect(await badQuery.text()).toMatch(/^Virtuoso 37000 Error SP030: SPARQL compiler/);

    const badUpdate = await update("INSERT DATA { GRAPH <urn:test:g1> { <urn:a> } }");
    expect(badUpdate.status).toBe(400);
    expect(await badUpdate.text()).toMatch(/^Virtuoso 37000 Error SP030/);
  });

  it("documents the deviations the directory's store must handle", async (ctx) => {
    if (skip) ctx.skip(skip);
    // DROP GRAPH (not SILENT) of an implicitly created graph: 500, not the SPARQL 1.1 success.
    await update('INSERT DATA { GRAPH <urn:test:g2> { <urn:a> <urn:p> "y" } }');
    const drop = await update("DROP GRAPH <urn:test:g2>");
    expect(drop.status).toBe(500);
    expect(await drop.text()).toMatch(
      /SPARUL_DROP\(\) failed: graph <urn:test:g2> has not been explicitly created/,
    );
    expect((await update("CLEAR GRAPH <urn:test:g2>")).status).toBe(200);
    expect(await ask("ASK { GRAPH <urn:test:g2> { ?s ?p ?o } }")).toBe(false);

    // Blank nodes: refused in INSERT DATA, accepted in an INSERT template.
    const bnodeData = await update("INSERT DATA { GRAPH <urn:test:g3> { <urn:a> <urn:p> _:b } }");
    expect(bnodeData.status).toBe(400);
    expect(await bnodeData.text()).toMatch(/SP031: SPARQL compiler: Blank node '_:b' is not allowed/);
    const bnodeTemplate = await update(
      'INSERT { GRAPH <urn:test:g3> { <urn:a> <urn:p> _:b . _:b <urn:q> "z" } } WHERE {}',
    );
    expect(bnodeTemplate.status).toBe(200);

    // Typed literals come back in the SPARQL 1.0 JSON form; a blank node is labelled nodeID://...
    const res = await query("SELECT ?o WHERE { GRAPH <urn:test:g3> { ?b <urn:q> ?o } }");
    const [row] = ((await res.json()) as SelectResults).results.bindings;
    expect(row?.o).toEqual({ type: "literal", value: "z" });
    const count = await query("SELECT (COUNT(*) AS ?n) WHERE { GRAPH <urn:test:g3> { ?s ?p ?o } }");
    const [n] = ((await count.json()) as SelectResults).results.bindings;
    expect(n?.n).toEqual({
      type: "typed-literal",
      datatype: "http://www.w3.org/2001/XMLSchema#integer",
      value: "2",
    });

    // CONSTRUCT honours Accept: N-Triples here (Turtle without Accept; no N-Quads: 406).
    const nt = await query(
      "CONSTRUCT { ?s ?p ?o } WHERE { GRAPH <urn:test:g3> { ?s ?p ?o } }",
      "application/n-triples",
    );
    expect(nt.headers.get("content-type")).toMatch(/^application\/n-triples/);
    expect((await nt.text()).trim().split("\n")).toHaveLength(2);

    // Queries as a form POST work (POST application/sparql-query hangs, openlink/virtuoso-opensource#842).
    const form = await fetch(server.queryUrl, {
      method: "POST",
      headers: { accept: "application/sparql-results+json" },
      body: new URLSearchParams({ query: "ASK { GRAPH <urn:test:g3> { ?s ?p ?o } }" }),
    });
    expect(((await form.json()) as { boolean: boolean }).boolean).toBe(true);
    expect((await update("DROP SILENT GRAPH <urn:test:g3>")).status).toBe(200);
  });
});

describe("Virtuoso test server with a dedicated writer (access: writer)", () => {
  const skip = virtuosoUnavailable();
  let server: TestVirtuoso;

  beforeAll(async () => {
    if (skip) return;
    server = await startVirtuoso({ access: "writer" });
  });
  afterAll(async () => {
    if (skip) return;
    await server?.stop();
  });

  const anonymous = (field: "query" | "update", text: string) =>
    fetch(server.searchUrl, {
      method: "POST",
      headers: { accept: "application/sparql-results+json" },
      body: new URLSearchParams({ [field]: text }),
    });

  it("writes as a user that is not dba through /sparql-auth; the anonymous /sparql reads but cannot write", async (ctx) => {
    if (skip) ctx.skip(skip);
    expect(server.queryUrl).toMatch(/\/sparql-auth$/);
    expect(server.updateUrl).toBe(server.queryUrl);
    expect(server.searchUrl).toMatch(/\/sparql$/);
    expect(server.auth?.user).not.toBe("dba");
    // /sparql-auth wants the writer's Digest credentials.
    expect((await fetch(`${server.queryUrl}?query=${encodeURIComponent("ASK {}")}`)).status).toBe(401);
    const written = await writerFetch(server)(server.updateUrl, {
      method: "POST",
      headers: { "content-type": "application/sparql-update" },
      body: 'INSERT DATA { GRAPH <urn:test:w> { <urn:a> <urn:p> "x" } }',
    });
    expect(written.status, await written.clone().text()).toBe(200);

    const read = await anonymous("query", 'ASK { GRAPH <urn:test:w> { <urn:a> <urn:p> "x" } }');
    expect(((await read.json()) as { boolean: boolean }).boolean).toBe(true);
    const refused = await anonymous("update", "DROP SILENT GRAPH <urn:test:w>");
    expect(refused.status).toBe(500);
    expect(await refused.text()).toMatch(/Virtuoso 42000 Error SR186:SECURITY: No permission/);
    const still = await anonymous("query", "ASK { GRAPH <urn:test:w> { ?s ?p ?o } }");
    expect(((await still.json()) as { boolean: boolean }).boolean).toBe(true);

    // Some functions are refused on the anonymous endpoint at compile time, not all (bif:http_get runs).
    const file = await anonymous("query", "SELECT (bif:file_to_string('/etc/passwd') AS ?x) {}");
    expect(file.status).toBe(400);
    expect(await file.text()).toMatch(/cannot be used in text of SPARQL query due to security restrictions/);
  });
});
