// The index worker's entry when the directory runs from its TypeScript sources (vitest, tsx): Node 20
// cannot load .ts in a worker, and `execArgv: ["--import", "tsx"]` is not applied to a worker's entry
// module there, so this registers tsx's loader (a devDependency) and then loads the worker module.
import { register } from "tsx/esm/api";

register();
await import("./index-worker.ts");
