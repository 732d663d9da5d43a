import type { Logger } from "../logger.js";
import { ManagerError } from "./errors.js";

/**
 * A keyed work queue: operations on one key (an instance id) run one at a time, in order, each for
 * at most the timeout. Past it the caller gets an OperationTimeout and the queue goes on; the
 * operation's `signal` is aborted, and the given-up operation must then leave the key alone.
 */

/** An operation on an instance that did not finish within the operation timeout (it was given up). */
export class OperationTimeout extends ManagerError {
  constructor(message: string) {
    super("timeout", message);
    this.name = "OperationTimeout";
  }
}

export type Operation<T> = (signal: AbortSignal) => Promise<T>;

export interface OperationQueueOptions {
  timeoutMs: number;
  /** Called when an operation on `key` is given up (before its caller hears of it). */
  onTimeout?(key: string, timeout: OperationTimeout): void;
  logger?: Logger;
}

export class OperationQueue {
  /** The tail of each key's queue. */
  readonly #tails = new Map<string, Promise<unknown>>();
  readonly #options: OperationQueueOptions;

  constructor(options: OperationQueueOptions) {
    this.#options = options;
  }

  /** Runs `operation` (`what` names it in errors) on `key` after those queued before it. */
  run<T>(key: string, what: string, operation: Operation<T>): Promise<T> {
    const previous = this.#tails.get(key) ?? Promise.resolve();
    // The previous operation's outcome is its caller's; this one runs either way.
    const next = previous.catch(() => undefined).then(() => this.#timed(key, what, operation));
    const tail = next.catch(() => undefined);
    this.#tails.set(key, tail);
    void tail.then(() => {
      if (this.#tails.get(key) === tail) this.#tails.delete(key);
    });
    return next;
  }

  /** Settles once everything queued now has (whatever its outcome). */
  async idle(): Promise<void> {
    await Promise.allSettled([...this.#tails.values()]);
  }

  #timed<T>(key: string, what: string, operation: Operation<T>): Promise<T> {
    const controller = new AbortController();
    const ms = this.#options.timeoutMs;
    return new Promise<T>((resolve, reject) => {
      const timer = setTimeout(() => {
        const timeout = new OperationTimeout(`${what} did not finish within ${ms} ms`);
        controller.abort(timeout);
        this.#options.logger?.warn({ instance: key, timeoutMs: ms }, timeout.message);
        this.#options.onTimeout?.(key, timeout);
        reject(timeout);
      }, ms);
      timer.unref();
      Promise.resolve()
        .then(() => operation(controller.signal))
        .then(resolve, reject)
        .finally(() => clearTimeout(timer));
    });
  }
}

/** Whether `work` settled within `ms` ("late": it goes on, unwaited for). */
export async function settledWithin(work: Promise<unknown>, ms: number): Promise<"settled" | "late"> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<"late">((resolve) => {
    timer = setTimeout(() => resolve("late"), ms);
  });
  try {
    return await Promise.race([
      work.then(
        () => "settled" as const,
        () => "settled" as const,
      ),
      late,
    ]);
  } finally {
    clearTimeout(timer);
  }
}
