import { type ChildProcess, spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import DigestClient from "digest-fetch";
import { freePort } from "./brokers.js";

/**
 * A private Virtuoso (Debian virtuoso-opensource 7.2) on loopback for one test file: its own database in a
 * temp dir, its own ports, never the system instance. Two ways to write (`access`):
 *
 * - `anonymous` (default): after start, `GRANT SPARQL_UPDATE TO "SPARQL"` is run through isql as dba
 *   (default password dba; both ports are bound to 127.0.0.1 only), so `/sparql` accepts SPARQL 1.1
 *   Update without authentication and `auth` is undefined.
 * - `writer`: the deployment's layout. A dedicated user (not dba) with SPARQL_UPDATE writes and reads
 *   through `/sparql-auth` (HTTP Digest, `auth`); the anonymous `/sparql` (`searchUrl`) keeps Virtuoso's
 *   default rights, read-only.
 *
 * Virtuoso quirks a client must live with (7.2.5):
 * - POST with `Content-Type: application/sparql-query` never answers and spins a core while the client
 *   waits (openlink/virtuoso-opensource#842): send queries as GET `?query=` or as a form POST (`query=`).
 * - GET request lines over ~10 KB are cut: the query arrives truncated and fails with a misleading 400
 *   ("Bad character '%'"). Long queries must be form POSTs.
 * - Errors are `text/plain` whatever the Accept ("Virtuoso 37000 Error SP030: ..."): errors of the SPARQL
 *   compiler (SQLSTATE 37000: syntax, SP031 limits) are 400, errors while running are 500, including
 *   "no permission" (42000, not 401/403) and `DROP GRAPH` of a graph that was never `CREATE`d (22023;
 *   use `DROP SILENT GRAPH` or `CLEAR GRAPH`).
 * - Blank nodes are refused in `INSERT DATA` (400, SP031); `INSERT { ... } WHERE {}` accepts them.
 * - One update request compiles to at most 10000 lines of SQL: roughly 1200 triples of INSERT DATA (400,
 *   SP031 "length of generated SQL text has exceeded 10000 lines"); split bigger loads.
 * - SELECT and CONSTRUCT results are cut at 10000 rows/triples ([SPARQL] ResultSetMaxRows) with 200 OK;
 *   SELECT adds `X-SPARQL-MaxRows: 10000`. Page with ORDER BY + LIMIT/OFFSET.
 * - JSON results use SPARQL 1.0 `"type": "typed-literal"`, and `"x"^^xsd:string` stays distinct from "x".
 * - Queries: a form POST `timeout=` (ms) makes Virtuoso stop at the next whole 2 s past it and answer 200
 *   with what it has and `X-SQL-State: S1TAT` (partial results, not an error status). ORDER BY windows
 *   past ResultSetMaxRows fail (500, SR353 "Sorted TOP clause"): `ORDER BY ?x LIMIT 5 OFFSET 9998`.
 * - `FILTER (?s > "x")` on plain literals gives wrong answers when Virtuoso scans its index for it
 *   ("urn:t:Q" > "urn:t:a-b", "urn:t:b" not); `FILTER (STR(?s) > "x")` is right. ORDER BY on strings is
 *   UTF-8 byte (code point) order.
 * - A plain literal whose text is an IRI elsewhere in the same update request may be stored as that IRI
 *   (`<g> ... ; INSERT DATA { <r> <p> "urn:t:Z" }` next to `GRAPH <urn:t:Z>`); `"..."^^xsd:string` is not.
 * - `define input:default-graph-exclude` / `named-graph-exclude` give wrong answers (`COUNT(*)` of an
 *   empty graph is 1, `ASK { GRAPH <empty> { ?s ?p ?o } }` true).
 * - Each operation of a multi-operation update request commits on its own: a later failing one leaves
 *   the earlier ones done. Doubles come back with 6 significant digits (1/3 is "0.333333").
 * - `/sparql-auth` takes HTTP Digest only (not Basic); dba (password dba here) may query and update, and
 *   so may a user made with `USER_CREATE` and granted SPARQL_UPDATE.
 * - The anonymous `/sparql` refuses some functions at compile time (`bif:file_to_string`, `sql:`
 *   procedures: 400 SP031 "due to security restrictions") but runs others, `bif:http_get` among them
 *   (a request to any URL): the directory's query guard must stop them before they get here.
 * - An update without SPARQL_UPDATE is refused only when it runs: 500 with SQLSTATE 42000 ("permission").
 */
export interface TestVirtuoso {
  /** SPARQL 1.1 Query endpoint (GET `?query=`, or form POST). */
  queryUrl: string;
  /** SPARQL 1.1 Update endpoint (POST `application/sparql-update`, or form POST `update=`). */
  updateUrl: string;
  /** Credentials for queryUrl and updateUrl: the writer's with `access: "writer"`, else undefined. */
  auth?: { user: string; password: string };
  /** The anonymous `/sparql`: read-only with `access: "writer"`, the same as queryUrl otherwise. */
  searchUrl: string;
  /** Milliseconds from spawn until the endpoint answered and updates were granted. */
  startupMs: number;
  stop(): Promise<void>;
}

const STARTUP_DEADLINE_MS = 60_000;
const STOP_DEADLINE_MS = 10_000;
const INI_CANDIDATES = [
  "/etc/virtuoso-opensource-7/virtuoso.ini",
  "/usr/share/virtuoso-opensource-7/virtuoso.ini",
];

interface Installation {
  server: string;
  isql: string;
  ini: string;
}

function onPath(name: string, extraDirs: string[] = []): string | undefined {
  const dirs = [...(process.env.PATH ?? "").split(path.delimiter), ...extraDirs];
  return dirs.map((d) => path.join(d, name)).find((p) => existsSync(p));
}

function installation(): Installation | string {
  const server = onPath("virtuoso-t", ["/usr/bin", "/usr/local/virtuoso-opensource/bin"]);
  if (server === undefined) return "virtuoso-t is not installed";
  // Debian renames Virtuoso's isql to isql-vt (plain isql is unixODBC's); upstream keeps it beside virtuoso-t.
  const isql = onPath("isql-vt", ["/usr/bin"]) ?? [path.join(path.dirname(server), "isql")].find(existsSync);
  if (isql === undefined) return "isql-vt (Virtuoso's isql) is not installed";
  const ini = INI_CANDIDATES.find((p) => existsSync(p));
  if (ini === undefined) return `no virtuoso.ini template (looked for ${INI_CANDIDATES.join(", ")})`;
  return { server, isql, ini };
}

/** Why Virtuoso cannot run here, or undefined when it can. In CI a missing engine is an error. */
export function virtuosoUnavailable(): string | undefined {
  const found = installation();
  if (typeof found !== "string") return undefined;
  const reason = `${found} (Debian package virtuoso-opensource; .ci/run installs it)`;
  if (process.env.CI === "true") throw new Error(`CI: ${reason}`);
  return reason;
}

/**
 * Rewrites an ini text: `edit(section, key, value)` returns the new value, or undefined to keep the line;
 * keys in `ensure` that the text lacks are added to their section.
 */
function editIni(
  text: string,
  edit: (section: string, key: string, value: string) => string | undefined,
  ensure: Record<string, Record<string, string>>,
): string {
  const out: string[] = [];
  const seen = new Set<string>();
  let section = "";
  const addMissing = () => {
    for (const [key, value] of Object.entries(ensure[section] ?? {})) {
      if (!seen.has(`${section}\n${key.toLowerCase()}`)) out.push(`${key} = ${value}`);
    }
  };
  for (const line of text.split(/\r?\n/)) {
    const header = /^\s*\[([^\]]+)\]/.exec(line);
    if (header?.[1] !== undefined) {
      addMissing();
      section = header[1].trim();
      seen.add(`${section}\n`);
      out.push(line);
      continue;
    }
    const entry = /^\s*([^;=\s][^=]*?)\s*=\s*(.*?)\s*$/.exec(line);
    if (entry?.[1] === undefined || entry[2] === undefined) {
      out.push(line);
      continue;
    }
    const key = entry[1];
    seen.add(`${section}\n${key.toLowerCase()}`);
    const value = edit(section, key, entry[2].replace(/\s;.*$/, ""));
    out.push(value === undefined ? line : `${key} = ${value}`);
  }
  addMissing();
  for (const [name, entries] of Object.entries(ensure)) {
    if (seen.has(`${name}\n`)) continue;
    out.push(`[${name}]`, ...Object.entries(entries).map(([k, v]) => `${k} = ${v}`), "");
  }
  return out.join("\n");
}

