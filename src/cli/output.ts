import { stringify } from "yaml";
import { usageError } from "./errors.js";

/** How a command prints what it got: a table for people, JSON or YAML for programs. */
export const OUTPUT_FORMATS = ["table", "json", "yaml"] as const;
export type OutputFormat = (typeof OUTPUT_FORMATS)[number];

export function outputFormat(value: unknown): OutputFormat {
  const format = value ?? "table";
  if (!(OUTPUT_FORMATS as readonly unknown[]).includes(format)) {
    throw usageError(`-o must be one of ${OUTPUT_FORMATS.join(", ")}, not ${JSON.stringify(format)}`);
  }
  return format as OutputFormat;
}

export interface Column<T> {
  header: string;
  value: (row: T) => unknown;
}

const cell = (value: unknown): string => {
  if (value === undefined || value === null || value === "") return "-";
  if (typeof value === "number") return Number.isInteger(value) ? String(value) : value.toFixed(3);
  if (typeof value === "object") return JSON.stringify(value);
  return String(value).replace(/\s+/g, " ");
};

/** Rows under upper-case headers, columns padded to their widest cell. */
export function table<T>(rows: readonly T[], columns: readonly Column<T>[]): string {
  const cells = [columns.map((c) => c.header), ...rows.map((r) => columns.map((c) => cell(c.value(r))))];
  const widths = columns.map((_, i) => Math.max(...cells.map((line) => (line[i] ?? "").length)));
  return cells
    .map((line) =>
      line
        .map((text, i) => (i === line.length - 1 ? text : text.padEnd(widths[i] ?? 0)))
        .join("   ")
        .trimEnd(),
    )
    .join("\n");
}

export function json(value: unknown): string {
  return JSON.stringify(value, null, 2);
}

export function yaml(value: unknown): string {
  return stringify(value, { lineWidth: 0 }).trimEnd();
}

/** `value` as JSON or YAML, or the table when the format is table. */
export function render(format: OutputFormat, value: unknown, tableOf: () => string): string {
  if (format === "json") return json(value);
  if (format === "yaml") return yaml(value);
  return tableOf();
}

/** Seconds ago, as "5s", "3m", "2h", "4d". */
export function age(iso: string | number | undefined, now = Date.now()): string {
  if (iso === undefined) return "-";
  const at = typeof iso === "number" ? iso : Date.parse(iso);
  if (!Number.isFinite(at)) return "-";
  const s = Math.max(0, Math.round((now - at) / 1000));
  if (s < 120) return `${s}s`;
  if (s < 7200) return `${Math.round(s / 60)}m`;
  if (s < 172_800) return `${Math.round(s / 3600)}h`;
  return `${Math.round(s / 86_400)}d`;
}

export function print(text: string): void {
  if (text !== "") process.stdout.write(`${text}\n`);
}
