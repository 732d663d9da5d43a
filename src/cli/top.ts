import { createParser } from "eventsource-parser";
import { errorMessage } from "../domain/errors.js";
import { age, table } from "./output.js";
import type { Cli } from "./runtime.js";
import { type Instance, parseDuration } from "./wait.js";

/**
 * dtc top: a live table of the instances' lifecycle and entanglement. It redraws at once on each
 * event of the directory's Server-Sent Events stream (/events: TDs created, updated, deleted, i.e.
 * twins started, moved, removed), and every --interval for the figures, which the gateway has no
 * event stream for. q or Ctrl-C ends it.
 */

const CLEAR = "\x1b[H\x1b[2J";
const HIDE_CURSOR = "\x1b[?25l";
const SHOW_CURSOR = "\x1b[?25h";

function screen(server: string, instances: Instance[], sse: string, width: number): string {
  const counts = new Map<string, number>();
  for (const i of instances) counts.set(i.lifecycle, (counts.get(i.lifecycle) ?? 0) + 1);
  const header = `dtc top - ${server} - ${new Date().toISOString().slice(11, 19)} - ${instances.length} instances${
    counts.size ? `: ${[...counts].map(([s, n]) => `${n} ${s}`).join(", ")}` : ""
  } - events: ${sse}`;
  const rows = [...instances].sort((a, b) => a.id.localeCompare(b.id));
  const body = table(rows, [
    { header: "ID", value: (i) => i.id },
    { header: "NODE", value: (i) => i.node },
    { header: "LIFECYCLE", value: (i) => i.lifecycle },
    { header: "ODTE", value: (i) => i.entanglement?.odte.toFixed(3) },
    { header: "T", value: (i) => i.entanglement?.timeliness },
    { header: "R", value: (i) => i.entanglement?.reliability },
    { header: "A", value: (i) => i.entanglement?.availability },
    { header: "UPDATES", value: (i) => i.entanglement?.updates },
    { header: "AGE", value: (i) => age(i.createdAt) },
    { header: "PROBLEM", value: (i) => i.failed },
  ]);
  const lines = [
    header.slice(0, width),
    "",
    ...body.split("\n").map((l) => l.slice(0, width)),
    "",
    "q: quit",
  ];
  return lines.join("\n");
}

export function registerTop(cli: Cli): void {
  cli.program
    .command("top")
    .description("A live table of the instances: lifecycle state and ODTE (q quits)")
    .option("--interval <duration>", "how often the figures are refreshed", "1s")
    .addHelpText("after", "\nExample:\n  dtc top --interval 500ms")
    .action(async (opts: { interval: string }) => {
      const intervalMs = parseDuration(opts.interval);
      const client = cli.client();
      // The first read fails as any command does (unreachable: 3; refused: 1).
      let instances = await client.get<Instance[]>("/api/instances");
      let sse = "connecting";
      let lastError: string | undefined;
      const out = process.stdout;
      const draw = () => {
        const text = screen(client.server, instances, sse, out.columns || 120);
        out.write(`${CLEAR}${text}${lastError ? `\n${lastError}` : ""}\n`);
      };
      const stop = new AbortController();
      let refreshing = false;
      const refresh = async () => {
        if (refreshing || stop.signal.aborted) return;
        refreshing = true;
        try {
          instances = await client.get<Instance[]>("/api/instances");
          lastError = undefined;
        } catch (err) {
          lastError = `dtc: ${errorMessage(err)}`;
        } finally {
          refreshing = false;
        }
        if (!stop.signal.aborted) draw();
      };

      const done = new Promise<void>((resolve) => {
        stop.signal.addEventListener("abort", () => resolve(), { once: true });
      });
      const quit = () => stop.abort();
      process.once("SIGINT", quit);
      process.once("SIGTERM", quit);
      const stdin = process.stdin;
      if (stdin.isTTY) stdin.setRawMode(true);
      stdin.resume();
      const onKey = (chunk: Buffer) => {
        // One read may hold several keys (typed fast, or behind a terminal's own report): any q quits.
        const keys = chunk.toString();
        if (keys.includes("q") || keys.includes("Q") || keys.includes("\x03") || keys === "\x1b") quit();
      };
      stdin.on("data", onKey);
      stdin.once("end", quit);

      if (out.isTTY) out.write(HIDE_CURSOR);
      draw();
      const timer = setInterval(() => void refresh(), intervalMs);
      void follow(client.url("/events"), client.headers({ Accept: "text/event-stream" }), stop.signal, {
        onOpen: () => {
          sse = "live";
          void refresh();
        },
        onEvent: () => void refresh(),
        onClosed: (why) => {
          sse = `lost (${why}), retrying`;
          draw();
        },
      });
      await done;
      clearInterval(timer);
      stdin.off("data", onKey);
      if (stdin.isTTY) stdin.setRawMode(false);
      stdin.pause();
      if (out.isTTY) out.write(SHOW_CURSOR);
      out.write("\n");
    });
}

/** Follows an SSE stream, reconnecting after 2 s when it ends, until `signal` aborts. */
async function follow(
  url: string,
  headers: Record<string, string>,
  signal: AbortSignal,
  on: { onOpen(): void; onEvent(): void; onClosed(why: string): void },
): Promise<void> {
  let lastId: string | undefined;
  while (!signal.aborted) {
    let why = "ended";
    try {
      const res = await fetch(url, {
        headers: { ...headers, ...(lastId ? { "Last-Event-ID": lastId } : {}) },
        signal,
      });
      if (!res.ok || !res.body) {
        await res.body?.cancel();
        why = `HTTP ${res.status}`;
      } else {
        on.onOpen();
        const parser = createParser({
          onEvent: (event) => {
            if (event.id) lastId = event.id;
            on.onEvent();
          },
        });
        const decoder = new TextDecoder();
        for await (const chunk of res.body)
          parser.feed(decoder.decode(chunk as Uint8Array, { stream: true }));
      }
    } catch (err) {
      if (signal.aborted) return;
      why = errorMessage(err);
    }
    if (signal.aborted) return;
    on.onClosed(why);
    await new Promise((r) => setTimeout(r, 2000));
  }
}
