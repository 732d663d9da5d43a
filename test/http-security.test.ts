import { mkdtempSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { exportJWK, generateKeyPair, SignJWT } from "jose";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { Gateway } from "../src/gateway.js";
import { ROUTES, type RouteAccess, routeFor } from "../src/http/routes.js";
import type { Role } from "../src/security/principal.js";
import { selfSignedCertificate } from "./helpers.js";
import { adminToken, call, startTestGateway } from "./manager-client.js";

/**
 * The access table, route by route: every route × {no credentials, malformed token, expired JWT,
 * wrong-issuer JWT, wrong role, right role} on a gateway with authentication on (API tokens and an
 * OIDC issuer whose JWKS is a file), and the table against what the app really mounts.
 */

const ISSUER = "https://idp.test";

describe("HTTP access control", () => {
  let gateway: Gateway;
  let dir: string;
  const tokens: Partial<Record<Role | "device", string>> = {};
  let jwt: (
    claims: Record<string, unknown>,
    options?: { issuer?: string; expiresIn?: string | number },
  ) => Promise<string>;
  let snapshotId = "";
  let tokenId = "";

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), "dtc-sec-"));
    const { publicKey, privateKey } = await generateKeyPair("ES256");
    const jwk = { ...(await exportJWK(publicKey)), kid: "k1", alg: "ES256" };
    writeFileSync(join(dir, "jwks.json"), JSON.stringify({ keys: [jwk] }));
    jwt = (claims, { issuer = ISSUER, expiresIn = "5m" } = {}) =>
      new SignJWT(claims)
        .setProtectedHeader({ alg: "ES256", kid: "k1" })
        .setIssuer(issuer)
        .setSubject("alice")
        .setIssuedAt()
        .setExpirationTime(expiresIn)
        .sign(privateKey);
    gateway = await startTestGateway({
      DTC_AUTH: "on",
      DTC_OIDC_JWKS: join(dir, "jwks.json"),
      DTC_OIDC_ISSUER: ISSUER,
    });
    tokens.admin = adminToken(gateway);
    for (const role of ["reader", "operator"] as const) {
      const made = await call(gateway.url, "POST", "/api/tokens", { name: role, role }, tokens.admin);
      expect(made.status).toBe(201);
      tokens[role] = made.body.token as string;
    }
    const device = await call(
      gateway.url,
      "POST",
      "/api/tokens",
      { name: "pt", role: "device:t1" },
      tokens.admin,
    );
    tokens.device = device.body.token as string;
    tokenId = device.body.id as string;
    // Fixtures the read routes find.
    const started = await call(
      gateway.url,
      "POST",
      "/api/instances",
      { package: "iiot-device", node: "local", id: "t1", configuration: { DEVICE_ID: "t1" } },
      tokens.operator,
    );
    expect(started.status, JSON.stringify(started.body)).toBe(201);
    const snapshot = await call(
      gateway.url,
      "POST",
      "/api/instances/t1/snapshots",
      undefined,
      tokens.operator,
    );
    snapshotId = snapshot.body.id as string;
    const thing = await fetch(`${gateway.url}/things/${encodeURIComponent("urn:test:thing")}`, {
      method: "PUT",
      headers: { Authorization: `Bearer ${tokens.admin}`, "Content-Type": "application/td+json" },
      body: JSON.stringify({
        "@context": "https://www.w3.org/2022/wot/td/v1.1",
        id: "urn:test:thing",
        title: "a thing",
        securityDefinitions: { nosec_sc: { scheme: "nosec" } },
        security: "nosec_sc",
      }),
    });
    expect(thing.status).toBe(201);
  }, 60_000);

  afterAll(async () => {
    await gateway?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  /** A request that falls under `route`, with fixtures' ids. */
  const concrete = (route: RouteAccess): string => {
    const ids: Record<string, string> = {
      "/things": encodeURIComponent("urn:test:thing"),
      "/api/nodes": "local",
      "/api/schemas": "iiot-device",
      "/api/packages": "iiot-device",
      "/api/instances": "t1",
      "/api/snapshots": snapshotId,
      "/api/tokens": tokenId,
      "/twins": "t1",
    };
    const prefix = Object.keys(ids).find((p) => route.path.startsWith(`${p}/`)) ?? "";
    // Deletes aim at ids that do not exist, so that the fixtures stay for the routes after them.
    const id =
      route.method === "DELETE"
        ? prefix === "/things"
          ? encodeURIComponent("urn:test:gone")
          : "gone"
        : ids[prefix];
    let path = route.path
      .replace(":id", id ?? "x")
      .replace(":name", "twins-by-lifecycle")
      .replace(":type", "thing_created")
      .replace(":property", "temperature")
      .replace(":action", "setRate")
      .replace("/*", route.path === "/twins/*" ? "/t1/properties/x" : "/properties/temperature");
    if (route.path === "/search/sparql" && route.method === "GET") path += "?query=ASK%7B%7D";
    if (route.path === "/search/jsonpath") path += `?query=${encodeURIComponent("$[?@.title]")}`;
    if (route.path === "/search/named/:name") path += "?state=Unbound";
    return path;
  };

  const send = async (route: RouteAccess, authorization?: string) => {
    const method = route.method === "ALL" ? "PATCH" : route.method;
    const controller = new AbortController();
    const res = await fetch(`${gateway.url}${concrete(route)}`, {
      method,
      headers: {
        ...(authorization ? { Authorization: authorization } : {}),
        ...(method === "GET" ? {} : { "Content-Type": "application/json" }),
      },
      ...(method === "GET" ? {} : { body: "{}" }),
      signal: controller.signal,
    });
    // Event streams stay open: their status and headers are all this test needs.
    const streaming = res.headers.get("content-type")?.startsWith("text/event-stream") ?? false;
    const body = streaming ? "" : await res.text();
    controller.abort();
    return { status: res.status, headers: res.headers, json: () => JSON.parse(body) as unknown };
  };

  const below: Record<Role, Role | "device"> = { reader: "device", operator: "reader", admin: "operator" };
  const protectedRoutes = ROUTES.filter((r) => r.access !== "public");

  describe.each(protectedRoutes.map((r) => [`${r.method} ${r.path}`, r] as const))("%s", (_, route) => {
    it("refuses a request without credentials with 401 and WWW-Authenticate: Bearer", async () => {
      const res = await send(route);
      expect(res.status).toBe(401);
      expect(res.headers.get("www-authenticate")).toMatch(/^Bearer realm="dtc"/);
      expect(res.headers.get("content-type")).toBe("application/problem+json");
    });

    it("refuses a malformed, an unknown, an expired and a wrong-issuer token with 401", async () => {
      for (const authorization of [
        "Bearer",
        "Basic YWRtaW46YWRtaW4=",
        "Bearer dtc_0000000000000000_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        `Bearer ${await jwt({ roles: ["admin"] }, { expiresIn: Math.floor(Date.now() / 1000) - 3600 })}`,
        `Bearer ${await jwt({ roles: ["admin"] }, { issuer: "https://evil.test" })}`,
      ]) {
        const res = await send(route, authorization);
        expect(res.status, authorization.slice(0, 30)).toBe(401);
        expect(res.headers.get("www-authenticate")).toMatch(/^Bearer realm="dtc"/);
      }
    });

    it("refuses the role below the one it needs with 403", async () => {
      const role = route.access as Role;
      const res = await send(route, `Bearer ${tokens[below[role]]}`);
      expect(res.status).toBe(403);
      expect((res.json() as { detail: string }).detail).toContain(`needs the ${role} role`);
    });

    it("lets the role it needs through, with an API token and with a JWT", async () => {
      const role = route.access as Role;
      for (const authorization of [
        `Bearer ${tokens[role]}`,
        `Bearer ${await jwt({ roles: ["reader", role] })}`,
      ]) {
        const res = await send(route, authorization);
        expect([401, 403]).not.toContain(res.status);
        // Reads of fixtures that exist succeed (writes here send {} and may be refused as invalid).
        if (route.method === "GET" && !route.path.startsWith("/twins/:id/"))
          expect(res.status).toBeLessThan(300);
      }
    });
  });

  it("serves the public routes without credentials", async () => {
    for (const route of ROUTES.filter((r) => r.access === "public")) {
      expect((await send(route)).status, route.path).toBe(200);
    }
  });

  it("has an entry for every route the app mounts, and no entry for a route it does not", () => {
    // Middleware (app.use) is listed as ALL too; the twins' proxy is the one ALL route.
    const mounted = gateway.routes.filter((r) => r.method !== "ALL" || r.path === "/twins/*");
    const sample = (path: string) => path.replace(/:[a-z]+\??/gi, "x").replace(/\/\*$/, "/x/y");
    const missing = mounted.filter((r) => {
      const entry = routeFor(r.method === "ALL" ? "POST" : r.method, sample(r.path));
      return entry === undefined;
    });
    expect(missing).toEqual([]);
    const hono = (path: string) =>
      new RegExp(
        `^${path
          .replace(/\/:[a-z]+\?/gi, "(/[^/]+)?")
          .replace(/:[a-z]+/gi, "[^/]+")
          .replace(/\/\*$/, "(/.*)?")}$`,
        "i",
      );
    const stale = ROUTES.filter(
      (entry) =>
        !mounted.some(
          (r) =>
            (r.method === entry.method || r.method === "ALL" || entry.method === "ALL") &&
            hono(r.path).test(sample(entry.path)),
        ),
    );
    expect(stale).toEqual([]);
  });

  it("fails closed: a path in no entry needs admin", async () => {
    expect((await fetch(`${gateway.url}/no/such/route`)).status).toBe(401);
    const reader = await fetch(`${gateway.url}/no/such/route`, {
      headers: { Authorization: `Bearer ${tokens.reader}` },
    });
    expect(reader.status).toBe(403);
    const admin = await fetch(`${gateway.url}/no/such/route`, {
      headers: { Authorization: `Bearer ${tokens.admin}` },
    });
    expect(admin.status).toBe(404);
  });

  it("writes the first admin token to DTC_DATA_DIR/admin.token, readable by its owner only", () => {
    const file = gateway.adminTokenFile as string;
    expect(statSync(file).mode & 0o777).toBe(0o600);
    expect(tokens.admin).toMatch(/^dtc_[0-9a-f]{16}_/);
  });

  it("shows a token's secret once, lists tokens without secrets, and refuses a revoked one", async () => {
    const made = await call(gateway.url, "POST", "/api/tokens", { name: "ci", role: "reader" }, tokens.admin);
    const secret = made.body.token as string;
    const listed = await call(gateway.url, "GET", "/api/tokens", undefined, tokens.admin);
    expect(JSON.stringify(listed.body)).not.toContain(secret);
    expect(JSON.stringify(listed.body)).not.toMatch(/sha256|mosquitto/);
    expect((await call(gateway.url, "GET", "/api/whoami", undefined, secret)).body).toMatchObject({
      kind: "user",
      role: "reader",
    });
    expect(
      (await call(gateway.url, "DELETE", `/api/tokens/${made.body.id}`, undefined, tokens.admin)).status,
    ).toBe(204);
    expect((await call(gateway.url, "GET", "/api/whoami", undefined, secret)).status).toBe(401);
    const bad = await call(gateway.url, "POST", "/api/tokens", { name: "x", role: "root" }, tokens.admin);
    expect(bad.status).toBe(400);
    expect(bad.body.validationErrors).toEqual([expect.objectContaining({ field: "role" })]);
  });

  it("takes the highest role a JWT names, devices are no readers, and no role is no entry", async () => {
    const both = await call(
      gateway.url,
      "GET",
      "/api/whoami",
      undefined,
      await jwt({ roles: "reader operator" }),
    );
    expect(both.body).toMatchObject({ kind: "user", role: "operator", via: "jwt" });
    const device = await call(
      gateway.url,
      "GET",
      "/api/instances",
      undefined,
      await jwt({ roles: "device:t1" }),
    );
    expect(device.status).toBe(403);
    expect(
      (await call(gateway.url, "GET", "/api/instances", undefined, await jwt({ roles: [] }))).status,
    ).toBe(401);
  });

  it("declares its security in the twins', the manager's and the directory's TDs, and takes the token as Basic password too", async () => {
    const twin = await call(
      gateway.url,
      "GET",
      `/things/${encodeURIComponent("urn:dtc:twin:t1")}`,
      undefined,
      tokens.reader,
    );
    expect(twin.body.security).toEqual(["basic_sc"]);
    expect(twin.body.securityDefinitions).toMatchObject({
      basic_sc: { scheme: "basic", in: "header" },
      bearer_sc: { scheme: "bearer", authorization: ISSUER, format: "jwt" },
    });
    const manager = await call(gateway.url, "GET", "/api/td", undefined, tokens.reader);
    expect(manager.body.security).toEqual(["basic_sc"]);
    const directory = await call(gateway.url, "GET", "/.well-known/wot");
    expect(directory.body.security).toEqual(["basic_sc"]);
    const basic = (password: string) => `Basic ${Buffer.from(`anyone:${password}`).toString("base64")}`;
    const asBasic = await fetch(`${gateway.url}/api/whoami`, {
      headers: { Authorization: basic(tokens.reader as string) },
    });
    expect(await asBasic.json()).toMatchObject({ kind: "user", role: "reader" });
    const wrong = await fetch(`${gateway.url}/api/whoami`, { headers: { Authorization: basic("guess") } });
    expect(wrong.status).toBe(401);
  });
});

