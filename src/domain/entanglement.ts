/**
 * Entanglement of a twin with its physical twin, as the ODTE of [dt-microservices] (section 5.3), over a
 * sliding window W. Pure: time is passed in (epoch milliseconds), nothing is read from a clock.
 *
 *   T = (updates in W with 0 <= delay <= Td) / (updates in W), 0 when there are none
 *   R = min(1, updates in W / (Re x W))
 *   A = share of W during which the PT was reachable from the twin
 *   ODTE = T x R x A
 *
 * The delay of an update is the time the twin committed the state minus the PT timestamp, so it
 * includes transport and processing. Until W has passed since measuring began, the window is the
 * time elapsed (at least one expected period), so a freshly bound twin is judged on what it had.
 */

export interface FidelityParams {
  /** Td, milliseconds. */
  desiredTimelinessMs: number;
  /** Re, updates per second. */
  expectedUpdateRateHz: number;
  /** ODTE at or above which the twin is entangled, in [0, 1]. */
  threshold: number;
  /** W, seconds. */
  windowSeconds: number;
}

export interface EntanglementFigures {
  odte: number;
  timeliness: number;
  reliability: number;
  availability: number;
  /** Updates counted in the window. */
  updates: number;
  /** The window the figures cover, seconds (W once it has filled). */
  windowSeconds: number;
  desiredTimeliness: number;
  expectedUpdateRate: number;
  threshold: number;
  /** ISO 8601. */
  evaluatedAt: string;
  entangled: boolean;
  /** Whether a whole W has passed since measuring began. */
  windowFilled: boolean;
}

/**
 * Whether an update's delay (commit time minus PT timestamp) shows it fresh: 0 <= delay <= Td.
 * A negative delay is never timely. It proves the PT's clock is ahead of the twin's by at least
 * that much, and then the true delay (measured = true + offset) is unknown: it may be well past
 * Td. T counts the updates received in at most Td ([dt-microservices], section 5.3), which presumes
 * synchronised clocks; clamping to 0 would instead reward a PT for a clock running ahead (up to
 * MAX_FUTURE_SKEW_MS, src/runtime/physical-event.ts). Keep the PTs' clocks synchronised (NTP, PTP).
 */
export function isTimely(delayMs: number, desiredTimelinessMs: number): boolean {
  return delayMs >= 0 && delayMs <= desiredTimelinessMs;
}

/** A growable ring buffer of (time, flag) pairs: push at the tail, evict at the head, both O(1) amortised. */
class Observations {
  #times = new Float64Array(64);
  #flags = new Uint8Array(64);
  #head = 0;
  #size = 0;

  get size(): number {
    return this.#size;
  }

