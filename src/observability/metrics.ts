import type { Hono } from "hono";
import { Counter, collectDefaultMetrics, Gauge, Histogram, Registry } from "prom-client";
import type { Directory, DirectoryWrite } from "../directory/directory.js";
import type { DirectoryStore } from "../directory/store.js";
import { errorMessage } from "../domain/errors.js";
import type { Logger } from "../logger.js";
import type { DtcManager } from "../manager/manager.js";
import type { ManagerObserver } from "../manager/observer.js";
import type { EmbeddedBroker } from "../mqtt/embedded-broker.js";
import type { InProcessDriver } from "../platforms/in-process/driver.js";
import type { Twin } from "../runtime/twin.js";
import { exposition, TwinMetrics, type TwinSample } from "./twin-metrics.js";

/**
 * The gateway's metrics (GET /metrics, Prometheus text format): one registry holding the process's
 * defaults, the per-twin series of the in-process twins (twin-metrics.ts), and the directory's,
 * the manager's, the HTTP API's and the embedded broker's. Each part reports through a small hook
 * of its own (an observer option) and knows nothing of prom-client; what can be read when
 * Prometheus scrapes (counts, states, readiness) is read then, not kept up to date.
 *
 * Every label value comes from a bounded set: route templates, error kinds, operation names, ids
 * of registered nodes and of at most DTC_METRICS_MAX_TWINS twins. A collector that fails is logged
 * and leaves its series out; the scrape still answers.
 */

export interface GatewayMetricsOptions {
  /** At most this many in-process twins get per-twin series (DTC_METRICS_MAX_TWINS). */
  maxTwins: number;
  logger: Logger;
}

/** What the metrics read at scrape time, bound once the gateway made it (watch()). */
interface Sources {
  inProcess: InProcessDriver;
  manager: DtcManager;
}

/** Operations may take minutes (an image pull); a reconcile pass up to its node deadline. */
const OPERATION_BUCKETS_S = [0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300];
const SEARCH_BUCKETS_S = [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];
const HTTP_BUCKETS_S = SEARCH_BUCKETS_S;

