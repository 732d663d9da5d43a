import type { Logger } from "../logger.js";
import type { Directory } from "./directory.js";

export interface PurgeOptions {
  directory: Directory;
  /** How often to look for expired TDs, ms (default 60 s). */
  intervalMs?: number;
  logger?: Logger;
}

export interface Purge {
  /** Deletes what expired now; resolves with how many TDs it deleted. */
  purge(): Promise<number>;
  stop(): void;
}

/**
 * Deletes TDs whose registration expired (WoT Discovery: servers periodically purge them), each
 * with its `thing_deleted` notification.
 */
export function startPurge(options: PurgeOptions): Purge {
  const { directory } = options;
  let running: Promise<number> | undefined;
  const purge = (): Promise<number> => {
    // One pass at a time: a slow store must not pile passes up.
    running ??= (async () => {
      let removed = 0;
      try {
        for (const id of await directory.store.expired(directory.now())) {
          if (await directory.delete(id)) removed++;
        }
        if (removed > 0) options.logger?.info({ removed }, "expired Thing Descriptions purged");
      } catch (err) {
        options.logger?.warn({ err }, "purging expired Thing Descriptions failed; will retry");
      } finally {
        running = undefined;
      }
      return removed;
    })();
    return running;
  };
  const timer = setInterval(() => void purge(), options.intervalMs ?? 60_000);
  timer.unref();
  return { purge, stop: () => clearInterval(timer) };
}
