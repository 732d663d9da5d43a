import { Agent, request as httpRequest } from "node:http";
import fc from "fast-check";

/**
 * Hostile HTTP requests and MQTT messages over every route family and topic of a gateway, as
 * fast-check arbitraries: the fuzz suite (test/fuzz.test.ts) and the fuzz benchmark
 * (bench/fuzz.bench.ts) draw from them with a seed, so a failure is replayed by its seed.
 *
 * They mix what a careless client sends (wrong types, missing fields, bad JSON) with what an
 * attacker sends (bad percent-escapes, prototype keys, deep nesting, huge numbers, queries built to
 * backtrack or to nest), around well-formed requests so that the hostile part reaches deep code.
 */

export interface HostileRequest {
  method: string;
  path: string;
  headers: Record<string, string>;
  body?: string;
}

export interface HostileMessage {
  topic: string;
  payload: string;
}

/** What the targets are named: a twin the fuzz keeps alive, its PT and a second node. */
export interface FuzzTargets {
  /** A running twin the requests read and act on (never removed by them). */
  twin: string;
  /** Its PT's device id (topics `dtc/iiot/{device}/…`). */
  device: string;
  /** An instance the requests may stop, move, remove. */
  victim: string;
  /** A second in-process node. */
  node: string;
}

const NASTY = [
  "%",
  "%zz",
  "%E0%A4%A",
  "%00",
  "%2F..%2F",
  "__proto__",
  "constructor",
  "prototype",
  "toString",
  "hasOwnProperty",
  "valueOf",
  "..",
  "../../etc/passwd",
  "\u0000",
  "\u202e",
  "𝕏",
  "<script>alert(1)</script>",
  "'; DROP TABLE things; --",
  "urn:dtc:twin:x",
  "urn:dtc:manager",
  "1e308",
  "-1",
  "NaN",
  "Infinity",
  "99999999999999999999",
  "0x10",
  "",
  " ",
  "true",
  "null",
  "{}",
  "[]",
];

const nastyString: fc.Arbitrary<string> = fc.oneof(
  { weight: 3, arbitrary: fc.constantFrom(...NASTY) },
  { weight: 2, arbitrary: fc.string({ maxLength: 40 }) },
  { weight: 1, arbitrary: fc.string({ unit: "binary", maxLength: 20 }) },
  { weight: 1, arbitrary: fc.integer({ min: 100, max: 70_000 }).map((n) => "a".repeat(n)) },
);

/** A path segment: mostly encoded, sometimes raw (so bad escapes reach the server as they are). */
const segment: fc.Arbitrary<string> = fc.oneof(
  nastyString.map((s) => encodeURIComponent(s)),
  fc.constantFrom("%", "%zz", "%E0%A4%A", "a%2Fb", "%C0%AF"),
);

const nastyNumber: fc.Arbitrary<unknown> = fc.oneof(
  fc.constantFrom(1e308, -1e308, 5e-324, -0, 2 ** 53, 2 ** 53 + 2, -1, 0, 1e13, 1e20),
  fc.double(),
  fc.integer(),
);

/** Nesting `depth` deep, as JSON text (a parser that recurses overflows its stack on it). */
const deepJson: fc.Arbitrary<string> = fc
  .tuple(fc.integer({ min: 50, max: 20_000 }), fc.constantFrom("[", '{"a":'))
  .map(([depth, open]) => `${open.repeat(depth)}1${(open === "[" ? "]" : "}").repeat(depth)}`);

const nastyJsonValue: fc.Arbitrary<unknown> = fc.letrec((tie) => ({
  value: fc.oneof(
    { depthSize: "small", withCrossShrink: true },
    nastyNumber,
    nastyString,
    fc.boolean(),
    fc.constant(null),
    fc.array(tie("value"), { maxLength: 4 }),
    fc.dictionary(
      fc.oneof(nastyString, fc.constantFrom("__proto__", "constructor", "@context", "id")),
      tie("value"),
      {
        maxKeys: 4,
      },
    ),
  ),
})).value;

