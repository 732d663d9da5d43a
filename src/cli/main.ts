#!/usr/bin/env node
/**
 * dtc: the command-line client of a dtc gateway (npx dtc in the checkout, dtc once installed with
 * npm i -g). Each command group is a module of src/cli; every failure ends as one `dtc: ...` line
 * and an exit code (src/cli/errors.ts).
 */
import { readFileSync } from "node:fs";
import { Command, CommanderError } from "commander";
import { errorMessage } from "../domain/errors.js";
import { projectRoot } from "../paths.js";
import { registerApply } from "./apply.js";
import { registerCompletion } from "./completion.js";
import { registerConfig } from "./config.js";
import { CliError, EXIT } from "./errors.js";
import { registerFind } from "./find.js";
import { registerGet } from "./get.js";
import { registerHistory } from "./history.js";
import { registerInstances } from "./instances.js";
import { cliOf } from "./runtime.js";
import { registerToken } from "./token.js";
import { registerTop } from "./top.js";

function version(): string {
  try {
    return (JSON.parse(readFileSync(`${projectRoot}/package.json`, "utf8")) as { version: string }).version;
  } catch {
    return "unknown";
  }
}

export function buildProgram(): Command {
  const program = new Command("dtc")
    .description("Command-line client of a dtc gateway (WoT digital twins)")
    .version(version(), "-V, --version")
    .option("--context <name>", "the context of the config file to use (env DTC_CONTEXT)")
    .option("--server <url>", "the gateway's URL (env DTC_SERVER; overrides the context)")
    .option("--token <token>", "the API token (env DTC_TOKEN; overrides the context)")
    .showHelpAfterError("(dtc --help for usage)")
    .exitOverride()
    .configureOutput({ outputError: (text, write) => write(`dtc: ${text.replace(/^error: /, "")}`) })
    .addHelpText(
      "after",
      `
Configuration: contexts in $DTC_CONFIG or ~/.config/dtc/config.yaml (dtc config --help).
Exit codes: 0 ok; 1 the gateway refused (4xx) or an operation failed; 2 usage error;
            3 cannot reach the gateway; 4 a --wait deadline passed.`,
    );
  const cli = cliOf(program);
  registerConfig(cli);
  registerApply(cli);
  registerGet(cli);
  registerInstances(cli);
  registerFind(cli);
  registerHistory(cli);
  registerTop(cli);
  registerToken(cli);
  registerCompletion(cli);
  return program;
}

/** Runs dtc with `argv` (after node and the script) and answers its exit code. */
export async function run(argv: readonly string[]): Promise<number> {
  const program = buildProgram();
  try {
    await program.parseAsync(argv, { from: "user" });
    return EXIT.ok;
  } catch (err) {
    if (err instanceof CommanderError) {
      // Help and version end with exit 0; every other commander error is a usage error (already shown).
      return err.exitCode === 0 ? EXIT.ok : EXIT.usage;
    }
    if (err instanceof CliError) {
      process.stderr.write(`dtc: ${err.message}\n${err.details.map((d) => `${d}\n`).join("")}`);
      return err.exitCode;
    }
    process.stderr.write(`dtc: ${errorMessage(err)}\n`);
    return EXIT.failed;
  }
}

// A closed pipe (dtc get ... | head) is not an error.
process.stdout.on("error", (err: NodeJS.ErrnoException) => {
  if (err.code === "EPIPE") process.exit(EXIT.ok);
});

const code = await run(process.argv.slice(2));
// Exit once stdout has drained into its pipe; long-lived handles (an SSE fetch, stdin) must not keep
// a finished command alive.
process.stdout.write("", () => process.exit(code));
