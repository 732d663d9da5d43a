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
  failures: number;
}

// Defined once per context: the functions, in order, live inside it (a Map keeps a replaced
// function's place). The host never hands the context an object of its own, only strings.
const SETUP = new vm.Script(`(() => {
  const fns = new Map();
  const check = (out) => {
    if (out === undefined || out === null) return {};
    if (typeof out !== "object" || Array.isArray(out) || typeof out.then === "function") {
      throw new TypeError("must return an object of property values (not " + (Array.isArray(out) ? "an array" : typeof out.then === "function" ? "a promise" : typeof out) + ")");
    }
    return out;
  };
  // Runs the chain on JSON input; returns JSON {values, errors}. __current names the running function,
  // so that the host knows which one ran over the time limit.
  globalThis.__run = (valuesJson, contextJson, skipJson, only) => {
    const skip = JSON.parse(skipJson);
    let values = JSON.parse(valuesJson);
    const errors = [];
    for (const [name, fn] of fns) {
      if (only !== undefined ? name !== only : skip.includes(name)) continue;
      globalThis.__current = name;
      try {
        const out = check(fn(JSON.parse(JSON.stringify(values)), JSON.parse(contextJson)));
        values = Object.assign({}, values, JSON.parse(JSON.stringify(out)));
      } catch (err) {
        errors.push([name, err instanceof Error ? err.message : String(err)]);
      }
    }
    globalThis.__current = undefined;
    return JSON.stringify({ values, errors });
  };
  globalThis.__fns = fns;
})()`);

const RUN = new vm.Script("__run(__values, __context, __skip, __only)");

const NAME = /^[A-Za-z_][A-Za-z0-9_-]{0,63}$/;

export interface AugmentationOptions {
  /** Time limit of the functions of one update (and of one probe), milliseconds. */
  timeoutMs?: number;
}

/**
 * The augmentation functions of one twin, run in installation order. They share one node:vm
 * context (created on first install), apart from the host, and run in one call per update: a
 * context costs about a millisecond to create and each call with a time limit starts a watchdog,
 * so one context and one call keep hot updates and per-message overhead small.
 */
export class Augmentations {
  readonly #functions = new Map<string, Installed>();
  readonly #timeoutMs: number;
  #context: vm.Context | undefined;

  constructor(options: AugmentationOptions = {}) {
    this.#timeoutMs = options.timeoutMs ?? 50;
  }

  #sandbox(): vm.Context {
    if (!this.#context) {
      this.#context = vm.createContext(Object.create(null), {
        name: "augmentation",
        codeGeneration: { strings: false, wasm: false },
      });
      SETUP.runInContext(this.#context);
    }
    return this.#context;
  }

  /** Runs the chain (or only `only`) once; throws the timeout with the name of the function that ran over. */
  #runChain(
    values: Record<string, unknown>,
    contextJson: string,
    skip: string[],
    only?: string,
  ): { values: Record<string, unknown>; errors: [string, string][] } {
    const context = this.#sandbox();
    context.__values = JSON.stringify(values);
    context.__context = contextJson;
    context.__skip = JSON.stringify(skip);
    context.__only = only;
    try {
      return JSON.parse(RUN.runInContext(context, { timeout: this.#timeoutMs }) as string);
    } catch (err) {
      const message = messageOf(err);
      const culprit = String(context.__current ?? only ?? "(unknown)");
      context.__current = undefined;
      throw new AugmentationError(
        culprit,
        /timed out/i.test(message) ? `ran over its ${this.#timeoutMs} ms limit` : message,
      );
    } finally {
      context.__values = undefined;
      context.__context = undefined;
      context.__skip = undefined;
      context.__only = undefined;
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
    const context = this.#sandbox();
    // Compiled under a candidate name, so the installed function keeps running if this one fails.
    const candidate = `\u0000candidate:${name}`;
    try {
      context.__name = candidate;
      vm.runInContext(`__fns.set(__name, (${source}\n));`, context, {
        timeout: this.#timeoutMs,
        filename: `${name}.js`,
      });
    } catch (err) {
      vm.runInContext("__fns.delete(__name)", context);
      throw new AugmentationError(name, `does not compile: ${messageOf(err)}`);
    }
    try {
      if (vm.runInContext("typeof __fns.get(__name)", context) !== "function") {
        throw new AugmentationError(
          name,
          "source must be a function expression, e.g. (values, { state }) => ({ ... })",
        );
      }
      if (probe) {
        const { errors } = this.#runChain(probe.values, contextJsonOf(probe), [], candidate);
        if (errors[0]) throw new AugmentationError(name, errors[0][1]);
      }
      context.__target = name;
      // Map.set on an existing name keeps its place in the order.
      vm.runInContext("__fns.set(__target, __fns.get(__name))", context);
    } catch (err) {
      throw err instanceof AugmentationError && err.functionName === candidate
        ? new AugmentationError(name, err.message.replace(/^augmentation function "[^"]*": /, ""))
        : err;
    } finally {
      vm.runInContext("__fns.delete(__name)", context);
      context.__name = undefined;
      context.__target = undefined;
    }
    const replaced = this.#functions.has(name);
    this.#functions.set(name, { name, source, installedAt: Date.now(), failures: 0 });
    return { replaced };
  }

  remove(name: string): boolean {
    if (!this.#functions.delete(name)) return false;
    const context = this.#sandbox();
    context.__name = name;
    vm.runInContext("__fns.delete(__name)", context);
    context.__name = undefined;
    return true;
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
   * for this update (its failure counted and reported); the others still run. One that runs over
   * the time limit stops the chain, which is run again without it.
   */
  run(input: AugmentationInput): { values: Record<string, unknown>; errors: AugmentationError[] } {
    if (this.#functions.size === 0) return { values: input.values, errors: [] };
    const contextJson = contextJsonOf(input);
    const errors: AugmentationError[] = [];
    const skip: string[] = [];
    for (;;) {
      try {
        const result = this.#runChain(input.values, contextJson, skip);
        for (const [name, message] of result.errors) errors.push(new AugmentationError(name, message));
        for (const error of errors) {
          const fn = this.#functions.get(error.functionName);
          if (fn) fn.failures++;
        }
        return { values: result.values, errors };
      } catch (err) {
        const error = err as AugmentationError;
        errors.push(error);
        // Not a known function (should not happen): give up on this update rather than loop.
        if (!this.#functions.has(error.functionName) || skip.includes(error.functionName)) {
          return { values: input.values, errors };
        }
        skip.push(error.functionName);
      }
    }
  }
}