/** Replaces or adds a few fields of a well-formed object with hostile values. */
function mutated(base: Record<string, unknown>): fc.Arbitrary<Record<string, unknown>> {
  const keys = Object.keys(base);
  return fc
    .array(fc.tuple(fc.oneof(fc.constantFrom(...keys), nastyString), nastyJsonValue), {
      minLength: 0,
      maxLength: 3,
    })
    .map((changes) => {
      const out: Record<string, unknown> = { ...base };
      for (const [k, v] of changes)
        Object.defineProperty(out, k, { value: v, enumerable: true, writable: true });
      return out;
    });
}

const jsonBody = (base: Record<string, unknown>): fc.Arbitrary<string> =>
  fc.oneof(
    { weight: 4, arbitrary: mutated(base).map((b) => JSON.stringify(b)) },
    { weight: 1, arbitrary: nastyJsonValue.map((v) => JSON.stringify(v) ?? "null") },
    { weight: 1, arbitrary: deepJson },
    { weight: 1, arbitrary: mutated(base).map((b) => JSON.stringify(b).slice(0, -3)) },
    { weight: 1, arbitrary: fc.string({ maxLength: 60 }) },
    {
      weight: 1,
      arbitrary: fc.constant(`{"__proto__":{"polluted":true},"constructor":{"prototype":{"x":1}}}`),
    },
  );

const contentType = fc.oneof(
  { weight: 6, arbitrary: fc.constant("application/json") },
  {
    weight: 3,
    arbitrary: fc.constantFrom(
      "application/td+json",
      "application/merge-patch+json",
      "application/sparql-query",
      "application/x-www-form-urlencoded",
      "text/plain",
      "application/json; charset=utf-16",
      "multipart/form-data; boundary=x",
      "*/*",
      "",
    ),
  },
  { weight: 1, arbitrary: fc.string({ maxLength: 30 }).filter((s) => /^[\x20-\x7e]*$/.test(s)) },
);

const accept = fc.constantFrom(
  undefined,
  "application/json",
  "application/sparql-results+xml",
  "text/csv",
  "text/turtle",
  "text/event-stream",
  "image/png",
  "*/*;q=0",
  "application/json;q=abc",
);

const SPARQL_TOKENS = [
  "SELECT",
  "*",
  "WHERE",
  "{",
  "}",
  "(",
  ")",
  "?s",
  "?p",
  "?o",
  "?g",
  "GRAPH",
  "OPTIONAL",
  "UNION",
  "FILTER",
  "!",
  'regex(?o, "(a|aa)+$")',
  "STR(?o)",
  "LIMIT 99999999999999999999",
  "OFFSET -1",
  "SERVICE <http://127.0.0.1:1/>",
  "bif:contains(?o, 'x')",
  "<urn:x>",
  '"lit"',
  "a",
  ".",
  ";",
  "ASK",
  "CONSTRUCT",
  "DESCRIBE",
  "INSERT DATA { <a:a> <b:b> <c:c> }",
  "LOAD <http://127.0.0.1:1/>",
  "PREFIX td: <https://www.w3.org/2019/wot/td#>",
  "td:title",
  "/",
  "|",
  "^",
  "+",
];

/** SPARQL: valid queries, token soup, and deep nesting of each bracket kind. */
const sparql: fc.Arbitrary<string> = fc.oneof(
  fc.constantFrom(
    "SELECT * WHERE { ?s ?p ?o } LIMIT 3",
    "ASK { ?s ?p ?o }",
    'PREFIX td: <https://www.w3.org/2019/wot/td#> SELECT ?t WHERE { ?s td:title ?t FILTER regex(?t, "(a|aa)+$") }',
    "CONSTRUCT { ?s ?p ?o } WHERE { GRAPH ?g { ?s ?p ?o } } LIMIT 10",
    "SELECT (COUNT(*) AS ?n) WHERE { ?a ?b ?c . ?d ?e ?f . ?g ?h ?i }",
  ),
  fc.array(fc.constantFrom(...SPARQL_TOKENS), { maxLength: 40 }).map((t) => t.join(" ")),
  fc
    .tuple(
      fc.integer({ min: 10, max: 20_000 }),
      fc.constantFrom(
        ["SELECT * WHERE ", "{ ", "?s ?p ?o", " }"],
        ["ASK { FILTER(", "(", "1", ")"],
        ["SELECT * WHERE { ?s ?p ?o FILTER(", "!", "?o", ")"],
        ["SELECT * WHERE { ?s ", "(", "<urn:p>", ")"],
        ["SELECT * WHERE { ?s ?p ?o FILTER(", "STR(", "?o", ")"],
      ),
    )
    .map(([depth, [head, open, middle, close]]) => {
      const tail =
        head.includes("FILTER") || head.includes("?s (") ? (head.startsWith("ASK") ? ") }" : " ?o }") : "";
      return head + open.repeat(depth) + middle + close.repeat(open === "!" ? 0 : depth) + tail;
    }),
);

