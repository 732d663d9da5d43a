// The simulator CLI: runs a simulated IIoT device (or a fleet of them) or a MASA camera against an
// MQTT broker, with the fault knobs settable from the command line and, while it runs, from stdin.
import { createInterface } from "node:readline";
import { parseArgs } from "node:util";
import { CameraSimulator } from "./simulator/camera.js";
import { type Faults, MAX_RATE, seededRandom } from "./simulator/faults.js";
import { IiotDeviceSimulator, IiotFleet } from "./simulator/iiot-device.js";
import type { PtSimulator } from "./simulator/pt-simulator.js";

const USAGE = `Usage: npm run simulate -- <iiot|camera> --id <id> [options]

Simulates a physical twin publishing to an MQTT broker.
  iiot     IIoT device: dtc/iiot/<id>/telemetry, /status, /commands (setRate)
  camera   MASA smart camera: dtc/masa/cameras/<id>/detections, /status

Options:
  --id <id>          device id; with --count, the prefix of the ids <id>1 ... <id>N (required)
  --rate <hz>        samples per second, > 0 and <= ${MAX_RATE} (default: iiot 1, camera 10)
  --broker <url>     MQTT broker (default: $DTC_MQTT_URL, else mqtt://127.0.0.1:1883); waited for
                     with backoff while it is not reachable
  --username <name>  MQTT user name (default: $DTC_MQTT_USERNAME, else the token id of a dtc_
                     token given as password)
  --password <pw>    MQTT password, e.g. the PT's device token (default: $DTC_MQTT_PASSWORD; the
                     variable keeps it out of the process list)
  --latency <ms>     hold each message back this long before publishing (default 0)
  --jitter <ms>      add a uniform ± jitter to the latency (default 0)
  --loss <percent>   lose this share of the samples, 0-100 (default 0)
  --count <n>        iiot only: simulate n devices on one connection (no last will)
  --lat <deg>        camera only: latitude (default 44.6556, Modena)
  --lon <deg>        camera only: longitude (default 10.9309)
  --seed <n>         seed the random numbers for a reproducible run
  -h, --help         show this help

While running it prints one line of statistics per second and reads commands on stdin:
  rate <hz> | latency <ms> [jitter-ms] | loss <percent> | offline | online | crash | start | quit
SIGINT and SIGTERM stop it gracefully (retained offline status) with exit status 0.
`;

const SCHEMES = ["mqtt", "mqtts", "ws", "wss", "tcp", "ssl"];

class UsageError extends Error {}

interface Settings {
  kind: "iiot" | "camera";
  id: string;
  broker: string;
  /** CONNECT credentials; undefined: none. */
  credentials: { username: string; password: string } | undefined;
  rate: number | undefined;
  faults: Faults;
  count: number | undefined;
  latitude: number | undefined;
  longitude: number | undefined;
  seed: number | undefined;
}

function number(
  name: string,
  raw: string | undefined,
  ok: (n: number) => boolean,
  expected: string,
): number | undefined {
  if (raw === undefined) return undefined;
  const n = raw.trim() === "" ? Number.NaN : Number(raw);
  if (!ok(n)) throw new UsageError(`--${name} must be ${expected} (got ${JSON.stringify(raw)})`);
  return n;
}

