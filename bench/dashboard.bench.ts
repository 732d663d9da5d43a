import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { extname, join } from "node:path";
import { gzipSync } from "node:zlib";
import { loadConfig } from "../src/config.js";
import { startGateway } from "../src/gateway.js";
import { UI_DIR } from "../src/http/ui.js";
import { createLogger } from "../src/logger.js";
import { CHROMIUM, chromiumInstalled, launchChromium } from "./browser.js";
import { type Benchmark, type BenchRow, valueRow } from "./harness.js";

/**
 * The dashboard's weight and first load: (1) bytes and gzip bytes of the built assets (dist/ui,
 * what a browser downloads on a first visit); (2) in Debian's chromium, headless, with an empty
 * cache each time: navigation to the fleet page's first render (signed in: its token in the tab's
 * session; rendered: the instance table filled from the API), against loading GET /healthz in the
 * same browser, alternating, in the same run.
 */

const ROUNDS = 20;
const log = (line: string) => process.stdout.write(`  dashboard: ${line}\n`);

function assetSizes(): { kind: string; bytes: number; gzip: number }[] {
  const files: string[] = [];
  const walk = (dir: string) => {
    for (const entry of readdirSync(dir)) {
      const path = join(dir, entry);
      if (statSync(path).isDirectory()) walk(path);
      else files.push(path);
    }
  };
  walk(UI_DIR);
  const kinds = new Map<string, { bytes: number; gzip: number }>();
  for (const file of files) {
    const kind = extname(file).slice(1) || "other";
    const content = readFileSync(file);
    const sum = kinds.get(kind) ?? { bytes: 0, gzip: 0 };
    sum.bytes += content.length;
    sum.gzip += gzipSync(content).length;
    kinds.set(kind, sum);
  }
  return [...kinds.entries()].map(([kind, s]) => ({ kind, ...s }));
}

const percentile = (xs: number[], p: number) => {
  const sorted = [...xs].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] as number;
};

export const benchmark: Benchmark = {
  name: "dashboard",
  description: "the dashboard's bundle size and first load of the fleet page vs GET /healthz (baseline)",
  async run(): Promise<BenchRow[]> {
    if (!chromiumInstalled()) throw new Error(`${CHROMIUM} is not installed (Debian package chromium)`);
    const sizes = assetSizes();
    if (!sizes.some((s) => s.kind === "js")) throw new Error(`${UI_DIR} holds no build: run npm run build`);
    const total = sizes.reduce((t, s) => ({ bytes: t.bytes + s.bytes, gzip: t.gzip + s.gzip }), {
      bytes: 0,
      gzip: 0,
    });
    const rows: BenchRow[] = [
      ...sizes.flatMap((s) => [
        valueRow(`bundle ${s.kind}`, s.bytes, "bytes"),
        valueRow(`bundle ${s.kind}, gzip`, s.gzip, "bytes"),
      ]),
      valueRow("bundle total", total.bytes, "bytes"),
      valueRow("bundle total, gzip", total.gzip, "bytes"),
    ];

    const dataDir = mkdtempSync(join(tmpdir(), "dtc-bench-dashboard-"));
    const gateway = await startGateway(
      loadConfig({ DTC_PORT: "0", DTC_MQTT_PORT: "0", DTC_DATA_DIR: dataDir, DTC_AUTH: "on" }),
      createLogger("warn"),
    );
    const browser = await launchChromium();
    try {
      const token = readFileSync(gateway.adminTokenFile as string, "utf8").trim();
      const page = await browser.context.newPage();
      const cdp = await browser.context.newCDPSession(page);
      await cdp.send("Network.enable");
      await page.goto(`${gateway.url}/ui/`);
      // Once the app has found no token (it clears a refused one), the tab gets the admin's.
      await page.getByLabel("API token").waitFor();
      await page.evaluate(`sessionStorage.setItem("dtc.token", ${JSON.stringify(token)})`);
      // Rendered: the instance table filled from the API (no instances: it says so).
      const rendered = page.locator("[data-testid=instances] tbody").getByText("No instances yet.");
      const timed = async (load: () => Promise<unknown>) => {
        await cdp.send("Network.clearBrowserCache");
        const start = performance.now();
        await load();
        return performance.now() - start;
      };
      const fleet: number[] = [];
      const healthz: number[] = [];
      for (let round = 0; round < ROUNDS + 2; round++) {
        const f = await timed(async () => {
          await page.goto(`${gateway.url}/ui/`, { waitUntil: "commit" });
          await rendered.waitFor();
        });
        const h = await timed(() => page.goto(`${gateway.url}/healthz`, { waitUntil: "load" }));
        // The first two warm the gateway and the browser up.
        if (round >= 2) {
          fleet.push(f);
          healthz.push(h);
        }
      }
      log(
        `fleet first render p50 ${percentile(fleet, 50).toFixed(1)} ms; /healthz p50 ${percentile(healthz, 50).toFixed(1)} ms`,
      );
      const base50 = valueRow("load GET /healthz p50", percentile(healthz, 50), "ms");
      const base95 = valueRow("load GET /healthz p95", percentile(healthz, 95), "ms");
      rows.push(
        base50,
        base95,
        valueRow("fleet page first render p50", percentile(fleet, 50), "ms", base50),
        valueRow("fleet page first render p95", percentile(fleet, 95), "ms", base95),
      );
    } finally {
      await browser.close();
      await gateway.close();
      rmSync(dataDir, { recursive: true, force: true });
    }
    return rows;
  },
};
