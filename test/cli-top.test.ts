import { execFileSync, spawnSync } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { Gateway } from "../src/gateway.js";
import { IiotDeviceSimulator } from "../src/simulator/index.js";
import { cliMain } from "./cli-run.js";
import { waitFor } from "./helpers.js";
import { adminToken, call, FAST, startTestGateway } from "./manager-client.js";

/**
 * dtc top in a real terminal: tmux runs it in a detached session of a fixed size; the test reads
 * the screen (capture-pane) until the twin shows Entangled, presses q (send-keys) and sees it exit 0.
 * Without tmux it is skipped, loudly, except in CI (CI=true), where it fails.
 */

const hasTmux = spawnSync("tmux", ["-V"]).status === 0;
if (!hasTmux) {
  if (process.env.CI === "true")
    throw new Error("tmux is needed for test/cli-top.test.ts (apt-get install tmux)");
  console.warn("SKIPPING test/cli-top.test.ts: tmux is not installed (apt-get install tmux)");
}

describe.skipIf(!hasTmux)("dtc top, under tmux", () => {
  let gateway: Gateway;
  let dir: string;
  let socket: string;
  let sim: IiotDeviceSimulator | undefined;
  const session = "dtc-top";
  const tmux = (...args: string[]) =>
    execFileSync("tmux", ["-f", "/dev/null", "-S", socket, ...args], { encoding: "utf8" });
  const screen = () => tmux("capture-pane", "-p", "-t", session);

  beforeAll(async () => {
    gateway = await startTestGateway({ DTC_AUTH: "on", DTC_STATUS_INTERVAL_MS: "200" });
    dir = mkdtempSync(join(tmpdir(), "dtc-top-"));
    socket = join(dir, "tmux.sock");
    const token = adminToken(gateway);
    const api = (method: string, path: string, body?: unknown) =>
      call(gateway.url, method, path, body, token);
    const started = await api("POST", "/api/instances", {
      package: "iiot-device",
      node: "local",
      id: "top-1",
      configuration: { DEVICE_ID: "top-1" },
      fidelity: FAST,
    });
    expect(started.status, JSON.stringify(started.body)).toBe(201);
    const device = await api("POST", "/api/tokens", { name: "top-1", role: "device:top-1" });
    sim = new IiotDeviceSimulator({
      id: "top-1",
      brokerUrl: gateway.brokerUrl,
      rate: 10,
      mqttOptions: { username: "top-1", password: device.body.token as string },
    });
    await sim.start();
    // A clean environment: no config file, the gateway from the flags.
    const command = [
      "env",
      "-i",
      `PATH=${process.env.PATH ?? ""}`,
      `HOME=${dir}`,
      `DTC_CONFIG=${join(dir, "config.yaml")}`,
      "TERM=xterm-256color",
      process.execPath,
      cliMain,
      "top",
      "--server",
      gateway.url,
      "--token",
      token,
      "--interval",
      "200ms",
    ]
      .map((w) => `'${w.replaceAll("'", "'\\''")}'`)
      .join(" ");
    tmux("new-session", "-d", "-s", session, "-x", "140", "-y", "30", command);
    // The pane stays after dtc exits, so its exit status can be read.
    tmux("set-option", "-t", session, "remain-on-exit", "on");
  }, 30_000);

  afterAll(async () => {
    if (socket) spawnSync("tmux", ["-S", socket, "kill-server"]);
    await sim?.stop();
    await gateway?.close();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it("shows the twin Entangled with its ODTE, live, and quits on q with exit 0", async () => {
    // Entangled, and the event stream connected (on a loaded machine it may connect after the first draw).
    const shown = await waitFor(
      "dtc top to show top-1 Entangled, its event stream live",
      () => {
        const now = screen();
        return /top-1\s+local\s+Entangled\s+[01]\.\d{3}/.test(now) && now.includes("events: live")
          ? now
          : undefined;
      },
      30_000,
    );
    expect(shown).toMatch(/^dtc top - http:\/\/127\.0\.0\.1:\d+ - /);
    expect(shown).toMatch(/ID\s+NODE\s+LIFECYCLE\s+ODTE\s+T\s+R\s+A\s+UPDATES/);
    expect(shown).toContain("events: live");
    // It refreshes: the clock in its header moves on.
    const clock = () => /- (\d\d:\d\d:\d\d) -/.exec(screen())?.[1];
    const first = clock();
    await waitFor("the table to be redrawn", () => clock() !== first, 15_000);
    tmux("send-keys", "-t", session, "q");
    const status = await waitFor(
      "dtc top to exit",
      () => {
        const [dead, code] = tmux("display-message", "-p", "-t", session, "#{pane_dead} #{pane_dead_status}")
          .trim()
          .split(" ");
        return dead === "1" ? code : undefined;
      },
      15_000,
    );
    expect(status).toBe("0");
  }, 70_000);
});
