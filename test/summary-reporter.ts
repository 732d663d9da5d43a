import { writeSync } from "node:fs";
import type { Reporter, TestModule } from "vitest/node";

/**
 * Ends the run with one plain line, "tests: N passed, N failed, N skipped", that CI reads, and lists
 * every skipped test with its reason (ctx.skip(note)) so a skip is never silent.
 */
export default class SummaryReporter implements Reporter {
  onTestRunEnd(modules: ReadonlyArray<TestModule>): void {
    const counts = { passed: 0, failed: 0, skipped: 0 };
    const skipped: string[] = [];
    for (const module of modules) {
      for (const test of module.children.allTests()) {
        const result = test.result();
        if (result.state === "passed") counts.passed++;
        else if (result.state === "failed") counts.failed++;
        else if (result.state === "skipped") {
          counts.skipped++;
          skipped.push(
            `  SKIPPED ${module.moduleId.split("/test/").pop()} > ${test.fullName}${result.note ? `: ${result.note}` : ""}`,
          );
        }
      }
      // A module that failed to load has no tests to count: count it as a failure.
      if (module.state() === "failed" && [...module.children.allTests()].length === 0) counts.failed++;
    }
    const list = skipped.length > 0 ? `\n${skipped.length} test(s) skipped:\n${skipped.join("\n")}\n` : "";
    const line = `${list}\ntests: ${counts.passed} passed, ${counts.failed} failed, ${counts.skipped} skipped\n`;
    // After vitest's own summary, so that it is the closing line of the run.
    process.once("exit", () => writeSync(1, line));
  }
}
