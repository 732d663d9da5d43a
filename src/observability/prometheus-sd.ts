import { mkdir, rename, rm, writeFile } from "node:fs/promises";
import { dirname } from "node:path";
import { errorMessage } from "../domain/errors.js";
import type { Logger } from "../logger.js";
import type { TwinLabels } from "./twin-metrics.js";

/**
 * Prometheus file-based service discovery (file_sd_configs) of the twin processes: one target per
 * twin that runs in a process of its own (a container), at the management port the gateway reaches
 * it on, labelled like its series (twin, schema, node, platform). In-process twins have no target:
 * their series are on the gateway's own /metrics.
 *
 * The file is replaced whole (a temp file renamed over it: Prometheus never reads half of it), at
 * most once per debounce interval however many twins start, move or stop meanwhile, and only when
 * its content changes.
 */

/** One twin process to scrape. */
export interface ScrapeTarget extends TwinLabels {
  /** The base URL of its management port: Prometheus scrapes `${url}/metrics`. */
  url: string;
}

/** One entry of a file_sd_configs file. */
export interface FileSdEntry {
  targets: string[];
  labels: Record<string, string>;
}

export interface PrometheusSdOptions {
  file: string;
  /** The twin processes now. */
  targets: () => Iterable<ScrapeTarget>;
  /** Shortest time between two writes, ms (default 500). */
  debounceMs?: number;
  /** How long after a failed write it is tried again, ms (default 10,000). */
  retryMs?: number;
  logger?: Logger;
}

const DEFAULT_DEBOUNCE_MS = 500;
const DEFAULT_RETRY_MS = 10_000;

/** The file's entries, ordered by twin id (a stable file for a stable fleet). */
export function fileSdEntries(targets: Iterable<ScrapeTarget>): FileSdEntry[] {
  return [...targets]
    .sort((a, b) => (a.twin < b.twin ? -1 : a.twin > b.twin ? 1 : 0))
    .map((t) => {
      const url = new URL(t.url);
      // A base URL under a path (a proxy) keeps it: Prometheus scrapes {path}/metrics.
      const path = url.pathname.replace(/\/+$/, "");
      return {
        targets: [url.host],
        labels: {
          twin: t.twin,
          schema: t.schema,
          node: t.node,
          platform: t.platform,
          __metrics_path__: `${path}/metrics`,
          ...(url.protocol === "https:" ? { __scheme__: "https" } : {}),
        },
      };
    });
}

export class PrometheusSdWriter {
  readonly #options: PrometheusSdOptions;
  readonly #debounceMs: number;
  #timer: NodeJS.Timeout | undefined;
  /** The write in progress; the next one waits for it. */
  #writing: Promise<void> = Promise.resolve();
  /** When the last write started (the debounce counts from it). */
  #lastWriteAt = Number.NEGATIVE_INFINITY;
  /** What the file holds, as far as this writer knows. */
  #written: string | undefined;
  #closed = false;

  constructor(options: PrometheusSdOptions) {
    this.#options = options;
    this.#debounceMs = options.debounceMs ?? DEFAULT_DEBOUNCE_MS;
  }

  get file(): string {
    return this.#options.file;
  }

  /** Something changed: the file is brought up to date within the debounce interval. */
  schedule(delayMs?: number): void {
    if (this.#closed || this.#timer) return;
    const wait = delayMs ?? Math.max(0, this.#lastWriteAt + this.#debounceMs - Date.now());
    this.#timer = setTimeout(() => {
      this.#timer = undefined;
      void this.flush();
    }, wait);
    this.#timer.unref();
  }

  /** Writes the current targets now (if they changed); resolves once the file holds them. */
  flush(): Promise<void> {
    if (this.#timer) {
      clearTimeout(this.#timer);
      this.#timer = undefined;
    }
    const run = this.#writing.then(() => this.#write());
    this.#writing = run;
    return run;
  }

  /** No more writes; the file keeps its last content (the twin containers outlive the gateway). */
  async close(): Promise<void> {
    this.#closed = true;
    if (this.#timer) clearTimeout(this.#timer);
    this.#timer = undefined;
    await this.#writing;
  }

  async #write(): Promise<void> {
    if (this.#closed) return;
    this.#lastWriteAt = Date.now();
    const { file, logger } = this.#options;
    let text: string;
    try {
      text = `${JSON.stringify(fileSdEntries(this.#options.targets()), null, 2)}\n`;
    } catch (err) {
      logger?.warn(
        { err: errorMessage(err), file },
        "prometheus service discovery: could not list the twins",
      );
      this.schedule(this.#options.retryMs ?? DEFAULT_RETRY_MS);
      return;
    }
    if (text === this.#written) return;
    // Beside the file (a rename within one file system), under a name no *.json glob matches.
    const temp = `${file}.${process.pid}.tmp`;
    try {
      await mkdir(dirname(file), { recursive: true });
      await writeFile(temp, text, { mode: 0o644 });
      await rename(temp, file);
      this.#written = text;
    } catch (err) {
      await rm(temp, { force: true }).catch(() => undefined);
      logger?.warn(
        { err: errorMessage(err), file },
        "prometheus service discovery: could not write the targets file; trying again",
      );
      this.schedule(this.#options.retryMs ?? DEFAULT_RETRY_MS);
    }
  }
}

/** What the writer needs of the manager: what runs, and word when that changes. */
export interface RunningTwins {
  running(): Iterable<{
    record: { id: string; schema: string; node: string; platform: string };
    handle: { metricsTarget?(): string | undefined };
  }>;
  onRunningChange(listener: () => void): () => void;
}

/** The targets of the twins that run in processes of their own. */
export function twinProcessTargets(twins: RunningTwins): ScrapeTarget[] {
  const targets: ScrapeTarget[] = [];
  for (const { record, handle } of twins.running()) {
    const url = handle.metricsTarget?.();
    if (url === undefined) continue;
    targets.push({
      url,
      twin: record.id,
      schema: record.schema,
      node: record.node,
      platform: record.platform,
    });
  }
  return targets;
}

/**
 * Keeps `file` listing the twin processes of `twins` as they start, move, restart and stop; the
 * first write is scheduled at once (a file left by an earlier run is brought up to date).
 */
export function watchTwinProcesses(
  twins: RunningTwins,
  options: Omit<PrometheusSdOptions, "targets">,
): { writer: PrometheusSdWriter; close(): Promise<void> } {
  const writer = new PrometheusSdWriter({ ...options, targets: () => twinProcessTargets(twins) });
  const unlisten = twins.onRunningChange(() => writer.schedule());
  writer.schedule();
  return {
    writer,
    close: async () => {
      // Before the manager lets go of its twins: the containers keep running, and so their targets.
      unlisten();
      await writer.close();
    },
  };
}
