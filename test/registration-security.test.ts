import { execFileSync } from "node:child_process";
import { mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import net from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { Gateway } from "../src/gateway.js";
import { type Answer, call, startTestGateway } from "./manager-client.js";

/**
 * Who may register what: a Docker node's endpoint names only networks, sockets and files that are
 * what they say (checked without blocking the gateway), allowlists bound the images and hosts
 * callers point the gateway at, and broker URLs carry no credentials. No Docker engine needed.
 */

const fields = (a: Answer) => ((a.body.validationErrors ?? []) as { field: string }[]).map((e) => e.field);

const dockerNode = (id: string, endpoint: Record<string, unknown>) => ({
  id,
  platform: "docker",
  tier: "edge",
  capabilities: { cpu: 1, memory: 512 },
  endpoint,
});

const PASSWORD = "s3cr3t-pw-4711";

describe("registration: Docker endpoints", () => {
  let gateway: Gateway;
  let dir: string;
  let socket: net.Server;
  const api = (method: string, path: string, body?: unknown) => call(gateway.url, method, path, body);

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), "dtc-registration-"));
    writeFileSync(join(dir, "regular"), "not a socket");
    writeFileSync(
      join(dir, "cert.pem"),
      "-----BEGIN CERTIFICATE-----\nnot really\n-----END CERTIFICATE-----\n",
    );
    writeFileSync(join(dir, "empty.pem"), "");
    mkdirSync(join(dir, "certs"));
    execFileSync("mkfifo", [join(dir, "fifo")]);
    symlinkSync(join(dir, "cert.pem"), join(dir, "link-to-cert"));
    symlinkSync(join(dir, "fifo"), join(dir, "link-to-fifo"));
    // A socket that hangs up at once: a node on it is registered, and not ready.
    socket = net.createServer((s) => s.destroy());
    await new Promise<void>((resolve) => socket.listen(join(dir, "engine.sock"), resolve));
    gateway = await startTestGateway({ DTC_AUTH: "off" });
  });

  afterAll(async () => {
    await gateway?.close();
    await new Promise<void>((resolve) => (socket ? socket.close(() => resolve()) : resolve()));
    rmSync(dir, { recursive: true, force: true });
  });

  it("refuses a network that joins another container's namespace, or is not a network name", async () => {
    for (const network of ["container:abc", "default", "../x", "a b", `n${"x".repeat(128)}`]) {
      const answer = await api("POST", "/api/nodes", dockerNode("net-bad", { network }));
      expect(answer.status, network).toBe(400);
      expect(fields(answer), network).toEqual(["endpoint.network"]);
    }
    expect(
      (await api("POST", "/api/nodes", dockerNode("net-bad", { network: "container:abc" }))).body.detail,
    ).toMatch(/endpoint\.network: .*container/);
    for (const [id, network] of [
      ["net-host", "host"],
      ["net-none", "none"],
      ["net-user", "dtc_twins.1-a"],
    ] as const) {
      const answer = await api(
        "POST",
        "/api/nodes",
        dockerNode(id, { network, socketPath: join(dir, "engine.sock") }),
      );
      expect(answer.status, network).toBe(201);
      expect(answer.body.ready).toBe(false);
    }
  });

  it("refuses a socketPath that is relative, a regular file or a FIFO, at once, and keeps answering", async () => {
    for (const [socketPath, why] of [
      ["relative/docker.sock", /absolute path/],
      [join(dir, "regular"), /is not a socket/],
      [join(dir, "fifo"), /is not a socket/],
      [join(dir, "certs"), /is not a socket/],
    ] as const) {
      const started = Date.now();
      const answer = await api("POST", "/api/nodes", dockerNode("sock-bad", { socketPath }));
      expect(answer.status, socketPath).toBe(400);
      expect(fields(answer), socketPath).toEqual(["endpoint.socketPath"]);
      expect(answer.body.detail, socketPath).toMatch(why);
      // Checked, not opened: a FIFO without a writer would otherwise hold the request.
      expect(Date.now() - started, socketPath).toBeLessThan(2000);
      expect((await fetch(`${gateway.url}/healthz`)).status).toBe(200);
    }
    expect((await api("GET", "/api/nodes/sock-bad")).status).toBe(404);
  });

  it("registers a node on a socket, or on one not there yet, as not ready", async () => {
    const onSocket = await api(
      "POST",
      "/api/nodes",
      dockerNode("sock-ok", { socketPath: join(dir, "engine.sock") }),
    );
    expect(onSocket.status).toBe(201);
    expect(onSocket.body).toMatchObject({ ready: false });
    const missing = await api(
      "POST",
      "/api/nodes",
      dockerNode("sock-later", { socketPath: join(dir, "later.sock") }),
    );
    expect(missing.status).toBe(201);
    expect(missing.body.reason).toMatch(/does not answer/);
  });

  it("refuses TLS files that are not regular files (directory, FIFO, empty, missing, relative)", async () => {
    const tls = (cert: string, ca?: string) =>
      dockerNode("tls-bad", {
        host: "127.0.0.1",
        port: 1,
        tls: { cert, key: join(dir, "cert.pem"), ...(ca === undefined ? {} : { ca }) },
      });
    for (const [cert, why] of [
      [join(dir, "certs"), /is not a regular file/],
      [join(dir, "fifo"), /is not a regular file/],
      [join(dir, "link-to-fifo"), /is not a regular file/],
      [join(dir, "empty.pem"), /is empty/],
      [join(dir, "nope.pem"), /does not exist/],
      ["cert.pem", /absolute path/],
    ] as const) {
      const started = Date.now();
      const answer = await api("POST", "/api/nodes", tls(cert));
      expect(answer.status, cert).toBe(400);
      expect(fields(answer), cert).toEqual(["endpoint.tls.cert"]);
      expect(answer.body.detail, cert).toMatch(why);
      expect(Date.now() - started, cert).toBeLessThan(2000);
    }
    const ca = await api("POST", "/api/nodes", tls(join(dir, "cert.pem"), "/dev/zero"));
    expect(fields(ca)).toEqual(["endpoint.tls.ca"]);
    expect((await fetch(`${gateway.url}/healthz`)).status).toBe(200);

    // Regular files (a symbolic link to one too): registered; the engine is not there, so not ready.
    const ok = await api("POST", "/api/nodes", {
      ...tls(join(dir, "link-to-cert"), join(dir, "cert.pem")),
      id: "tls-ok",
    });
    expect(ok.status).toBe(201);
    expect(ok.body.ready).toBe(false);
  });

  it("refuses an engine host that is a URL, and broker URLs with credentials, without echoing them", async () => {
    const url = await api(
      "POST",
      "/api/nodes",
      dockerNode("host-bad", { host: `http://u:${PASSWORD}@engine` }),
    );
    expect(url.status).toBe(400);
    expect(fields(url)).toEqual(["endpoint.host"]);
    expect(JSON.stringify(url.body)).not.toContain(PASSWORD);

    const broker = await api(
      "POST",
      "/api/nodes",
      dockerNode("broker-bad", { brokerUrl: `mqtt://u:${PASSWORD}@127.0.0.1:1883` }),
    );
    expect(broker.status).toBe(400);
    expect(fields(broker)).toEqual(["endpoint.brokerUrl"]);
    expect(broker.body.detail).toMatch(/must not carry credentials.*DTC_MQTT_USERNAME/);
    expect(JSON.stringify(broker.body)).not.toContain(PASSWORD);

    const instance = await api("POST", "/api/instances", {
      package: "iiot-device",
      node: "local",
      id: "creds",
      configuration: { DEVICE_ID: "creds" },
      brokerUrl: `mqtt://u:${PASSWORD}@127.0.0.1:1883`,
    });
    expect(instance.status).toBe(400);
    expect(fields(instance)).toEqual(["brokerUrl"]);
    expect(instance.body.detail).toMatch(/must not carry credentials: they would appear in the twin's TD/);
    expect(JSON.stringify(instance.body)).not.toContain(PASSWORD);
    expect((await api("GET", "/api/instances/creds")).status).toBe(404);
  });
});