function parse(argv: string[]): Settings | "help" {
  let parsed: ReturnType<typeof parseArgsStrict>;
  try {
    parsed = parseArgsStrict(argv);
  } catch (err) {
    throw new UsageError((err as Error).message);
  }
  const { values, positionals } = parsed;
  if (values.help) return "help";
  const [kind, ...extra] = positionals;
  if (kind === undefined) throw new UsageError("missing the kind of device: iiot or camera");
  if (kind !== "iiot" && kind !== "camera") {
    throw new UsageError(`unknown kind of device ${JSON.stringify(kind)}: use iiot or camera`);
  }
  if (extra.length > 0) throw new UsageError(`unexpected argument ${JSON.stringify(extra[0])}`);
  const id = values.id;
  if (id === undefined || id === "") throw new UsageError("--id is required");
  if (/[+#/]/.test(id))
    throw new UsageError(`--id must not contain "/", "+" or "#" (got ${JSON.stringify(id)})`);
  const broker = values.broker ?? (process.env.DTC_MQTT_URL || "mqtt://127.0.0.1:1883");
  if (!URL.canParse(broker) || !SCHEMES.includes(new URL(broker).protocol.slice(0, -1))) {
    throw new UsageError(
      `--broker must be a URL with one of the schemes ${SCHEMES.join(", ")} (got ${JSON.stringify(broker)})`,
    );
  }
  const brokerUrl = new URL(broker);
  if (brokerUrl.username !== "" || brokerUrl.password !== "") {
    throw new UsageError(
      "--broker must not carry credentials (they would be printed): use --username and --password",
    );
  }
  const credentials = credentialsOf(values.username, values.password);
  const nonNegative = (n: number) => Number.isFinite(n) && n >= 0;
  const rate = number("rate", values.rate, (n) => n > 0 && n <= MAX_RATE, `a number > 0 and <= ${MAX_RATE}`);
  const latencyMs = number("latency", values.latency, nonNegative, "a number of milliseconds >= 0") ?? 0;
  const jitterMs = number("jitter", values.jitter, nonNegative, "a number of milliseconds >= 0") ?? 0;
  const lossPct = number("loss", values.loss, (n) => n >= 0 && n <= 100, "a percentage from 0 to 100") ?? 0;
  const count = number("count", values.count, (n) => Number.isInteger(n) && n >= 1, "an integer >= 1");
  const latitude = number("lat", values.lat, (n) => n >= -90 && n <= 90, "a latitude from -90 to 90");
  const longitude = number("lon", values.lon, (n) => n >= -180 && n <= 180, "a longitude from -180 to 180");
  const seed = number("seed", values.seed, Number.isInteger, "an integer");
  if (kind === "camera" && count !== undefined) throw new UsageError("--count is for iiot devices only");
  if (kind === "iiot" && (latitude !== undefined || longitude !== undefined)) {
    throw new UsageError("--lat and --lon are for cameras only");
  }
  return {
    kind,
    id,
    broker,
    credentials,
    rate,
    faults: { latencyMs, jitterMs, loss: lossPct / 100 },
    count,
    latitude,
    longitude,
    seed,
  };
}

/** A dtc API token: `dtc_{16 hex id}_{secret}`; an external mosquitto knows it by its id. */
const DTC_TOKEN = /^dtc_([0-9a-f]{16})_/;

/** The flags, else the variables; a password alone gets a user name (MQTT 3.1.1 needs one). */
function credentialsOf(username: string | undefined, password: string | undefined): Settings["credentials"] {
  const user = username ?? (process.env.DTC_MQTT_USERNAME || undefined);
  const secret = password ?? (process.env.DTC_MQTT_PASSWORD || undefined);
  if (secret === undefined) {
    if (user !== undefined) throw new UsageError("--username needs --password (or DTC_MQTT_PASSWORD)");
    return undefined;
  }
  // The embedded broker takes any user name with a token; mosquitto's files name users by token id.
  return { username: user ?? DTC_TOKEN.exec(secret)?.[1] ?? "dtc-simulator", password: secret };
}

function parseArgsStrict(argv: string[]) {
  const string = { type: "string" } as const;
  return parseArgs({
    args: argv,
    allowPositionals: true,
    strict: true,
    options: {
      id: string,
      rate: string,
      broker: string,
      username: string,
      password: string,
      latency: string,
      jitter: string,
      loss: string,
      count: string,
      lat: string,
      lon: string,
      seed: string,
      help: { type: "boolean", short: "h" },
    },
  });
}

/** What the CLI drives: one simulator or a fleet, behind the same few operations. */
interface Target {
  label: string;
  start(): Promise<void>;
  stop(): Promise<void>;
  crash(): void;
  goOffline(): Promise<void>;
  goOnline(): Promise<void>;
  setRate(hz: number): void;
  setFaults(f: Partial<Faults>): void;
  stats(): { sent: number; dropped: number; rate: number; faults: Faults; state: string };
}

function single(sim: PtSimulator): Target {
  return {
    label: sim.id,
    start: () => sim.start(),
    stop: () => sim.stop(),
    crash: () => sim.crash(),
    goOffline: () => sim.goOffline(),
    goOnline: () => sim.goOnline(),
    setRate: (hz) => sim.setRate(hz),
    setFaults: (f) => sim.setFaults(f),
    stats: () => ({
      sent: sim.sent,
      dropped: sim.dropped,
      rate: sim.rate,
      faults: sim.faults,
      state: sim.state,
    }),
  };
}

function fleet(f: IiotFleet, prefix: string): Target {
  const first = f.devices[0] as IiotDeviceSimulator;
  return {
    label: `${prefix}1..${prefix}${f.size}`,
    start: () => f.start(),
    stop: () => f.stop(),
    crash: () => f.crash(),
    goOffline: () => f.goOffline(),
    goOnline: () => f.goOnline(),
    setRate: (hz) => f.setRate(hz),
    setFaults: (faults) => f.setFaults(faults),
    stats: () => ({
      sent: f.sent,
      dropped: f.dropped,
      rate: first.rate,
      faults: first.faults,
      state: first.state,
    }),
  };
}

function build(s: Settings): Target {
  const warn = (message: string) => process.stderr.write(`warning: ${message}\n`);
  const common = {
    rate: s.rate,
    ...s.faults,
    random: s.seed === undefined ? undefined : seededRandom(s.seed),
    onWarning: warn,
    // A PT started before its broker keeps trying rather than exiting.
    waitForBroker: true,
    ...(s.credentials ? { mqttOptions: { ...s.credentials } } : {}),
  };
  if (s.kind === "camera") {
    return single(
      new CameraSimulator({
        id: s.id,
        brokerUrl: s.broker,
        latitude: s.latitude,
        longitude: s.longitude,
        ...common,
      }),
    );
  }
  if (s.count !== undefined) {
    return fleet(new IiotFleet({ count: s.count, prefix: s.id, brokerUrl: s.broker, ...common }), s.id);
  }
  return single(new IiotDeviceSimulator({ id: s.id, brokerUrl: s.broker, ...common }));
}

const out = (line: string) => process.stdout.write(`${line}\n`);

/** Applies one stdin command; throws an Error saying what is wrong with it. */
async function command(target: Target, line: string, quit: () => void): Promise<void> {
  const [verb, ...args] = line.trim().split(/\s+/);
  const num = (i: number) => {
    const raw = args[i];
    const n = raw === undefined ? Number.NaN : Number(raw);
    if (!Number.isFinite(n)) throw new Error(`${verb} needs a number (got ${JSON.stringify(raw ?? "")})`);
    return n;
  };
  switch (verb) {
    case "":
    case undefined:
      return;
    case "rate":
      target.setRate(num(0));
      out(`rate set to ${num(0)} Hz`);
      return;
    case "latency":
      target.setFaults({ latencyMs: num(0), jitterMs: args.length > 1 ? num(1) : undefined });
      out(`latency set to ${num(0)} ms${args.length > 1 ? ` ± ${num(1)} ms` : ""}`);
      return;
    case "loss": {
      const pct = num(0);
      if (pct < 0 || pct > 100) throw new Error(`loss must be a percentage from 0 to 100 (got ${pct})`);
      target.setFaults({ loss: pct / 100 });
      out(`loss set to ${pct}%`);
      return;
    }
    case "offline":
      await target.goOffline();
      out("offline");
      return;
    case "online":
      await target.goOnline();
      out("online");
      return;
    case "crash":
      target.crash();
      out("crashed: the broker publishes the last will; 'start' restarts, 'quit' exits");
      return;
    case "start":
      await target.start();
      out("started");
      return;
    case "quit":
    case "exit":
      quit();
      return;
    default:
      throw new Error(
        `unknown command ${JSON.stringify(verb)}: rate <hz> | latency <ms> [jitter] | loss <pct> | offline | online | crash | start | quit`,
      );
  }
}

async function main(): Promise<void> {
  let settings: Settings | "help";
  let target: Target;
  try {
    settings = parse(process.argv.slice(2));
    if (settings === "help") {
      out(USAGE);
      return;
    }
    target = build(settings);
  } catch (err) {
    if (!(err instanceof UsageError || err instanceof RangeError)) throw err;
    process.stderr.write(`simulate: ${err.message}\n\n${USAGE}`);
    process.exit(2);
  }

  let stopping = false;
  const stop = (why: string) => {
    if (stopping) return;
    stopping = true;
    out(`stopping (${why})`);
    // A broker that vanished must not keep the process from exiting.
    const deadline = setTimeout(() => {
      process.stderr.write("simulate: could not stop cleanly within 5 s\n");
      process.exit(1);
    }, 5000);
    target.stop().then(
      () => {
        clearTimeout(deadline);
        process.exit(0);
      },
      (err) => {
        process.stderr.write(`simulate: error while stopping: ${(err as Error).message}\n`);
        process.exit(1);
      },
    );
  };
  process.once("SIGINT", () => stop("SIGINT"));
  process.once("SIGTERM", () => stop("SIGTERM"));

  try {
    await target.start();
  } catch (err) {
    // Stopped (SIGINT, SIGTERM) while waiting for the broker: stop() exits.
    if (stopping) return;
    throw err;
  }
  const s = settings;
  out(`${s.kind} ${target.label} publishing to ${s.broker} at ${target.stats().rate} Hz`);

  let lastSent = 0;
  setInterval(() => {
    const { sent, dropped, rate, faults, state } = target.stats();
    const jitter = faults.jitterMs > 0 ? `±${faults.jitterMs}` : "";
    out(
      `${target.label} state=${state} sent=${sent} (+${sent - lastSent}/s) dropped=${dropped} rate=${rate}Hz ` +
        `latency=${faults.latencyMs}${jitter}ms loss=${Math.round(faults.loss * 1000) / 10}%`,
    );
    lastSent = sent;
  }, 1000);

  // End of stdin (e.g. started with </dev/null) leaves the simulator running.
  const lines = createInterface({ input: process.stdin, terminal: false });
  lines.on("line", (line) => {
    command(target, line, () => stop("quit")).catch((err) => {
      process.stderr.write(`error: ${(err as Error).message}\n`);
    });
  });
}

main().catch((err) => {
  process.stderr.write(`simulate: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exit(1);
});
