import cliProgress from "cli-progress";
import type { EntanglementFigures } from "../domain/entanglement.js";
import type { ApiClient } from "./client.js";
import { CliError, EXIT, usageError } from "./errors.js";

/** An instance as GET /api/instances answers it (the members the CLI uses). */
export interface Instance {
  id: string;
  package: string;
  schema: string;
  node: string;
  platform: string;
  desired: string;
  lifecycle: string;
  configuration: Record<string, unknown>;
  entanglement?: EntanglementFigures;

  failed?: string;
  createdAt: string;
  updatedAt: string;
  origin?: { clonedFrom?: string; restoredFrom?: string };
  td?: Record<string, unknown>;
}

/** "90s", "2m", "500ms", "1h"; a bare number is seconds. */
export function parseDuration(text: string): number {
  const match = /^(\d+(?:\.\d+)?)(ms|s|m|h)?$/.exec(text.trim());
  if (!match) throw usageError(`not a duration: ${JSON.stringify(text)} (e.g. 30s, 2m, 500ms)`);
  const n = Number(match[1]);
  const unit = match[2] ?? "s";
  return Math.round(n * { ms: 1, s: 1000, m: 60_000, h: 3_600_000 }[unit as "ms" | "s" | "m" | "h"]);
}

/**
 * A progress bar on stderr when it is a terminal (never in pipes and logs): for long work the
 * gateway reports as it goes (instances reaching a state).
 */
export function progressBar(total: number, label: string): { update(n: number): void; stop(): void } {
  if (!process.stderr.isTTY || total === 0) return { update() {}, stop() {} };
  const bar = new cliProgress.SingleBar(
    {
      format: `${label} [{bar}] {value}/{total} {duration_formatted}`,
      stream: process.stderr,
      hideCursor: true,
    },
    cliProgress.Presets.shades_classic,
  );
  bar.start(total, 0);
  return { update: (n) => bar.update(n), stop: () => bar.stop() };
}

/**
 * Polls the instances until each is in `state` (a lifecycle state), with a progress bar; past the
 * deadline, exit 4 naming those that are not.
 */
export async function waitForState(
  client: ApiClient,
  ids: readonly string[],
  state: string,
  timeoutMs: number,
): Promise<void> {
  if (ids.length === 0) return;
  const wanted = new Set(ids);
  const deadline = Date.now() + timeoutMs;
  const bar = progressBar(ids.length, `waiting for ${state}`);
  try {
    for (;;) {
      const all = await client.get<Instance[]>("/api/instances");
      const states = new Map(all.filter((i) => wanted.has(i.id)).map((i) => [i.id, i.lifecycle]));
      const pending = ids.filter((id) => states.get(id) !== state);
      bar.update(ids.length - pending.length);
      if (pending.length === 0) return;
      if (Date.now() > deadline) {
        const shown = pending.slice(0, 10).map((id) => `${id} (${states.get(id) ?? "gone"})`);
        throw new CliError(
          EXIT.timeout,
          `timed out: after ${Math.round(timeoutMs / 1000)}s, ${pending.length} of ${ids.length} not ${state}: ${shown.join(", ")}${pending.length > 10 ? ", ..." : ""}`,
        );
      }
      await new Promise((r) => setTimeout(r, 250));
    }
  } finally {
    bar.stop();
  }
}

/** The --wait and --timeout options' values. */
export interface WaitOptions {
  wait?: boolean | string;
  timeout?: string;
}

export const waitState = (o: WaitOptions): string | undefined =>
  o.wait === undefined || o.wait === false ? undefined : o.wait === true ? "Entangled" : o.wait;
