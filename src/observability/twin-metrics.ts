import { setImmediate as yieldToEventLoop } from "node:timers/promises";
import { Gauge, Histogram, type Registry } from "prom-client";
import { LIFECYCLE_STATES } from "../domain/lifecycle.js";
import type { TwinCounters } from "../domain/twin-state.js";
import type { InstanceStatus } from "../domain/twin-status.js";

/**
 * The per-twin metrics, the same wherever a twin runs: the gateway exports them for its in-process
 * twins, a twin process (a container) for itself on its management port. Gauges and counters are
 * read from the twins when Prometheus scrapes (nothing on the hot path); the two histograms are
 * observed on every committed update, labelled by schema, node and platform rather than by twin so
 * that their cardinality does not grow with the fleet.
 *
 * The per-twin series (17 a twin: 17,000 for a thousand twins) are written as text here, not by
 * prom-client, a slice of twins at a time with the event loop free in between: a scrape must not
 * hold up the twins' commits for longer than their Td (10 ms and less), which one synchronous
 * serialisation of the whole fleet did (40 ms for a thousand twins).
 *
 * Label values are ids (twin, schema IRI, node, platform, lifecycle state), never free text.
 */

/** The labels of a twin's series. */
export interface TwinLabels {
  twin: string;
  schema: string;
  node: string;
  platform: string;
}

/** One twin as a scrape sees it. */
export interface TwinSample extends TwinLabels {
  status: InstanceStatus;
  /** Message counters, where the exporter has them (a container's twin reports its own). */
  counters?: TwinCounters;
}

/** Seconds: from 1 ms to 10 s, dense around the Td values users set (10 ms to 1 s). */
export const DELAY_BUCKETS_S = [0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10];

export interface TwinMetricsOptions {
  /** At most this many twins get per-twin series (by id order); 0 turns them off. Default 1000. */
  maxTwins?: number;
}

export const DEFAULT_MAX_TWIN_SERIES = 1000;

const FLEET_LABELS = ["schema", "node", "platform"] as const;

type UpdateObserver = (delayMs: number, processingMs: number) => void;

export class TwinMetrics {
  readonly #samples: () => Iterable<TwinSample>;
  readonly #maxTwins: number;
  readonly #delay: Histogram<(typeof FLEET_LABELS)[number]>;
  readonly #processing: Histogram<(typeof FLEET_LABELS)[number]>;
  /** Twins beyond the limit at the last scrape (a gauge, so the operator sees the cut). */
  #omitted = 0;
  /** A twin's formatted label sets, kept for the twins of the last scrape. */
  readonly #labels = new Map<string, FormattedLabels>();

