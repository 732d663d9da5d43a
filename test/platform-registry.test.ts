import { readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import { nodeInput, packageInput } from "../src/manager/model.js";
import {
  PLATFORM_REGISTRY,
  PLATFORMS,
  platformIndividual,
  platformPlugin,
} from "../src/platforms/registry.js";

const ontology = readFileSync(new URL("../ontology/dtc.ttl", import.meta.url), "utf8");
const node = (platform: string, endpoint?: Record<string, unknown>) => ({
  id: "n1",
  platform,
  tier: "edge",
  capabilities: { cpu: 1, memory: 512 },
  ...(endpoint ? { endpoint } : {}),
});

describe("the platform registry", () => {
  it("names each platform once, and the API takes exactly those", () => {
    expect(new Set(PLATFORMS).size).toBe(PLATFORM_REGISTRY.length);
    for (const platform of PLATFORMS) expect(nodeInput.safeParse(node(platform)).success).toBe(true);
    const refused = nodeInput.safeParse(node("swarm"));
    expect(refused.success).toBe(false);
  });

  it("gives every platform an individual of the dtc ontology", () => {
    for (const platform of PLATFORMS) {
      const individual = platformIndividual(platform);
      expect(ontology).toMatch(new RegExp(`^dtc:${individual} a dtc:Platform`, "m"));
    }
    expect(() => platformIndividual("swarm")).toThrow(/no platform named swarm/);
  });

  it("checks a node's endpoint with its platform's schema, naming the field", () => {
    const bad = nodeInput.safeParse(node("docker", { socketPath: "relative/path" }));
    expect(bad.success).toBe(false);
    expect(bad.error?.issues.map((i) => i.path.join("."))).toContain("endpoint.socketPath");
    // A platform without an endpoint schema takes what it is given.
    expect(platformPlugin("in-process")?.endpoint).toBeUndefined();
    expect(nodeInput.safeParse(node("in-process", { anything: 1 })).success).toBe(true);
  });

  it("asks packages for the artefact their platform runs", () => {
    const pkg = (platform: string, artefact: Record<string, string>) => ({
      id: "p1",
      schema: "iiot-device",
      platform,
      artefact,
    });
    for (const plugin of PLATFORM_REGISTRY) {
      const withImage = packageInput.safeParse(pkg(plugin.name, { image: "dtc/twin:1" }));
      const withModule = packageInput.safeParse(pkg(plugin.name, { module: "dtc:twin" }));
      expect(withImage.success).toBe(plugin.artefact === "image");
      expect(withModule.success).toBe(plugin.artefact === "module");
    }
  });
});
