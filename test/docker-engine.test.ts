import { existsSync, readFileSync } from "node:fs";
import http from "node:http";
import type { AddressInfo } from "node:net";
import path from "node:path";
import Docker from "dockerode";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { projectRoot } from "../src/paths.js";
import {
  buildTwinTestImage,
  dockerUnavailable,
  startDockerEngine,
  type TestDockerEngine,
} from "./docker-engine.js";

/** Splits the multiplexed log stream of a container without a TTY (8-byte frame headers). */
function demux(buffer: Buffer): { stdout: string; stderr: string } {
  const out: Buffer[] = [];
  const err: Buffer[] = [];
  let at = 0;
  while (at + 8 <= buffer.length) {
    const size = buffer.readUInt32BE(at + 4);
    const frame = buffer.subarray(at + 8, at + 8 + size);
    (buffer[at] === 2 ? err : out).push(frame);
    at += 8 + size;
  }
  return { stdout: Buffer.concat(out).toString("utf8"), stderr: Buffer.concat(err).toString("utf8") };
}

describe("Docker test engine and twin test image", { timeout: 180_000 }, () => {
  const skip = dockerUnavailable();
  let engine: TestDockerEngine | undefined;
  let docker: Docker;
  // A tag of its own: an engine given by DTC_TEST_DOCKER_HOST may be shared with other test files.
  const tag = `dtc-twin:test-engine-${process.pid}`;
  const timings: Record<string, number> = {};

  beforeAll(async () => {
    if (skip) return;
    let t = Date.now();
    engine = await startDockerEngine();
    timings.engineStartMs = Date.now() - t;
    docker = new Docker({ socketPath: engine.socketPath });
    t = Date.now();
    await buildTwinTestImage(engine, { tag });
    timings.imageBuildMs = Date.now() - t;
  }, 180_000);

  afterAll(async () => {
    if (engine === undefined) return;
    if (!engine.own)
      await docker
        .getImage(tag)
        .remove({ force: true })
        .catch(() => {});
    await engine.stop();
    console.info(`docker test engine (${engine.storageDriver}): ${JSON.stringify(timings)}`);
  }, 60_000);

  it("starts an engine that answers on its own socket, not the machine's", async (ctx) => {
    if (skip) ctx.skip(skip);
    if (engine === undefined) throw new Error("no engine");
    expect(await docker.ping()).toBeTruthy();
    if (engine.own) {
      expect(engine.socketPath).not.toBe("/var/run/docker.sock");
      expect(engine.socketPath.length).toBeLessThan(108);
      expect(engine.storageDriver).toBe(process.env.DTC_TEST_DOCKER_STORAGE?.trim() || "vfs");
    }
  });

  it("builds a FROM scratch image running twin-main as a non-root user", async (ctx) => {
    if (skip) ctx.skip(skip);
    const image = await docker.getImage(tag).inspect();
    expect(image.Config.User).toBe("1000:1000");
    expect(image.Config.WorkingDir).toBe("/app");
    expect(image.Config.Entrypoint).toEqual(["/usr/local/bin/node"]);
    expect(image.Config.Cmd).toEqual(["--no-node-snapshot", "dist/src/twin-main.js"]);
    expect(image.Config.Labels?.["dtc.image"]).toBe("twin-test");
    expect(image.Config.Labels?.["dtc.node-version"]).toBe(process.version);
  });

  it("runs node from the image with host networking, the production node_modules and a native addon", async (ctx) => {
    if (skip) ctx.skip(skip);
    // A server on the host's loopback: reachable from the container only with host networking.
    const server = http.createServer((_req, res) => res.end("hello from the host"));
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    const port = (server.address() as AddressInfo).port;
    const script = `
      const fs = require("node:fs");
      const db = require("/app/node_modules/better-sqlite3")(":memory:");
      fs.writeFileSync("/tmp/probe", "ok");
      fetch("http://127.0.0.1:${port}/").then((r) => r.text()).then((host) => {
        console.log(JSON.stringify({
          node: process.version,
          mqtt: require("/app/node_modules/mqtt/package.json").version,
          sqlite: db.prepare("select 40 + 2 as x").get().x,
          uid: process.getuid(),
          gid: process.getgid(),
          cwd: process.cwd(),
          tmpMode: fs.statSync("/tmp").mode & 0o7777,
          tmpWritten: fs.readFileSync("/tmp/probe", "utf8"),
          vitest: fs.existsSync("/app/node_modules/vitest"),
          dist: fs.existsSync("/app/dist/src/main.js"),
          host,
        }));
      });`;
    const t = Date.now();
    const container = await docker.createContainer({
      Image: tag,
      Cmd: ["-e", script],
      HostConfig: { NetworkMode: "host" },
      Labels: { "dtc.test": "docker-engine" },
    });
    try {
      await container.start();
      const exit = (await container.wait()) as { StatusCode: number };
      timings.containerRunMs = Date.now() - t;
      const { stdout, stderr } = demux(await container.logs({ stdout: true, stderr: true, follow: false }));
      expect(exit.StatusCode, stderr).toBe(0);
      const hostMqtt = JSON.parse(
        readFileSync(path.join(projectRoot, "node_modules", "mqtt", "package.json"), "utf8"),
      ) as { version: string };
      expect(JSON.parse(stdout.trim())).toEqual({
        node: process.version,
        mqtt: hostMqtt.version,
        sqlite: 42,
        uid: 1000,
        gid: 1000,
        cwd: "/app",
        tmpMode: 0o1777,
        tmpWritten: "ok",
        vitest: false,
        dist: true,
        host: "hello from the host",
      });
    } finally {
      await container.remove({ force: true });
      await new Promise<void>((resolve) => server.close(() => resolve()));
    }
    expect(
      await docker.listContainers({ all: true, filters: { label: ["dtc.test=docker-engine"] } }),
    ).toEqual([]);
  });

  it("stops a private engine and removes its socket", async (ctx) => {
    if (skip) ctx.skip(skip);
    if (engine === undefined) throw new Error("no engine");
    if (!engine.own) ctx.skip("DTC_TEST_DOCKER_HOST names the engine: the tests do not stop it");
    const t = Date.now();
    await engine.stop();
    timings.engineStopMs = Date.now() - t;
    expect(existsSync(engine.socketPath)).toBe(false);
    expect(existsSync(path.dirname(engine.socketPath))).toBe(false);
    await expect(docker.ping()).rejects.toThrow();
  });
});
