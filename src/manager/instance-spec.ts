import type { TwinConfig, TwinState } from "../domain/twin-state.js";
import type { InstanceSpec } from "../platforms/driver.js";
import { ManagerError } from "./errors.js";
import { type DtcNode, type DtPackage, type InstanceRecord, parameterProblem } from "./model.js";
import { target } from "./reconciler.js";

/**
 * What a driver is given to start an instance, built from its record and package (pure), and the
 * configuration of a start request checked against the package's parameters.
 */

/** The spec of the instance of `record` on `node`, from `state` when it carries one. */
export function instanceSpec(
  record: InstanceRecord,
  pkg: DtPackage,
  node: DtcNode,
  state?: TwinState,
): InstanceSpec {
  const twin: TwinConfig = {
    id: record.id,
    schema: record.schema,
    placeholders: record.configuration,
    ...(record.brokerUrl ? { brokerUrl: record.brokerUrl } : {}),
    ...(record.fidelity ? { fidelity: record.fidelity } : {}),
    ...(pkg.shadowing ? { shadowing: pkg.shadowing } : {}),
    ...(pkg.historyLimit ? { historyLimit: pkg.historyLimit } : {}),
  };
  return {
    id: record.id,
    node: target(node),
    package: pkg.id,
    artefact: pkg.artefact,
    requirements: pkg.requirements,
    twin,
    augmentations: pkg.augmentations,
    ...(state ? { state } : {}),
  };
}

/** The configuration of a start request checked against the package's parameters, defaults filled in. */
export function resolveConfiguration(
  pkg: DtPackage,
  given: Record<string, unknown>,
): Record<string, string | number | boolean> {
  const issues: { field: string; description: string }[] = [];
  const out: Record<string, string | number | boolean> = {};
  for (const name of Object.keys(given)) {
    if (!(name in pkg.parameters)) {
      issues.push({
        field: `configuration.${name}`,
        description: `is not a parameter of package "${pkg.id}" (it has ${Object.keys(pkg.parameters).join(", ") || "none"})`,
      });
    }
  }
  for (const [name, parameter] of Object.entries(pkg.parameters)) {
    const value = given[name] ?? parameter.default;
    if (value === undefined) {
      if (parameter.required !== false)
        issues.push({ field: `configuration.${name}`, description: "is required" });
      continue;
    }
    const problem = parameterProblem(parameter, value);
    if (problem) issues.push({ field: `configuration.${name}`, description: problem });
    else out[name] = value as string | number | boolean;
  }
  if (issues.length > 0) {
    throw new ManagerError(
      "invalid",
      `configuration: ${issues.map((i) => `${i.field} ${i.description}`).join("; ")}`,
      issues,
    );
  }
  return out;
}