/** JSONPath: valid queries, token soup, deep negation and nesting, backtracking regexes. */
const jsonpath: fc.Arbitrary<string> = fc.oneof(
  fc.constantFrom(
    "$[?@.title]",
    '$[?match(@.title,"(a|aa)+")]',
    '$[?search(@.title,"(x+x+)+y")]',
    "$..title",
    "$[0]",
    "$[*].properties.*",
    "$[?length(@.title) > 3]",
  ),
  fc
    .array(
      fc.constantFrom(
        "$",
        "..",
        "[?",
        "@.",
        "match(",
        "search(",
        "!",
        "(",
        ")",
        "]",
        "*",
        "1",
        ",",
        '"a"',
        "&&",
      ),
      {
        maxLength: 30,
      },
    )
    .map((t) => t.join("")),
  fc.integer({ min: 10, max: 20_000 }).map((n) => `$[?${"!".repeat(n)}@.a]`),
  fc.integer({ min: 10, max: 20_000 }).map((n) => `$[?${"(".repeat(n)}@.a${")".repeat(n)}]`),
);

const q = (parts: Record<string, string>) =>
  Object.entries(parts)
    .map(([k, v]) => `${k}=${v}`)
    .join("&");

const VALID_TD = {
  "@context": "https://www.w3.org/2022/wot/td/v1.1",
  title: "fuzzed",
  securityDefinitions: { nosec_sc: { scheme: "nosec" } },
  security: "nosec_sc",
  properties: { p: { type: "number", forms: [{ href: "http://127.0.0.1:1/p" }] } },
};

