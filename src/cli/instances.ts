import type { Command } from "commander";
import { enc } from "./client.js";
import { usageError } from "./errors.js";
import { instanceColumns } from "./get.js";
import { print, table } from "./output.js";
import type { Cli } from "./runtime.js";
import { type Instance, parseDuration, type WaitOptions, waitForState, waitState } from "./wait.js";

/** dtc start|stop|restart|rm|move|snapshot|restore|clone: the manager's operations on instances. */

const withWait = (command: Command): Command =>
  command
    .option("--wait [state]", "wait until the instance is in this lifecycle state (default Entangled)")
    .option("--timeout <duration>", "how long --wait waits", "2m");

export function registerInstances(cli: Cli): void {
  const { program } = cli;
  const show = (instance: Instance) =>
    print(table([instance as unknown as Record<string, unknown>], instanceColumns()));
  const finish = async (instance: Instance, opts: WaitOptions) => {
    show(instance);
    const state = waitState(opts);
    if (state) await waitForState(cli.client(), [instance.id], state, parseDuration(opts.timeout ?? "2m"));
  };

  withWait(
    program
      .command("start")
      .description("Start a stopped instance again; with --package and --node, start a new one")
      .argument("<id>", "the instance")
      .option("--package <id>", "start a new instance of this package")
      .option("--node <id>", "on this node (with --package)", "local")
      .option("--set <name=value...>", "a configuration value of the new instance (may repeat)")
      .addHelpText(
        "after",
        "\nExamples:\n  dtc start press-1\n  dtc start press-2 --package iiot-device --node edge-1 --set DEVICE_ID=press-2 --wait",
      ),
  ).action(async (id: string, opts: { package?: string; node: string; set?: string[] } & WaitOptions) => {
    const client = cli.client();
    if (opts.package === undefined) {
      if (opts.set) throw usageError("--set needs --package (a new instance)");
      return finish(await client.post<Instance>(`/api/instances/${enc(id)}/start`), opts);
    }
    const configuration: Record<string, string> = {};
    for (const pair of opts.set ?? []) {
      const eq = pair.indexOf("=");
      if (eq < 1) throw usageError(`--set takes name=value, not ${JSON.stringify(pair)}`);
      configuration[pair.slice(0, eq)] = pair.slice(eq + 1);
    }
    await finish(
      await client.post<Instance>("/api/instances", {
        id,
        package: opts.package,
        node: opts.node,
        configuration,
      }),
      opts,
    );
  });

  program
    .command("stop")
    .description("Stop an instance (Done: detached from its physical twin), keeping what it stored")
    .argument("<id>", "the instance")
    .addHelpText("after", "\nExample:\n  dtc stop press-1")
    .action(async (id: string) => show(await cli.client().post<Instance>(`/api/instances/${enc(id)}/stop`)));

  withWait(
    program
      .command("restart")
      .description("Restart an instance fresh from its original configuration (same id and URLs)")
      .argument("<id>", "the instance")
      .addHelpText("after", "\nExample:\n  dtc restart press-1 --wait"),
  ).action(async (id: string, opts: WaitOptions) =>
    finish(await cli.client().post<Instance>(`/api/instances/${enc(id)}/restart`), opts),
  );

  program
    .command("rm")
    .alias("delete")
    .description("Remove instances and everything the DTC stored of them (their snapshots too)")
    .argument("<ids...>", "the instances")
    .addHelpText("after", "\nExample:\n  dtc rm press-1 press-2")
    .action(async (ids: string[]) => {
      for (const id of ids) {
        await cli.client().delete(`/api/instances/${enc(id)}`);
        print(`instance/${id} removed`);
      }
    });

  withWait(
    program
      .command("move")
      .description("Move an instance with its state to another node (same id, URLs and topics)")
      .argument("<id>", "the instance")
      .requiredOption("--node <id>", "the target node")
      .addHelpText("after", "\nExample:\n  dtc move press-1 --node edge-1 --wait"),
  ).action(async (id: string, opts: { node: string } & WaitOptions) =>
    finish(await cli.client().post<Instance>(`/api/instances/${enc(id)}/move`, { node: opts.node }), opts),
  );

  withWait(
    program
      .command("clone")
      .description("Start a copy of an instance, with its state and stored data, on a node")
      .argument("<id>", "the instance")
      .requiredOption("--node <id>", "where the copy runs")
      .option("--id <id>", "the copy's id (default: generated)")
      .addHelpText("after", "\nExample:\n  dtc clone press-1 --node local --id press-1-copy"),
  ).action(async (id: string, opts: { node: string; id?: string } & WaitOptions) =>
    finish(
      await cli.client().post<Instance>(`/api/instances/${enc(id)}/clone`, {
        node: opts.node,
        ...(opts.id ? { id: opts.id } : {}),
      }),
      opts,
    ),
  );

  program
    .command("snapshot")
    .description("Take a snapshot of an instance: its configuration, state and stored data")
    .argument("<id>", "the instance")
    .addHelpText("after", "\nExample:\n  dtc snapshot press-1\n  dtc get snapshots")
    .action(async (id: string) => {
      const s = await cli.client().post<{
        id: string;
        instance: string;
        lifecycle: string;
        history: { states: number; events: number };
      }>(`/api/instances/${enc(id)}/snapshots`);
      print(
        `snapshot/${s.id} taken of ${s.instance} (${s.lifecycle}; ${s.history.states} states, ${s.history.events} events)`,
      );
    });

  withWait(
    program
      .command("restore")
      .description("Run a snapshot's twin on a node: its own instance rolled back, or with --id a new one")
      .argument("<snapshot>", "the snapshot's id")
      .requiredOption("--node <id>", "where it runs")
      .option("--id <id>", "a new instance's id (default: the snapshot's own instance)")
      .addHelpText("after", "\nExample:\n  dtc restore press-1-20260101T120000Z --node local --wait"),
  ).action(async (snapshot: string, opts: { node: string; id?: string } & WaitOptions) =>
    finish(
      await cli.client().post<Instance>(`/api/snapshots/${enc(snapshot)}/restore`, {
        node: opts.node,
        ...(opts.id ? { id: opts.id } : {}),
      }),
      opts,
    ),
  );
}
