// The fault knobs of the physical-twin simulators: how a simulated device's messages reach the twin,
// the rates they accept, and a seeded random source for reproducible runs.

export interface Faults {
  /** Mean delay (ms) between taking a sample and publishing it; the message's `ts` stays the sample time. */
  latencyMs: number;
  /** Each message's delay is `latencyMs` ± a uniform draw in [0, jitterMs] (never below 0). */
  jitterMs: number;
  /** Probability in [0, 1] that a sample is lost; a lost sample still uses up its sequence number. */
  loss: number;
}

/** The highest rate a simulator accepts (Hz), as the `setRate` action of the IIoT device schema. */
export const MAX_RATE = 1000;

/** Throws a RangeError naming the knob when a fault value is out of range. */
export function checkFaults(faults: Partial<Faults>): void {
  for (const key of ["latencyMs", "jitterMs"] as const) {
    const value = faults[key];
    if (value !== undefined && !(Number.isFinite(value) && value >= 0)) {
      throw new RangeError(`${key} must be a number >= 0 (got ${value})`);
    }
  }
  if (faults.loss !== undefined && !(faults.loss >= 0 && faults.loss <= 1)) {
    throw new RangeError(`loss must be a probability in [0, 1] (got ${faults.loss})`);
  }
}

/** Throws a RangeError unless `hz` is a rate the simulators accept: > 0 and <= MAX_RATE. */
export function checkRate(hz: number): void {
  if (!(Number.isFinite(hz) && hz > 0 && hz <= MAX_RATE)) {
    throw new RangeError(`rate must be a number > 0 and <= ${MAX_RATE} Hz (got ${hz})`);
  }
}

/** A seeded generator of numbers in [0, 1) (mulberry32), for reproducible runs: `random: seededRandom(42)`. */
export function seededRandom(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
