/**
 * Augmentation functions ([dt-microservices]: after shadowing, before the twin handler): named
 * JavaScript functions `(values, context) => extraValues`, installable at run time, each twin's in
 * an isolated-vm isolate of its own with memory and time limits; JSON crosses, nothing else. Why it
 * is built so: docs/design.md, "The augmentation sandbox".
 */
import ivm from "isolated-vm";
import { DtcError } from "../domain/errors.js";

export interface AugmentationInput {
  /** Property values from shadowing (and earlier functions). */
  values: Record<string, unknown>;
  /** The twin's committed state before this update. */
  state: Record<string, unknown>;
  /** PT timestamp and sequence of the update. */
  event: { ptTimestamp: number; receivedAt: number; sequence: number | undefined };
}

export class AugmentationError extends DtcError {
  readonly functionName: string;
  /** Why, without the function's name. */
  readonly reason: string;
  constructor(functionName: string, reason: string) {
    super("invalid", `augmentation function "${functionName}": ${reason}`);
    this.name = "AugmentationError";
    this.functionName = functionName;
    this.reason = reason;
  }
}

export interface AugmentationOptions {
  /** Time limit of the functions of one update (and of one install or probe), milliseconds. */
  timeoutMs?: number;
  /** Heap limit of the twin's isolate, MB (isolated-vm's minimum is 8). */
  memoryLimitMb?: number;
  /** Overruns (time or memory) in a row after which a function is disabled. */
  maxConsecutiveOverruns?: number;
}

export interface AugmentationInfo {
  name: string;
  source: string;
  installedAt: number;
  failures: number;
  /** Disabled functions are kept (and exported) but do not run until installed again. */
  disabled: boolean;
  disabledReason?: string;
}

export interface DisabledAugmentation {
  name: string;
  reason: string;
}

export interface AugmentationRun {
  values: Record<string, unknown>;
  errors: AugmentationError[];
  /** Functions disabled during this run (or while the sandbox was rebuilt before it). */
  disabled: DisabledAugmentation[];
}

const NAME = /^[A-Za-z_][A-Za-z0-9_-]{0,63}$/;
const MAX_SOURCE_LENGTH = 65_536;
const NOT_A_FUNCTION = "source must be a function expression, e.g. (values, { state }) => ({ ... })";
const FUNCTION_KEYWORD_HINT = "; write a `function` expression in parentheses: (function (values) { ... })";
/** Keys that would change an object's prototype (or shadow its constructor) when assigned. */
const FORBIDDEN_KEYS = ["__proto__", "constructor", "prototype"];
/**
 * On a wall-clock timeout the host asks whether the process got the CPU: isolated-vm's
 * `isolate.cpuTime` counts the time a call holds the isolate (a waiting or descheduled thread
 * included, as measured here), so the process's own CPU time (`process.cpuUsage`, all threads, an
 * overestimate) is what tells a busy machine from a function that overran. A timeout with less than
 * half the limit of CPU is retried once with this many times the limit; a second timeout counts.
 */
const BUSY_ALLOWANCE = 4;

// Why nothing may run when a source is evaluated: an accepted source is a function expression,
// possibly in parentheses, between comments and whitespace (and a trailing semicolon).
const WRAP_BEFORE = /^(?:\s|\(|\/\/[^\n\r\u2028\u2029]*|\/\*[\s\S]*?\*\/)*$/;
const WRAP_AFTER = /^(?:\s|\)|;|\/\/[^\n\r\u2028\u2029]*|\/\*[\s\S]*?\*\/)*$/;

/** Whether `source` is the function whose text is `text`, wrapped only in parentheses and comments. */
function isWrappedFunction(source: string, text: string): boolean {
  if (text === "" || /^class\b/.test(text)) return false;
  for (let at = source.indexOf(text); at >= 0; at = source.indexOf(text, at + 1)) {
    if (WRAP_BEFORE.test(source.slice(0, at)) && WRAP_AFTER.test(source.slice(at + text.length))) return true;
  }
  return false;
}

/**
 * The code each context of an isolate starts with (it runs before any function's source). It keeps
 * the functions in a closure, not in globals, and holds on to the built-ins it uses, so that a
 * function that rewrites globals cannot reach them. Everything it returns is a string, a number or
 * a boolean: it never throws an object a function made (the host would read it outside any limit).
 */
