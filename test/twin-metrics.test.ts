import { spawnSync } from "node:child_process";
import { existsSync } from "node:fs";
import { Registry } from "prom-client";
import { describe, expect, it } from "vitest";
import type { EntanglementFigures } from "../src/domain/entanglement.js";
import { exposition, TwinMetrics, type TwinSample } from "../src/observability/twin-metrics.js";

// The per-twin series as text (src/observability/twin-metrics.ts), checked line by line and by
// Prometheus' own linter (promtool check metrics) where Debian's prometheus package is installed.

const SCHEMA = "https://w3id.org/dtc/thing-models/iiot-device.tm.jsonld";

function figures(odte: number): EntanglementFigures {
  return {
    odte,
    timeliness: 1,
    reliability: odte,
    availability: 1,
    updates: 60,
    windowSeconds: 60,
    desiredTimeliness: 10,
    expectedUpdateRate: 1,
    threshold: 0.9,
    evaluatedAt: new Date(0).toISOString(),
    entangled: odte >= 0.9,
    windowFilled: true,
  };
}

function sample(twin: string, overrides: Partial<TwinSample> = {}): TwinSample {
  return {
    twin,
    schema: SCHEMA,
    node: "local",
    platform: "in-process",
    status: { lifecycle: "Entangled", entanglement: figures(0.95) },
    counters: { messages: 7, rejected: 1, stale: 0, lost: 2, augmentationErrors: 0, commands: 3 },
    ...overrides,
  };
}

/** The value of the one series `name{labels}` in `text`. */
function seriesValue(text: string, name: string, labels: string): string | undefined {
  const line = text.split("\n").find((l) => l.startsWith(`${name}{${labels}}`));
  return line?.slice(line.lastIndexOf(" ") + 1);
}

const base = (twin: string) => `twin="${twin}",schema="${SCHEMA}",node="local",platform="in-process"`;

