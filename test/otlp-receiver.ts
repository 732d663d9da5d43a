import { once } from "node:events";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";

/**
 * A loopback OTLP/HTTP (JSON) trace receiver for the tracing tests. No OpenTelemetry Collector or
 * Jaeger is packaged in the registries this project can reach, so the tests take what the exporter
 * (@opentelemetry/exporter-trace-otlp-http) posts to /v1/traces themselves: OTLP's JSON encoding,
 * as a collector's OTLP/HTTP receiver would.
 */

export interface ReceivedSpan {
  /** The exporting process's resource attribute service.name. */
  service: string;
  traceId: string;
  spanId: string;
  /** "" for a trace's root. */
  parentSpanId: string;
  name: string;
  attributes: Record<string, unknown>;
  events: string[];
  status: number;
}

export interface OtlpReceiver {
  /** The base URL, as OTEL_EXPORTER_OTLP_ENDPOINT. */
  url: string;
  /** Every span received so far, in arrival order. */
  spans: ReceivedSpan[];
  /** How many requests came (whatever they were). */
  posts(): number;
  close(): Promise<void>;
}

interface OtlpValue {
  stringValue?: string;
  boolValue?: boolean;
  intValue?: number | string;
  doubleValue?: number;
}
interface OtlpAttribute {
  key: string;
  value: OtlpValue;
}
interface OtlpExport {
  resourceSpans?: {
    resource?: { attributes?: OtlpAttribute[] };
    scopeSpans?: {
      spans?: {
        traceId: string;
        spanId: string;
        parentSpanId?: string;
        name: string;
        attributes?: OtlpAttribute[];
        events?: { name: string }[];
        status?: { code?: number };
      }[];
    }[];
  }[];
}

const otlpValue = (v: OtlpValue): unknown => v.stringValue ?? v.boolValue ?? v.intValue ?? v.doubleValue;
const attributesOf = (list: OtlpAttribute[] = []) =>
  Object.fromEntries(list.map((a) => [a.key, otlpValue(a.value)]));

/** Starts a receiver on 127.0.0.1 and a free port; anything but a JSON POST to /v1/traces gets a 415. */
export async function startOtlpReceiver(): Promise<OtlpReceiver> {
  const spans: ReceivedSpan[] = [];
  let posts = 0;
  const server: Server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on("data", (c: Buffer) => chunks.push(c));
    req.on("end", () => {
      posts++;
      if (
        req.method !== "POST" ||
        req.url !== "/v1/traces" ||
        !req.headers["content-type"]?.includes("json")
      ) {
        res.writeHead(415).end();
        return;
      }
      let body: OtlpExport;
      try {
        body = JSON.parse(Buffer.concat(chunks).toString()) as OtlpExport;
      } catch {
        res.writeHead(400).end();
        return;
      }
      for (const rs of body.resourceSpans ?? []) {
        const service = String(attributesOf(rs.resource?.attributes)["service.name"]);
        for (const ss of rs.scopeSpans ?? []) {
          for (const s of ss.spans ?? []) {
            spans.push({
              service,
              traceId: s.traceId,
              spanId: s.spanId,
              parentSpanId: s.parentSpanId ?? "",
              name: s.name,
              attributes: attributesOf(s.attributes),
              events: (s.events ?? []).map((e) => e.name),
              status: s.status?.code ?? 0,
            });
          }
        }
      }
      res.writeHead(200, { "Content-Type": "application/json" }).end("{}");
    });
  });
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    spans,
    posts: () => posts,
    close: () =>
      new Promise((resolve) => {
        // Exporters keep their connections alive: close them too, or close() waits for their timeout.
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}