/** Every route family of the gateway, each with hostile variants. */
export function hostileRequests(t: FuzzTargets): fc.Arbitrary<HostileRequest> {
  const tdId = fc.oneof(
    fc.constant("urn:fuzz:td"),
    nastyString.map((s) => `urn:fuzz:${s}`),
    nastyString,
    fc.constant(`urn:dtc:twin:${t.twin}`),
  );
  const req = (
    method: fc.Arbitrary<string>,
    path: fc.Arbitrary<string>,
    body?: fc.Arbitrary<string | undefined>,
  ): fc.Arbitrary<HostileRequest> =>
    fc
      .record({
        method,
        path,
        body: body ?? fc.constant(undefined),
        type: contentType,
        accept,
        extra: fc.option(
          fc.constantFrom<[string, string]>(
            ["If-Match", '"nope"'],
            ["If-Match", "*"],
            ["Last-Event-ID", "99999999999999999999"],
            ["Last-Event-ID", "-1"],
            ["Authorization", "Bearer dtc_0000000000000000_x"],
            ["Authorization", "Basic %%%"],
            ["Origin", "http://evil.example"],
            ["Host", "evil.example"],
          ),
        ),
      })
      .map(({ method, path, body, type, accept, extra }) => {
        const headers: Record<string, string> = {};
        if (body !== undefined && type !== "") headers["Content-Type"] = type;
        if (accept !== undefined) headers.Accept = accept;
        if (extra) headers[extra[0]] = extra[1];
        return {
          method,
          path,
          headers,
          ...(body === undefined || method === "GET" || method === "HEAD" ? {} : { body }),
        };
      });
  const anyMethod = fc.constantFrom("GET", "PUT", "POST", "PATCH", "DELETE", "HEAD", "OPTIONS");
  const instanceTarget = fc.oneof(fc.constant(t.victim), segment);
  const startBody = jsonBody({
    package: "iiot-device",
    node: t.node,
    id: t.victim,
    configuration: { DEVICE_ID: t.victim },
  });
  return fc.oneof(
    // The directory: TDs.
    req(
      fc.constantFrom("PUT", "PATCH", "POST", "DELETE", "GET"),
      tdId.map((id) => `/things/${encodeURIComponent(id)}`),
      jsonBody({ ...VALID_TD, id: "urn:fuzz:td" }),
    ),
    req(
      fc.constant("GET"),
      segment.map((s) => `/things/${s}`),
    ),
    req(
      fc.constantFrom("GET", "POST"),
      fc
        .record({
          offset: segment,
          limit: segment,
          format: fc.constantFrom("array", "collection", "%zz", "x"),
        })
        .map((p) => `/things?${q(p)}`),
      jsonBody(VALID_TD),
    ),
    // The directory: search.
    req(
      fc.constant("GET"),
      sparql.map((s) => `/search/sparql?query=${encodeURIComponent(s)}`),
    ),
    req(fc.constant("POST"), fc.constant("/search/sparql"), sparql),
    req(
      fc.constant("GET"),
      jsonpath.map((s) => `/search/jsonpath?query=${encodeURIComponent(s)}`),
    ),
    req(
      fc.constant("GET"),
      fc
        .tuple(fc.constantFrom("by-schema", "by-state", "by-odte", "%zz", "__proto__"), segment, segment)
        .map(([n, k, v]) => `/search/named/${n}?${k}=${v}`),
    ),
    req(fc.constant("GET"), fc.constantFrom("/search/named", "/.well-known/wot", "/healthz", "/api/td")),
    // The directory: notifications (streams: the client reads the headers and goes).
    req(
      fc.constant("GET"),
      fc
        .tuple(fc.constantFrom("", "/thing_created", "/thing_updated", "/%zz", "/__proto__"), segment)
        .map(([type, id]) => `/events${type}?diff=true&lastEventId=${id}`),
    ),
    // The manager.
    req(
      fc.constantFrom("POST", "GET"),
      fc.constant("/api/nodes"),
      jsonBody({
        id: "fuzz-node",
        platform: "in-process",
        tier: "edge",
        capabilities: { cpu: 1, memory: 64, gpu: 0 },
      }),
    ),
    req(
      anyMethod,
      segment.map((s) => `/api/nodes/${s}`),
    ),
    req(
      fc.constant("POST"),
      segment.map((s) => `/api/schemas?id=${s}`),
      jsonBody({
        "@context": ["https://www.w3.org/2022/wot/td/v1.1"],
        "@type": "tm:ThingModel",
        title: "fuzz",
      }),
    ),
    req(
      fc.constant("POST"),
      fc.constant("/api/packages"),
      jsonBody({ id: "fuzz-pkg", schema: "iiot-device", platform: "in-process" }),
    ),
    req(
      anyMethod,
      fc
        .tuple(fc.constantFrom("schemas", "packages", "snapshots", "tokens"), segment)
        .map(([k, s]) => `/api/${k}/${s}`),
    ),
    req(fc.constant("POST"), fc.constant("/api/instances"), startBody),
    req(
      fc.constant("GET"),
      fc
        .record({ schema: segment, node: segment, state: segment, package: segment })
        .map((p) => `/api/instances?${q(p)}`),
    ),
    req(
      fc.constant("POST"),
      fc
        .tuple(
          instanceTarget,
          fc.constantFrom("stop", "start", "restart", "move", "clone", "snapshots", "%zz", "__proto__"),
        )
        .map(([id, op]) => `/api/instances/${id}/${op}`),
      jsonBody({ node: t.node, id: `${t.victim}-clone` }),
    ),
    req(
      fc.constantFrom("GET", "DELETE"),
      instanceTarget.map((id) => `/api/instances/${id}`),
    ),
    req(fc.constant("POST"), fc.constant("/api/tokens"), jsonBody({ role: "reader", description: "fuzz" })),
    // The twins, through the gateway's proxy.
    req(
      fc.constantFrom("GET", "PUT"),
      fc
        .tuple(
          fc.constantFrom(
            "temperature",
            "energy",
            "updateRate",
            "lifecycleState",
            "entanglement",
            "history",
            "augmentations",
          ),
          fc.oneof(segment, fc.constant("")),
        )
        .map(([p, s]) => `/twins/${t.twin}/properties/${s === "" ? p : s}`),
      jsonBody({ value: 1 }),
    ),
    req(
      fc.constant("GET"),
      fc
        .record({ from: segment, to: segment, limit: segment })
        .map((p) => `/twins/${t.twin}/properties/history?${q(p)}`),
    ),
    req(
      fc.constant("POST"),
      fc
        .oneof(fc.constantFrom("setRate", "installAugmentation", "removeAugmentation"), segment)
        .map((a) => `/twins/${t.twin}/actions/${a}`),
      fc.oneof(
        jsonBody({ name: "f", source: "(state) => ({ twice: state.temperature * 2 })" }),
        fc.constantFrom(
          JSON.stringify({ name: "loop", source: "() => { while (true) {} }" }),
          JSON.stringify({ name: "mem", source: "() => { const a = []; for (;;) a.push(new Array(1e6)); }" }),
          JSON.stringify({
            name: "esc",
            source: "() => this.constructor.constructor('return process')().exit(1)",
          }),
          "5",
          '"x"',
          "-1",
          "1e308",
        ),
      ),
    ),
    req(
      fc.constant("GET"),
      fc
        .oneof(fc.constantFrom("lifecycleChanged", "entanglementChanged"), segment)
        .map((e) => `/twins/${t.twin}/events/${e}`),
    ),
    req(
      anyMethod,
      fc.tuple(segment, segment).map(([a, b]) => `/twins/${a}/${b}`),
    ),
    req(fc.constant("GET"), fc.constant(`/twins/${t.twin}`)),
    // Anything else.
    req(
      anyMethod,
      fc.array(segment, { minLength: 1, maxLength: 4 }).map((s) => `/${s.join("/")}`),
    ),
  );
}