describe("TwinMetrics", () => {
  it("writes each twin's figures, lifecycle and counters under its ids", async () => {
    const metrics = new TwinMetrics(new Registry(), () => [sample("press-1")]);
    const text = await metrics.render();
    expect(seriesValue(text, "dtc_twin_odte", base("press-1"))).toBe("0.95");
    expect(seriesValue(text, "dtc_twin_reliability", base("press-1"))).toBe("0.95");
    expect(seriesValue(text, "dtc_twin_odte_threshold", base("press-1"))).toBe("0.9");
    expect(seriesValue(text, "dtc_twin_odte_window_seconds", base("press-1"))).toBe("60");
    expect(seriesValue(text, "dtc_twin_lifecycle_state", `${base("press-1")},state="Entangled"`)).toBe("1");
    expect(seriesValue(text, "dtc_twin_lifecycle_state", `${base("press-1")},state="Unbound"`)).toBe("0");
    expect(text.match(/^dtc_twin_lifecycle_state\{/gm)).toHaveLength(6);
    expect(seriesValue(text, "dtc_twin_failed", base("press-1"))).toBe("0");
    expect(seriesValue(text, "dtc_twin_messages_total", base("press-1"))).toBe("7");
    expect(seriesValue(text, "dtc_twin_malformed_messages_total", base("press-1"))).toBe("1");
    expect(seriesValue(text, "dtc_twin_sequence_gaps_total", base("press-1"))).toBe("2");
    expect(seriesValue(text, "dtc_twin_commands_total", base("press-1"))).toBe("3");
    expect(text).toContain("# TYPE dtc_twin_messages_total counter\n");
    expect(text).toContain("# TYPE dtc_twin_odte gauge\n");
  });

  it("leaves out what a twin does not have yet, and shows a failure", async () => {
    const metrics = new TwinMetrics(new Registry(), () => [
      sample("fresh", {
        status: { lifecycle: "Unbound", failed: "container exited with code 137" },
        counters: undefined,
      }),
    ]);
    const text = await metrics.render();
    expect(seriesValue(text, "dtc_twin_odte", base("fresh"))).toBeUndefined();
    expect(seriesValue(text, "dtc_twin_messages_total", base("fresh"))).toBeUndefined();
    expect(seriesValue(text, "dtc_twin_failed", base("fresh"))).toBe("1");
    // The reason is free text: it is never a label value.
    expect(text).not.toContain("137");
  });

  it("keeps to the series limit by id order and reports how many twins it left out", async () => {
    const registry = new Registry();
    const twins = ["c", "a", "d", "b"].map((id) => sample(id));
    const metrics = new TwinMetrics(registry, () => twins, { maxTwins: 2 });
    const text = await exposition(registry, metrics);
    expect(seriesValue(text, "dtc_twin_odte", base("a"))).toBe("0.95");
    expect(seriesValue(text, "dtc_twin_odte", base("b"))).toBe("0.95");
    expect(seriesValue(text, "dtc_twin_odte", base("c"))).toBeUndefined();
    expect(text).toMatch(/^dtc_twin_series_omitted 2$/m);

    const none = new Registry();
    const off = new TwinMetrics(none, () => twins, { maxTwins: 0 });
    const offText = await exposition(none, off);
    expect(offText).not.toMatch(/^dtc_twin_odte\{/m);
    expect(offText).toMatch(/^dtc_twin_series_omitted 4$/m);
  });

  it("escapes label values and picks up a twin's new placement", async () => {
    let node = "edge-1";
    const metrics = new TwinMetrics(new Registry(), () => [
      sample("t1", { schema: 'urn:x:"odd"\\path', node }),
    ]);
    const first = await metrics.render();
    expect(first).toContain('schema="urn:x:\\"odd\\"\\\\path",node="edge-1"');
    node = "edge-2";
    const second = await metrics.render();
    expect(second).toContain('node="edge-2"');
    expect(second).not.toContain('node="edge-1"');
  });

  it("observes update delays and processing times per schema, node and platform, never per twin", async () => {
    const registry = new Registry();
    const metrics = new TwinMetrics(registry, () => []);
    const observe = metrics.updateObserver({
      twin: "t1",
      schema: SCHEMA,
      node: "local",
      platform: "in-process",
    });
    observe(4, 0.5);
    observe(-3, 0.2); // a PT clock ahead: no delay recorded
    const text = await exposition(registry, metrics);
    const fleet = `schema="${SCHEMA}",node="local",platform="in-process"`;
    expect(text).toContain(`dtc_twin_update_delay_seconds_count{${fleet}} 1`);
    expect(text).toContain(`dtc_twin_update_delay_seconds_bucket{le="0.005",${fleet}} 1`);
    expect(text).toContain(`dtc_twin_processing_seconds_count{${fleet}} 2`);
    expect(text).not.toMatch(/dtc_twin_update_delay_seconds_count\{[^}]*twin=/);
  });

  const promtool = ["/usr/bin/promtool", "/usr/local/bin/promtool"].find((p) => existsSync(p));
  if (!promtool) {
    const reason = "promtool is not installed (Debian package prometheus; .ci/run installs it)";
    if (process.env.CI === "true") throw new Error(`CI: ${reason}`);
    console.warn(`SKIPPED test/twin-metrics.test.ts (promtool check metrics): ${reason}`);
  }
  it.skipIf(!promtool)("writes an exposition Prometheus' linter accepts, for a fleet", async () => {
    const registry = new Registry();
    const twins = Array.from({ length: 250 }, (_, i) => sample(`t${i}`));
    const metrics = new TwinMetrics(registry, () => twins);
    metrics.updateObserver(twins[0] as TwinSample)(3, 1);
    const text = await exposition(registry, metrics);
    const lint = spawnSync(promtool as string, ["check", "metrics"], { input: text, encoding: "utf8" });
    expect(lint.stderr + lint.stdout).toBe("");
    expect(lint.status).toBe(0);
    expect(text.match(/^dtc_twin_odte\{/gm)).toHaveLength(250);
  });
});
