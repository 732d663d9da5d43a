/**
 * The entanglement-aware lifecycle of a twin ([dt-microservices], Fig. 3), as a pure table-driven state
 * machine. The names are the individuals of the dtc ontology (dtc:Unbound, ...).
 */
export const LIFECYCLE_STATES = ["Unbound", "Bound", "Entangled", "Disentangled", "Done", "Stopped"] as const;
export type LifecycleState = (typeof LIFECYCLE_STATES)[number];

/**
 * What moves a twin:
 * - bind: the channel to the physical twin is up and the twin can digitise (subscribed and the PT
 *   heard from, or the PT reported online);
 * - bindingLost: the channel failed (broker gone, PT offline, silent past its heartbeat);
 * - entangle / disentangle: an evaluation put ODTE at/above or below the threshold;
 * - stop: the middleware detaches the twin from its PT (it keeps answering with its last state);
 * - resume: a Done twin is started again (dtc's addition: the manager's "start");
 * - dismiss: the twin is gone for good.
 */
export const LIFECYCLE_EVENTS = [
  "bind",
  "bindingLost",
  "entangle",
  "disentangle",
  "stop",
  "resume",
  "dismiss",
] as const;
export type LifecycleEvent = (typeof LIFECYCLE_EVENTS)[number];

const ACTIVE_STOP = { stop: "Done", dismiss: "Stopped" } as const;

/** Every allowed edge. Anything not listed is not a transition (the event is ignored). */
export const LIFECYCLE_TRANSITIONS: Readonly<
  Record<LifecycleState, Readonly<Partial<Record<LifecycleEvent, LifecycleState>>>>
> = {
  Unbound: { bind: "Bound", ...ACTIVE_STOP },
  Bound: { bindingLost: "Unbound", entangle: "Entangled", disentangle: "Disentangled", ...ACTIVE_STOP },
  Entangled: { bindingLost: "Unbound", disentangle: "Disentangled", ...ACTIVE_STOP },
  Disentangled: { bindingLost: "Unbound", entangle: "Entangled", ...ACTIVE_STOP },
  Done: { resume: "Unbound", dismiss: "Stopped" },
  Stopped: {},
};

/** The state `event` leads to from `state`, or undefined when it is not a transition. */
export function nextState(state: LifecycleState, event: LifecycleEvent): LifecycleState | undefined {
  return LIFECYCLE_TRANSITIONS[state][event];
}

/** States in which the twin is attached to its physical twin (measuring entanglement or trying to bind). */
export function isAttached(state: LifecycleState): boolean {
  return state === "Unbound" || state === "Bound" || state === "Entangled" || state === "Disentangled";
}

export interface LifecycleChange {
  from: LifecycleState;
  to: LifecycleState;
  event: LifecycleEvent;
  at: number;
}

/** A twin's lifecycle: its state and the changes so far (bounded), applied through the table. */
export class Lifecycle {
  #state: LifecycleState;
  readonly #history: LifecycleChange[] = [];
  readonly #historyLimit: number;

  /** `history`: the changes that led here (a restored twin carries its past). */
  constructor(
    initial: LifecycleState = "Unbound",
    historyLimit = 100,
    history: readonly LifecycleChange[] = [],
  ) {
    this.#state = initial;
    this.#historyLimit = historyLimit;
    this.#history.push(...history.slice(-historyLimit));
  }

  get state(): LifecycleState {
    return this.#state;
  }

  /** Applies `event`; returns the change, or undefined when the event is not a transition from here. */
  apply(event: LifecycleEvent, at: number): LifecycleChange | undefined {
    const to = nextState(this.#state, event);
    if (to === undefined) return undefined;
    const change = { from: this.#state, to, event, at };
    this.#state = to;
    this.#history.push(change);
    if (this.#history.length > this.#historyLimit) this.#history.shift();
    return change;
  }

  history(): readonly LifecycleChange[] {
    return this.#history;
  }
}
