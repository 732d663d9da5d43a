import { describe, expect, it } from "vitest";
import { AugmentationError, type AugmentationInput, Augmentations } from "../src/runtime/augmentation.js";
import { thrown, waitFor } from "./helpers.js";

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
      disabled: [],
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
    // Code made from strings runs in the isolate too, where there is no host to reach.
    aug.install("escape", "(v) => ({ x: v.constructor.constructor('return process')() })");
    const { errors } = aug.run(input({}));
    expect(errors[0]?.message).toMatch(/process is not defined/);
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

describe("the augmentation sandbox (isolated-vm)", () => {
  it("compiles a source on its own: one that breaks out of a function expression is refused, and nothing of it runs", () => {
    const aug = new Augmentations();
    aug.install("keep", "(v) => ({ kept: true })");
    const refusals: [string, RegExp][] = [
      // Pasted into `__fns.set(__name, (${source}))`, this replaced the host's function table.
      ["0)); globalThis.__fns = null; ((0", /does not compile/],
      ["0), globalThis.hit = 1, (0", /does not compile/],
      ["(globalThis.hit = 1, () => ({}))", /one function expression alone/],
      ["globalThis.hit = () => ({})", /one function expression alone/],
      ["(class { static { globalThis.hit = 1; } })", /no class/],
      [
        "(() => { globalThis.hit = 1; return {}; })()",
        /must be a function expression.*\(it evaluates to object\)/,
      ],
      ["function f() { return {}; }", /evaluates to undefined\).*in parentheses/],
      ["(() => 1); globalThis.hit = 1; (() => 2)", /one function expression alone/],
    ];
    for (const [source, reason] of refusals) {
      expect([source, thrown(() => aug.install("evil", source), AugmentationError).message]).toEqual([
        source,
        expect.stringMatching(reason),
      ]);
    }
    expect(aug.list().map((f) => f.name)).toEqual(["keep"]);
    aug.install("look", "() => ({ hit: typeof globalThis.hit, fns: typeof globalThis.__fns })");
    expect(aug.run(input({})).values).toEqual({ kept: true, hit: "undefined", fns: "undefined" });
    // What a function expression may look like: parentheses, comments, a semicolon.
    aug.install("commented", "// doc\n/* more */ ((v) => ({ c: 1 })); // end");
    aug.install("classic", "(function (v) { return { d: 2 }; })");
    expect(aug.run(input({})).values).toMatchObject({ c: 1, d: 2 });
  });

  it("holds the time limit over microtasks a function queues, and the host's event loop keeps running", async () => {
    const aug = new Augmentations({ timeoutMs: 20 });
    aug.install("ok", "() => ({ fine: true })");
    const micro = "() => { Promise.resolve().then(() => { for (;;) {} }); return { queued: true }; }";
    // Probed, it is refused up front.
    expect(thrown(() => aug.install("micro", micro, input({})), AugmentationError).message).toBe(
      'augmentation function "micro": ran over its 20 ms limit',
    );
    aug.install("micro", micro);
    let ticks = 0;
    const timer = setInterval(() => ticks++, 1);
    try {
      const started = performance.now();
      const result = aug.run(input({ a: 1 }));
      expect(performance.now() - started).toBeLessThan(2_000);
      expect(result.errors.map((e) => e.message)).toEqual([
        'augmentation function "micro": ran over its 20 ms limit',
      ]);
      expect(result.values).toEqual({ a: 1, fine: true });
      const before = ticks;
      await waitFor("the host timer to tick", () => ticks >= before + 3, 2_000);
    } finally {
      clearInterval(timer);
    }
  });

  it("reads an error's message inside the isolate, within the limit", () => {
    const aug = new Augmentations({ timeoutMs: 20 });
    aug.install("getter", "() => { throw { get message() { for (;;) {} } }; }");
    aug.install("plain", "() => { throw 'just a string'; }");
    aug.install("odd", "() => { throw { get message() { throw new Error('nested'); } }; }");
    const started = performance.now();
    const { errors } = aug.run(input({}));
    expect(performance.now() - started).toBeLessThan(2_000);
    // The overrun is found first; the chain then runs again without it.
    expect(errors.map((e) => e.message)).toEqual([
      'augmentation function "getter": ran over its 20 ms limit',
      'augmentation function "plain": just a string',
      'augmentation function "odd": threw a value that cannot be turned into a message',
    ]);
  });

  it("refuses results that would set a prototype", () => {
    const aug = new Augmentations();
    aug.install("proto", `() => JSON.parse('{"__proto__": {"polluted": true}, "a": 1}')`);
    aug.install("ctor", "() => ({ constructor: 1 })");
    aug.install("prototype", "() => ({ prototype: {} })");
    aug.install("fine", "() => ({ b: 2 })");
    const { values, errors } = aug.run(input({}));
    expect(errors.map((e) => e.message)).toEqual([
      'augmentation function "proto": must not return a property named __proto__',
      'augmentation function "ctor": must not return a property named constructor',
      'augmentation function "prototype": must not return a property named prototype',
    ]);
    expect(values).toEqual({ b: 2 });
    expect(Object.getPrototypeOf(values)).toBe(Object.prototype);
    expect(Object.hasOwn(values, "__proto__")).toBe(false);
  });

  it("stops a memory bomb at the isolate's memory limit; the process is unharmed and the others run on", () => {
    const aug = new Augmentations({ memoryLimitMb: 16, timeoutMs: 5_000 });
    aug.install("ok", "(v) => ({ n: (v.n ?? 0) + 1 })");
    aug.install("bomb", "() => { const a = []; for (;;) a.push(new Array(1e6).fill(1)); }");
    const heap = process.memoryUsage().heapUsed;
    const result = aug.run(input({ n: 1 }));
    expect(result.errors.map((e) => e.message)).toEqual([
      'augmentation function "bomb": ran out of its 16 MB memory limit',
    ]);
    expect(result.values).toEqual({ n: 2 });
    // The isolate's heap is not the host's.
    expect(process.memoryUsage().heapUsed - heap).toBeLessThan(16 * 1024 * 1024);
    expect(aug.stats().rebuilds).toBeGreaterThanOrEqual(1);
    // Refused at install too, and the installed functions survive the rebuild.
    expect(
      thrown(
        () =>
          aug.install("bomb2", "() => { const a = []; for (;;) a.push(new Array(1e6).fill(1)); }", input({})),
        AugmentationError,
      ).message,
    ).toMatch(/ran out of its 16 MB memory limit/);
    aug.remove("bomb");
    expect(aug.run(input({ n: 5 }))).toEqual({ values: { n: 6 }, errors: [], disabled: [] });
  });

  it("disables a function after 3 overruns in a row; a run within the limits resets the count", () => {
    const aug = new Augmentations({ timeoutMs: 20 });
    aug.install("sometimes", "(v) => { if (v.x > 5) for (;;) {} return { s: true }; }");
    aug.install("other", "() => ({ o: true })");
    const run = (x: number) => aug.run(input({ x }));
    run(10);
    run(10);
    expect(run(1).values).toEqual({ x: 1, s: true, o: true });
    run(10);
    expect(run(10).disabled).toEqual([]);
    const third = run(10);
    expect(third.disabled).toEqual([
      {
        name: "sometimes",
        reason: "disabled after 3 overruns in a row (the last: ran over its 20 ms limit)",
      },
    ]);
    expect(aug.list()).toMatchObject([
      { name: "sometimes", disabled: true, disabledReason: expect.stringMatching(/3 overruns in a row/) },
      { name: "other", disabled: false },
    ]);
    // No longer run: no error, no time spent.
    const started = performance.now();
    expect(run(10)).toEqual({ values: { x: 10, o: true }, errors: [], disabled: [] });
    expect(performance.now() - started).toBeLessThan(20);
    expect(aug.disabledReason("sometimes")).toMatch(/overruns/);
    // Installed again, it runs again.
    aug.install("sometimes", "(v) => ({ s: v.x })");
    expect(run(10).values).toEqual({ x: 10, s: 10, o: true });
  });

  it("retries once a timeout that used little CPU (the thread did not get it, as on a busy machine)", () => {
    const aug = new Augmentations({ timeoutMs: 30 });
    // Atomics.wait holds the thread without using CPU: the wall clock runs, the function does not.
    aug.install(
      "waits",
      "() => { Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 60); return { w: 1 }; }",
    );
    expect(aug.run(input({}))).toEqual({ values: { w: 1 }, errors: [], disabled: [] });
    expect(aug.stats().busyRetries).toBe(1);
    // The retry has a bound too.
    aug.install(
      "sleeps",
      "() => { Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 10000); return {}; }",
    );
    const started = performance.now();
    const { errors } = aug.run(input({}));
    expect(errors.map((e) => e.message)).toEqual([
      'augmentation function "sleeps": ran over its 30 ms limit',
    ]);
    expect(performance.now() - started).toBeLessThan(2_000);
  });

  it("creates its isolate on first install and frees it on dispose", () => {
    const aug = new Augmentations();
    expect(aug.stats().isolate).toBe(false);
    aug.install("f", "() => ({ y: 1 })");
    expect(aug.stats().isolate).toBe(true);
    aug.dispose();
    expect(aug.stats().isolate).toBe(false);
    expect(aug.run(input({ a: 1 }))).toEqual({ values: { a: 1 }, errors: [], disabled: [] });
    expect(thrown(() => aug.install("g", "() => ({})"), AugmentationError).message).toMatch(/disposed/);
    expect(aug.list().map((f) => f.name)).toEqual(["f"]);
  });

  it("timing: hot update and per-update cost (printed, for docs/benchmarks.md)", () => {
    const aug = new Augmentations();
    const source =
      "(v) => (typeof v.temperature === 'number' ? { temperatureF: v.temperature * 9 / 5 + 32 } : {})";
    aug.install("fahrenheit", source);
    const probe = input({ temperature: 20 }, { temperature: 19 });
    const median = (fn: () => void, n: number) => {
      for (let i = 0; i < 50; i++) fn();
      const times: number[] = [];
      for (let i = 0; i < n; i++) {
        const t = performance.now();
        fn();
        times.push(performance.now() - t);
      }
      return times.sort((a, b) => a - b)[Math.floor(n / 2)] as number;
    };
    const install = median(() => aug.install("fahrenheit", source, probe), 500);
    const run = median(() => aug.run(probe), 2000);
    process.stdout.write(
      `augmentation timing: hot update ${install.toFixed(3)} ms, run (1 function) ${run.toFixed(3)} ms (medians)\n`,
    );
    expect(aug.run(probe).values.temperatureF).toBe(68);
  });
});