describe("anonymous discovery (DTC_ANONYMOUS_DISCOVERY=true)", () => {
  it("opens directory reads, and only those", async () => {
    const gateway = await startTestGateway({ DTC_AUTH: "on", DTC_ANONYMOUS_DISCOVERY: "true" });
    try {
      for (const path of ["/things", "/search/named", "/search/sparql?query=ASK%7B%7D"]) {
        expect((await fetch(`${gateway.url}${path}`)).status, path).toBe(200);
      }
      expect((await fetch(`${gateway.url}/api/instances`)).status).toBe(401);
      expect((await call(gateway.url, "PUT", `/things/${encodeURIComponent("urn:x:1")}`, {})).status).toBe(
        401,
      );
    } finally {
      await gateway.close();
    }
  });
});

describe("browser-borne and abusive requests", () => {
  let gateway: Gateway;
  let admin: string;
  beforeAll(async () => {
    gateway = await startTestGateway({ DTC_AUTH: "on", DTC_WRITE_RATE_LIMIT: "5" });
    admin = adminToken(gateway);
  });
  afterAll(() => gateway?.close());

  it("refuses a text/plain body (a page's preflight-free POST) with 415, even from an admin", async () => {
    const res = await fetch(`${gateway.url}/api/instances`, {
      method: "POST",
      headers: { "Content-Type": "text/plain", Authorization: `Bearer ${admin}` },
      body: JSON.stringify({
        package: "iiot-device",
        node: "local",
        id: "p1",
        configuration: { DEVICE_ID: "p1" },
      }),
    });
    expect(res.status).toBe(415);
    expect(res.headers.get("accept-post")).toContain("application/json");
    expect((await call(gateway.url, "GET", "/api/instances/p1", undefined, admin)).status).toBe(404);
  });

  it("answers a rebinding page's host name with 421, and loopback names as usual", async () => {
    const port = new URL(gateway.url).port;
    const rebound = await call(`http://127.0.0.1:${port}`, "GET", "/healthz");
    expect(rebound.status).toBe(200);
    // fetch() sets Host from the URL: a raw request is what a rebinding page sends.
    const { request } = await import("node:http");
    const status = await new Promise<number>((resolve, reject) => {
      const req = request(
        { host: "127.0.0.1", port, path: "/healthz", headers: { Host: `evil.example:${port}` } },
        (res) => {
          res.resume();
          resolve(res.statusCode ?? 0);
        },
      );
      req.on("error", reject);
      req.end();
    });
    expect(status).toBe(421);
  });

  it("limits writes per principal with 429 and Retry-After, and not reads", async () => {
    const reader = (await call(gateway.url, "POST", "/api/tokens", { name: "r", role: "reader" }, admin)).body
      .token as string;
    const statuses: number[] = [];
    for (let i = 0; i < 8; i++) {
      statuses.push(
        (await call(gateway.url, "POST", "/api/tokens", { name: `t${i}`, role: "reader" }, admin)).status,
      );
    }
    // One write (the reader token) already counted in this window.
    expect(statuses.filter((s) => s === 201).length).toBeLessThanOrEqual(4);
    expect(statuses.at(-1)).toBe(429);
    const limited = await fetch(`${gateway.url}/api/tokens`, {
      method: "POST",
      headers: { "Content-Type": "application/json", Authorization: `Bearer ${admin}` },
      body: JSON.stringify({ name: "x", role: "reader" }),
    });
    expect(Number(limited.headers.get("retry-after"))).toBeGreaterThanOrEqual(1);
    // Another principal, and reads, are not held back.
    expect((await call(gateway.url, "GET", "/api/instances", undefined, admin)).status).toBe(200);
    expect((await call(gateway.url, "GET", "/api/instances", undefined, reader)).status).toBe(200);
  });
});

