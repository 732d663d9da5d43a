import { useState } from "preact/hooks";
import { type Affordance, api, type DataSchema, enc, errorText } from "./api";

/**
 * An action's form, generated from its input schema in the twin's TD: one field for a scalar input,
 * one per member for an object, none without input. Values are typed as the schema says before they
 * are sent; the twin checks them (and answers 400 saying why).
 */

const numeric = (s: DataSchema) => s.type === "number" || s.type === "integer";

function Field({
  id,
  name,
  schema,
  required,
  value,
  onValue,
}: {
  id: string;
  name: string;
  schema: DataSchema;
  required: boolean;
  value: string;
  onValue: (v: string) => void;
}) {
  const hint = [
    schema.description,
    schema.unit ? `unit ${schema.unit}` : "",
    schema.minimum !== undefined ? `≥ ${schema.minimum}` : "",
    schema.exclusiveMinimum !== undefined ? `> ${schema.exclusiveMinimum}` : "",
    schema.maximum !== undefined ? `≤ ${schema.maximum}` : "",
  ]
    .filter(Boolean)
    .join(", ");
  const hintId = `${id}-hint`;
  const set = (e: Event) => onValue((e.target as HTMLInputElement).value);
  let control: preact.JSX.Element;
  if (schema.enum) {
    control = (
      <select id={id} required={required} value={value} onChange={set}>
        <option value="">Choose…</option>
        {schema.enum.map((v) => (
          <option key={String(v)} value={JSON.stringify(v)}>
            {String(v)}
          </option>
        ))}
      </select>
    );
  } else if (schema.type === "boolean") {
    control = (
      <select id={id} required={required} value={value} onChange={set}>
        <option value="">Choose…</option>
        <option value="true">true</option>
        <option value="false">false</option>
      </select>
    );
  } else if (schema.type === "object" || schema.type === "array") {
    control = (
      <textarea id={id} required={required} value={value} onInput={set} rows={4} spellcheck={false} />
    );
  } else {
    control = (
      <input
        id={id}
        required={required}
        value={value}
        onInput={set}
        type="text"
        inputMode={numeric(schema) ? "decimal" : "text"}
        aria-describedby={hint ? hintId : undefined}
      />
    );
  }
  return (
    <div class="field">
      <label for={id}>
        {schema.title ?? name}
        {required ? " (required)" : ""}
      </label>
      {control}
      {hint && (
        <small id={hintId} class="hint">
          {hint}
        </small>
      )}
    </div>
  );
}

/** The text of a field as the schema's type. */
function typed(schema: DataSchema, text: string): unknown {
  if (schema.enum) return JSON.parse(text);
  if (numeric(schema)) return Number(text);
  if (schema.type === "boolean") return text === "true";
  if (schema.type === "object" || schema.type === "array") return JSON.parse(text);
  return text;
}

export function ActionForm({ twin, name, action }: { twin: string; name: string; action: Affordance }) {
  const input = action.input;
  const members =
    input?.type === "object" && input.properties
      ? Object.entries(input.properties).map(([m, s]) => ({
          m,
          s,
          required: input.required?.includes(m) ?? false,
        }))
      : undefined;
  const [values, setValues] = useState<Record<string, string>>({});
  const [result, setResult] = useState<string | undefined>();
  const base = `action-${name}`;
  const submit = async (e: Event) => {
    e.preventDefault();
    let body: unknown;
    try {
      if (members) {
        const out: Record<string, unknown> = {};
        for (const { m, s } of members) {
          const text = values[m];
          if (text !== undefined && text !== "") out[m] = typed(s, text);
        }
        body = out;
      } else if (input) {
        body = typed(input, values[""] ?? "");
      }
    } catch (err) {
      setResult(`Not sent: ${errorText(err)}`);
      return;
    }
    try {
      const answer = await api(`/twins/${enc(twin)}/actions/${enc(name)}`, {
        method: "POST",
        ...(body === undefined ? {} : { body }),
      });
      setResult(`Done${answer === "" || answer === undefined ? "" : `: ${JSON.stringify(answer)}`}`);
    } catch (err) {
      setResult(`Refused: ${errorText(err)}`);
    }
  };
  return (
    <form class="card action" onSubmit={submit} aria-labelledby={`${base}-title`} data-action={name}>
      <h3 id={`${base}-title`}>{action.title ?? name}</h3>
      {action.description && <p class="hint">{action.description}</p>}
      {members?.map(({ m, s, required }) => (
        <Field
          key={m}
          id={`${base}-${m}`}
          name={m}
          schema={s}
          required={required}
          value={values[m] ?? ""}
          onValue={(v) => setValues({ ...values, [m]: v })}
        />
      ))}
      {input && !members && (
        <Field
          id={`${base}-input`}
          name="input"
          schema={input}
          required
          value={values[""] ?? ""}
          onValue={(v) => setValues({ ...values, "": v })}
        />
      )}
      <button type="submit">Invoke {name}</button>
      {result && <output aria-live="polite">{result}</output>}
    </form>
  );
}
