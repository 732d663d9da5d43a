import { type ChildProcess, execFile, spawn } from "node:child_process";
import { once } from "node:events";
import { copyFileSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterAll, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { parse, stringify } from "yaml";
import type { Gateway } from "../src/gateway.js";
import { freePort } from "../src/net.js";
import { projectRoot } from "../src/paths.js";
import { IiotDeviceSimulator } from "../src/simulator/index.js";
import { waitFor } from "./helpers.js";
import { startTestGateway } from "./manager-client.js";

/**
 * The alerting rules, their unit tests, the Prometheus example configuration and the Grafana
 * dashboard of deploy/ are valid for the real promtool, and every metric they name is one a running
 * gateway exports on GET /metrics.
 */

const prometheusDir = path.join(projectRoot, "deploy", "prometheus");
const dashboardFile = path.join(projectRoot, "deploy", "grafana", "dtc-fleet.json");
const readYaml = (file: string) => parse(readFileSync(path.join(prometheusDir, file), "utf8"));

/** Names Prometheus makes itself for every target, not exported by anyone. */
const PROMETHEUS_GENERATED = new Set(["up"]);

/** Why promtool and Prometheus cannot run here, or undefined when it can. In CI a missing promtool is an error. */
function promtoolUnavailable(): string | undefined {
  if (promtoolBinary() !== undefined && prometheusBinary() !== undefined) return undefined;
  const reason = "promtool or prometheus is not installed (Debian package prometheus; .ci/run installs it)";
  if (process.env.CI === "true") throw new Error(`CI: ${reason}`);
  return reason;
}

/** A binary of Debian's prometheus package (promtool, prometheus). */
function binary(name: string): string | undefined {
  const dirs = [...(process.env.PATH ?? "").split(path.delimiter), "/usr/bin", "/usr/local/bin"];
  return dirs.map((d) => path.join(d, name)).find((p) => existsSync(p));
}

const promtoolBinary = () => binary("promtool");
const prometheusBinary = () => binary("prometheus");

interface Run {
  code: number;
  output: string;
}

function promtool(args: string[], cwd: string): Promise<Run> {
  return new Promise((resolve) => {
    execFile(promtoolBinary() ?? "promtool", args, { cwd, timeout: 60_000 }, (err, stdout, stderr) => {
      const code = err ? (typeof err.code === "number" ? err.code : 1) : 0;
      resolve({ code, output: `${stdout}${stderr}` });
    });
  });
}

interface Rule {
  alert?: string;
  record?: string;
  expr: string;
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
}

const alertRules = (): Rule[] =>
  (readYaml("alerts.yml") as { groups: { rules: Rule[] }[] }).groups.flatMap((g) => g.rules);

/** Every `expr` of the dashboard (panel targets) and the selectors of its label_values() variables. */
function dashboardExpressions(): string[] {
  const out: string[] = [];
  const walk = (node: unknown, key?: string): void => {
    if (Array.isArray(node)) for (const item of node) walk(item);
    else if (node !== null && typeof node === "object") {
      for (const [k, v] of Object.entries(node)) walk(v, k);
    } else if (key === "expr" && typeof node === "string") out.push(node);
    else if ((key === "query" || key === "definition") && typeof node === "string") {
      const selector = /^label_values\((.+),\s*\w+\)$/.exec(node.trim());
      if (selector?.[1]) out.push(selector[1]);
    }
  };
  walk(JSON.parse(readFileSync(dashboardFile, "utf8")));
  return [...new Set(out)];
}

/** The dashboard's template variables and Grafana's built-ins, as values promtool can parse. */
const VARIABLES: Record<string, string> = {
  schema: ".*",
  node: ".*",
  twin: ".*",
  __rate_interval: "1m",
  __interval: "1m",
  __range: "1h",
};

function substitute(expr: string): string {
  return expr.replace(/\$\{?(\w+)\}?/g, (whole, name: string) => {
    const value = VARIABLES[name];
    if (value === undefined) throw new Error(`unknown dashboard variable ${whole} in ${expr}`);
    return value;
  });
}

/** The metric names an expression uses (string literals dropped first: label values are not names). */
function metricNames(expr: string): string[] {
  const code = expr.replace(/"(?:[^"\\]|\\.)*"/g, '""');
  return [...new Set(code.match(/\b(?:dtc_[a-z0-9_]+|process_[a-z0-9_]+|nodejs_[a-z0-9_]+|up)\b/g) ?? [])];
}