/** Hostile MQTT messages: on the PT's own topics, the twin's management topic and elsewhere. */
export function hostileMessages(t: FuzzTargets): fc.Arbitrary<HostileMessage> {
  const telemetry = `dtc/iiot/${t.device}/telemetry`;
  const reading = mutated({ ts: Date.now(), temperature: 21.5, energy: 1.5 });
  return fc.oneof(
    fc.record({
      topic: fc.constant(telemetry),
      payload: fc.oneof(
        { weight: 3, arbitrary: reading.map((r) => JSON.stringify(r)) },
        {
          weight: 2,
          arbitrary: fc
            .constantFrom<unknown>(
              { ts: 1e308, temperature: 99 },
              { ts: Date.now() + 86_400_000, temperature: 99 },
              { ts: -1, temperature: 99 },
              { ts: "not a date", temperature: 99 },
              { ts: "9999-12-31T23:59:59Z", temperature: 99 },
              { temperature: "hot" },
              { temperature: { __proto__: { x: 1 } } },
              { __proto__: { temperature: 1 } },
            )
            .map((p) => JSON.stringify(p)),
        },
        { weight: 1, arbitrary: deepJson },
        { weight: 1, arbitrary: fc.string({ maxLength: 50 }) },
        {
          weight: 1,
          arbitrary: fc
            .integer({ min: 1_000, max: 200_000 })
            .map((n) => JSON.stringify({ x: "a".repeat(n) })),
        },
      ),
    }),
    fc.record({
      topic: fc.constantFrom(
        `dtc/twins/${t.twin}/augmentations`,
        `dtc/iiot/${t.device}/status`,
        `dtc/iiot/${t.device}/commands`,
        `dtc/twins/${t.twin}/td`,
      ),
      payload: fc.oneof(
        jsonBody({ op: "install", name: "f", source: "() => { while (true) {} }" }),
        jsonBody({ op: "remove", name: "f" }),
        jsonBody({ status: "online" }),
      ),
    }),
    fc.record({
      topic: fc.oneof(
        // A topic's length is a 16-bit field: longer ones cannot be sent at all (mqtt.js throws).
        nastyString.map((s) => `dtc/${s.slice(0, 4000)}`),
        fc.constantFrom("$SYS/x", "dtc/twins/../x", "dtc/twins//td", "/", "dtc/iiot/+/telemetry"),
      ),
      payload: fc.oneof(
        nastyJsonValue.map((v) => JSON.stringify(v) ?? ""),
        fc.string({ maxLength: 30 }),
      ),
    }),
  );
}

/** Streams (SSE, long polls) may legitimately stay open: the client reads the head, or gives up. */
export const isStream = (r: HostileRequest) =>
  r.method === "GET" &&
  (/^\/events/.test(r.path) ||
    /\/events\//.test(r.path) ||
    /\/observable/.test(r.path) ||
    r.headers.Accept === "text/event-stream");