const DRIVER = `(() => {
  "use strict";
  const indirectEval = globalThis.eval;
  const parse = JSON.parse;
  const stringify = JSON.stringify;
  const apply = Reflect.apply;
  const defineProperty = Reflect.defineProperty;
  const keys = Object.keys;
  const isArray = Array.isArray;
  const functionText = Function.prototype.toString;
  const sliceString = String.prototype.slice;
  const toText = String;
  const TypeError_ = TypeError;
  const SyntaxError_ = SyntaxError;
  const mapGet = Map.prototype.get;
  const mapSet = Map.prototype.set;
  const mapDelete = Map.prototype.delete;
  const fns = new Map();
  let current = -1;
  const data = (value) => ({ __proto__: null, value, writable: true, enumerable: true, configurable: true });
  const describe = (err) => {
    try {
      const message = err !== null && (typeof err === "object" || typeof err === "function") ? err.message : undefined;
      const text = typeof message === "string" ? message : toText(message === undefined ? err : message);
      return text.length > 1000 ? apply(sliceString, text, [0, 1000]) + "..." : text;
    } catch {
      return "threw a value that cannot be turned into a message";
    }
  };
  const kindOf = (out) => (isArray(out) ? "an array" : typeof out === "object" ? "a promise" : typeof out);
  const call = (slot, valuesJson, contextJson) => {
    const fn = apply(mapGet, fns, [slot]);
    if (typeof fn !== "function") throw new TypeError_("is not installed");
    const out = fn(parse(valuesJson), parse(contextJson));
    if (out === undefined || out === null) return valuesJson;
    if (typeof out !== "object" || isArray(out) || typeof out.then === "function") {
      throw new TypeError_("must return an object of property values (not " + kindOf(out) + ")");
    }
    const json = stringify(out);
    const extra = typeof json === "string" ? parse(json) : undefined;
    if (extra === null || typeof extra !== "object" || isArray(extra)) {
      throw new TypeError_("must return an object of property values (its JSON is not an object)");
    }
    const merged = parse(valuesJson);
    const names = keys(extra);
    for (let i = 0; i < names.length; i++) {
      const name = names[i];
      if (name === "__proto__" || name === "constructor" || name === "prototype") {
        throw new TypeError_("must not return a property named " + name);
      }
      defineProperty(merged, name, data(extra[name]));
    }
    return stringify(merged);
  };
  return {
    check(source) {
      try {
        let value;
        try {
          value = indirectEval(source);
        } catch (err) {
          return (err instanceof SyntaxError_ ? "S" : "T") + describe(err);
        }
        if (typeof value !== "function") return "N" + (value === null ? "null" : typeof value);
        return "F" + apply(functionText, value, []);
      } catch {
        return "Tcould not be checked";
      }
    },
    add(slot, source) {
      try {
        const fn = indirectEval(source);
        if (typeof fn !== "function") return false;
        apply(mapSet, fns, [slot, fn]);
        return true;
      } catch {
        return false;
      }
    },
    remove(slot) {
      apply(mapDelete, fns, [slot]);
    },
    current() {
      return current;
    },
    run(slotsJson, valuesJson, contextJson) {
      try {
        const slots = parse(slotsJson);
        const errors = [];
        let values = valuesJson;
        for (let i = 0; i < slots.length; i++) {
          current = slots[i];
          try {
            values = call(current, values, contextJson);
          } catch (err) {
            defineProperty(errors, errors.length, data([current, describe(err)]));
          }
        }
        // Microtasks the functions queued run after this returns (within the call's limit): a
        // timeout then is nobody's in particular, and the host finds out whose.
        current = -1;
        return '{"values":' + values + ',"errors":' + stringify(errors) + "}";
      } catch {
        current = -1;
        return "X";
      }
    },
  };
})()`;

/** The driver's functions, as the host calls them. */
interface DriverApi {
  context: ivm.Context;
  check: ivm.Reference<(source: string) => string>;
  add: ivm.Reference<(slot: number, source: string) => boolean>;
  remove: ivm.Reference<(slot: number) => void>;
  run: ivm.Reference<(slots: string, values: string, context: string) => string>;
  current: ivm.Reference<() => number>;
}