/** The system virtuoso.ini with every file in `dir`, loopback ports and a small footprint. */
function privateIni(template: string, dir: string, sqlPort: number, httpPort: number): string {
  const file = (name: string) => path.join(dir, name);
  const settings: Record<string, Record<string, string>> = {
    Database: {
      DatabaseFile: file("virtuoso.db"),
      ErrorLogFile: file("virtuoso.log"),
      LockFile: file("virtuoso.lck"),
      TransactionFile: file("virtuoso.trx"),
      xa_persistent_file: file("virtuoso.pxa"),
      Striping: "0",
      TempStorage: "TempDatabase",
    },
    TempDatabase: {
      DatabaseFile: file("virtuoso-temp.db"),
      TransactionFile: file("virtuoso-temp.trx"),
      Striping: "0",
    },
    Parameters: {
      ServerPort: `127.0.0.1:${sqlPort}`,
      DisableUnixSocket: "1",
      DirsAllowed: `., ${dir}, /usr/share/virtuoso-opensource-7/vad`,
      // 2000 pages of 8 KB: ~16 MB of buffers instead of the template's ~80 MB; the resident set stays ~230 MB.
      NumberOfBuffers: "2000",
      MaxDirtyBuffers: "1500",
      MaxQueryMem: "256M",
      ThreadsPerQuery: "2",
    },
    HTTPServer: { ServerPort: `127.0.0.1:${httpPort}` },
    URIQA: { DefaultHost: `127.0.0.1:${httpPort}` },
  };
  const lower = Object.fromEntries(
    Object.entries(settings).map(([s, kv]) => [
      s,
      new Map(Object.entries(kv).map(([k, v]) => [k.toLowerCase(), v])),
    ]),
  );
  return editIni(
    template,
    (section, key, value) => {
      const set = lower[section]?.get(key.toLowerCase());
      if (set !== undefined) return set;
      // Unused with Striping = 0, but never left pointing outside the temp dir.
      if (section === "Striping" && /^Segment\d+$/i.test(key)) {
        const [size, ...files] = value.split(",").map((s) => s.trim());
        return [size, ...files.map((f) => file(path.basename(f)))].join(", ");
      }
      return undefined;
    },
    settings,
  );
}

