import { defineConfig } from "vitest/config";

export default defineConfig({
  test: {
    include: ["test/**/*.test.ts"],
    testTimeout: 30_000,
    hookTimeout: 60_000,
    reporters: ["default", "./test/summary-reporter.ts"],
    // One temp root per run (TMPDIR of the workers); the teardown fails the run on what is left in it.
    globalSetup: ["./test/global-setup.ts"],
    // isolated-vm (the twins' function sandbox) asks Node 20+ to start without its startup snapshot.
    poolOptions: { forks: { execArgv: ["--no-node-snapshot"] } },
  },
});