describe("HTTPS (DTC_TLS_CERT, DTC_TLS_KEY)", () => {
  it("serves HTTPS with the operator's certificate, and TD forms say https", async () => {
    const { request } = await import("node:https");
    const { readFileSync } = await import("node:fs");
    const dir = mkdtempSync(join(tmpdir(), "dtc-tls-"));
    try {
      selfSignedCertificate(dir);
      const gateway = await startTestGateway({
        DTC_AUTH: "on",
        DTC_TLS_CERT: join(dir, "cert.pem"),
        DTC_TLS_KEY: join(dir, "key.pem"),
      });
      try {
        expect(gateway.url).toMatch(/^https:\/\/127\.0\.0\.1:\d+$/);
        const get = (path: string) =>
          new Promise<{ status: number; body: string }>((resolve, reject) => {
            const req = request(
              `${gateway.url}${path}`,
              {
                ca: readFileSync(join(dir, "cert.pem")),
                headers: { Authorization: `Bearer ${adminToken(gateway)}` },
              },
              (res) => {
                let body = "";
                res.on("data", (chunk) => {
                  body += chunk;
                });
                res.on("end", () => resolve({ status: res.statusCode ?? 0, body }));
              },
            );
            req.on("error", reject);
            req.end();
          });
        expect((await get("/healthz")).status).toBe(200);
        const td = JSON.parse((await get("/api/td")).body) as { base: string };
        expect(td.base).toMatch(/^https:\/\//);
      } finally {
        await gateway.close();
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe("the README's table of routes and roles", () => {
  it("lists every entry of the access table with its role, and no other", async () => {
    const { readFileSync } = await import("node:fs");
    const { projectRoot } = await import("../src/paths.js");
    const readme = readFileSync(join(projectRoot, "README.md"), "utf8");
    const rows = [
      ...readme.matchAll(
        /^\| `((?:GET|POST|PUT|PATCH|DELETE|any) \/[^`]*)` +\| +(public|reader|operator|admin)\b/gm,
      ),
    ].map((m) => `${m[1]} ${m[2]}`);
    const table = ROUTES.map((r) => `${r.method === "ALL" ? "any" : r.method} ${r.path} ${r.access}`);
    expect(rows).toEqual(table);
  });
});