export interface Outcome {
  request: HostileRequest;
  status?: number;
  retryAfter?: string;
  body?: string;
  error?: string;
  ms: number;
}

/** Sends hostile requests with node:http (any method, header and raw path, unlike fetch). */
export class RequestSender {
  readonly #agent: Agent;
  constructor(concurrency: number) {
    this.#agent = new Agent({ keepAlive: true, maxSockets: concurrency });
  }
  close(): void {
    this.#agent.destroy();
  }
  send(base: string, r: HostileRequest): Promise<Outcome> {
    return send(base, r, this.#agent);
  }
}

function send(base: string, r: HostileRequest, agent: Agent, retried = false): Promise<Outcome> {
  const started = performance.now();
  const url = new URL(base);
  return new Promise((resolve) => {
    const done = (o: Omit<Outcome, "request" | "ms">) =>
      resolve({ request: r, ms: performance.now() - started, ...o });
    let req: ReturnType<typeof httpRequest>;
    try {
      req = httpRequest({
        host: url.hostname,
        port: url.port,
        method: r.method,
        path: r.path,
        headers: r.headers,
        agent,
      });
    } catch (err) {
      done({ error: `client refused to send: ${(err as Error).message}` });
      return;
    }
    const stream = isStream(r);
    const timer = setTimeout(
      () => {
        req.destroy();
        done(stream ? { status: 0 } : { error: "no answer within 15 s" });
      },
      stream ? 300 : 15_000,
    );
    req.on("response", (res) => {
      if (stream || res.statusCode === 200) {
        // A stream is answered once its head came; bodies of 200s are not inspected.
        clearTimeout(timer);
        res.destroy();
        done({ status: res.statusCode, retryAfter: res.headers["retry-after"] });
        return;
      }
      let body = "";
      res.setEncoding("utf8");
      res.on("data", (chunk: string) => {
        if (body.length < 2000) body += chunk;
      });
      res.on("end", () => {
        clearTimeout(timer);
        done({ status: res.statusCode, retryAfter: res.headers["retry-after"], body });
      });
      res.on("error", () => undefined);
    });
    req.on("error", (err) => {
      clearTimeout(timer);
      // A stream the client itself cut is not the server's error.
      if (stream && req.destroyed) done({ status: 0 });
      // A kept-alive socket the server closed as idle just as it was reused (Node's documented
      // race): what any HTTP client does, send again once on a fresh one.
      else if (!retried && req.reusedSocket && (err as NodeJS.ErrnoException).code === "ECONNRESET") {
        send(base, r, agent, true).then(resolve);
      } else done({ error: `connection failed: ${err.message}` });
    });
    if (r.body !== undefined) req.write(r.body);
    req.end();
  });
}

/**
 * Node's HTTP server refuses a request head over its `maxHeaderSize` (16 KiB) itself: it answers 431
 * and closes the connection, which a client still sending sees as a reset. That is the limit
 * working, not a fault.
 */
export const MAX_HEAD_BYTES = 16 * 1024;
const headBytes = (r: HostileRequest) =>
  Buffer.byteLength(`${r.method} ${r.path} HTTP/1.1\r\n`) +
  Object.entries(r.headers).reduce((n, [k, v]) => n + Buffer.byteLength(`${k}: ${v}\r\n`), 0);

/** A 5xx (but a 503 with Retry-After: back-pressure) or no answer at all. */
export const isFault = (o: Outcome) => {
  if (headBytes(o.request) > MAX_HEAD_BYTES - 512) return o.status !== undefined && o.status >= 500;
  return (
    o.error !== undefined ||
    (o.status !== undefined && o.status >= 500 && !(o.status === 503 && o.retryAfter))
  );
};

export const summary = (o: Outcome) =>
  `${o.request.method} ${o.request.path.slice(0, 160)} [${JSON.stringify(o.request.headers)}] body=${JSON.stringify(
    o.request.body?.slice(0, 160),
  )} -> ${o.status ?? o.error} ${o.body?.slice(0, 200) ?? ""}`;

/** Runs `each` over `items`, `size` at a time. */
export async function pool<T>(items: T[], size: number, each: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  await Promise.all(
    Array.from({ length: size }, async () => {
      while (next < items.length) await each(items[next++] as T);
    }),
  );
}