interface Sandbox {
  isolate: ivm.Isolate;
  driverScript: ivm.Script;
  /** Where the functions live. */
  main: DriverApi;
  /** Where sources are tried first; thrown away whenever a source it tried ran anything. */
  quarantine: DriverApi | undefined;
}

function driverIn(isolate: ivm.Isolate, script: ivm.Script): DriverApi {
  const context = isolate.createContextSync();
  const api = script.runSync(context, { reference: true }) as ivm.Reference<Record<string, unknown>>;
  const fn = <F>(name: string) => api.getSync(name, { reference: true }) as unknown as ivm.Reference<F>;
  return {
    context,
    check: fn("check"),
    add: fn("add"),
    remove: fn("remove"),
    run: fn("run"),
    current: fn("current"),
  };
}

/** A call into the isolate that did not complete. */
class SandboxFailure extends Error {
  constructor(
    readonly kind: "timeout" | "memory" | "error",
    message: string,
  ) {
    super(message);
  }
}

interface Installed {
  name: string;
  source: string;
  installedAt: number;
  failures: number;
  /** Overruns in a row; any run that completes within the limits resets it. */
  overruns: number;
  /** Its key in the isolate; undefined while disabled. */
  slot: number | undefined;
  disabledReason: string | undefined;
}

type Outcome =
  | { ok: true; values: Record<string, unknown>; errors: [number, string][] }
  | { ok: false; slot: number | undefined; reason: string; malformed?: boolean };

const isPlainObject = (value: unknown): value is Record<string, unknown> =>
  typeof value === "object" && value !== null && !Array.isArray(value);

const contextJsonOf = (input: AugmentationInput): string =>
  JSON.stringify({ state: input.state, event: input.event });

/** The driver's answer to a run, checked: anything else means the functions broke their sandbox. */
function parseOutcome(text: string): Outcome | undefined {
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    return undefined;
  }
  if (!isPlainObject(parsed) || !isPlainObject(parsed.values) || !Array.isArray(parsed.errors))
    return undefined;
  const errors: [number, string][] = [];
  for (const error of parsed.errors as unknown[]) {
    if (!Array.isArray(error) || typeof error[0] !== "number" || typeof error[1] !== "string")
      return undefined;
    errors.push([error[0], error[1]]);
  }
  const values = parsed.values;
  // The driver refuses these already; the host does not rely on it.
  for (const key of FORBIDDEN_KEYS) if (Object.hasOwn(values, key)) delete values[key];
  return { ok: true, values, errors };
}

/**
 * The augmentation functions of one twin, run in installation order, in one isolate created on
 * first install and rebuilt (its functions evaluated again) if a function exhausts its memory.
 * `dispose()` frees it when the twin is gone.
 */
export class Augmentations {
  readonly #functions = new Map<string, Installed>();
  readonly #timeoutMs: number;
  readonly #memoryLimitMb: number;
  readonly #maxOverruns: number;
  #box: Sandbox | undefined;
  #nextSlot = 0;
  #disposed = false;
  /** Disabled while rebuilding the sandbox, reported by the next run. */
  readonly #pendingDisabled: DisabledAugmentation[] = [];
  #rebuilds = 0;
  #busyRetries = 0;

  constructor(options: AugmentationOptions = {}) {
    this.#timeoutMs = options.timeoutMs ?? 50;
    this.#memoryLimitMb = options.memoryLimitMb ?? 32;
    this.#maxOverruns = options.maxConsecutiveOverruns ?? 3;
  }

  /** Whether an isolate is alive, how often it was rebuilt, how often a busy machine got a retry. */
  stats(): { isolate: boolean; rebuilds: number; busyRetries: number } {
    return {
      isolate: this.#box !== undefined && !this.#box.isolate.isDisposed,
      rebuilds: this.#rebuilds,
      busyRetries: this.#busyRetries,
    };
  }

