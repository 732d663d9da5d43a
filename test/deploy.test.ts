import { existsSync, readFileSync } from "node:fs";
import path from "node:path";
import { describe, expect, it } from "vitest";
import { parse } from "yaml";
import { ENVIRONMENT } from "../src/config.js";
import { projectRoot } from "../src/paths.js";

/**
 * The deploy files stay true to the code: the variables they set exist, the scripts they run have
 * sources, the paths they name exist. (No engine or compose needed: these are text checks.)
 */

const deploy = (name: string) => path.join(projectRoot, "deploy", name);
const read = (file: string) => readFileSync(file, "utf8");

interface Instruction {
  keyword: string;
  args: string;
}

/** A Dockerfile's instructions: comments dropped, continuation lines joined. */
function instructions(text: string): Instruction[] {
  const out: Instruction[] = [];
  let pending = "";
  for (const raw of text.split("\n")) {
    const line = raw.trim();
    if (line.startsWith("#") || (line === "" && pending === "")) continue;
    if (line.endsWith("\\")) {
      pending += `${line.slice(0, -1)} `;
      continue;
    }
    const whole = `${pending}${line}`.trim();
    pending = "";
    if (whole === "") continue;
    const [keyword = "", ...rest] = whole.split(/\s+/);
    out.push({ keyword: keyword.toUpperCase(), args: rest.join(" ") });
  }
  return out;
}

/** The exec-form arguments of ENTRYPOINT/CMD/HEALTHCHECK CMD, or the shell form as one string. */
function execForm(args: string): string[] {
  const json = args.replace(/^CMD\s+/i, "");
  return json.startsWith("[") ? (JSON.parse(json) as string[]) : [json];
}

const dtcVariables = (text: string) => [...new Set(text.match(/\bDTC_[A-Z0-9_]+\b/g) ?? [])];

const DOCKERFILES = {
  "gateway.Dockerfile": { script: "dist/src/main.js", source: "src/main.ts" },
  "twin.Dockerfile": { script: "dist/src/twin-main.js", source: "src/twin-main.ts" },
} as const;

