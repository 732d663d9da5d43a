import { describe, expect, it } from "vitest";
import {
  isAttached,
  LIFECYCLE_EVENTS,
  LIFECYCLE_STATES,
  Lifecycle,
  type LifecycleEvent,
  type LifecycleState,
  nextState,
} from "../src/domain/lifecycle.js";

/** Every edge of paper 002's Fig. 3, plus dtc's Done -> Unbound (resume). */
const EDGES: [LifecycleState, LifecycleEvent, LifecycleState][] = [
  ["Unbound", "bind", "Bound"],
  ["Unbound", "stop", "Done"],
  ["Unbound", "dismiss", "Stopped"],
  ["Bound", "bindingLost", "Unbound"],
  ["Bound", "entangle", "Entangled"],
  ["Bound", "disentangle", "Disentangled"],
  ["Bound", "stop", "Done"],
  ["Bound", "dismiss", "Stopped"],
  ["Entangled", "bindingLost", "Unbound"],
  ["Entangled", "disentangle", "Disentangled"],
  ["Entangled", "stop", "Done"],
  ["Entangled", "dismiss", "Stopped"],
  ["Disentangled", "bindingLost", "Unbound"],
  ["Disentangled", "entangle", "Entangled"],
  ["Disentangled", "stop", "Done"],
  ["Disentangled", "dismiss", "Stopped"],
  ["Done", "resume", "Unbound"],
  ["Done", "dismiss", "Stopped"],
];

describe("lifecycle state machine", () => {
  it.each(EDGES)("%s --%s--> %s", (from, event, to) => {
    expect(nextState(from, event)).toBe(to);
    const lifecycle = new Lifecycle(from);
    expect(lifecycle.apply(event, 42)).toEqual({ from, to, event, at: 42 });
    expect(lifecycle.state).toBe(to);
  });

  it("has no other transition", () => {
    const allowed = new Set(EDGES.map(([from, event]) => `${from}:${event}`));
    for (const state of LIFECYCLE_STATES) {
      for (const event of LIFECYCLE_EVENTS) {
        if (allowed.has(`${state}:${event}`)) continue;
        expect(nextState(state, event), `${state} --${event}-->`).toBeUndefined();
        const lifecycle = new Lifecycle(state);
        expect(lifecycle.apply(event, 1)).toBeUndefined();
        expect(lifecycle.state).toBe(state);
      }
    }
  });

  it("Stopped is final and Done is detached", () => {
    expect(LIFECYCLE_EVENTS.map((e) => nextState("Stopped", e)).filter(Boolean)).toEqual([]);
    expect(LIFECYCLE_STATES.filter(isAttached)).toEqual(["Unbound", "Bound", "Entangled", "Disentangled"]);
  });

  it("runs the papers' scenario and keeps a bounded history", () => {
    const lifecycle = new Lifecycle("Unbound", 3);
    const path: LifecycleEvent[] = [
      "bind",
      "entangle",
      "disentangle",
      "bindingLost",
      "bind",
      "entangle",
      "stop",
    ];
    path.forEach((event, i) => {
      lifecycle.apply(event, i);
    });
    expect(lifecycle.state).toBe("Done");
    expect(lifecycle.history().map((c) => `${c.from}>${c.to}`)).toEqual([
      "Unbound>Bound",
      "Bound>Entangled",
      "Entangled>Done",
    ]);
  });
});
