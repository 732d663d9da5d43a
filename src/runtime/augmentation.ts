import { types } from "node:util";
import vm from "node:vm";

/**
 * Augmentation functions (paper 002: after shadowing, before the twin handler): named JavaScript
 * functions `(values, context) => extraValues` that add or override properties, installable and
 * replaceable at run time.
 *
 * Each runs in its own node:vm context: no host globals (no process, require, timers), no code
 * generation from strings, a time limit per call. Data crosses the boundary only as JSON strings, so
 * the function never holds a host object (whose constructor chain would lead back to the host).
 * node:vm contains mistakes (throws, loops, bad results); it is not a security boundary against
 * hostile code, which the management interface's access control must keep out.
 */

export interface AugmentationInput {
  /** Property values from shadowing (and earlier functions). */
  values: Record<string, unknown>;
  /** The twin's committed state before this update. */
  state: Record<string, unknown>;
  /** PT timestamp and sequence of the update. */
  event: { ptTimestamp: number; receivedAt: number; sequence: number | undefined };
}

export class AugmentationError extends Error {
  readonly functionName: string;
  constructor(functionName: string, reason: string) {
    super(`augmentation function "${functionName}": ${reason}`);
    this.name = "AugmentationError";
    this.functionName = functionName;
  }
}

/** The message of an error from any realm (errors thrown in a vm context are not host `Error`s). */
function messageOf(err: unknown): string {
  return types.isNativeError(err) ? err.message : String(err);
}

const contextJsonOf = (input: AugmentationInput): string =>
  JSON.stringify({ state: input.state, event: input.event });

interface Installed {
  name: string;
  source: string;
  installedAt: number;
  context: vm.Context;
  failures: number;
}

// Runs inside the context: input and output are JSON strings. The context ({ state, event }) is the
// same for every function of one update, so the host serialises it once per update, not per function.
const CALL = new vm.Script(`(() => {
  const out = __fn(JSON.parse(__values), JSON.parse(__context));
  if (out === undefined || out === null) return "{}";
  if (typeof out !== "object" || Array.isArray(out) || typeof out.then === "function") {
    throw new TypeError("must return an object of property values (not " + (Array.isArray(out) ? "an array" : typeof out.then === "function" ? "a promise" : typeof out) + ")");
  }
  return JSON.stringify(out);
})()`);

const NAME = /^[A-Za-z_][A-Za-z0-9_-]{0,63}$/;

export interface AugmentationOptions {
  /** Time limit of one call, milliseconds. */
  timeoutMs?: number;
}

/** The augmentation functions of one twin, run in installation order. */
export class Augmentations {
  readonly #functions = new Map<string, Installed>();
  readonly #timeoutMs: number;

  constructor(options: AugmentationOptions = {}) {
    this.#timeoutMs = options.timeoutMs ?? 50;
  }

  #call(fn: Installed, values: Record<string, unknown>, contextJson: string): Record<string, unknown> {
    fn.context.__values = JSON.stringify(values);
    fn.context.__context = contextJson;
    try {
      return JSON.parse(CALL.runInContext(fn.context, { timeout: this.#timeoutMs }) as string);
    } catch (err) {
      const message = messageOf(err);
      throw new AugmentationError(
        fn.name,
        /timed out/i.test(message) ? `ran over its ${this.#timeoutMs} ms limit` : message,
      );
    } finally {
      fn.context.__values = undefined;
      fn.context.__context = undefined;
    }
  }

  /**
   * Installs or replaces `name`. The source must evaluate to a function; with `probe`, it must also
   * run on it without error. On any failure the function already installed under `name` stays.
   */
  install(name: string, source: string, probe?: AugmentationInput): { replaced: boolean } {
    if (!NAME.test(name))
      throw new AugmentationError(
        name,
        "name must be 1-64 letters, digits, _ or -, not starting with a digit",
      );
    const context = vm.createContext(Object.create(null), {
      name: `augmentation:${name}`,
      codeGeneration: { strings: false, wasm: false },
    });
    try {
      vm.runInContext(`globalThis.__fn = (${source}\n);`, context, {
        timeout: this.#timeoutMs,
        filename: `${name}.js`,
      });
    } catch (err) {
      throw new AugmentationError(name, `does not compile: ${messageOf(err)}`);
    }
    if (vm.runInContext("typeof __fn", context) !== "function") {
      throw new AugmentationError(
        name,
        "source must be a function expression, e.g. (values, { state }) => ({ ... })",
      );
    }
    const fn: Installed = { name, source, installedAt: Date.now(), context, failures: 0 };
    if (probe) this.#call(fn, probe.values, contextJsonOf(probe));
    const replaced = this.#functions.has(name);
    this.#functions.set(name, fn);
    return { replaced };
  }

  remove(name: string): boolean {
    return this.#functions.delete(name);
  }

  list(): { name: string; source: string; installedAt: number; failures: number }[] {
    return [...this.#functions.values()].map(({ name, source, installedAt, failures }) => ({
      name,
      source,
      installedAt,
      failures,
    }));
  }

  /**
   * Runs every function in order, each seeing the values so far. A function that fails is skipped
   * for this update (its failure counted and reported); the others still run.
   */
  run(input: AugmentationInput): { values: Record<string, unknown>; errors: AugmentationError[] } {
    let values = input.values;
    const errors: AugmentationError[] = [];
    if (this.#functions.size === 0) return { values, errors };
    const contextJson = contextJsonOf(input);
    for (const fn of this.#functions.values()) {
      try {
        values = { ...values, ...this.#call(fn, values, contextJson) };
      } catch (err) {
        fn.failures++;
        errors.push(err as AugmentationError);
      }
    }
    return { values, errors };
  }
}
