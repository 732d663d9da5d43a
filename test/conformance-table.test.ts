import { readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { projectRoot } from "../src/paths.js";

/** The README's WoT Discovery conformance table stays in step with the W3C assertion list. */
describe("README conformance table", () => {
  const readme = readFileSync(join(projectRoot, "README.md"), "utf8");
  const tsv = readFileSync(join(projectRoot, "ontology/w3c/wot-discovery-assertions.tsv"), "utf8");

  it("lists every MUST assertion of WoT Discovery once, and nothing else", () => {
    const musts = tsv
      .split("\n")
      .slice(1)
      .map((line) => line.split("\t"))
      .filter(([, level]) => level?.includes("MUST"))
      .map(([id]) => id as string);
    expect(musts.length).toBeGreaterThan(70);
    const section = readme.split("### WoT Discovery conformance")[1]?.split("\n## ")[0] ?? "";
    const rows = section.split("\n").filter((line) => line.startsWith("| `"));
    const listed = rows.flatMap((row) =>
      [...(row.split(" | ")[0] ?? "").matchAll(/`([a-z0-9-]+)`/g)].map((m) => m[1]),
    );
    expect([...listed].sort()).toEqual([...musts].sort());
  });
});