  #sandbox(): Sandbox {
    const existing = this.#box;
    if (existing && !existing.isolate.isDisposed) return existing;
    if (this.#disposed) throw new SandboxFailure("error", "the sandbox is disposed (the twin was removed)");
    const isolate = new ivm.Isolate({ memoryLimit: this.#memoryLimitMb });
    const driverScript = isolate.compileScriptSync(DRIVER, { filename: "dtc:augmentation-driver" });
    const box: Sandbox = {
      isolate,
      driverScript,
      main: driverIn(isolate, driverScript),
      quarantine: undefined,
    };
    this.#box = box;
    // After a memory overrun the functions come back (the globals they kept do not). They passed
    // every check before, so evaluating them runs nothing.
    for (const fn of this.#functions.values()) {
      if (fn.slot === undefined) continue;
      let added = false;
      try {
        added = this.#call(box, box.main.add, [fn.slot, fn.source]);
      } catch {
        // reported below
      }
      if (added) continue;
      const reason = "could not be evaluated again when its sandbox was rebuilt";
      this.#disable(fn, reason);
      this.#pendingDisabled.push({ name: fn.name, reason });
      if (this.#box !== box) return this.#sandbox();
    }
    return box;
  }

  /** Frees the isolate; no function runs any more. */
  dispose(): void {
    this.#disposed = true;
    this.#discard();
  }

  #discard(): void {
    const box = this.#box;
    this.#box = undefined;
    if (box && !box.isolate.isDisposed) box.isolate.dispose();
  }

  #classify(box: Sandbox, err: unknown): SandboxFailure {
    const message = err instanceof Error ? err.message : String(err);
    if (box.isolate.isDisposed || /memory limit/i.test(message)) {
      return new SandboxFailure("memory", `ran out of its ${this.#memoryLimitMb} MB memory limit`);
    }
    if (/timed out/i.test(message))
      return new SandboxFailure("timeout", `ran over its ${this.#timeoutMs} ms limit`);
    return new SandboxFailure("error", message);
  }

  /** One call into the isolate with the time limit; throws a SandboxFailure when it did not complete. */
  #call<A extends (string | number)[], R>(box: Sandbox, fn: ivm.Reference<(...args: A) => R>, args: A): R {
    // The generic signature checks the call sites; isolated-vm's mapped argument types need it plain.
    const target = fn as unknown as ivm.Reference<(...args: (string | number)[]) => R>;
    const started = process.cpuUsage();
    const attempt = (limitMs: number) =>
      target.applySync(undefined, args, { timeout: Math.max(1, Math.ceil(limitMs)) }) as R;
    let failure: SandboxFailure;
    try {
      return attempt(this.#timeoutMs);
    } catch (err) {
      failure = this.#classify(box, err);
    }
    if (failure.kind === "timeout") {
      const used = process.cpuUsage(started);
      if ((used.user + used.system) / 1000 < this.#timeoutMs / 2) {
        this.#busyRetries++;
        try {
          return attempt(this.#timeoutMs * BUSY_ALLOWANCE);
        } catch (err) {
          failure = this.#classify(box, err);
        }
      }
    }
    if (failure.kind === "memory" && this.#box === box) {
      this.#rebuilds++;
      this.#discard();
    }
    throw failure;
  }

  #removeSlot(slot: number): void {
    const box = this.#box;
    if (!box || box.isolate.isDisposed) return;
    try {
      this.#call(box, box.main.remove, [slot]);
    } catch {
      // A sandbox that cannot even forget a function is rebuilt without it.
      this.#discard();
    }
  }

  #releaseQuarantine(box: Sandbox): void {
    box.quarantine?.context.release();
    box.quarantine = undefined;
  }

