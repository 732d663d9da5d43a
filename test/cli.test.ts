import { spawn } from "node:child_process";
import { once } from "node:events";
import { mkdirSync, mkdtempSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { stringify } from "yaml";
import type { Gateway } from "../src/gateway.js";
import { IiotDeviceSimulator } from "../src/simulator/index.js";
import { type CliRun, cliMain, runDtc } from "./cli-run.js";
import { waitFor } from "./helpers.js";
import { adminToken, FAST, startTestGateway } from "./manager-client.js";

/**
 * The dtc CLI, the real binary (node dist/src/cli/main.js), against a real gateway with
 * authentication on: contexts, apply (idempotent, prune, round trip through get -o yaml, a bad
 * manifest changing nothing), get, find, query, describe, history, instance operations, tokens,
 * completion and the exit codes.
 */

const LABEL = { "dtc.apply/manifest": "plant" };
const doc = (kind: string, name: string, spec: Record<string, unknown>) => ({
  apiVersion: "dtc/v1",
  kind,
  metadata: { name, labels: LABEL },
  spec,
});
const edge = (name: string) =>
  doc("Node", name, {
    platform: "in-process",
    tier: "edge",
    capabilities: { cpu: 2, memory: 2048 },
    latencyMs: 1,
  });
const pkg = doc("Package", "press-pkg", { schema: "iiot-device", platform: "in-process" });
const press = (name: string, extra: Record<string, unknown> = {}) =>
  doc("Instance", name, {
    package: "press-pkg",
    node: "edge-1",
    configuration: { DEVICE_ID: name },
    fidelity: FAST,
    ...extra,
  });

describe("dtc, the CLI", () => {
  let gateway: Gateway;
  let dir: string;
  let env: Record<string, string>;
  const sims: IiotDeviceSimulator[] = [];
  const dtc = (args: string[], stdin?: string, extra: Record<string, string> = {}): Promise<CliRun> =>
    runDtc(args, { ...env, ...extra }, stdin);
  const ok = async (args: string[], stdin?: string): Promise<string> => {
    const run = await dtc(args, stdin);
    expect(run.code, `dtc ${args.join(" ")}: ${run.stderr}`).toBe(0);
    return run.stdout;
  };
  const manifest = (...docs: unknown[]) => {
    const file = join(dir, `m-${Math.random().toString(36).slice(2)}.yaml`);
    writeFileSync(file, docs.map((d) => stringify(d)).join("---\n"));
    return file;
  };
  const instances = async () =>
    (
      JSON.parse(await ok(["get", "instances", "-o", "json"])) as { items: { metadata: { name: string } }[] }
    ).items.map((d) => d.metadata.name);

  beforeAll(async () => {
    gateway = await startTestGateway({ DTC_AUTH: "on", DTC_STATUS_INTERVAL_MS: "200" });
    dir = mkdtempSync(join(tmpdir(), "dtc-cli-"));
    env = { HOME: dir, DTC_CONFIG: join(dir, "config.yaml") };
    const set = await runDtc(
      ["config", "set-context", "test", "--server", gateway.url, "--token", adminToken(gateway)],
      env,
    );
    expect(set.code, set.stderr).toBe(0);
  });

  afterAll(async () => {
    await Promise.all(sims.map((s) => s.stop()));
    await gateway?.close();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it("keeps contexts in a file only its owner reads; flags and environment override it", async () => {
    expect(statSync(env.DTC_CONFIG as string).mode & 0o777).toBe(0o600);
    expect(await ok(["config", "get-contexts"])).toMatch(/\*\s+test\s+http/);
    expect(await ok(["config", "current-context"])).toBe("test\n");
    expect(await ok(["get", "nodes"])).toMatch(/^ID\s+PLATFORM[\s\S]*\blocal\s+in-process/);
    // A flag over the file: a server nobody listens on is exit 3.
    const unreachable = await dtc(["get", "nodes", "--server", "http://127.0.0.1:9"]);
    expect(unreachable.code).toBe(3);
    expect(unreachable.stderr).toMatch(/^dtc: cannot reach the gateway: http:\/\/127\.0\.0\.1:9: .+\n$/);
    // The environment over the file: a bad token is refused (exit 1), as one line.
    const refused = await dtc(["get", "nodes"], undefined, { DTC_TOKEN: "not-a-token" });
    expect(refused.code).toBe(1);
    expect(refused.stderr).toMatch(/^dtc: Unauthorized: .+\n$/);
    const noContext = await dtc(["get", "nodes", "--context", "nope"]);
    expect(noContext.code).toBe(2);
    expect(noContext.stderr).toContain('no context "nope"');
  });

  it("has --help for every command, and usage errors are exit 2", async () => {
    for (const command of [
      [],
      ["apply"],
      ["get"],
      ["describe"],
      ["start"],
      ["stop"],
      ["restart"],
      ["rm"],
      ["move"],
      ["snapshot"],
      ["restore"],
      ["clone"],
      ["find"],
      ["query"],
      ["history"],
      ["top"],
      ["token"],
      ["token", "create"],
      ["config"],
      ["completion"],
    ]) {
      const help = await dtc([...command, "--help"]);
      expect(help.code, command.join(" ")).toBe(0);
      expect(help.stdout).toMatch(/^Usage: dtc/);
    }
    for (const bad of [
      ["get", "widgets"],
      ["get", "nodes", "-o", "xml"],
      ["apply"],
      ["frobnicate"],
      ["move", "x"],
    ]) {
      const run = await dtc(bad);
      expect(run.code, bad.join(" ")).toBe(2);
      expect(run.stderr).toMatch(/^dtc: /);
    }
  });

  it("applies a manifest; applying it again changes nothing", async () => {
    const file = manifest(edge("edge-1"), edge("edge-2"), pkg, press("press-1"));
    const dry = await ok(["apply", "-f", file, "--dry-run"]);
    expect(dry).toContain("instance/press-1 created (dry run)");
    expect(await instances()).toEqual([]);
    const first = await ok(["apply", "-f", file]);
    expect(first).toMatch(
      /node\/edge-1 created[\s\S]*package\/press-pkg created[\s\S]*instance\/press-1 created/,
    );
    expect(first).toMatch(/^changed/m);
    const second = await ok(["apply", "-f", file]);
    expect(second).not.toMatch(/created|updated|pruned/);
    expect(second).toMatch(/^no changes \(4 unchanged\)$/m);
    expect(await instances()).toEqual(["press-1"]);
    expect(await ok(["get", "instances"])).toMatch(/press-1\s+press-pkg\s+edge-1\s+running/);
  });

  it("round-trips: get -o yaml | apply -f - is all unchanged", async () => {
    for (const resource of ["nodes", "packages", "instances"]) {
      const yaml = await ok(["get", resource, "-o", "yaml"]);
      expect(yaml).toContain("apiVersion: dtc/v1");
      const back = await ok(["apply", "-f", "-"], yaml);
      expect(back, resource).toMatch(/^no changes/m);
    }
  });

  it("refuses a bad manifest whole, naming every error, and changes nothing", async () => {
    const before = await ok(["get", "instances", "-o", "json"]);
    const file = manifest(
      press("press-9", { package: "no-such-package" }),
      { apiVersion: "dtc/v1", kind: "Policy", metadata: { name: "p" }, spec: {} },
      edge("edge-3"),
    );
    const run = await dtc(["apply", "-f", file]);
    expect(run.code).toBe(1);
    const [first, ...rest] = run.stderr.trimEnd().split("\n");
    expect(first).toMatch(/^dtc: Bad Request: /);
    expect(rest.some((l) => l.includes("documents[0]") && l.includes("#1"))).toBe(true);
    expect(rest.some((l) => l.includes("documents[1]") && l.includes("Policy needs the orchestrator"))).toBe(
      true,
    );
    expect(await ok(["get", "instances", "-o", "json"])).toBe(before);
    expect(await ok(["get", "nodes"])).not.toContain("edge-3");
    // A file that is not YAML is refused before anything is sent.
    writeFileSync(join(dir, "broken.yaml"), "kind: [unclosed\n");
    const broken = await dtc(["apply", "-f", join(dir, "broken.yaml")]);
    expect(broken.code).toBe(1);
    expect(broken.stderr).toMatch(/^dtc: Bad Request: the manifest does not parse\n {2}.*broken\.yaml#1: /);
  });

  it("prunes what the manifest no longer names", async () => {
    // A directory: its manifests in name order (the node and package before the instance).
    const split = join(dir, "plant");
    mkdirSync(split);
    writeFileSync(
      join(split, "1-inventory.yaml"),
      [edge("edge-1"), pkg].map((d) => stringify(d)).join("---\n"),
    );
    writeFileSync(join(split, "2-instances.json"), JSON.stringify([press("press-1")]));
    writeFileSync(join(split, "README.md"), "not a manifest");
    const run = await ok(["apply", "-f", split, "--prune"]);
    expect(run).toContain("node/edge-2 pruned");
    expect(await ok(["get", "nodes"])).not.toContain("edge-2");
    expect(await instances()).toEqual(["press-1"]);
  });

  it("waits for Entangled with --wait, and a deadline that passes is exit 4", async () => {
    const late = await dtc([
      "apply",
      "-f",
      manifest(edge("edge-1"), pkg, press("press-1")),
      "--wait",
      "--timeout",
      "300ms",
    ]);
    expect(late.code).toBe(4);
    expect(late.stderr).toMatch(/^dtc: timed out: after \d+s, 1 of 1 not Entangled: press-1 \(\w+\)\n$/);
    // The physical twin, with a device token made by dtc itself.
    const secret = (await ok(["token", "create", "press-1", "--role", "device:press-1"])).trim();
    const sim = new IiotDeviceSimulator({
      id: "press-1",
      brokerUrl: gateway.brokerUrl,
      rate: 10,
      mqttOptions: { username: "press-1", password: secret },
    });
    sims.push(sim);
    await sim.start();
    await ok(["apply", "-f", manifest(edge("edge-1"), pkg, press("press-1")), "--wait", "--timeout", "30s"]);
    expect(await ok(["get", "instances", "press-1"])).toMatch(
      /press-1\s+press-pkg\s+edge-1\s+running\s+Entangled\s+[01]\.\d{3}/,
    );
  }, 40_000);

  it("finds twins with named queries and SPARQL", async () => {
    await waitFor(
      "press-1 found Entangled by dtc find",
      async () =>
        (
          await dtc(["find", "--schema", "iiot-device", "--min-odte", "0.5", "--state", "Entangled"])
        ).stdout.includes("press-1"),
      20_000,
    );
    expect(await ok(["find", "--state", "Entangled", "-o", "json"])).toContain("urn:dtc:twin:press-1");
    expect(await ok(["find", "--node", "edge-1"])).toContain("press-1");
    expect(await ok(["find", "--schema", "iiot-device", "--min-odte", "1.01"])).toBe("No twins found.\n");
    const bad = await dtc(["find", "--min-odte", "lots"]);
    expect(bad.code).toBe(1);
    expect(bad.stderr).toMatch(/^dtc: Bad Request: .*minOdte/);
    const query = await ok([
      "query",
      "SELECT ?t WHERE { GRAPH ?t { ?t a <https://w3id.org/dtc#DigitalTwin> } }",
    ]);
    expect(query).toMatch(/^T\nurn:dtc:twin:press-1$/m);
  }, 30_000);

  it("describes an instance and shows its lifecycle history; the Event History does not exist", async () => {
    const described = await ok(["describe", "instance", "press-1"]);
    expect(described).toMatch(/Lifecycle:\s+Entangled/);
    expect(described).toMatch(/Thing Description:\n {2}id:\s+urn:dtc:twin:press-1/);
    expect(described).toMatch(/Entanglement:\n {2}ODTE [01]\.\d{3} \(threshold/);
    expect(described).toMatch(/Lifecycle timeline:[\s\S]*Bound -> Entangled/);
    expect(described).toMatch(/Recent history:\n {2}\d{4}-/);
    expect(await ok(["history", "press-1"])).toMatch(/lifecycle {2}Bound -> Entangled/);
    const none = await dtc(["history"]);
    expect(none.code).toBe(1);
    expect(none.stderr).toMatch(/^dtc: no Event History: .*does not exist yet.*\n$/);
    const missing = await dtc(["describe", "instance", "ghost"]);
    expect(missing.code).toBe(1);
    expect(missing.stderr).toMatch(/^dtc: Not Found: .+\n$/);
  });

  it("watches with get -w: a change is printed as it happens", async () => {
    const child = spawn(process.execPath, [cliMain, "get", "instances", "-w", "--interval", "200ms"], {
      env: { PATH: process.env.PATH ?? "", ...env },
      stdio: ["ignore", "pipe", "pipe"],
    });
    let out = "";
    child.stdout.on("data", (c: Buffer) => {
      out += c.toString();
    });
    try {
      await waitFor("the first table", () => /press-1\s.*Entangled/.test(out));
      await ok(["stop", "press-1"]);
      await waitFor("the table again, press-1 Done", () => /press-1\s.*\bDone\b/.test(out));
    } finally {
      const exited = once(child, "exit");
      child.kill("SIGTERM");
      await exited;
    }
    expect(await ok(["start", "press-1", "--wait", "--timeout", "20s"])).toContain("press-1");
  }, 30_000);

  it("snapshots, stops, starts, clones and removes instances", async () => {
    expect(await ok(["snapshot", "press-1"])).toMatch(/^snapshot\/\S+ taken of press-1/);
    expect(await ok(["get", "snapshots"])).toMatch(/press-1\s+edge-1/);
    expect(await ok(["stop", "press-1"])).toMatch(/press-1\s.*\bDone\b/);
    expect(await ok(["start", "press-1"])).toContain("press-1");
    expect(await ok(["clone", "press-1", "--node", "local", "--id", "press-copy"])).toContain("press-copy");
    expect(await ok(["rm", "press-copy"])).toBe("instance/press-copy removed\n");
    const gone = await dtc(["rm", "press-copy"]);
    expect(gone.code).toBe(1);
    expect(gone.stderr).toMatch(/^dtc: Not Found: /);
  }, 30_000);

  it("manages tokens, and completes commands, resources and instance ids", async () => {
    expect(await ok(["token", "list"])).toMatch(/press-1\s+device:press-1/);
    expect(JSON.parse(await ok(["token", "whoami"]))).toMatchObject({ role: "admin" });
    expect(await ok(["completion", "bash"])).toContain("complete -o default -F _dtc dtc");
    expect((await ok(["__complete", "ge"])).split("\n")).toContain("get");
    expect((await ok(["__complete", "get", ""])).split("\n")).toEqual(
      expect.arrayContaining(["nodes", "instances"]),
    );
    expect((await ok(["__complete", "stop", "pr"])).trim()).toBe("press-1");
  });
});