/** Keeps the last `limit` characters a stream produced, for error messages. */
function tail(stream: NodeJS.ReadableStream | null, limit = 8192): () => string {
  let text = "";
  stream?.on("data", (d) => {
    text = (text + String(d)).slice(-limit);
  });
  return () => text;
}

/** Runs Virtuoso's isql against the private instance; isql exits 0 even on SQL errors, so its output is checked. */
async function isql(binary: string, sqlPort: number, statement: string): Promise<void> {
  const proc = spawn(binary, [`127.0.0.1:${sqlPort}`, "dba", "dba", `exec=${statement}`], {
    stdio: ["ignore", "pipe", "pipe"],
  });
  const out = tail(proc.stdout);
  const err = tail(proc.stderr);
  const code = await new Promise<number | null>((resolve, reject) => {
    proc.once("error", reject);
    proc.once("exit", resolve);
  });
  const output = `${out()}${err()}`;
  if (code !== 0 || /\*\*\* Error/.test(output)) {
    throw new Error(`isql ${statement} failed (exit ${code}): ${output.trim()}`);
  }
}

/** Polls `attempt` (every 100 ms) until it resolves true, the process dies, or the deadline passes. */
async function poll(
  what: string,
  proc: ChildProcess,
  deadline: number,
  attempt: () => Promise<boolean>,
): Promise<void> {
  let last: unknown;
  while (Date.now() < deadline) {
    if (proc.exitCode !== null || proc.signalCode !== null) {
      throw new Error(`virtuoso-t exited (${proc.exitCode ?? proc.signalCode}) before ${what}`);
    }
    try {
      if (await attempt()) return;
    } catch (err) {
      last = err;
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`${what}: no success within ${STARTUP_DEADLINE_MS} ms (last error: ${String(last)})`);
}

async function stopProcess(proc: ChildProcess): Promise<void> {
  if (proc.exitCode !== null || proc.signalCode !== null) return;
  const exited = new Promise<void>((resolve) => proc.once("exit", () => resolve()));
  proc.kill("SIGTERM");
  let timer: NodeJS.Timeout | undefined;
  const timedOut = new Promise<boolean>((resolve) => {
    timer = setTimeout(() => resolve(true), STOP_DEADLINE_MS);
  });
  const late = await Promise.race([exited.then(() => false), timedOut]);
  clearTimeout(timer);
  if (late) {
    proc.kill("SIGKILL");
    await exited;
  }
}

export interface VirtuosoOptions {
  /** Who may update: the anonymous user on `/sparql`, or only a dedicated writer on `/sparql-auth`. */
  access?: "anonymous" | "writer";
}

/** The dedicated writer of `access: "writer"` (a plain user: no dba rights, only SPARQL_UPDATE). */
const WRITER = "dtc_writer";

export async function startVirtuoso(options: VirtuosoOptions = {}): Promise<TestVirtuoso> {
  const access = options.access ?? "anonymous";
  const found = installation();
  if (typeof found === "string") throw new Error(found);
  const dir = mkdtempSync(path.join(tmpdir(), "dtc-virtuoso-"));
  const [sqlPort, httpPort] = [await freePort(), await freePort()];
  const ini = path.join(dir, "virtuoso.ini");
  // Quoted in SQL text below: hex only.
  const writerPassword = randomBytes(12).toString("hex");
  writeFileSync(ini, privateIni(readFileSync(found.ini, "utf8"), dir, sqlPort, httpPort));

  const started = Date.now();
  const proc = spawn(found.server, ["+configfile", ini, "+foreground"], {
    cwd: dir,
    stdio: ["ignore", "pipe", "pipe"],
  });
  const stdout = tail(proc.stdout);
  const stderr = tail(proc.stderr);
  proc.once("error", () => {}); // reported through exitCode/poll; avoids an unhandled 'error'
  const endpoint = `http://127.0.0.1:${httpPort}/sparql`;
  const deadline = started + STARTUP_DEADLINE_MS;
  try {
    await poll("the SPARQL endpoint answered", proc, deadline, async () => {
      const res = await fetch(`${endpoint}?query=${encodeURIComponent("ASK {}")}`, {
        headers: { accept: "application/sparql-results+json" },
        signal: AbortSignal.timeout(2000),
      });
      return res.ok && ((await res.json()) as { boolean?: unknown }).boolean === true;
    });
    // The first isql statement is retried until the SQL port answers; the rest run once.
    const [first = "", ...rest] =
      access === "anonymous"
        ? ['GRANT SPARQL_UPDATE TO "SPARQL";']
        : [`DB.DBA.USER_CREATE('${WRITER}', '${writerPassword}');`, `GRANT SPARQL_UPDATE TO "${WRITER}";`];
    await poll("updates were granted", proc, deadline, async () => {
      await isql(found.isql, sqlPort, first);
      return true;
    });
    for (const statement of rest) await isql(found.isql, sqlPort, statement);
  } catch (err) {
    await stopProcess(proc);
    rmSync(dir, { recursive: true, force: true });
    throw new Error(`Virtuoso did not start: ${(err as Error).message}\n${stdout()}${stderr()}`);
  }
  const startupMs = Date.now() - started;

  let stopping: Promise<void> | undefined;
  const authUrl = `http://127.0.0.1:${httpPort}/sparql-auth`;
  return {
    ...(access === "anonymous"
      ? { queryUrl: endpoint, updateUrl: endpoint }
      : { queryUrl: authUrl, updateUrl: authUrl, auth: { user: WRITER, password: writerPassword } }),
    searchUrl: endpoint,
    startupMs,
    stop: () => {
      stopping ??= stopProcess(proc).finally(() => rmSync(dir, { recursive: true, force: true }));
      return stopping;
    },
  };
}

/**
 * Drops every graph whose IRI starts with `prefix`: the tests' data, between tests (Virtuoso's own
 * graphs have http: IRIs; `CLEAR ALL` would drop them too and break the server).
 */
export async function dropGraphs(server: TestVirtuoso, prefix = "urn:"): Promise<void> {
  const query = `SELECT DISTINCT ?g WHERE { GRAPH ?g { ?s ?p ?o } FILTER (STRSTARTS(STR(?g), ${JSON.stringify(prefix)})) }`;
  const res = await fetch(server.searchUrl, {
    method: "POST",
    headers: { accept: "application/sparql-results+json" },
    body: new URLSearchParams({ query }),
  });
  if (!res.ok) throw new Error(`listing graphs: ${res.status} ${await res.text()}`);
  const graphs = ((await res.json()) as { results: { bindings: { g: { value: string } }[] } }).results
    .bindings;
  for (let i = 0; i < graphs.length; i += 100) {
    const update = graphs
      .slice(i, i + 100)
      .map((b) => `DROP SILENT GRAPH <${b.g.value}>`)
      .join(" ;\n");
    const dropped = await writerFetch(server)(server.updateUrl, {
      method: "POST",
      headers: { "content-type": "application/sparql-update; charset=UTF-8" },
      body: update,
    });
    if (!dropped.ok) throw new Error(`dropping graphs: ${dropped.status} ${await dropped.text()}`);
  }
}

/** fetch as the server's writer: HTTP Digest with `auth` (Virtuoso's /sparql-auth), plain without. */
export function writerFetch(server: TestVirtuoso): (url: string, init: RequestInit) => Promise<Response> {
  if (!server.auth) return fetch;
  const client = new DigestClient(server.auth.user, server.auth.password);
  return (url, init) => client.fetch(url, init) as Promise<Response>;
}