/** The search each route runs (HEAD as GET). */
const SEARCH_KINDS: Record<string, string> = {
  "GET /things": "list",
  "GET /search/sparql": "sparql",
  "POST /search/sparql": "sparql",
  "GET /search/named/:name": "named",
  "GET /search/jsonpath": "jsonpath",
};
/** Answers given before a search ran (refused by a guard): not search durations. */
const REFUSED_BEFORE_RUNNING = new Set([401, 403, 413, 415, 421, 429]);
const METHODS = new Set(["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]);
/** Longest a scrape waits for a node's readiness; a node that does not answer by then reads 0. */
const READINESS_DEADLINE_MS = 2000;
const DESIRED = ["running", "stopped"] as const;
const ACTUAL = ["running", "notRunning", "failed", "gaveUp"] as const;

export class GatewayMetrics {
  readonly registry = new Registry();
  readonly #logger: Logger;
  readonly #twins: TwinMetrics;
  #sources: Sources | undefined;
  #broker: EmbeddedBroker | undefined;
  #directory: Directory | undefined;
  /** Epoch ms of the oldest directory write not yet known to be searchable (index lag). */
  #unindexedSince: number | undefined;

  readonly #writes: Counter<"operation" | "outcome">;
  readonly #search: Histogram<"kind">;
  readonly #operations: Counter<"operation" | "outcome">;
  readonly #operationDuration: Histogram<"operation">;
  readonly #reconcileDuration: Histogram;
  readonly #reconcileFailures: Counter<"reason">;
  readonly #instanceFailures: Counter<"platform" | "reason">;
  readonly #requests: Counter<"method" | "route" | "status">;
  readonly #requestDuration: Histogram<"method" | "route">;

  /** Everything, in the Prometheus text format: what GET /metrics answers. */
  exposition(): Promise<string> {
    return exposition(this.registry, this.#twins);
  }

  constructor(options: GatewayMetricsOptions) {
    this.#logger = options.logger;
    const registers = [this.registry];
    collectDefaultMetrics({ register: this.registry });
    this.#twins = new TwinMetrics(this.registry, () => this.#twinSamples(), { maxTwins: options.maxTwins });

    // Collectors read their sources when scraped; `guarded` keeps a failing one from failing the scrape.
    const logger = this.#logger;
    const guarded = <M>(name: string, read: (this: M) => Promise<void> | void) =>
      async function (this: M) {
        try {
          await read.call(this);
        } catch (err) {
          logger.warn({ metric: name, err: errorMessage(err) }, "metrics: a collector failed");
        }
      };

    this.#writes = new Counter({
      name: "dtc_directory_writes_total",
      help: "Directory writes (Things API and the gateway's own) by operation and outcome (ok or the error kind)",
      labelNames: ["operation", "outcome"],
      registers,
    });
    this.#search = new Histogram({
      name: "dtc_directory_search_duration_seconds",
      help: "Directory searches (and TD listings) by kind, from request to answer",
      labelNames: ["kind"],
      buckets: SEARCH_BUCKETS_S,
      registers,
    });
    const self = this;
    new Gauge({
      name: "dtc_directory_things",
      help: "Thing Descriptions stored in the directory",
      registers,
      collect: guarded("dtc_directory_things", async function (this: Gauge) {
        const store = self.#store;
        if (store) this.set(await store.count());
      }),
    });
    new Gauge({
      name: "dtc_directory_index_lag_seconds",
      help: "Age of the oldest acknowledged directory write not yet searchable; 0 when the index is current",
      registers,
      collect() {
        const since = self.#unindexedSince;
        this.set(since === undefined ? 0 : Math.max(0, Date.now() - since) / 1000);
      },
    });

    this.#operations = new Counter({
      name: "dtc_manager_operations_total",
      help: "Operations on instances by kind and outcome (ok or the error kind)",
      labelNames: ["operation", "outcome"],
      registers,
    });
    this.#operationDuration = new Histogram({
      name: "dtc_manager_operation_duration_seconds",
      help: "Operations on instances, from request to outcome (waiting in the instance's queue included)",
      labelNames: ["operation"],
      buckets: OPERATION_BUCKETS_S,
      registers,
    });
    this.#reconcileDuration = new Histogram({
      name: "dtc_manager_reconcile_duration_seconds",
      help: "Reconcile passes (desired vs actual instances)",
      buckets: OPERATION_BUCKETS_S,
      registers,
    });
    this.#reconcileFailures = new Counter({
      name: "dtc_manager_reconcile_failures_total",
      help: "Starts by reconcile that failed, by the error kind",
      labelNames: ["reason"],
      registers,
    });
    this.#instanceFailures = new Counter({
      name: "dtc_manager_instance_failures_total",
      help: "Instances that failed: lost by their platform (lost) or failing to start (the error kind)",
      labelNames: ["platform", "reason"],
      registers,
    });
    new Gauge({
      name: "dtc_manager_instances",
      help: "Instances by desired and actual state",
      labelNames: ["desired", "actual"],
      registers,
      collect: guarded("dtc_manager_instances", function (this: Gauge<"desired" | "actual">) {
        const manager = self.#sources?.manager;
        if (!manager) return;
        const counts = new Map<string, number>();
        for (const view of manager.instances()) {
          const actual =
            view.gaveUp !== undefined
              ? "gaveUp"
              : view.lifecycle !== "NotRunning"
                ? "running"
                : view.failed !== undefined
                  ? "failed"
                  : "notRunning";
          const key = `${view.desired} ${actual}`;
          counts.set(key, (counts.get(key) ?? 0) + 1);
        }
        // Every pair, zeros too: a series that vanishes reads as unknown, not as none.
        for (const desired of DESIRED) {
          for (const actual of ACTUAL) this.set({ desired, actual }, counts.get(`${desired} ${actual}`) ?? 0);
        }
      }),
    });
    new Gauge({
      name: "dtc_node_ready",
      help: "1 while the node's platform answers ready, 0 otherwise",
      labelNames: ["node", "platform"],
      registers,
      collect: guarded("dtc_node_ready", async function (this: Gauge<"node" | "platform">) {
        this.reset();
        const manager = self.#sources?.manager;
        if (!manager) return;
        const nodes = manager.inventory.nodes();
        const ready = await Promise.all(
          nodes.map((node) => readyWithin(manager, node, READINESS_DEADLINE_MS)),
        );
        for (const [i, node] of nodes.entries()) {
          this.set({ node: node.id, platform: node.platform }, ready[i] ? 1 : 0);
        }
      }),
    });

    this.#requests = new Counter({
      name: "dtc_http_requests_total",
      help: "HTTP requests by method, route template and status",
      labelNames: ["method", "route", "status"],
      registers,
    });
    this.#requestDuration = new Histogram({
      name: "dtc_http_request_duration_seconds",
      help: "HTTP requests by method and route template, until the response starts",
      labelNames: ["method", "route"],
      buckets: HTTP_BUCKETS_S,
      registers,
    });

    const broker = (read: (s: ReturnType<EmbeddedBroker["stats"]>) => number) =>
      function (this: Gauge | Counter) {
        const stats = self.#broker?.stats();
        if (!stats) return;
        if (this instanceof Gauge) this.set(read(stats));
        else {
          this.reset();
          this.inc(read(stats));
        }
      };
    new Gauge({
      name: "dtc_mqtt_clients",
      help: "Clients connected to the embedded MQTT broker",
      registers,
      collect: broker((s) => s.clients),
    });
    new Counter({
      name: "dtc_mqtt_messages_in_total",
      help: "Messages the embedded MQTT broker received from clients",
      registers,
      collect: broker((s) => s.messagesIn),
    });
    new Counter({
      name: "dtc_mqtt_messages_out_total",
      help: "Messages the embedded MQTT broker delivered to clients",
      registers,
      collect: broker((s) => s.messagesOut),
    });
  }

  get #store(): DirectoryStore | undefined {
    return this.#directory?.store;
  }

  /** Reads the twins and the manager from now on (the gateway made them after the metrics). */
  watch(sources: Sources): void {
    this.#sources = sources;
  }

  /** The embedded broker's clients and messages (none with an external broker). */
  watchBroker(broker: EmbeddedBroker): void {
    this.#broker = broker;
  }

  /**
   * Follows the directory: its TD count, and its index lag. The embedded store indexes after it
   * acknowledges a write; after each write (one at a time) the metrics ask it to say when every
   * write acknowledged so far is searchable. The remote store acknowledges searchable writes only.
   */
  watchDirectory(directory: Directory): void {
    this.#directory = directory;
    const store = directory.store as DirectoryStore & { indexed?: () => Promise<void> };
    if (typeof store.indexed !== "function") return;
    let probing = false;
    /** The first write acknowledged after the running probe was asked. */
    let later: number | undefined;
    const probe = () => {
      probing = true;
      (store.indexed as () => Promise<void>).call(store).then(
        () => {
          probing = false;
          this.#unindexedSince = later;
          later = undefined;
          if (this.#unindexedSince !== undefined) probe();
        },
        (err: unknown) => {
          // The store closed (or its index broke: the store says so itself).
          probing = false;
          this.#unindexedSince = undefined;
          later = undefined;
          this.#logger.debug({ err: errorMessage(err) }, "metrics: the index lag probe failed");
        },
      );
    };
    directory.onChange(() => {
      if (probing) {
        later ??= Date.now();
        return;
      }
      this.#unindexedSince = Date.now();
      probe();
    });
  }

  /** Directory's observeWrite. */
  readonly observeWrite = (operation: DirectoryWrite, outcome: string): void => {
    this.#writes.inc({ operation, outcome });
  };

  /** The HTTP app's observeRequest: requests, and the directory's searches among them. */
  readonly observeRequest = (method: string, route: string, status: number, durationMs: number): void => {
    const m = METHODS.has(method) ? method : "OTHER";
    const seconds = durationMs / 1000;
    this.#requests.inc({ method: m, route, status: String(status) });
    this.#requestDuration.observe({ method: m, route }, seconds);
    const kind = SEARCH_KINDS[`${m === "HEAD" ? "GET" : m} ${route}`];
    if (kind !== undefined && !REFUSED_BEFORE_RUNNING.has(status)) this.#search.observe({ kind }, seconds);
  };

  /** The in-process driver's commitObserver: each twin's hot-path histogram observer. */
  readonly commitObserver = (twin: Twin, node: string): Twin["onCommit"] =>
    this.#twins.updateObserver({ twin: twin.id, schema: twin.config.schema, node, platform: "in-process" });

  /** The manager's observer. */
  readonly manager: ManagerObserver = {
    operation: (operation, outcome, durationMs) => {
      this.#operations.inc({ operation, outcome });
      this.#operationDuration.observe({ operation }, durationMs / 1000);
    },
    reconciled: (durationMs) => this.#reconcileDuration.observe(durationMs / 1000),
    reconcileFailed: (platform, reason) => {
      this.#reconcileFailures.inc({ reason });
      this.#instanceFailures.inc({ platform, reason });
    },
    instanceLost: (platform) => this.#instanceFailures.inc({ platform, reason: "lost" }),
  };

  /** The in-process twins as a scrape sees them (container twins export their own). */
  #twinSamples(): TwinSample[] {
    const driver = this.#sources?.inProcess;
    if (!driver) return [];
    try {
      return [...driver.twins()].map(({ node, twin }) => ({
        twin: twin.id,
        schema: twin.config.schema,
        node,
        platform: "in-process",
        status: { lifecycle: twin.lifecycleState, entanglement: twin.entanglement },
        counters: twin.counters,
      }));
    } catch (err) {
      this.#logger.warn({ err: errorMessage(err) }, "metrics: reading the in-process twins failed");
      return [];
    }
  }
}

/** Whether the node answers ready within `ms` (a node that does not answer is not ready). */
async function readyWithin(
  manager: DtcManager,
  node: Parameters<DtcManager["readiness"]>[0],
  ms: number,
): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<false>((resolve) => {
    timer = setTimeout(() => resolve(false), ms);
  });
  try {
    return await Promise.race([manager.readiness(node).then((r) => r.ready), late]);
  } finally {
    clearTimeout(timer);
  }
}

/** GET /metrics: the registry in Prometheus text format (the reader role: src/http/routes.ts). */
export function mountMetrics(app: Hono, metrics: GatewayMetrics): void {
  app.get("/metrics", async (c) =>
    c.body(await metrics.exposition(), 200, { "Content-Type": metrics.registry.contentType }),
  );
}
