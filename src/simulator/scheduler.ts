// The sampling scheduler the simulators share: one timer for a whole fleet.

/** A task of the scheduler; pass it to `cancel()`. */
export interface ScheduledTask {
  readonly due: number;
  readonly order: number;
  run: (() => void) | undefined;
}

const before = (a: ScheduledTask, b: ScheduledTask) =>
  a.due < b.due || (a.due === b.due && a.order < b.order);

/**
 * One timer for any number of timed tasks (a binary heap on the due time), so that 10,000 simulated
 * devices cost heap entries rather than Node timers. Times are `performance.now()` milliseconds
 * (monotonic: a wall-clock step does not bunch or stall samples).
 */
export class Scheduler {
  readonly #heap: ScheduledTask[] = [];
  #timer: NodeJS.Timeout | undefined;
  #timerDue = Number.POSITIVE_INFINITY;
  #order = 0;
  #draining = false;

  /** Runs `run` once at `due` (performance.now() ms), as soon as possible when that is past. */
  at(due: number, run: () => void): ScheduledTask {
    const task: ScheduledTask = { due, order: this.#order++, run };
    const heap = this.#heap;
    heap.push(task);
    let i = heap.length - 1;
    while (i > 0) {
      const parent = (i - 1) >> 1;
      const p = heap[parent] as ScheduledTask;
      if (!before(task, p)) break;
      heap[i] = p;
      i = parent;
    }
    heap[i] = task;
    if (!this.#draining) this.#arm();
    return task;
  }

  /** Cancels a task (a no-op for one that ran or is undefined). */
  cancel(task: ScheduledTask | undefined): void {
    if (task !== undefined) task.run = undefined;
  }

  /** Tasks waiting, cancelled ones included until their time comes. */
  get size(): number {
    return this.#heap.length;
  }

  #pop(): ScheduledTask | undefined {
    const heap = this.#heap;
    const top = heap[0];
    const last = heap.pop();
    if (top === undefined || last === undefined || heap.length === 0) return top;
    let i = 0;
    for (;;) {
      const l = 2 * i + 1;
      if (l >= heap.length) break;
      const r = l + 1;
      const left = heap[l] as ScheduledTask;
      const right = heap[r];
      const child = right !== undefined && before(right, left) ? r : l;
      const c = heap[child] as ScheduledTask;
      if (!before(c, last)) break;
      heap[i] = c;
      i = child;
    }
    heap[i] = last;
    return top;
  }

  #arm(): void {
    // Cancelled tasks on top would keep a timer (and the process) alive for nothing.
    while (this.#heap[0] !== undefined && this.#heap[0].run === undefined) this.#pop();
    const top = this.#heap[0];
    if (top === undefined) {
      clearTimeout(this.#timer);
      this.#timer = undefined;
      this.#timerDue = Number.POSITIVE_INFINITY;
      return;
    }
    if (this.#timer !== undefined && top.due >= this.#timerDue) return;
    clearTimeout(this.#timer);
    this.#timerDue = top.due;
    // Rounded up: a timer that fires early would only wake up to sleep again.
    this.#timer = setTimeout(() => this.#fire(), Math.max(0, Math.ceil(top.due - performance.now())));
  }

  #fire(): void {
    this.#timer = undefined;
    this.#timerDue = Number.POSITIVE_INFINITY;
    const now = performance.now();
    this.#draining = true;
    try {
      for (let top = this.#heap[0]; top !== undefined && top.due <= now; top = this.#heap[0]) {
        this.#pop();
        const run = top.run;
        top.run = undefined;
        run?.();
      }
    } finally {
      this.#draining = false;
      this.#arm();
    }
  }
}

/** The scheduler all simulators of the process share unless given another. */
export const defaultScheduler = new Scheduler();