describe.each(Object.entries(DOCKERFILES))("deploy/%s", (name, expected) => {
  const steps = instructions(read(deploy(name)));
  const runtime = steps.slice(steps.findLastIndex((s) => s.keyword === "FROM"));

  it("is a multi-stage build: a build stage, then the runtime from a fresh base", () => {
    const froms = steps.filter((s) => s.keyword === "FROM");
    expect(froms.length).toBeGreaterThanOrEqual(2);
    expect(froms[0]?.args).toMatch(/\sAS\s+build$/i);
    expect(runtime.filter((s) => s.keyword === "COPY").every((s) => s.args.includes("--from=build"))).toBe(
      true,
    );
  });

  it("runs as a user other than root", () => {
    const user = runtime.filter((s) => s.keyword === "USER").pop()?.args;
    expect(user).toBeDefined();
    expect(user).not.toMatch(/^(root|0)(:|$)/);
  });

  it("has a health check", () => {
    const check = runtime.find((s) => s.keyword === "HEALTHCHECK");
    expect(check?.args).toMatch(/\bCMD\b/);
    expect(check?.args).not.toMatch(/^NONE/i);
  });

  it(`runs ${expected.script}, built from ${expected.source}`, () => {
    const entry = runtime.find((s) => s.keyword === "ENTRYPOINT");
    const command = [
      ...execForm(entry?.args ?? "[]"),
      ...execForm(runtime.find((s) => s.keyword === "CMD")?.args ?? "[]"),
    ];
    const script = command.find((arg) => /^dist\/.*\.js$/.test(arg));
    expect(script).toBe(expected.script);
    const source = (script ?? "").replace(/^dist\//, "").replace(/\.js$/, ".ts");
    expect(source).toBe(expected.source);
    expect(existsSync(path.join(projectRoot, source)), `${source} is missing`).toBe(true);
  });

  it("copies into the runtime only what the build stage made or the repository has", () => {
    for (const step of runtime.filter((s) => s.keyword === "COPY")) {
      const sources = step.args
        .split(/\s+/)
        .filter((a) => !a.startsWith("--"))
        .slice(0, -1);
      for (const source of sources) {
        const inRepo = source.replace(/^\/src\//, "");
        // dist and node_modules are made by the build stage; the rest is in the repository.
        if (/^(dist|node_modules)$/.test(inRepo)) continue;
        expect(existsSync(path.join(projectRoot, inRepo)), `${name}: COPY ${source}`).toBe(true);
      }
    }
  });
});

describe("deploy/gateway.Dockerfile", () => {
  it("sets only variables the gateway reads", () => {
    const text = read(deploy("gateway.Dockerfile"));
    const unknown = dtcVariables(text).filter((v) => !(v in ENVIRONMENT));
    expect(unknown).toEqual([]);
    expect(text).toMatch(/process\.env\.DTC_PORT\b/);
  });
});

describe("deploy/twin.Dockerfile", () => {
  it("sets only variables the twin process reads", async () => {
    const { TWIN_ENVIRONMENT } = await import("../src/runtime/twin-process-config.js");
    const text = read(deploy("twin.Dockerfile"));
    const unknown = dtcVariables(text).filter((v) => !(v in TWIN_ENVIRONMENT) && !(v in ENVIRONMENT));
    expect(unknown).toEqual([]);
  });
});

interface ComposeService {
  image?: string;
  build?: { context?: string; dockerfile?: string };
  environment?: Record<string, unknown> | string[];
  volumes?: string[];
  depends_on?: Record<string, { condition?: string }>;
  healthcheck?: { test?: unknown };
  group_add?: string[];
}

describe("deploy/docker-compose.yml", () => {
  const text = read(deploy("docker-compose.yml"));
  const compose = parse(text) as {
    services: Record<string, ComposeService>;
    networks?: Record<string, unknown>;
  };
  const services = compose.services;

  const environmentKeys = (service: ComposeService): string[] =>
    Array.isArray(service.environment)
      ? service.environment.map((e) => e.split("=")[0] ?? "")
      : Object.keys(service.environment ?? {});

  it("has the gateway, mosquitto and Virtuoso", () => {
    expect(Object.keys(services).sort()).toEqual(["gateway", "mosquitto", "virtuoso"]);
  });

  it("sets only variables the gateway reads, on the gateway", () => {
    const unknown = dtcVariables(text).filter((v) => !(v in ENVIRONMENT));
    expect(unknown).toEqual([]);
    for (const [name, service] of Object.entries(services)) {
      const keys = environmentKeys(service).filter((k) => k.startsWith("DTC_"));
      if (name !== "gateway") expect(keys, name).toEqual([]);
    }
  });

  it("points the gateway at mosquitto and at Virtuoso's authenticated endpoint with the dba password", () => {
    const env = (services.gateway?.environment ?? {}) as Record<string, string>;
    expect(env.DTC_MQTT_URL).toBe("mqtt://mosquitto:1883");
    expect(env.DTC_SPARQL_QUERY_URL).toBe("http://virtuoso:8890/sparql-auth");
    expect(env.DTC_SPARQL_UPDATE_URL).toBe("http://virtuoso:8890/sparql-auth");
    expect(env.DTC_SPARQL_USER).toBe("dba");
    const dba = ((services.virtuoso?.environment ?? {}) as Record<string, string>).DBA_PASSWORD;
    expect(env.DTC_SPARQL_PASSWORD).toBe(dba);
  });

  it("builds the gateway from the repository with deploy/gateway.Dockerfile", () => {
    const build = services.gateway?.build;
    expect(path.resolve(projectRoot, "deploy", build?.context ?? "")).toBe(projectRoot);
    expect(build?.dockerfile).toBe("deploy/gateway.Dockerfile");
    expect(existsSync(path.join(projectRoot, build?.dockerfile ?? ""))).toBe(true);
  });

  it("mounts files that exist, and the Docker socket into the gateway with the socket's group", () => {
    for (const service of Object.values(services)) {
      for (const volume of service.volumes ?? []) {
        const source = volume.split(":")[0] ?? "";
        if (source.startsWith("."))
          expect(existsSync(path.join(projectRoot, "deploy", source)), volume).toBe(true);
      }
    }
    expect(services.gateway?.volumes).toContain("/var/run/docker.sock:/var/run/docker.sock");
    expect(services.gateway?.group_add?.[0]).toMatch(/^\$\{DOCKER_GID\b/);
  });

  it("starts the gateway once its broker and store are healthy", () => {
    const dependsOn = services.gateway?.depends_on ?? {};
    expect(Object.keys(dependsOn).sort()).toEqual(["mosquitto", "virtuoso"]);
    for (const [name, dependency] of Object.entries(dependsOn)) {
      expect(dependency.condition, name).toBe("service_healthy");
      expect(services[name]?.healthcheck?.test, name).toBeDefined();
    }
  });

  it("names its network, so that twin containers can join it", () => {
    expect(compose.networks?.default).toEqual({ name: "dtc" });
  });

  it("has every variable it interpolates in deploy/env.example", () => {
    const example = read(deploy("env.example"));
    const defined = new Set([...example.matchAll(/^([A-Z_][A-Z0-9_]*)=/gm)].map((m) => m[1]));
    // ${VAR}, ${VAR:-default}, ${VAR:?message}; $$ escapes a dollar sign.
    const used = [...text.replaceAll("$$", "").matchAll(/\$\{([A-Z_][A-Z0-9_]*)/g)].map((m) => m[1]);
    expect([...new Set(used)].filter((v) => !defined.has(v))).toEqual([]);
    expect(dtcVariables(example).filter((v) => !(v in ENVIRONMENT))).toEqual([]);
  });
});

describe(".dockerignore", () => {
  it("keeps the host's node_modules and dist out of the build context, and the build's sources in", () => {
    const patterns = read(path.join(projectRoot, ".dockerignore"))
      .split("\n")
      .map((l) => l.trim())
      .filter((l) => l !== "" && !l.startsWith("#"));
    expect(patterns).toEqual(expect.arrayContaining(["**/node_modules", "dist", ".git"]));
    // tsconfig.build.json compiles src/, bench/ and some test helpers: none may be ignored.
    const build = JSON.parse(read(path.join(projectRoot, "tsconfig.build.json"))) as {
      include: string[];
      files: string[];
    };
    for (const needed of [...build.include, ...build.files]) {
      const top = needed.split("/")[0] ?? "";
      expect(
        patterns.filter((p) => p === top || p === needed),
        needed,
      ).toEqual([]);
    }
  });
});
