import { existsSync, readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { errorMessage } from "./domain/errors.js";

/**
 * The project root (where package.json, ontology/ and thing-models/ live). Found by walking up
 * from this module, so it is the same whether code runs from src/ (tests) or dist/src/ (build).
 */
function findProjectRoot(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (;;) {
    const manifest = join(dir, "package.json");
    if (existsSync(manifest) && JSON.parse(readFileSync(manifest, "utf8")).name === "dtc") return dir;
    const parent = dirname(dir);
    if (parent === dir) throw new Error("dtc: cannot find the project root (package.json named 'dtc')");
    dir = parent;
  }
}

export const projectRoot = findProjectRoot();
export const ontologyDir = join(projectRoot, "ontology");
export const thingModelsDir = join(projectRoot, "thing-models");

/** Reads and parses a JSON file, naming the file in the error when it is not valid JSON. */
export function readJsonFile(path: string): unknown {
  const text = readFileSync(path, "utf8");
  try {
    return JSON.parse(text);
  } catch (err) {
    throw new Error(`${path}: not valid JSON: ${errorMessage(err)}`);
  }
}

export const packageVersion: string = (readJsonFile(join(projectRoot, "package.json")) as { version: string })
  .version;
