import { spawn } from "node:child_process";
import { once } from "node:events";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { projectRoot } from "../src/paths.js";
import { waitFor } from "./helpers.js";

const lastResort = join(projectRoot, "dist/src/last-resort.js");
const logger = join(projectRoot, "dist/src/logger.js");

/**
 * A process with the last resort installed (as the gateway's and twin processes' entries do) that
 * serves HTTP and throws from a timer each time it is told to, as a library callback might. Its
 * answers show whether it is still serving; stdout carries its log lines.
 */
function startThrower(maxPerMinute: number) {
  const script = `
    import { createServer } from "node:http";
    const { installLastResort } = await import(${JSON.stringify(lastResort)});
    const { createLogger } = await import(${JSON.stringify(logger)});
    installLastResort(createLogger("info"), {
      maxPerMinute: ${maxPerMinute},
      beforeExit: async () => console.log(JSON.stringify({ msg: "saved states" })),
    });
    const server = createServer((req, res) => {
      if (req.url === "/throw") setTimeout(() => { throw new Error("thrown in a callback"); });
      if (req.url === "/reject") Promise.reject(new Error("nobody awaits this"));
      res.end("ok");
    }).listen(0, "127.0.0.1", () => console.log(JSON.stringify({ port: server.address().port })));
  `;
  const child = spawn(process.execPath, ["--input-type=module", "-e", script], {
    stdio: ["ignore", "pipe", "pipe"],
  });
  let out = "";
  child.stdout.on("data", (chunk: Buffer) => {
    out += chunk.toString();
  });
  const lines = () =>
    out
      .split("\n")
      .filter((l) => l.startsWith("{"))
      .map((l) => JSON.parse(l) as { msg?: string; port?: number; origin?: string });
  return { child, lines };
}

describe("process-level last resort", () => {
  it("logs an exception thrown in a callback and an unawaited rejection, and keeps serving", async () => {
    const { child, lines } = startThrower(10);
    try {
      const port = await waitFor("the port", () => lines().find((l) => l.port)?.port);
      const base = `http://127.0.0.1:${port}`;
      expect(await (await fetch(`${base}/throw`)).text()).toBe("ok");
      await waitFor("the exception logged", () => lines().some((l) => l.origin === "uncaughtException"));
      expect(await (await fetch(`${base}/reject`)).text()).toBe("ok");
      await waitFor("the rejection logged", () =>
        lines().some((l) => l.msg?.startsWith("unhandled promise")),
      );
      // Still serving, and still the same process.
      expect(await (await fetch(`${base}/`)).text()).toBe("ok");
      expect(child.exitCode).toBeNull();
    } finally {
      child.kill("SIGKILL");
    }
  });

  it("exits with status 70 after saving states once exceptions come faster than it tolerates", async () => {
    const { child, lines } = startThrower(2);
    const exited = once(child, "exit");
    try {
      const port = await waitFor("the port", () => lines().find((l) => l.port)?.port);
      for (let i = 0; i < 3; i++) await fetch(`http://127.0.0.1:${port}/throw`).catch(() => undefined);
      const [code] = await exited;
      expect(code).toBe(70);
      expect(lines().map((l) => l.msg)).toContain("saved states");
      expect(lines().filter((l) => l.origin === "uncaughtException")).toHaveLength(3);
    } finally {
      child.kill("SIGKILL");
    }
  });
});
