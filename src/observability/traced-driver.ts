import { trace } from "@opentelemetry/api";
import type { InstanceHandle, InstanceSpec, PlatformDriver } from "../platforms/driver.js";
import { withSpan } from "./tracing.js";

/**
 * A platform driver whose calls are spans `dtc.driver.<call>` (start, adopt, removeOrphan, and on
 * the handles it gives: export, remove, stop, resume, restart), children of the manager's
 * operation span. Without a span active (a checkpoint, the reconcile loop's probes) a call runs
 * as is: a trace starts at an operation, not at every timer. Everything else passes through, on
 * the driver and handle themselves (their private fields, instanceof).
 */

const HANDLE_CALLS: Readonly<Record<string, string>> = {
  exportState: "export",
  remove: "remove",
  stop: "stop",
  resume: "resume",
  restart: "restart",
};

/** `call` in a span when one is active; as is otherwise. */
function traced<T>(
  name: string,
  attributes: Record<string, string | boolean>,
  call: () => Promise<T>,
): Promise<T> {
  if (trace.getActiveSpan() === undefined) return call();
  return withSpan(name, attributes, call);
}

function tracedHandle(handle: InstanceHandle, platform: string): InstanceHandle {
  const attributes = { "dtc.instance": handle.id, "dtc.node": handle.node, "dtc.platform": platform };
  return new Proxy(handle, {
    get(target, property) {
      const value = Reflect.get(target, property, target);
      if (typeof value !== "function") return value;
      const call = typeof property === "string" ? HANDLE_CALLS[property] : undefined;
      if (call === undefined) return value.bind(target);
      return (...args: unknown[]) =>
        traced(`dtc.driver.${call}`, attributes, () => value.apply(target, args));
    },
  });
}

/** `driver`, its calls traced (see above). */
export function tracedDriver(driver: PlatformDriver): PlatformDriver {
  const attributes = (spec: InstanceSpec) => ({
    "dtc.instance": spec.id,
    "dtc.node": spec.node.id,
    "dtc.platform": driver.platform,
    // With a state: a restore, a move or a clone (the twin imports it).
    "dtc.state.imported": spec.state !== undefined,
  });
  return new Proxy(driver, {
    get(target, property) {
      const value = Reflect.get(target, property, target);
      if (typeof value !== "function") return value;
      if (property === "start") {
        return (spec: InstanceSpec) =>
          traced("dtc.driver.start", attributes(spec), async () =>
            tracedHandle(await target.start(spec), driver.platform),
          );
      }
      if (property === "adopt") {
        return (spec: InstanceSpec) =>
          traced("dtc.driver.adopt", attributes(spec), async () => {
            const handle = await target.adopt(spec);
            return handle && tracedHandle(handle, driver.platform);
          });
      }
      if (property === "removeOrphan") {
        return (node: { id: string }, id: string) =>
          traced(
            "dtc.driver.removeOrphan",
            { "dtc.instance": id, "dtc.node": node.id, "dtc.platform": driver.platform },
            () => value.call(target, node, id),
          );
      }
      return value.bind(target);
    },
  });
}