  /**
   * Evaluates the source on its own (never pasted into other code) in the quarantine context:
   * it must be one function expression, and nothing else may run when it is evaluated. A source
   * that ran anything leaves the quarantine context behind it, so it affects nothing.
   */
  #checkSource(box: Sandbox, name: string, source: string): void {
    box.quarantine ??= driverIn(box.isolate, box.driverScript);
    let verdict: string;
    try {
      verdict = this.#call(box, box.quarantine.check, [source]);
    } catch (err) {
      if (this.#box === box) this.#releaseQuarantine(box);
      throw err;
    }
    const kind = verdict[0];
    const detail = verdict.slice(1);
    if (kind === "F" && isWrappedFunction(source, detail)) return;
    this.#releaseQuarantine(box);
    const hint = /^[\s(]*(?:async\s+)?function\b/.test(source) ? FUNCTION_KEYWORD_HINT : "";
    if (kind === "S") throw new AugmentationError(name, `does not compile: ${detail}${hint}`);
    if (kind === "T") throw new AugmentationError(name, `${NOT_A_FUNCTION} (evaluating it threw: ${detail})`);
    if (kind === "N")
      throw new AugmentationError(name, `${NOT_A_FUNCTION} (it evaluates to ${detail})${hint}`);
    throw new AugmentationError(
      name,
      `${NOT_A_FUNCTION}: one function expression alone, nothing that runs when it is evaluated (no class)`,
    );
  }

  /**
   * Installs or replaces `name`. The source must be one function expression; with `probe`, it
   * must also run on it without error within the limits. On any failure the function already
   * installed under `name` stays.
   */
  install(name: string, source: string, probe?: AugmentationInput): { replaced: boolean } {
    this.#checkName(name);
    if (typeof source !== "string" || source.trim() === "") {
      throw new AugmentationError(name, "source must be a non-empty string of JavaScript");
    }
    if (source.length > MAX_SOURCE_LENGTH) {
      throw new AugmentationError(name, `source must be at most ${MAX_SOURCE_LENGTH} characters`);
    }
    const slot = this.#nextSlot++;
    try {
      const box = this.#sandbox();
      this.#checkSource(box, name, source);
      if (!this.#call(box, box.main.add, [slot, source])) throw new AugmentationError(name, NOT_A_FUNCTION);
      try {
        if (probe) {
          const outcome = this.#runSlots([slot], JSON.stringify(probe.values), contextJsonOf(probe));
          if (!outcome.ok) throw new AugmentationError(name, outcome.reason);
          const error = outcome.errors[0];
          if (error) throw new AugmentationError(name, error[1]);
        }
      } catch (err) {
        this.#removeSlot(slot);
        throw err;
      }
    } catch (err) {
      throw err instanceof SandboxFailure ? new AugmentationError(name, err.message) : err;
    }
    return { replaced: this.#put(name, source, slot, undefined) };
  }

  /** Puts `name` in place of the function of that name (freeing its slot); whether there was one. */
  #put(name: string, source: string, slot: Installed["slot"], disabledReason: string | undefined): boolean {
    const previous = this.#functions.get(name);
    if (previous?.slot !== undefined) this.#removeSlot(previous.slot);
    // Map.set on an existing name keeps its place in the order.
    this.#functions.set(name, {
      name,
      source,
      installedAt: Date.now(),
      failures: 0,
      overruns: 0,
      slot,
      disabledReason,
    });
    return previous !== undefined;
  }

  /** Registers a function that stays disabled (a restored state's), without evaluating it. */
  installDisabled(name: string, source: string, reason: string): void {
    this.#checkName(name);
    if (typeof source !== "string")
      throw new AugmentationError(name, "source must be a string of JavaScript");
    this.#put(name, source, undefined, reason);
  }

