import type { Command } from "commander";
import { ApiClient } from "./client.js";
import { type ConnectionFlags, resolveConnection } from "./contexts.js";

/** What every command group gets: the client of the gateway the global flags point at. */
export interface Cli {
  program: Command;
  client(): ApiClient;
}

export function cliOf(program: Command): Cli {
  let client: ApiClient | undefined;
  return {
    program,
    client() {
      client ??= new ApiClient(resolveConnection(program.opts<ConnectionFlags>()));
      return client;
    },
  };
}