describe("registration: outbound allowlists", () => {
  let gateway: Gateway;
  let dataDir: string;
  const api = (method: string, path: string, body?: unknown) => call(gateway.url, method, path, body);
  const allowlists = {
    DTC_ALLOWED_IMAGES: "registry.example/dtc/*",
    DTC_ALLOWED_OUTBOUND_HOSTS: "engine.example,127.0.0.1",
  };

  beforeAll(async () => {
    dataDir = mkdtempSync(join(tmpdir(), "dtc-outbound-"));
    // An instance on a broker the allowlist will not have, started while there is none.
    gateway = await startTestGateway({ DTC_AUTH: "off", DTC_DATA_DIR: dataDir });
    const port = new URL(gateway.brokerUrl).port;
    const started = await api("POST", "/api/instances", {
      package: "iiot-device",
      node: "local",
      id: "legacy",
      configuration: { DEVICE_ID: "legacy" },
      brokerUrl: `mqtt://localhost:${port}`,
    });
    expect(started.status).toBe(201);
    const snapshot = await api("POST", "/api/instances/legacy/snapshots");
    expect(snapshot.status).toBe(201);
    await gateway.close();
    gateway = await startTestGateway({ DTC_AUTH: "off", DTC_DATA_DIR: dataDir, ...allowlists });
  });

  afterAll(async () => {
    await gateway?.close();
    rmSync(dataDir, { recursive: true, force: true });
  });

  it("registers packages of allowed images only", async () => {
    const pkg = (id: string, image: string) => ({
      id,
      schema: "iiot-device",
      platform: "docker",
      artefact: { image },
    });
    const evil = await api("POST", "/api/packages", pkg("evil", "evil/miner:latest"));
    expect(evil.status).toBe(400);
    expect(fields(evil)).toEqual(["artefact.image"]);
    expect(evil.body.detail).toMatch(/DTC_ALLOWED_IMAGES/);
    expect((await api("POST", "/api/packages", pkg("nested", "registry.example/dtc/x/twin:1"))).status).toBe(
      400,
    );
    expect((await api("POST", "/api/packages", pkg("good", "registry.example/dtc/twin:1"))).status).toBe(201);
  });

  it("registers nodes whose engine, published ports and broker are on allowed hosts only", async () => {
    const engine = await api("POST", "/api/nodes", dockerNode("far", { host: "10.0.0.1" }));
    expect(engine.status).toBe(400);
    expect(fields(engine)).toEqual(["endpoint.host"]);
    expect(engine.body.detail).toMatch(/endpoint\.host: .*DTC_ALLOWED_OUTBOUND_HOSTS/);
    const broker = await api(
      "POST",
      "/api/nodes",
      dockerNode("far", { socketPath: "/nonexistent/docker.sock", brokerUrl: "mqtt://10.0.0.1:1883" }),
    );
    expect(fields(broker)).toEqual(["endpoint.brokerUrl"]);
    const publish = await api(
      "POST",
      "/api/nodes",
      dockerNode("far", { host: "127.0.0.1", port: 1, publishHost: "10.0.0.1" }),
    );
    expect(fields(publish)).toEqual(["endpoint.publishHost"]);
    // Allowed: registered (nothing answers on port 1: not ready).
    const near = await api("POST", "/api/nodes", dockerNode("near", { host: "127.0.0.1", port: 1 }));
    expect(near.status).toBe(201);
    expect(near.body.ready).toBe(false);
  });

  it("starts, clones and restores instances on brokers of allowed hosts only", async () => {
    const far = await api("POST", "/api/instances", {
      package: "iiot-device",
      node: "local",
      id: "far",
      configuration: { DEVICE_ID: "far" },
      brokerUrl: "mqtt://10.0.0.1:1883",
    });
    expect(far.status).toBe(400);
    expect(fields(far)).toEqual(["brokerUrl"]);
    expect(far.body.detail).toMatch(/DTC_ALLOWED_OUTBOUND_HOSTS/);

    // Made before the allowlist: it may stay, but not be copied.
    const clone = await api("POST", "/api/instances/legacy/clone", { node: "local", id: "copy" });
    expect(clone.status).toBe(400);
    expect(fields(clone)).toEqual(["brokerUrl"]);
    const [snapshot] = (await api("GET", "/api/snapshots?instance=legacy")).body as unknown as {
      id: string;
    }[];
    const restore = await api("POST", `/api/snapshots/${snapshot?.id}/restore`, {
      node: "local",
      id: "back",
    });
    expect(restore.status).toBe(400);
    expect(fields(restore)).toEqual(["brokerUrl"]);
    expect((await api("GET", "/api/instances/copy")).status).toBe(404);
    expect((await api("GET", "/api/instances/back")).status).toBe(404);
  });
});
