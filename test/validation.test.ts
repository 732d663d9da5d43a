import { describe, expect, it } from "vitest";
import { type ValidationResult, validateThingDescription } from "../src/wot/validation.js";

const td = (extra: Record<string, unknown> = {}) => ({
  "@context": "https://www.w3.org/2022/wot/td/v1.1",
  id: "urn:dtc:test",
  title: "Lamp",
  securityDefinitions: { nosec_sc: { scheme: "nosec" } },
  security: "nosec_sc",
  properties: { on: { type: "boolean", forms: [{ href: "http://h/on" }] } },
  ...extra,
});
const issues = (r: ValidationResult) => (r.valid ? [] : r.errors);

describe("Thing Description validation", () => {
  it("accepts a minimal TD 1.1 and a TD 1.0", () => {
    expect(validateThingDescription(td())).toEqual({ valid: true });
    expect(validateThingDescription(td({ "@context": "https://www.w3.org/2019/wot/td/v1" }))).toEqual({
      valid: true,
    });
  });

  it("names missing members and nested paths", () => {
    const bad = td({ properties: { on: { type: "boolean", forms: [{ href: 42 }] } } });
    delete (bad as Record<string, unknown>).security;
    expect(issues(validateThingDescription(bad))).toEqual(
      expect.arrayContaining([
        { field: "security", description: "is required" },
        { field: "properties.on.forms.0.href", description: "must be string" },
      ]),
    );
  });

  it("picks the schema from @context: TD 1.1 terms are refused in a TD 1.0", () => {
    const withDefinitions = { schemaDefinitions: { n: { type: "number" } }, profile: 5 };
    expect(issues(validateThingDescription(td(withDefinitions))).map((e) => e.field)).toContain("profile");
    expect(validateThingDescription({ title: "x" })).toEqual({
      valid: false,
      errors: [
        {
          field: "@context",
          description:
            'must contain "https://www.w3.org/2022/wot/td/v1.1" (TD 1.1) or "https://www.w3.org/2019/wot/td/v1" (TD 1.0)',
        },
      ],
    });
  });

  it("checks the discovery registration block and dtc members", () => {
    const r = validateThingDescription(
      td({ registration: { created: "yesterday" }, "dtc:fidelity": { "dtc:odteThreshold": 2 } }),
    );
    expect(issues(r).map((e) => e.field)).toEqual(
      expect.arrayContaining([
        "registration.created",
        "dtc:fidelity.dtc:odteThreshold",
        "dtc:fidelity.dtc:desiredTimeliness",
      ]),
    );
  });

  it("reports one issue per field for a failed oneOf/anyOf", () => {
    const r = validateThingDescription(
      td({
        "dtc:fidelity": {
          "dtc:desiredTimeliness": 10,
          "dtc:expectedUpdateRate": 1,
          "dtc:odteThreshold": 1.5,
          "dtc:odteWindow": 10,
        },
      }),
    );
    expect(issues(r)).toEqual([
      { field: "dtc:fidelity.dtc:odteThreshold", description: "must be <= 1, or must be string" },
    ]);
  });

  it("rejects what is not an object", () => {
    expect(issues(validateThingDescription("td"))).toEqual([
      { field: "(root)", description: "must be a JSON object" },
    ]);
  });
});
