import { Option } from "commander";
import { usageError } from "./errors.js";
import { age, json, outputFormat, print, render, table, yaml } from "./output.js";
import type { Cli } from "./runtime.js";
import { parseDuration } from "./wait.js";

/** dtc token: the gateway's API tokens (/api/tokens, admin) and who the current one is. */

interface TokenView {
  id: string;
  name: string;
  role: string;
  created: string;
  expires?: string;
}

export function registerToken(cli: Cli): void {
  const token = cli.program
    .command("token")
    .description("Create, list and revoke API tokens; show who the current token is")
    .addHelpText(
      "after",
      `
Examples:
  dtc token create ci --role operator --ttl 30d
  dtc token list
  dtc token revoke 3f2a...
  dtc token whoami`,
    );

  token
    .command("create")
    .description("Create a token (its secret is shown once)")
    .argument("<name>", "what it is for")
    .requiredOption("--role <role>", "reader, operator, admin or device:{twin id}")
    .option("--ttl <duration>", "its life (e.g. 12h, 30d; default: until revoked)")
    .addOption(
      new Option("-o, --output <format>", "the secret alone (default), json or yaml").choices([
        "secret",
        "json",
        "yaml",
      ]),
    )
    .action(async (name: string, opts: { role: string; ttl?: string; output?: string }) => {
      let ttlSeconds: number | undefined;
      if (opts.ttl !== undefined) {
        const days = /^(\d+)d$/.exec(opts.ttl);
        ttlSeconds = days ? Number(days[1]) * 86_400 : Math.ceil(parseDuration(opts.ttl) / 1000);
        if (ttlSeconds < 1) throw usageError("--ttl must be at least 1s");
      }
      const created = await cli.client().post<TokenView & { token: string }>("/api/tokens", {
        name,
        role: opts.role,
        ...(ttlSeconds ? { ttlSeconds } : {}),
      });
      if (opts.output === "json") print(json(created));
      else if (opts.output === "yaml") print(yaml(created));
      else print(created.token);
    });

  token
    .command("list")
    .description("The tokens (never their secrets)")
    .addOption(
      new Option("-o, --output <format>", "table, json or yaml")
        .choices(["table", "json", "yaml"])
        .default("table"),
    )
    .action(async (opts: { output: string }) => {
      const tokens = await cli.client().get<TokenView[]>("/api/tokens");
      print(
        render(outputFormat(opts.output), tokens, () =>
          table(tokens, [
            { header: "ID", value: (t) => t.id },
            { header: "NAME", value: (t) => t.name },
            { header: "ROLE", value: (t) => t.role },
            { header: "AGE", value: (t) => age(t.created) },
            { header: "EXPIRES", value: (t) => t.expires },
          ]),
        ),
      );
    });

  token
    .command("revoke")
    .description("Revoke a token")
    .argument("<id>", "the token's id (dtc token list)")
    .action(async (id: string) => {
      await cli.client().delete(`/api/tokens/${encodeURIComponent(id)}`);
      print(`token/${id} revoked`);
    });

  token
    .command("whoami")
    .description("Who the gateway takes the current token for")
    .action(async () => print(json(await cli.client().get("/api/whoami"))));
}