  push(time: number, flag: boolean): void {
    if (this.#size === this.#times.length) this.#grow();
    const i = (this.#head + this.#size) % this.#times.length;
    this.#times[i] = time;
    this.#flags[i] = flag ? 1 : 0;
    this.#size++;
  }

  /** Removes and returns the flag of the oldest entry if its time is <= `until`. */
  shiftIfAtOrBefore(until: number): boolean | undefined {
    if (this.#size === 0 || (this.#times[this.#head] as number) > until) return undefined;
    const flag = this.#flags[this.#head] === 1;
    this.#head = (this.#head + 1) % this.#times.length;
    this.#size--;
    return flag;
  }

  /** Oldest first. */
  toArray(): [time: number, flag: boolean][] {
    const out: [number, boolean][] = [];
    for (let k = 0; k < this.#size; k++) {
      const i = (this.#head + k) % this.#times.length;
      out.push([this.#times[i] as number, this.#flags[i] === 1]);
    }
    return out;
  }

  #grow(): void {
    const times = new Float64Array(this.#times.length * 2);
    const flags = new Uint8Array(this.#flags.length * 2);
    for (let k = 0; k < this.#size; k++) {
      const i = (this.#head + k) % this.#times.length;
      times[k] = this.#times[i] as number;
      flags[k] = this.#flags[i] as number;
    }
    this.#times = times;
    this.#flags = flags;
    this.#head = 0;
  }
}

type Interval = [start: number, end: number];

/** Length of the union of intervals, clipped to [from, to]. */
function coveredLength(intervals: Interval[], from: number, to: number): number {
  const clipped = intervals
    .map(([s, e]): Interval => [Math.max(s, from), Math.min(e, to)])
    .filter(([s, e]) => e > s)
    .sort((a, b) => a[0] - b[0]);
  let total = 0;
  let end = -Infinity;
  for (const [s, e] of clipped) {
    if (s > end) {
      total += e - s;
      end = e;
    } else if (e > end) {
      total += e - end;
      end = e;
    }
  }
  return total;
}

export interface EntanglementWindowOptions {
  /**
   * Judge reachability by heartbeat too: a PT silent for more than 2/Re counts as unreachable.
   * For PTs that do not report their status; a PT with a status topic is judged by its status.
   */
  heartbeat?: boolean;
}

/** What a window has observed, as JSON: enough to carry a twin's entanglement to another process. */
export interface EntanglementObservations {
  since: number | undefined;
  lastUpdate: number | undefined;
  /** [committedAt, timely] per update still in the window, oldest first. */
  updates: [number, boolean][];
  /** Unreachable periods still in the window, and the start of an open one. */
  down: [number, number][];
  downSince: number | undefined;
  gaps: [number, number][];
}

/** The figures of a window that has measured nothing yet. */
export const UNMEASURED = {
  odte: 0,
  timeliness: 0,
  reliability: 0,
  availability: 0,
  updates: 0,
  windowSeconds: 0,
  entangled: false,
  windowFilled: false,
} as const satisfies Partial<EntanglementFigures>;

/** Observations of a window that has observed nothing yet. */
export function noObservations(): EntanglementObservations {
  return { since: undefined, lastUpdate: undefined, updates: [], down: [], downSince: undefined, gaps: [] };
}

/** Sliding-window ODTE of one twin. */
export class EntanglementWindow {
  readonly params: FidelityParams;
  readonly #heartbeatMs: number;
  readonly #heartbeat: boolean;
  readonly #updates = new Observations();
  #timelyCount = 0;
  #since: number | undefined;
  #lastUpdate: number | undefined;
  /** Closed unreachable periods, and the start of the open one. */
  #down: Interval[] = [];
  #downSince: number | undefined;
  /** Heartbeat gaps closed by a later update. */
  #gaps: Interval[] = [];

  constructor(params: FidelityParams, options: EntanglementWindowOptions = {}) {
    for (const [name, value] of Object.entries(params)) {
      if (!Number.isFinite(value) || value < 0) throw new RangeError(`${name} must be a non-negative number`);
    }
    if (params.expectedUpdateRateHz <= 0 || params.windowSeconds <= 0 || params.desiredTimelinessMs <= 0) {
      throw new RangeError("desiredTimelinessMs, expectedUpdateRateHz and windowSeconds must be positive");
    }
    if (params.threshold > 1) throw new RangeError("threshold must be in [0, 1]");
    this.params = { ...params };
    this.#heartbeatMs = 2000 / params.expectedUpdateRateHz;
    this.#heartbeat = options.heartbeat ?? false;
  }

  get #slackMs(): number {
    return Math.min(this.params.desiredTimelinessMs, 500 / this.params.expectedUpdateRateHz);
  }

  get #windowMs(): number {
    return this.params.windowSeconds * 1000;
  }

  /** Measuring begins (the twin is bound). Later calls do not restart the window. */
  start(at: number): void {
    this.#since ??= at;
  }

  get started(): boolean {
    return this.#since !== undefined;
  }

  /** One state update, committed at `committedAt`, stamped `ptTimestamp` by the PT. */
  recordUpdate(committedAt: number, ptTimestamp: number): void {
    this.start(committedAt);
    const timely = isTimely(committedAt - ptTimestamp, this.params.desiredTimelinessMs);
    this.#updates.push(committedAt, timely);
    if (timely) this.#timelyCount++;
    const previous = this.#lastUpdate ?? (this.#since as number);
    if (committedAt - previous > this.#heartbeatMs)
      this.#gaps.push([previous + this.#heartbeatMs, committedAt]);
    this.#lastUpdate = committedAt;
    this.#evict(committedAt);
  }

  /** The PT became reachable or unreachable (broker connection, PT status). */
  setReachable(at: number, reachable: boolean): void {
    if (!reachable && this.#downSince === undefined) this.#downSince = at;
    if (reachable && this.#downSince !== undefined) {
      this.#down.push([this.#downSince, at]);
      this.#downSince = undefined;
    }
  }

  #evict(now: number): void {
    const from = now - this.#windowMs;
    // Updates are kept Td (at most half an expected period) past the window's far edge. A PT
    // reporting every 1/Re has Re x W updates in a hard-edged window only if the edge never falls
    // between an update's due time and its (jittered) arrival; a steady PT judged at a fixed phase
    // of its period would read as unreliable (Re x W = 5: R = 0.8) window after window. An update
    // is due within Td anyway, so the slack forgives jitter a timely PT may have, no more.
    const keepFrom = from - this.#slackMs;
    for (let timely = this.#updates.shiftIfAtOrBefore(keepFrom); timely !== undefined; ) {
      if (timely) this.#timelyCount--;
      timely = this.#updates.shiftIfAtOrBefore(keepFrom);
    }
    while ((this.#down[0]?.[1] ?? Infinity) <= from) this.#down.shift();
    while ((this.#gaps[0]?.[1] ?? Infinity) <= from) this.#gaps.shift();
  }

  /** The observations in the window at `now` (older ones are dropped first). */
  observations(now: number): EntanglementObservations {
    this.#evict(now);
    return {
      since: this.#since,
      lastUpdate: this.#lastUpdate,
      updates: this.#updates.toArray(),
      down: this.#down.map(([s, e]): [number, number] => [s, e]),
      downSince: this.#downSince,
      gaps: this.#gaps.map(([s, e]): [number, number] => [s, e]),
    };
  }

  /** A window that continues from `observations` (e.g. a twin moved or restored elsewhere). */
  static restore(
    params: FidelityParams,
    observations: EntanglementObservations,
    options: EntanglementWindowOptions = {},
  ): EntanglementWindow {
    const window = new EntanglementWindow(params, options);
    window.#since = observations.since;
    window.#lastUpdate = observations.lastUpdate;
    for (const [time, timely] of observations.updates) {
      window.#updates.push(time, timely);
      if (timely) window.#timelyCount++;
    }
    window.#down = observations.down.map(([s, e]): Interval => [s, e]);
    window.#downSince = observations.downSince;
    window.#gaps = observations.gaps.map(([s, e]): Interval => [s, e]);
    return window;
  }

  /** The figures at `now`. */
  evaluate(now: number): EntanglementFigures {
    this.#evict(now);
    const p = this.params;
    const base = {
      desiredTimeliness: p.desiredTimelinessMs,
      expectedUpdateRate: p.expectedUpdateRateHz,
      threshold: p.threshold,
      evaluatedAt: new Date(now).toISOString(),
    };
    if (this.#since === undefined) return { ...base, ...UNMEASURED };
    const elapsed = now - this.#since;
    const windowMs = Math.min(this.#windowMs, Math.max(elapsed, 1000 / p.expectedUpdateRateHz));
    const from = now - windowMs;
    const updates = this.#updates.size;
    const timeliness = updates === 0 ? 0 : this.#timelyCount / updates;
    const reliability = Math.min(1, updates / (p.expectedUpdateRateHz * (windowMs / 1000)));
    const down: Interval[] = [...this.#down];
    if (this.#downSince !== undefined) down.push([this.#downSince, now]);
    if (this.#heartbeat) {
      down.push(...this.#gaps);
      const silentSince = (this.#lastUpdate ?? this.#since) + this.#heartbeatMs;
      if (silentSince < now) down.push([silentSince, now]);
    }
    const availability = Math.max(0, 1 - coveredLength(down, from, now) / windowMs);
    const odte = timeliness * reliability * availability;
    return {
      ...base,
      odte,
      timeliness,
      reliability,
      availability,
      updates,
      windowSeconds: windowMs / 1000,
      entangled: odte >= p.threshold,
      windowFilled: elapsed >= this.#windowMs,
    };
  }
}
