import { once } from "node:events";
import { existsSync, mkdirSync, readFileSync, rmSync } from "node:fs";
import { request } from "node:http";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Page } from "playwright-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type Browser, CHROMIUM, chromiumInstalled, launchChromium } from "../bench/browser.js";
import { twinTdId } from "../src/domain/vocabulary.js";
import type { Gateway } from "../src/gateway.js";
import { UI_DIR } from "../src/http/ui.js";
import { projectRoot } from "../src/paths.js";
import { IiotDeviceSimulator } from "../src/simulator/index.js";
import { adminToken, call, FAST, startTestGateway } from "./manager-client.js";

/**
 * The dashboard at /ui, in Debian's chromium driven by playwright-core, on a real gateway with an
 * in-process twin fed by a simulated device: what a user sees and can do, page by page, an axe-core
 * scan of each page, and a screenshot of each (docs/screenshots/ with DTC_UPDATE_SCREENSHOTS=1).
 */

function chromiumMissing(): string | undefined {
  if (chromiumInstalled()) return undefined;
  const reason = `${CHROMIUM} is not installed (Debian package chromium): the dashboard test is SKIPPED`;
  if (process.env.CI === "true") throw new Error(`CI: ${reason}`);
  console.warn(reason);
  return reason;
}
const missing = chromiumMissing();

const TWIN = "press-ui";
const OTHER_NODE = {
  id: "edge-b",
  platform: "in-process",
  tier: "edge",
  capabilities: { cpu: 2, memory: 1024, gpu: 0 },
  latencyMs: 2,
};
/** Long enough for a twin to entangle and a move to settle; each wait polls. */
const WAIT_MS = 20_000;

// Kept for a run with DTC_KEEP_TEMP=1; the per-run temp root is removed otherwise.
const SHOTS = join(tmpdir(), "dashboard-screenshots");
const COMMITTED = join(projectRoot, "docs", "screenshots");
/** The pages whose screenshots the README shows. */
const COMMITTED_PAGES = new Set(["fleet", "twin", "search", "nodes"]);
const AXE = readFileSync(join(projectRoot, "node_modules", "axe-core", "axe.min.js"), "utf8");

interface Violation {
  id: string;
  impact: string | null;
  help: string;
  targets: string[];
}

/** axe-core's violations of the page as it is (evaluated over the DevTools protocol: the CSP holds). */
async function serious(page: Page): Promise<Violation[]> {
  await page.evaluate(AXE);
  // A string: the page's globals (axe, document) are not the test's (no DOM types here).
  const violations = (await page.evaluate(
    "axe.run(document).then((r) => r.violations.map((v) => ({ ...v, nodes: v.nodes.map((n) => ({ target: n.target })) })))",
  )) as { id: string; impact: string | null; help: string; nodes: { target: string[] }[] }[];
  return violations
    .filter((v) => v.impact === "serious" || v.impact === "critical")
    .map((v) => ({
      id: v.id,
      impact: v.impact,
      help: v.help,
      targets: v.nodes.map((n) => n.target.join(" ")),
    }));
}

async function screenshot(page: Page, name: string): Promise<void> {
  await page.evaluate("window.scrollTo(0, 0)");
  await page.screenshot({ path: join(SHOTS, `${name}.png`), fullPage: true });
  if (process.env.DTC_UPDATE_SCREENSHOTS === "1" && COMMITTED_PAGES.has(name)) {
    mkdirSync(COMMITTED, { recursive: true });
    await page.screenshot({ path: join(COMMITTED, `${name}.png`), fullPage: false });
  }
}

/** GET `path` exactly as written (no dot-segment resolution). */
function rawGet(base: string, path: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = request(`${base}/`, { path }, (res) => {
      let body = "";
      res.setEncoding("utf8");
      res.on("data", (chunk: string) => {
        body += chunk;
      });
      res.on("end", () => resolve({ status: res.statusCode ?? 0, body }));
    });
    req.on("error", reject);
    req.end();
  });
}

const points = async (page: Page) => Number(await page.locator(".plot").getAttribute("data-points"));