/** The sample names of an exposition: every series, and the _bucket/_sum/_count of each histogram. */
function exportedNames(exposition: string): Set<string> {
  const names = new Set<string>();
  for (const line of exposition.split("\n")) {
    const type = /^# TYPE (\S+) (\w+)/.exec(line);
    if (type?.[1]) {
      const [, name, kind] = type;
      names.add(name);
      if (kind === "histogram") for (const s of ["_bucket", "_sum", "_count"]) names.add(`${name}${s}`);
      if (kind === "summary") for (const s of ["_sum", "_count"]) names.add(`${name}${s}`);
    } else if (line !== "" && !line.startsWith("#")) {
      const sample = /^([a-zA-Z_:][a-zA-Z0-9_:]*)/.exec(line);
      if (sample?.[1]) names.add(sample[1]);
    }
  }
  return names;
}

const skip = promtoolUnavailable();
if (skip) console.warn(`SKIPPED test/prometheus-rules.test.ts (promtool, prometheus): ${skip}`);

describe("deploy/prometheus: alerting rules and configuration (promtool)", () => {
  beforeEach((ctx) => {
    if (skip) ctx.skip(skip);
  });

  it("alerts.yml passes promtool check rules; each alert has a severity, a summary and a description", async () => {
    const check = await promtool(["check", "rules", "alerts.yml"], prometheusDir);
    expect(check.output, check.output).toContain(`SUCCESS: ${alertRules().length} rules found`);
    expect(check.code, check.output).toBe(0);
    for (const rule of alertRules()) {
      expect(rule.alert, rule.expr).toMatch(/^Dtc[A-Z]\w+$/);
      expect(["critical", "warning", "info"], rule.alert).toContain(rule.labels?.severity);
      expect(rule.annotations?.summary, rule.alert).toBeTruthy();
      expect(rule.annotations?.description, rule.alert).toBeTruthy();
    }
  });

  it("alerts.test.yml passes promtool test rules, showing every alert both firing and not", async () => {
    const test = await promtool(["test", "rules", "alerts.test.yml"], prometheusDir);
    expect(test.output).toContain("SUCCESS");
    expect(test.code, test.output).toBe(0);
    const cases = (
      readYaml("alerts.test.yml") as {
        tests: { alert_rule_test?: { alertname: string; exp_alerts?: unknown[] }[] }[];
      }
    ).tests.flatMap((t) => t.alert_rule_test ?? []);
    for (const { alert } of alertRules()) {
      const mine = cases.filter((c) => c.alertname === alert);
      expect(
        mine.some((c) => (c.exp_alerts ?? []).length > 0),
        `${alert} shown firing`,
      ).toBe(true);
      expect(
        mine.some((c) => (c.exp_alerts ?? []).length === 0),
        `${alert} shown not firing`,
      ).toBe(true);
    }
  });

  it("prometheus.yml passes promtool check config, with the files it references present", async () => {
    const config = readYaml("prometheus.yml") as {
      rule_files: string[];
      scrape_configs: {
        job_name: string;
        authorization?: { credentials_file?: string };
        file_sd_configs?: { files: string[] }[];
      }[];
    };
    expect(config.rule_files).toEqual(["alerts.yml"]);
    const jobs = Object.fromEntries(config.scrape_configs.map((j) => [j.job_name, j]));
    // The job names the alerts (up{job=...}) and the dashboard use.
    expect(Object.keys(jobs).sort()).toEqual(["dtc-gateway", "dtc-twins"]);
    expect(jobs["dtc-twins"]?.file_sd_configs?.[0]?.files).toEqual(["data/prometheus-targets.json"]);
    const dir = mkdtempSync(path.join(tmpdir(), "dtc-promtool-"));
    try {
      copyFileSync(path.join(prometheusDir, "prometheus.yml"), path.join(dir, "prometheus.yml"));
      copyFileSync(path.join(prometheusDir, "alerts.yml"), path.join(dir, "alerts.yml"));
      for (const job of config.scrape_configs) {
        const file = job.authorization?.credentials_file;
        if (file) writeFileSync(path.join(dir, file), "a-reader-token\n");
      }
      const check = await promtool(["check", "config", "prometheus.yml"], dir);
      expect(check.output).toContain("is valid prometheus config file syntax");
      expect(check.code, check.output).toBe(0);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it("alertmanager.yml routes every severity to receivers it defines, and holds no secrets", () => {
    const am = readYaml("alertmanager.yml") as {
      route: { receiver: string; routes: { receiver: string; matchers: string[] }[] };
      receivers: { name: string }[];
    };
    const receivers = new Set(am.receivers.map((r) => r.name));
    for (const r of [am.route, ...am.route.routes]) expect(receivers, r.receiver).toContain(r.receiver);
    const matched = am.route.routes.flatMap((r) => r.matchers).join(" ");
    for (const severity of ["critical", "warning", "info"]) expect(matched).toContain(severity);
    const text = readFileSync(path.join(prometheusDir, "alertmanager.yml"), "utf8");
    expect(text).not.toMatch(/^\s*[a-z_]*(password|secret|api_key|credentials)\s*:/im);
  });
});

describe("deploy/grafana/dtc-fleet.json", () => {
  beforeEach((ctx) => {
    if (skip) ctx.skip(skip);
  });

  it("is a dashboard on its datasource variable with schema, node and twin variables", () => {
    const dashboard = JSON.parse(readFileSync(dashboardFile, "utf8"));
    const variables = (dashboard.templating.list as { name: string; type: string }[]).map((v) => v.name);
    expect(variables).toEqual(["datasource", "schema", "node", "twin"]);
    const panels = dashboard.panels as { id: number; type: string; datasource?: { uid: string } }[];
    expect(new Set(panels.map((p) => p.id)).size).toBe(panels.length);
    for (const p of panels.filter((p) => p.type !== "row")) expect(p.datasource?.uid).toBe(`\${datasource}`);
  });

  it("every PromQL expression parses (promtool check rules on them as recording rules)", async () => {
    const exprs = dashboardExpressions();
    expect(exprs.length).toBeGreaterThan(30);
    const dir = mkdtempSync(path.join(tmpdir(), "dtc-dashboard-"));
    try {
      const rules = exprs.map((expr, i) => ({ record: `dashboard:expr_${i}`, expr: substitute(expr) }));
      writeFileSync(path.join(dir, "dashboard.yml"), stringify({ groups: [{ name: "dashboard", rules }] }));
      const check = await promtool(["check", "rules", "dashboard.yml"], dir);
      expect(check.output, check.output).toContain(`SUCCESS: ${rules.length} rules found`);
      expect(check.code, check.output).toBe(0);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe("the alerts and the dashboard on a running gateway", () => {
  let gateway: Gateway;
  let sim: IiotDeviceSimulator;
  let exposition = "";
  let dir: string;

  beforeAll(async () => {
    dir = mkdtempSync(path.join(tmpdir(), "dtc-prometheus-"));
    gateway = await startTestGateway({ DTC_PROMETHEUS_SD_FILE: path.join(dir, "targets.json") });
    // An in-process twin, Entangled, so that the per-twin series and the delay histograms have samples.
    sim = new IiotDeviceSimulator({ id: "m1", brokerUrl: gateway.brokerUrl, rate: 10 });
    await sim.start();
    const res = await fetch(`${gateway.url}/api/instances`, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({
        package: "iiot-device",
        node: "local",
        id: "m1",
        configuration: { DEVICE_ID: "m1" },
        fidelity: { expectedUpdateRate: 10, odteWindow: 2, desiredTimeliness: 200 },
      }),
    });
    expect(res.status, await res.text()).toBe(201);
    exposition = await waitFor("the twin's series on /metrics", async () => {
      const answer = await fetch(`${gateway.url}/metrics`);
      const text = await answer.text();
      return answer.status === 200 && /^dtc_twin_update_delay_seconds_count\{/m.test(text) ? text : "";
    });
  });

  afterAll(async () => {
    await sim?.stop();
    await gateway?.close();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it("serves per-twin series for the running twin", () => {
    expect(exposition).toMatch(/^dtc_twin_lifecycle_state\{[^}]*twin="m1"[^}]*\} [01]$/m);
    expect(exposition).toMatch(/^dtc_twin_odte\{[^}]*twin="m1"[^}]*\} /m);
  });

  it("exports every metric the alerts and the dashboard name", () => {
    const exported = exportedNames(exposition);
    const used = [...alertRules().map((r) => r.expr), ...dashboardExpressions()].flatMap(metricNames);
    const unknown = [...new Set(used)].filter(
      (name) => !exported.has(name) && !PROMETHEUS_GENERATED.has(name),
    );
    expect(unknown).toEqual([]);
    // The families that matter: twins, directory, manager, nodes, HTTP, process.
    for (const prefix of [
      "dtc_twin_",
      "dtc_directory_",
      "dtc_manager_",
      "dtc_node_",
      "dtc_http_",
      "process_",
    ]) {
      expect(
        used.some((n) => n.startsWith(prefix)),
        prefix,
      ).toBe(true);
    }
  });

  describe("scraped by Prometheus with the example configuration", () => {
    let prometheus: ChildProcess | undefined;
    let api = "";
    const query = async (expr: string) => {
      const res = await fetch(`${api}/api/v1/query?query=${encodeURIComponent(expr)}`);
      return (await res.json()) as { status: string; error?: string; data?: { result: unknown[] } };
    };

    beforeAll(async () => {
      if (skip) return;
      // prometheus.yml as it is, pointed at this gateway (no token: DTC_AUTH is off) and its SD file.
      const config = readYaml("prometheus.yml") as Record<string, unknown> & {
        scrape_configs: Record<string, unknown>[];
      };
      delete config.alerting;
      config.global = { scrape_interval: "1s", evaluation_interval: "1s" };
      for (const job of config.scrape_configs) {
        delete job.authorization;
        if (job.job_name === "dtc-gateway") job.static_configs = [{ targets: [new URL(gateway.url).host] }];
        if (job.job_name === "dtc-twins") job.file_sd_configs = [{ files: [path.join(dir, "targets.json")] }];
      }
      writeFileSync(path.join(dir, "prometheus.yml"), stringify(config));
      copyFileSync(path.join(prometheusDir, "alerts.yml"), path.join(dir, "alerts.yml"));
      const port = await freePort();
      api = `http://127.0.0.1:${port}`;
      prometheus = spawn(
        prometheusBinary() ?? "prometheus",
        [
          `--config.file=${path.join(dir, "prometheus.yml")}`,
          `--storage.tsdb.path=${path.join(dir, "tsdb")}`,
          `--web.listen-address=127.0.0.1:${port}`,
          "--log.level=warn",
        ],
        { stdio: ["ignore", "ignore", "pipe"] },
      );
      let log = "";
      prometheus.stderr?.on("data", (chunk) => {
        log += String(chunk);
      });
      await waitFor(
        "Prometheus to have the twin's update delay rate (two scrapes)",
        async () => {
          if (prometheus?.exitCode != null) throw new Error(`prometheus exited: ${log}`);
          try {
            const answer = await query(
              'rate(dtc_twin_update_delay_seconds_count{job="dtc-gateway"}[1m]) > 0',
            );
            return (answer.data?.result.length ?? 0) > 0;
          } catch {
            return false; // not listening yet
          }
        },
        30_000,
      );
    });

    afterAll(async () => {
      if (prometheus && prometheus.exitCode === null) {
        const exited = once(prometheus, "exit");
        prometheus.kill("SIGTERM");
        await exited;
      }
    });

    beforeEach((ctx) => {
      if (skip) ctx.skip(skip);
    });

    it("evaluates every alerting rule on the real series without error", async () => {
      const rules = await waitFor("every rule evaluated", async () => {
        const res = await fetch(`${api}/api/v1/rules`);
        const groups = ((await res.json()) as { data: { groups: { rules: EvaluatedRule[] }[] } }).data.groups;
        const all = groups.flatMap((g) => g.rules);
        return all.length > 0 && all.every((r) => r.lastEvaluation > "0001-01-01T00:00:00Z")
          ? all
          : undefined;
      });
      expect(rules.map((r) => r.name).sort()).toEqual(
        alertRules()
          .map((r) => r.alert)
          .sort(),
      );
      for (const rule of rules) expect(rule.lastError ?? "", rule.name).toBe("");
      for (const rule of rules) expect(rule.health, rule.name).toBe("ok");
    });

    it("evaluates every dashboard expression without error, with data for the running twin", async () => {
      const empty: string[] = [];
      for (const expr of dashboardExpressions()) {
        const answer = await query(substitute(expr));
        expect(answer.error ?? "", expr).toBe("");
        expect(answer.status, expr).toBe("success");
        if ((answer.data?.result.length ?? 0) === 0) empty.push(expr);
      }
      // Panels a fresh gateway with one Entangled in-process twin fills.
      const filled = [
        "dtc_twin_lifecycle_state",
        "dtc_twin_odte",
        "dtc_twin_timeliness",
        "dtc_twin_reliability",
        "dtc_twin_availability",
        "dtc_twin_update_delay_seconds_bucket",
        "dtc_node_ready",
        "dtc_http_requests_total",
        "dtc_manager_instances",
        "process_resident_memory_bytes",
        "up",
      ];
      for (const name of filled) {
        expect(
          empty.filter((expr) => metricNames(expr).includes(name)),
          `empty panels of ${name}`,
        ).toEqual([]);
      }
    });
  });
});

interface EvaluatedRule {
  name: string;
  health: string;
  lastError?: string;
  lastEvaluation: string;
}
