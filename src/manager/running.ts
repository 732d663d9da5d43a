import type { TwinState } from "../domain/twin-state.js";
import type { InstanceHandle } from "../platforms/driver.js";

/**
 * What runs now (the actual state, beside the records' desired state): the handle of each running
 * instance, whether its platform lost it, and why an instance that should run does not.
 */

export interface Running {
  handle: InstanceHandle;
  unlisten: () => void;
  /** Why its platform reports it lost (the reconciler starts it again). */
  failed?: string;
  /** What the last save of its state saved, to skip twins that did not change. */
  savedFingerprint?: string | undefined;
}

/** Enough of a state to tell whether it changed since it was saved. */
export const fingerprint = (state: TwinState): string =>
  [
    state.lastUpdate?.committedAt,
    state.lifecycle.state,
    state.lifecycle.history.length,
    state.history.events.length,
    state.augmentations.length,
  ].join("/");

export class RunningInstances {
  readonly #running = new Map<string, Running>();
  /** Why an instance could not be started, or its last operation was given up (cleared once it runs). */
  readonly #notRunning = new Map<string, string>();
  /** Told when an instance's copy starts or stops being followed, or is replaced (a restart). */
  readonly #listeners = new Set<(id: string | undefined) => void>();

  /** Calls `listener` with the instance's id (undefined: all of them) whenever what runs changes. */
  onChange(listener: (id: string | undefined) => void): () => void {
    const registration = (id: string | undefined) => listener(id);
    this.#listeners.add(registration);
    return () => {
      this.#listeners.delete(registration);
    };
  }

  /** What runs of instance `id` changed without a set or forget (its platform replaced it in place). */
  changed(id: string | undefined): void {
    for (const listener of [...this.#listeners]) listener(id);
  }

  get(id: string): Running | undefined {
    return this.#running.get(id);
  }

  /** The instance's copy when it runs and its platform has not lost it. */
  healthy(id: string): Running | undefined {
    const running = this.#running.get(id);
    return running && running.failed === undefined ? running : undefined;
  }

  set(id: string, running: Running): void {
    this.#running.set(id, running);
    this.changed(id);
  }

  /** Stops following the instance's copy (the caller removes it from its platform). */
  forget(id: string): Running | undefined {
    const running = this.#running.get(id);
    running?.unlisten();
    this.#running.delete(id);
    if (running) this.changed(id);
    return running;
  }

  entries(): IterableIterator<[string, Running]> {
    return this.#running.entries();
  }

  /** Stops following every copy. */
  clear(): void {
    for (const running of this.#running.values()) running.unlisten();
    this.#running.clear();
    this.changed(undefined);
  }

  /** Why the instance does not run as it should, if known. */
  whyNot(id: string): string | undefined {
    return this.#running.get(id)?.failed ?? this.#notRunning.get(id);
  }

  notRunning(id: string, why: string): void {
    this.#notRunning.set(id, why);
  }

  clearWhyNot(id: string): void {
    this.#notRunning.delete(id);
  }
}