  #checkName(name: string): void {
    if (typeof name !== "string" || !NAME.test(name)) {
      throw new AugmentationError(
        String(name),
        "name must be 1-64 letters, digits, _ or -, not starting with a digit",
      );
    }
  }

  remove(name: string): boolean {
    const fn = this.#functions.get(name);
    if (!fn) return false;
    this.#functions.delete(name);
    if (fn.slot !== undefined) this.#removeSlot(fn.slot);
    return true;
  }

  list(): AugmentationInfo[] {
    return [...this.#functions.values()].map(({ name, source, installedAt, failures, disabledReason }) => ({
      name,
      source,
      installedAt,
      failures,
      disabled: disabledReason !== undefined,
      ...(disabledReason !== undefined ? { disabledReason } : {}),
    }));
  }

  /** Why `name` is disabled, or undefined when it runs (or is not installed). */
  disabledReason(name: string): string | undefined {
    return this.#functions.get(name)?.disabledReason;
  }

  #disable(fn: Installed, reason: string): void {
    if (fn.slot !== undefined) this.#removeSlot(fn.slot);
    fn.slot = undefined;
    fn.disabledReason = reason;
  }

  /** Runs `slots` in order in one call; on an overrun, says whose it was when it can tell. */
  #runSlots(slots: number[], valuesJson: string, contextJson: string): Outcome {
    const box = this.#sandbox();
    let text: string;
    try {
      text = this.#call(box, box.main.run, [JSON.stringify(slots), valuesJson, contextJson]);
    } catch (err) {
      if (!(err instanceof SandboxFailure)) throw err;
      let slot = slots.length === 1 ? slots[0] : undefined;
      if (slot === undefined && err.kind === "timeout" && !box.isolate.isDisposed) {
        try {
          const current = box.main.current.applySync(undefined, [], { timeout: this.#timeoutMs });
          if (current >= 0) slot = current;
        } catch {
          // unknown: found out by running the functions one by one
        }
      }
      return { ok: false, slot, reason: err.message };
    }
    return (
      parseOutcome(text) ?? {
        ok: false,
        slot: undefined,
        reason: "the functions broke their sandbox (it was reset)",
        malformed: true,
      }
    );
  }

  /**
   * Runs every function in order, each seeing the values so far. A function that throws is
   * skipped for this update (its failure counted and reported); the others still run. One that
   * runs over a limit stops the chain, which is run again without it; after `maxConsecutiveOverruns`
   * overruns in a row it is disabled. Never throws.
   */
  run(input: AugmentationInput): AugmentationRun {
    const disabled = this.#pendingDisabled.splice(0);
    const active = [...this.#functions.values()].filter((fn) => fn.slot !== undefined);
    if (active.length === 0 || this.#disposed) return { values: input.values, errors: [], disabled };
    const errors: AugmentationError[] = [];
    try {
      const values = this.#runChain(active, input, errors, disabled);
      return { values, errors, disabled: [...disabled, ...this.#pendingDisabled.splice(0)] };
    } catch (err) {
      errors.push(new AugmentationError("(sandbox)", err instanceof Error ? err.message : String(err)));
      return { values: input.values, errors, disabled: [...disabled, ...this.#pendingDisabled.splice(0)] };
    }
  }

  #runChain(
    active: Installed[],
    input: AugmentationInput,
    errors: AugmentationError[],
    disabled: DisabledAugmentation[],
  ): Record<string, unknown> {
    const valuesJson = JSON.stringify(input.values);
    const contextJson = contextJsonOf(input);
    let remaining = active;
    while (remaining.length > 0) {
      const outcome = this.#runSlots(
        remaining.map((fn) => fn.slot as number),
        valuesJson,
        contextJson,
      );
      if (outcome.ok) {
        for (const fn of remaining) fn.overruns = 0;
        for (const [slot, message] of outcome.errors) {
          const fn = remaining.find((f) => f.slot === slot);
          if (!fn) continue;
          fn.failures++;
          errors.push(new AugmentationError(fn.name, message));
        }
        return outcome.values;
      }
      if (outcome.malformed) {
        this.#discard();
        errors.push(new AugmentationError("(sandbox)", outcome.reason));
        return input.values;
      }
      const blamed =
        outcome.slot !== undefined
          ? remaining.filter((fn) => fn.slot === outcome.slot).map((fn) => ({ fn, reason: outcome.reason }))
          : this.#blame(remaining, valuesJson, contextJson);
      if (blamed.length === 0) {
        const names = remaining.map((fn) => fn.name).join(", ");
        errors.push(new AugmentationError(names, `together ${outcome.reason}`));
        return input.values;
      }
      for (const { fn, reason } of blamed) this.#overran(fn, reason, errors, disabled);
      remaining = remaining.filter((fn) => !blamed.some((b) => b.fn === fn));
    }
    return input.values;
  }

  /** Runs the functions one by one to find those that overrun (when the chain could not tell). */
  #blame(
    functions: Installed[],
    valuesJson: string,
    contextJson: string,
  ): { fn: Installed; reason: string }[] {
    const blamed: { fn: Installed; reason: string }[] = [];
    for (const fn of functions) {
      if (fn.slot === undefined) continue;
      const outcome = this.#runSlots([fn.slot], valuesJson, contextJson);
      if (!outcome.ok && !outcome.malformed) blamed.push({ fn, reason: outcome.reason });
    }
    return blamed;
  }

  #overran(
    fn: Installed,
    reason: string,
    errors: AugmentationError[],
    disabled: DisabledAugmentation[],
  ): void {
    fn.failures++;
    fn.overruns++;
    errors.push(new AugmentationError(fn.name, reason));
    if (fn.overruns >= this.#maxOverruns) {
      const why = `disabled after ${fn.overruns} overruns in a row (the last: ${reason})`;
      this.#disable(fn, why);
      disabled.push({ name: fn.name, reason: why });
    }
  }
}
