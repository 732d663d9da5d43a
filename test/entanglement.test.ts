import { describe, expect, it } from "vitest";
import { EntanglementWindow, type FidelityParams } from "../src/domain/entanglement.js";

const T0 = Date.UTC(2026, 0, 1);
const params: FidelityParams = {
  desiredTimelinessMs: 10,
  expectedUpdateRateHz: 10,
  threshold: 0.9,
  windowSeconds: 10,
};

/** Feeds updates every `periodMs` from `from` to `to` (exclusive of `from`), each `delay(i)` ms late. */
function feed(
  w: EntanglementWindow,
  from: number,
  to: number,
  periodMs: number,
  delay: (i: number) => number = () => 1,
) {
  let i = 0;
  for (let t = from + periodMs; t <= to; t += periodMs, i++) w.recordUpdate(t, t - delay(i));
}

describe("ODTE over a sliding window", () => {
  it("does not read a steady PT as unreliable when the window's edge falls between its updates", () => {
    // Re x W = 5: updates every 1 s, each arriving up to 3 ms late, evaluated 1 ms after a period
    // begins: a hard-edged window would hold 4 of them (R = 0.8) every time.
    const slow = { ...params, expectedUpdateRateHz: 1, windowSeconds: 5 };
    const w = new EntanglementWindow(slow);
    w.start(T0);
    for (let k = 1; k <= 20; k++) w.recordUpdate(T0 + k * 1000 + (k % 4), T0 + k * 1000);
    for (let k = 10; k <= 20; k++) expect(w.evaluate(T0 + k * 1000 + 1).reliability).toBe(1);
    // And a PT that really missed one is still caught (judged more than Td after its due time).
    const missed = new EntanglementWindow(slow);
    missed.start(T0);
    for (let k = 1; k <= 20; k++) if (k !== 18) missed.recordUpdate(T0 + k * 1000, T0 + k * 1000);
    expect(missed.evaluate(T0 + 20_500).reliability).toBe(0.8);
  });

  it("is 1 for a PT that reports on time at the expected rate", () => {
    const w = new EntanglementWindow(params);
    w.start(T0);
    feed(w, T0, T0 + 20_000, 100);
    const f = w.evaluate(T0 + 20_000);
    // 100 in W, plus the one on its far edge (within Td of it).
    expect(f).toMatchObject({ timeliness: 1, reliability: 1, availability: 1, odte: 1, updates: 101 });
    expect(f).toMatchObject({ windowSeconds: 10, entangled: true, windowFilled: true });
    expect(f.evaluatedAt).toBe(new Date(T0 + 20_000).toISOString());
  });

  it("halving the PT's rate halves reliability and disentangles (paper 004, phase 3)", () => {
    const w = new EntanglementWindow(params);
    w.start(T0);
    feed(w, T0, T0 + 10_000, 100);
    feed(w, T0 + 10_000, T0 + 30_000, 200);
    const f = w.evaluate(T0 + 30_000);
    expect(f.reliability).toBeCloseTo(0.5, 1);
    expect(f.timeliness).toBe(1);
    expect(f.entangled).toBe(false);
  });

  it("latency above Td lowers timeliness (paper 004, phase 1)", () => {
    const w = new EntanglementWindow(params);
    w.start(T0);
    feed(w, T0, T0 + 10_000, 100, (i) => (i % 4 === 0 ? 50 : 2));
    const f = w.evaluate(T0 + 10_000);
    expect(f.timeliness).toBeCloseTo(0.75, 5);
    expect(f.odte).toBeCloseTo(0.75, 5);
    expect(f.entangled).toBe(false);
  });

  it("an update exactly Td late is timely; one with a negative delay (the PT's clock ahead) never is", () => {
    const w = new EntanglementWindow(params);
    w.start(T0);
    w.recordUpdate(T0 + 100, T0 + 90);
    // Stamped 5 ms after its commit: the PT's clock is ahead, its true delay unknown.
    w.recordUpdate(T0 + 200, T0 + 205);
    w.recordUpdate(T0 + 300, T0 + 289);
    expect(w.evaluate(T0 + 300).timeliness).toBeCloseTo(1 / 3, 10);
  });

  it("never counts a negative delay as timely, however small: a PT whose clock runs ahead is not entangled", () => {
    const w = new EntanglementWindow(params);
    w.start(T0);
    // Delays of -1 ms (stamped 1 ms in the twin's future), all within Td in absolute value.
    feed(w, T0, T0 + 10_000, 100, () => -1);
    const f = w.evaluate(T0 + 10_000);
    expect(f).toMatchObject({ timeliness: 0, reliability: 1, odte: 0, entangled: false });
    // A delay that is not a number (a timestamp that is none) is not timely either.
    const nan = new EntanglementWindow(params);
    nan.start(T0);
    nan.recordUpdate(T0 + 100, Number.NaN);
    expect(nan.evaluate(T0 + 100).timeliness).toBe(0);
  });

  it("restores the timely flags it exported: a moved twin is judged as before", () => {
    const w = new EntanglementWindow(params);
    w.start(T0);
    feed(w, T0, T0 + 1000, 100, (i) => (i % 2 === 0 ? -1 : 1));
    const copy = EntanglementWindow.restore(params, JSON.parse(JSON.stringify(w.observations(T0 + 1000))));
    expect(copy.evaluate(T0 + 1000).timeliness).toBe(w.evaluate(T0 + 1000).timeliness);
    expect(copy.evaluate(T0 + 1000).timeliness).toBeCloseTo(0.5, 10);
  });

  it("unreachable periods lower availability, the open one up to now", () => {
    const w = new EntanglementWindow(params);
    w.start(T0);
    feed(w, T0, T0 + 10_000, 100);
    w.setReachable(T0 + 2_000, false);
    w.setReachable(T0 + 4_000, true);
    w.setReachable(T0 + 9_000, false);
    const f = w.evaluate(T0 + 10_000);
    expect(f.availability).toBeCloseTo(0.7, 10);
    expect(f.odte).toBeCloseTo(0.7, 10);
    // Ten seconds later the first period has left the window; the open one covers it all.
    expect(w.evaluate(T0 + 20_000).availability).toBe(0);
  });

  it("with heartbeat, silence longer than 2/Re counts as unreachable", () => {
    const slow = { ...params, expectedUpdateRateHz: 1 };
    const w = new EntanglementWindow(slow, { heartbeat: true });
    w.start(T0);
    feed(w, T0, T0 + 10_000, 1000);
    expect(w.evaluate(T0 + 10_000).availability).toBe(1);
    // Silent from 10 s: unreachable from 12 s on.
    const f = w.evaluate(T0 + 16_000);
    expect(f.availability).toBeCloseTo(0.6, 10);
    // A later update closes the gap; it stays counted while in the window.
    w.recordUpdate(T0 + 17_000, T0 + 16_999);
    expect(w.evaluate(T0 + 17_000).availability).toBeCloseTo(0.5, 10);
    // With the PT reporting again, the gap leaves the window after W.
    feed(w, T0 + 17_000, T0 + 27_500, 1000);
    expect(w.evaluate(T0 + 27_500).availability).toBe(1);
  });

  it("without heartbeat, a silent but reachable PT keeps A = 1 while R falls", () => {
    const w = new EntanglementWindow(params);
    w.start(T0);
    feed(w, T0, T0 + 5_000, 100);
    const f = w.evaluate(T0 + 10_000);
    expect(f.availability).toBe(1);
    expect(f.reliability).toBeCloseTo(0.5, 10);
  });

  it("judges a freshly bound twin on the time elapsed", () => {
    const w = new EntanglementWindow(params);
    w.start(T0);
    feed(w, T0, T0 + 2_000, 100);
    const f = w.evaluate(T0 + 2_000);
    expect(f).toMatchObject({ windowSeconds: 2, reliability: 1, odte: 1, windowFilled: false });
  });

  it("is 0 before measuring starts and when nothing arrived", () => {
    const w = new EntanglementWindow(params);
    expect(w.evaluate(T0)).toMatchObject({ odte: 0, updates: 0, entangled: false });
    w.start(T0);
    expect(w.evaluate(T0 + 5_000)).toMatchObject({ timeliness: 0, reliability: 0, odte: 0 });
  });

  it("keeps only the window: a long run counts Re x W updates", () => {
    const w = new EntanglementWindow(params);
    w.start(T0);
    feed(w, T0, T0 + 3_600_000, 100);
    expect(w.evaluate(T0 + 3_600_000).updates).toBe(101);
  });

  it("refuses impossible parameters", () => {
    expect(() => new EntanglementWindow({ ...params, expectedUpdateRateHz: 0 })).toThrow(RangeError);
    expect(() => new EntanglementWindow({ ...params, threshold: 1.5 })).toThrow(/threshold/);
    expect(() => new EntanglementWindow({ ...params, windowSeconds: Number.NaN })).toThrow(/windowSeconds/);
  });
});