  constructor(registry: Registry, samples: () => Iterable<TwinSample>, options: TwinMetricsOptions = {}) {
    this.#samples = samples;
    this.#maxTwins = Math.max(0, options.maxTwins ?? DEFAULT_MAX_TWIN_SERIES);
    const self = this;
    new Gauge({
      name: "dtc_twin_series_omitted",
      help: "Twins left out of the per-twin series by the series limit (DTC_METRICS_MAX_TWINS)",
      registers: [registry],
      collect() {
        this.set(self.#omitted);
      },
    });
    this.#delay = new Histogram({
      name: "dtc_twin_update_delay_seconds",
      help: "From the physical twin's timestamp to the commit of the update in the twin",
      labelNames: FLEET_LABELS,
      buckets: DELAY_BUCKETS_S,
      registers: [registry],
    });
    this.#processing = new Histogram({
      name: "dtc_twin_processing_seconds",
      help: "From receiving a message to committing it (shadowing and augmentation functions)",
      labelNames: FLEET_LABELS,
      buckets: DELAY_BUCKETS_S,
      registers: [registry],
    });
  }

  /** The hot-path observer of one twin's updates (its histogram children bound once). */
  updateObserver(labels: TwinLabels): UpdateObserver {
    const fleet = { schema: labels.schema, node: labels.node, platform: labels.platform };
    const delay = this.#delay.labels(fleet);
    const processing = this.#processing.labels(fleet);
    return (delayMs, processingMs) => {
      // A PT clock ahead of ours gives a negative delay: not a duration.
      if (delayMs >= 0) delay.observe(delayMs / 1000);
      if (processingMs >= 0) processing.observe(processingMs / 1000);
    };
  }

  /** The per-twin series in the Prometheus text format (0.0.4), read from the twins now. */
  async render(): Promise<string> {
    const twins = this.#read();
    const out: string[] = [];
    for (const family of FAMILIES) {
      out.push(`# HELP ${family.name} ${family.help}\n# TYPE ${family.name} ${family.type}\n`);
      for (let i = 0; i < twins.length; i += TWINS_PER_SLICE) {
        if (i > 0) await yieldToEventLoop();
        let text = "";
        for (const twin of twins.slice(i, i + TWINS_PER_SLICE))
          text += family.lines(twin, this.#format(twin));
        out.push(text);
      }
    }
    return out.join("");
  }

  #format(s: TwinSample): FormattedLabels {
    const cached = this.#labels.get(s.twin);
    if (cached && cached.schema === s.schema && cached.node === s.node && cached.platform === s.platform) {
      return cached;
    }
    const inner = `twin="${escapeLabel(s.twin)}",schema="${escapeLabel(s.schema)}",node="${escapeLabel(s.node)}",platform="${escapeLabel(s.platform)}"`;
    const states: Record<string, string> = {};
    for (const state of LIFECYCLE_STATES) states[state] = `{${inner},state="${state}"}`;
    const made = { schema: s.schema, node: s.node, platform: s.platform, base: `{${inner}}`, states };
    this.#labels.set(s.twin, made);
    return made;
  }

  #read(): TwinSample[] {
    const all = [...this.#samples()];
    const kept =
      this.#maxTwins === 0
        ? []
        : all.sort((a, b) => (a.twin < b.twin ? -1 : a.twin > b.twin ? 1 : 0)).slice(0, this.#maxTwins);
    this.#omitted = all.length - kept.length;
    const ids = new Set(kept.map((s) => s.twin));
    for (const id of this.#labels.keys()) if (!ids.has(id)) this.#labels.delete(id);
    return kept;
  }
}

/** The per-twin series of the exporter and the rest of its registry, as one exposition. */
export async function exposition(registry: Registry, twins: TwinMetrics): Promise<string> {
  // The twins first: reading them sets dtc_twin_series_omitted, which the registry then reports.
  const perTwin = await twins.render();
  return (await registry.metrics()) + perTwin;
}

/** Twins written between two turns of the event loop (17 lines each: about 2 ms). */
const TWINS_PER_SLICE = 100;

interface FormattedLabels {
  schema: string;
  node: string;
  platform: string;
  /** `{twin="…",schema="…",node="…",platform="…"}` */
  base: string;
  /** The same with each lifecycle state. */
  states: Record<string, string>;
}

interface Family {
  name: string;
  help: string;
  type: "gauge" | "counter";
  lines(s: TwinSample, labels: FormattedLabels): string;
}

const line = (name: string, labels: string, value: number | undefined) =>
  value === undefined ? "" : `${name}${labels} ${formatValue(value)}\n`;

const gauge = (name: string, help: string, value: (s: TwinSample) => number | undefined): Family => ({
  name,
  help,
  type: "gauge",
  lines: (s, labels) => line(name, labels.base, value(s)),
});

const counter = (name: string, help: string, value: (c: TwinCounters) => number): Family => ({
  name,
  help,
  type: "counter",
  lines: (s, labels) => (s.counters ? line(name, labels.base, value(s.counters)) : ""),
});

const FAMILIES: readonly Family[] = [
  gauge(
    "dtc_twin_odte",
    "Overall Digital Twin Entanglement (T x R x A) over the window",
    (s) => s.status.entanglement?.odte,
  ),
  gauge(
    "dtc_twin_timeliness",
    "T: share of updates in the window committed within Td",
    (s) => s.status.entanglement?.timeliness,
  ),
  gauge(
    "dtc_twin_reliability",
    "R: updates received over updates expected (Re x window)",
    (s) => s.status.entanglement?.reliability,
  ),
  gauge(
    "dtc_twin_availability",
    "A: share of the window the physical twin was reachable",
    (s) => s.status.entanglement?.availability,
  ),
  gauge(
    "dtc_twin_odte_threshold",
    "The ODTE below which the twin is Disentangled",
    (s) => s.status.entanglement?.threshold,
  ),
  gauge(
    "dtc_twin_odte_window_seconds",
    "The window the entanglement figures cover, seconds",
    (s) => s.status.entanglement?.windowSeconds,
  ),
  {
    name: "dtc_twin_lifecycle_state",
    help: "1 for the twin's lifecycle state, 0 for the others",
    type: "gauge",
    lines: (s, labels) => {
      let text = "";
      for (const state of LIFECYCLE_STATES) {
        text += `dtc_twin_lifecycle_state${labels.states[state]} ${s.status.lifecycle === state ? 1 : 0}\n`;
      }
      return text;
    },
  },
  gauge(
    "dtc_twin_failed",
    "1 while the twin's platform reports it failed (crashed, killed, unreachable)",
    (s) => (s.status.failed === undefined ? 0 : 1),
  ),
  counter("dtc_twin_messages_total", "Telemetry messages received from the physical twin", (c) => c.messages),
  counter("dtc_twin_malformed_messages_total", "Messages rejected as malformed", (c) => c.rejected),
  counter(
    "dtc_twin_sequence_gaps_total",
    "Sequence numbers skipped by the physical twin's messages",
    (c) => c.lost,
  ),
  counter("dtc_twin_commands_total", "Commands sent to the physical twin", (c) => c.commands),
];

/** A label value in the text format: backslash, double quote and line feed escaped. */
function escapeLabel(value: string): string {
  return value.replace(/\\/g, "\\\\").replace(/"/g, '\\"').replace(/\n/g, "\\n");
}

function formatValue(value: number): string {
  if (Number.isNaN(value)) return "NaN";
  if (value === Number.POSITIVE_INFINITY) return "+Inf";
  if (value === Number.NEGATIVE_INFINITY) return "-Inf";
  return String(value);
}