describe.skipIf(missing !== undefined)("the dashboard at /ui", () => {
  let gateway: Gateway;
  let token: string;
  let browser: Browser;
  let page: Page;
  let sim: IiotDeviceSimulator | undefined;
  const cspErrors: string[] = [];
  const api = (method: string, path: string, body?: unknown) => call(gateway.url, method, path, body, token);

  beforeAll(async () => {
    if (!existsSync(join(UI_DIR, "index.html"))) {
      // npm test builds it first; a lone run of this file builds it here.
      const { build } = await import("vite");
      await build({ configFile: join(projectRoot, "ui", "vite.config.ts"), logLevel: "warn" });
    }
    mkdirSync(SHOTS, { recursive: true });
    gateway = await startTestGateway({ DTC_AUTH: "on" });
    token = adminToken(gateway);
    expect((await api("POST", "/api/nodes", OTHER_NODE)).status).toBe(201);
    const started = await api("POST", "/api/instances", {
      package: "iiot-device",
      node: "local",
      id: TWIN,
      configuration: { DEVICE_ID: TWIN },
      fidelity: FAST,
    });
    expect(started.status, JSON.stringify(started.body)).toBe(201);
    const device = await api("POST", "/api/tokens", { name: TWIN, role: `device:${TWIN}` });
    sim = new IiotDeviceSimulator({
      id: TWIN,
      brokerUrl: gateway.brokerUrl,
      rate: 10,
      mqttOptions: { username: TWIN, password: device.body.token as string },
    });
    await sim.start();
    browser = await launchChromium();
    page = await browser.context.newPage();
    page.on("console", (m) => {
      if (m.text().includes("Content Security Policy")) cspErrors.push(m.text());
    });
  }, 60_000);

  afterAll(async () => {
    await browser?.close();
    await sim?.stop();
    await gateway?.close();
    if (process.env.DTC_KEEP_TEMP !== "1") rmSync(SHOTS, { recursive: true, force: true });
  });

  it("is served with a CSP, immutable hashed assets, client routes and no way out of its directory", async () => {
    const index = await fetch(`${gateway.url}/ui/twins/x`);
    expect(index.status).toBe(200);
    expect(index.headers.get("content-security-policy")).toContain("script-src 'self'");
    const html = await index.text();
    const asset = /src="(\/ui\/assets\/[^"]+\.js)"/.exec(html)?.[1];
    expect(asset).toBeDefined();
    const js = await fetch(`${gateway.url}${asset}`);
    expect(js.headers.get("cache-control")).toContain("immutable");
    expect(js.headers.get("content-type")).toContain("javascript");
    // Sent as written: fetch would resolve the dot segments itself.
    for (const path of [
      "/ui/..%2f..%2fpackage.json",
      "/ui/%2e%2e/%2e%2e/package.json",
      "/ui/../../package.json",
      "/ui/assets/..%5c..%5cpackage.json",
      "/ui/assets/nope.js",
    ]) {
      const res = await rawGet(gateway.url, path);
      expect(res.status, path).toBeGreaterThanOrEqual(400);
      expect(res.status, path).toBeLessThan(500);
      expect(res.body, path).not.toContain('"name": "dtc"');
    }
    expect((await fetch(`${gateway.url}/ui/%zz`)).status).toBe(400);
    // No token needed for the app itself; its API calls are refused without one.
    expect((await fetch(`${gateway.url}/api/instances`)).status).toBe(401);
  });

  it("signs in with a token, refusing a wrong one, and lists the running twin on the fleet page", async () => {
    await page.goto(`${gateway.url}/ui/`);
    await page.getByLabel("API token").fill("not-a-token");
    await page.getByRole("button", { name: "Sign in" }).click();
    await page.getByRole("alert").filter({ hasText: "Not signed in" }).waitFor();
    await page.getByLabel("API token").fill(token);
    await page.getByRole("button", { name: "Sign in" }).click();
    await page.getByRole("heading", { name: "Fleet" }).waitFor();
    const row = page.getByTestId("instances").getByRole("row", { name: new RegExp(TWIN) });
    await row.waitFor({ timeout: WAIT_MS });
    await expect.poll(() => row.textContent(), { timeout: WAIT_MS }).toContain("Entangled");
    expect(await page.getByText("admin", { exact: false }).first().isVisible()).toBe(true);
    await screenshot(page, "fleet");
    expect(await serious(page)).toEqual([]);
  });

  it("shows the twin reach Entangled and its plot gain points", async () => {
    await page.getByRole("link", { name: TWIN }).click();
    await page.getByRole("heading", { name: `Twin ${TWIN}` }).waitFor();
    await expect
      .poll(() => page.getByTestId("lifecycle").textContent(), { timeout: WAIT_MS })
      .toBe("Entangled");
    const before = await points(page);
    await expect.poll(() => points(page), { timeout: WAIT_MS }).toBeGreaterThan(before + 3);
    await page.getByText("→ Entangled").first().waitFor({ timeout: WAIT_MS });
  });

  it("invokes setRate from the form generated from the twin's TD, and the device gets it", async () => {
    const device = sim as IiotDeviceSimulator;
    const command = once(device, "command");
    const form = page.locator('form[data-action="setRate"]');
    await form.getByRole("textbox").fill("5");
    await form.getByRole("button", { name: "Invoke setRate" }).click();
    const [received] = (await command) as [{ command: string; rate: number }];
    expect(received).toEqual({ command: "setRate", rate: 5 });
    expect(device.rate).toBe(5);
    await form.getByText(/^Done/).waitFor();
    // The form checks nothing the twin would not: a rate out of range is the twin's 400, said.
    await form.getByRole("textbox").fill("5000");
    await form.getByRole("button", { name: "Invoke setRate" }).click();
    await form.getByText(/^Refused/).waitFor();
    expect(device.rate).toBe(5);
    // Back to the rate the twin's fidelity expects, or it would disentangle.
    const back = once(device, "command");
    await form.getByRole("textbox").fill("10");
    await form.getByRole("button", { name: "Invoke setRate" }).click();
    await back;
    expect(device.rate).toBe(10);
  });

  it("moves the twin to another node from the UI and the plot keeps gaining points", async () => {
    await page.getByLabel("Move to node").selectOption(OTHER_NODE.id);
    await page.getByRole("button", { name: "Move", exact: true }).click();
    await expect.poll(() => page.getByTestId("node").textContent(), { timeout: WAIT_MS }).toBe(OTHER_NODE.id);
    expect(gateway.inProcess.runtimeOf(OTHER_NODE.id)?.get(TWIN)).toBeDefined();
    const after = await points(page);
    await expect.poll(() => points(page), { timeout: WAIT_MS }).toBeGreaterThan(after + 3);
    await expect
      .poll(() => page.getByTestId("lifecycle").textContent(), { timeout: WAIT_MS })
      .toBe("Entangled");
    await screenshot(page, "twin");
    expect(await serious(page)).toEqual([]);
  });

  it("finds the twin with a SPARQL search, and lists the named queries with their parameters", async () => {
    await page.getByRole("link", { name: "Directory search" }).click();
    await page.getByRole("heading", { name: "Directory search" }).waitFor();
    await page.getByRole("button", { name: "Run query" }).click();
    const results = page.getByTestId("results");
    await expect.poll(() => results.textContent(), { timeout: WAIT_MS }).toContain(twinTdId(TWIN));
    await page.getByRole("heading", { name: "twins-by-lifecycle" }).waitFor();
    await screenshot(page, "search");
    expect(await serious(page)).toEqual([]);
  });

  it("shows nodes and platforms, and says the Event History arrives with the orchestrator", async () => {
    await page.getByRole("link", { name: "Nodes and platforms" }).click();
    await page.getByRole("row", { name: new RegExp(OTHER_NODE.id) }).waitFor();
    await screenshot(page, "nodes");
    expect(await serious(page)).toEqual([]);
    await page.getByRole("link", { name: "Event History" }).click();
    await page.getByText("arrives with the orchestrator").waitFor();
    await screenshot(page, "events");
    expect(await serious(page)).toEqual([]);
  });

  it("does not offer a reader what a reader may not do", async () => {
    const reader = await api("POST", "/api/tokens", { name: "viewer", role: "reader" });
    const other = await browser.context.newPage();
    try {
      await other.goto(`${gateway.url}/ui/twins/${TWIN}`);
      await other.getByLabel("API token").fill(reader.body.token as string);
      await other.getByRole("button", { name: "Sign in" }).click();
      await other.getByRole("heading", { name: `Twin ${TWIN}` }).waitFor();
      await other.getByText("ODTE", { exact: false }).first().waitFor();
      await other.getByRole("heading", { name: "Properties" }).waitFor();
      for (const name of ["Move", "Stop", "Restart", "Remove", "Invoke setRate"]) {
        expect(await other.getByRole("button", { name, exact: true }).count(), name).toBe(0);
      }
      await other.getByRole("link", { name: "Fleet", exact: true }).click();
      await other.getByRole("heading", { name: "Instances", exact: true }).waitFor();
      expect(await other.getByRole("heading", { name: "Start an instance" }).count()).toBe(0);
      await other.getByRole("link", { name: "Nodes and platforms" }).click();
      await other.getByRole("heading", { name: "Nodes", exact: true }).waitFor();
      expect(await other.getByRole("heading", { name: "Register a node" }).count()).toBe(0);
    } finally {
      await other.close();
    }
  });

  it("works on a narrow screen (no sideways scrolling) and loads with no CSP violation", async () => {
    await page.setViewportSize({ width: 360, height: 740 });
    for (const path of ["/ui/", `/ui/twins/${TWIN}`, "/ui/search", "/ui/nodes"]) {
      await page.goto(`${gateway.url}${path}`);
      await page.locator("main h1").first().waitFor();
      const width = (await page.evaluate("document.documentElement.scrollWidth")) as number;
      expect(width, path).toBeLessThanOrEqual(360);
    }
    await screenshot(page, "narrow-twin-search");
    expect(cspErrors).toEqual([]);
  });
});
