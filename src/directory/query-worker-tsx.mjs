// The query worker's entry when the directory runs from its TypeScript sources (vitest, tsx): see
// index-worker-tsx.mjs.
import { register } from "tsx/esm/api";

register();
await import("./query-worker.ts");
