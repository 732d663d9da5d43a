import { describe, expect, it } from "vitest";
import { AugmentationError, type AugmentationInput, Augmentations } from "../src/runtime/augmentation.js";
import { thrown } from "./helpers.js";

const input = (values: Record<string, unknown>, state: Record<string, unknown> = {}): AugmentationInput => ({
  values,
  state,
  event: { ptTimestamp: 1, receivedAt: 2, sequence: 3 },
});

describe("augmentation functions", () => {
  it("add properties, each seeing the values so far and the previous state", () => {
    const aug = new Augmentations();
    aug.install("fahrenheit", "(v) => ({ temperatureF: v.temperature * 9 / 5 + 32 })");
    aug.install(
      "average",
      "(v, { state }) => ({ avgF: state.avgF === undefined ? v.temperatureF : (state.avgF + v.temperatureF) / 2 })",
    );
    aug.install("flag", "(v, { event }) => ({ outlier: v.temperature > 90, seq: event.sequence })");
    expect(aug.run(input({ temperature: 100 }, { avgF: 200 }))).toEqual({
      values: { temperature: 100, temperatureF: 212, avgF: 206, outlier: true, seq: 3 },
      errors: [],
    });
  });

  it("a replacement takes effect on the next run", () => {
    const aug = new Augmentations();
    expect(aug.install("f", "(v) => ({ y: v.x + 1 })")).toEqual({ replaced: false });
    expect(aug.run(input({ x: 1 })).values.y).toBe(2);
    expect(aug.install("f", "(v) => ({ y: v.x * 10 })")).toEqual({ replaced: true });
    expect(aug.run(input({ x: 1 })).values.y).toBe(10);
    expect(aug.list().map((f) => f.name)).toEqual(["f"]);
  });

  it("rejects a bad function with a clear error and keeps the old one", () => {
    const aug = new Augmentations();
    aug.install("f", "(v) => ({ y: 1 })");
    expect(thrown(() => aug.install("f", "(v) => ({ y: "), AugmentationError).message).toMatch(
      /"f": does not compile/,
    );
    expect(thrown(() => aug.install("f", "42"), AugmentationError).message).toMatch(
      /must be a function expression/,
    );
    expect(
      thrown(() => aug.install("f", "(v) => v.missing.deep", input({})), AugmentationError).message,
    ).toMatch(/Cannot read properties/);
    expect(thrown(() => aug.install("bad name!", "() => ({})"), AugmentationError).message).toMatch(
      /name must be/,
    );
    expect(aug.run(input({})).values).toEqual({ y: 1 });
  });

  it("contains a function that throws: the others still run", () => {
    const aug = new Augmentations();
    aug.install("boom", "() => { throw new Error('sensor table missing') }");
    aug.install("ok", "() => ({ fine: true })");
    const result = aug.run(input({ a: 1 }));
    expect(result.values).toEqual({ a: 1, fine: true });
    expect(result.errors.map((e) => e.message)).toEqual([
      'augmentation function "boom": sensor table missing',
    ]);
    aug.run(input({}));
    expect(aug.list().find((f) => f.name === "boom")?.failures).toBe(2);
  });

  it("stops a function that loops at its time limit", () => {
    const aug = new Augmentations({ timeoutMs: 20 });
    aug.install("loop", "() => { for (;;) {} }");
    const started = performance.now();
    const result = aug.run(input({ a: 1 }));
    expect(result.errors[0]?.message).toBe('augmentation function "loop": ran over its 20 ms limit');
    expect(result.values).toEqual({ a: 1 });
    expect(performance.now() - started).toBeLessThan(2_000);
  });

  it("runs the others when one loops on some messages only, and names the one that did", () => {
    const aug = new Augmentations({ timeoutMs: 20 });
    aug.install("before", "(v) => ({ b: v.x + 1 })");
    aug.install("sometimes", "(v) => { if (v.x > 5) for (;;) {} return { s: true }; }", input({ x: 1 }));
    aug.install("after", "(v) => ({ a: v.b * 2 })");
    expect(aug.run(input({ x: 1 })).values).toEqual({ x: 1, b: 2, s: true, a: 4 });
    const result = aug.run(input({ x: 10 }));
    expect(result.values).toEqual({ x: 10, b: 11, a: 22 });
    expect(result.errors.map((e) => e.message)).toEqual([
      'augmentation function "sometimes": ran over its 20 ms limit',
    ]);
    expect(aug.list().map((f) => f.failures)).toEqual([0, 1, 0]);
  });

  it("keeps a replaced function's place in the order, and removes cleanly", () => {
    const aug = new Augmentations();
    aug.install("first", "(v) => ({ order: [...(v.order ?? []), 'first'] })");
    aug.install("second", "(v) => ({ order: [...(v.order ?? []), 'second'] })");
    aug.install("first", "(v) => ({ order: [...(v.order ?? []), 'first2'] })");
    expect(aug.run(input({})).values.order).toEqual(["first2", "second"]);
    expect(aug.remove("first")).toBe(true);
    expect(aug.remove("first")).toBe(false);
    expect(aug.run(input({})).values.order).toEqual(["second"]);
  });

  it("gives no access to the host", () => {
    const aug = new Augmentations();
    aug.install(
      "probe",
      "() => ({ p: typeof process, r: typeof require, t: typeof setTimeout, g: typeof globalThis.Buffer })",
    );
    expect(aug.run(input({})).values).toEqual({
      p: "undefined",
      r: "undefined",
      t: "undefined",
      g: "undefined",
    });
    aug.install("escape", "(v) => ({ x: v.constructor.constructor('return process')() })");
    const { errors } = aug.run(input({}));
    expect(errors[0]?.message).toMatch(/Code generation from strings disallowed/);
  });

  it("insists on an object of values", () => {
    const aug = new Augmentations();
    aug.install("arr", "() => [1]");
    aug.install("promise", "async () => ({ a: 1 })");
    aug.install("nothing", "() => undefined");
    expect(aug.run(input({ k: 1 })).errors.map((e) => e.message)).toEqual([
      'augmentation function "arr": must return an object of property values (not an array)',
      'augmentation function "promise": must return an object of property values (not a promise)',
    ]);
  });
});
