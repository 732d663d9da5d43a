import { CliError, EXIT } from "./errors.js";
import { type TwinHistory, twinHistory, when } from "./get.js";
import { print } from "./output.js";
import type { Cli } from "./runtime.js";
import { parseDuration } from "./wait.js";

/**
 * dtc history: the orchestrator's Event History does not exist yet; what there is, is each twin's
 * own history (its `history` property): its lifecycle changes, and with --all every event it kept.
 */

type TwinEvent = TwinHistory["events"][number];

function line(e: TwinEvent): string {
  const d = e.data ?? {};
  if (e.type === "lifecycleChanged") {
    return `${when(e.at)}  lifecycle  ${String(d.from ?? "?")} -> ${String(d.to ?? "?")}${d.event ? `  (${String(d.event)})` : ""}`;
  }
  return `${when(e.at)}  ${e.type}  ${JSON.stringify(d)}`;
}

export function registerHistory(cli: Cli): void {
  cli.program
    .command("history")
    .description("An instance's lifecycle history (the orchestrator's Event History does not exist yet)")
    .argument("[instance]", "the instance")
    .option("-f, --follow", "keep printing new entries (Ctrl-C ends)")
    .option("--all", "every event the twin kept, not only lifecycle changes")
    .option("--interval <duration>", "how often --follow looks", "1s")
    .addHelpText(
      "after",
      `
Without an instance it fails (exit 1): the gateway has no Event History of its own yet.

Examples:
  dtc history press-1
  dtc history press-1 -f --all`,
    )
    .action(async (id: string | undefined, opts: { follow?: boolean; all?: boolean; interval: string }) => {
      if (id === undefined) {
        throw new CliError(
          EXIT.failed,
          "no Event History: the orchestrator's Event History does not exist yet; `dtc history INSTANCE` shows an instance's lifecycle history",
        );
      }
      const intervalMs = parseDuration(opts.interval);
      const client = cli.client();
      // Fails as the API does when there is no such instance (404).
      await client.get(`/api/instances/${encodeURIComponent(id)}`);
      const seen = new Set<string>();
      const printNew = async (): Promise<boolean> => {
        const history = await twinHistory(client, id);
        if (!history) return false;
        for (const e of history.events) {
          const key = `${e.at}|${e.type}|${JSON.stringify(e.data)}`;
          if (seen.has(key)) continue;
          seen.add(key);
          if (opts.all || e.type === "lifecycleChanged") print(line(e));
        }
        return true;
      };
      if (!(await printNew()) && !opts.follow) {
        throw new CliError(EXIT.failed, `no history: no twin runs for instance ${id} now`);
      }
      while (opts.follow) {
        await new Promise((r) => setTimeout(r, intervalMs));
        await printNew();
      }
    });
}
