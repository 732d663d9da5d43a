import type { Command } from "commander";
import { configPath, readContexts, writeContexts } from "./contexts.js";
import { usageError } from "./errors.js";
import { print, table } from "./output.js";
import type { Cli } from "./runtime.js";

/** dtc config: the contexts file ($DTC_CONFIG or ~/.config/dtc/config.yaml), as kubectl config does. */
export function registerConfig(cli: Cli): void {
  const config = cli.program
    .command("config")
    .description("Manage contexts (gateway URL + token) in the config file")
    .addHelpText(
      "after",
      `
Examples:
  dtc config set-context local --server http://127.0.0.1:8080 --token "$(cat data/admin.token)"
  dtc config use-context local
  dtc config get-contexts`,
    );

  config
    .command("set-context")
    .description("Create or change a context (and make it current if there is none)")
    .argument("<name>", "the context's name")
    .option("--server <url>", "the gateway's URL")
    .option("--token <token>", "the API token")
    .action((name: string, _opts: unknown, command: Command) => {
      // --server and --token are also the global flags: whichever took them.
      const opts = command.optsWithGlobals<{ server?: string; token?: string }>();
      const file = readContexts();
      const old = file.contexts[name];
      const server = opts.server ?? old?.server;
      if (server === undefined) throw usageError(`context "${name}" is new: --server is needed`);
      const token = opts.token ?? old?.token;
      file.contexts[name] = { server, ...(token ? { token } : {}) };
      file.currentContext ??= name;
      writeContexts(file);
      print(`context "${name}" ${old ? "changed" : "created"} in ${configPath()}`);
    });

  config
    .command("use-context")
    .description("Make a context the current one")
    .argument("<name>", "the context's name")
    .action((name: string) => {
      const file = readContexts();
      if (!file.contexts[name]) throw usageError(`no context "${name}" in ${configPath()}`);
      file.currentContext = name;
      writeContexts(file);
      print(`current context: ${name}`);
    });

  config
    .command("delete-context")
    .description("Remove a context")
    .argument("<name>", "the context's name")
    .action((name: string) => {
      const file = readContexts();
      if (!file.contexts[name]) throw usageError(`no context "${name}" in ${configPath()}`);
      delete file.contexts[name];
      if (file.currentContext === name) delete file.currentContext;
      writeContexts(file);
      print(`context "${name}" removed`);
    });

  config
    .command("current-context")
    .description("The current context's name")
    .action(() => {
      const current = readContexts().currentContext;
      if (current === undefined) throw usageError(`no current context in ${configPath()}`);
      print(current);
    });

  config
    .command("get-contexts")
    .description("The contexts (tokens not shown)")
    .action(() => {
      const file = readContexts();
      const rows = Object.entries(file.contexts).map(([name, c]) => ({ name, ...c }));
      print(
        rows.length === 0
          ? `No contexts in ${configPath()}.`
          : table(rows, [
              { header: "CURRENT", value: (r) => (r.name === file.currentContext ? "*" : "") },
              { header: "NAME", value: (r) => r.name },
              { header: "SERVER", value: (r) => r.server },
              { header: "TOKEN", value: (r) => (r.token ? "set" : "none") },
            ]),
      );
    });
}
