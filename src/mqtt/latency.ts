/**
 * How far a broker is, as the twins see it: the one-way latency of a publish to it and back, for
 * placing twins near their PTs' broker and for reading a twin's timeliness against the network.
 */
import { randomUUID } from "node:crypto";
import { performance } from "node:perf_hooks";
import mqtt, { type MqttClient } from "mqtt";
import { errorMessage } from "../domain/errors.js";
import { type MqttCredentials, noDelay } from "./connections.js";

/** How long the broker has to accept the connection, and to echo each sample, ms. */
const TIMEOUT_MS = 5_000;

/**
 * The median one-way latency to `brokerUrl`, ms (rounded to 0.01): half the round trip of a QoS 0
 * publish to a private random topic (dtc/latency/{uuid}) this client subscribes to, over `samples`
 * sequential samples. Connects (as `options.credentials` on a broker that wants them; the topic
 * needs publish and subscribe rights), measures and disconnects; rejects when the broker is not
 * reachable or refuses the credentials within 5 s, or does not echo a sample within 5 s.
 */
export async function measureBrokerLatency(
  brokerUrl: string,
  samples = 5,
  options: { credentials?: MqttCredentials } = {},
): Promise<number> {
  if (!Number.isInteger(samples) || samples < 1) {
    throw new RangeError(`samples must be a positive integer (got ${samples})`);
  }
  const client = await connect(brokerUrl, options.credentials);
  try {
    const topic = `dtc/latency/${randomUUID()}`;
    await client.subscribeAsync(topic, { qos: 0 });
    const latencies: number[] = [];
    for (let i = 0; i < samples; i++) {
      const payload = String(i);
      const echo = echoOf(client, topic, payload, brokerUrl);
      const sentAt = performance.now();
      const [receivedAt] = await Promise.all([
        echo.at,
        client.publishAsync(topic, payload, { qos: 0 }).catch((err: unknown) => {
          echo.cancel();
          throw new Error(
            `MQTT broker ${brokerUrl}: publishing a latency sample failed: ${errorMessage(err)}`,
          );
        }),
      ]);
      latencies.push((receivedAt - sentAt) / 2);
    }
    latencies.sort((a, b) => a - b);
    const middle = Math.floor(latencies.length / 2);
    const median =
      latencies.length % 2 === 1
        ? (latencies[middle] as number)
        : ((latencies[middle - 1] as number) + (latencies[middle] as number)) / 2;
    return Math.round(median * 100) / 100;
  } finally {
    // The measurement is over (or has failed with its own error): a failed disconnect changes neither.
    await client.endAsync(true).catch(() => {});
  }
}

/** A connected client, or a clear error once the broker refused or `TIMEOUT_MS` passed. */
function connect(brokerUrl: string, credentials: MqttCredentials | undefined): Promise<MqttClient> {
  return new Promise((resolve, reject) => {
    // No retries: a measurement reports the broker as it is now.
    const client = mqtt.connect(brokerUrl, {
      reconnectPeriod: 0,
      connectTimeout: TIMEOUT_MS,
      ...(credentials ? { username: credentials.username, password: credentials.password } : {}),
    });
    const fail = (reason: string) => {
      clearTimeout(timer);
      client.removeAllListeners();
      // mqtt.js may still emit an error while ending; without a listener it would crash the process.
      client.on("error", () => {});
      client.end(true);
      reject(new Error(`MQTT broker ${brokerUrl} is unreachable: ${reason}`));
    };
    const timer = setTimeout(() => fail(`no connection within ${TIMEOUT_MS} ms`), TIMEOUT_MS);
    client.once("connect", () => {
      clearTimeout(timer);
      client.removeAllListeners("error");
      client.removeAllListeners("close");
      client.on("error", () => {});
      // Nagle would hold the small publish back behind the subscribe's ack (~40 ms).
      noDelay(client);
      resolve(client);
    });
    client.once("error", (err) => fail(err.message));
    client.once("close", () => fail("connection closed"));
  });
}

/**
 * When `payload` comes back on `topic` (performance.now()), or an error after `TIMEOUT_MS`;
 * `cancel` stops waiting (`at` then never settles).
 */
function echoOf(
  client: MqttClient,
  topic: string,
  payload: string,
  brokerUrl: string,
): { at: Promise<number>; cancel: () => void } {
  let cancel = () => {};
  const at = new Promise<number>((resolve, reject) => {
    const onMessage = (received: string, body: Buffer) => {
      if (received !== topic || body.toString() !== payload) return;
      const receivedAt = performance.now();
      cancel();
      resolve(receivedAt);
    };
    const timer = setTimeout(() => {
      cancel();
      reject(new Error(`MQTT broker ${brokerUrl} did not echo a latency sample within ${TIMEOUT_MS} ms`));
    }, TIMEOUT_MS);
    cancel = () => {
      clearTimeout(timer);
      client.off("message", onMessage);
    };
    client.on("message", onMessage);
  });
  return { at, cancel };
}
