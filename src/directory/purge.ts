import type { Logger } from "../logger.js";
import type { ThingChange } from "./events.js";
import type { DirectoryStore } from "./store.js";

export interface PurgeOptions {
  store: DirectoryStore;
  /** How often to look for expired TDs, ms (default 60 s). */
  intervalMs?: number;
  now?: () => number;
  onChange?: (change: ThingChange) => void;
  logger?: Logger;
}

/**
 * Deletes TDs whose registration expired (WoT Discovery: a directory removes expired TDs), with a
 * `thing_deleted` notification for each. Returns a function that stops it.
 */
export function startPurge(options: PurgeOptions): { purge(): Promise<number>; stop(): void } {
  const now = options.now ?? Date.now;
  let running: Promise<number> | undefined;
  const purge = (): Promise<number> => {
    // One pass at a time: a slow store must not pile passes up.
    running ??= (async () => {
      let removed = 0;
      try {
        for (const id of await options.store.expired(now())) {
          if (await options.store.delete(id)) {
            removed++;
            options.onChange?.({ type: "thing_deleted", id });
          }
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
