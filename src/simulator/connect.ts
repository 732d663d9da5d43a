/**
 * How a simulator opens its own MQTT connection: at once (an unreachable broker rejects, for tests
 * and library use), or waiting for a broker that is not up yet (the CLI: a PT started before its
 * broker keeps trying, with backoff, and says so). A refused CONNECT (bad credentials, not
 * authorized) rejects either way: trying again would get the same answer.
 */
import mqtt, { type IClientOptions, type MqttClient } from "mqtt";

/** First and longest pause between two attempts while waiting for the broker, ms. */
const FIRST_RETRY_MS = 1000;
const MAX_RETRY_MS = 30_000;

export interface WaitForBroker {
  /** Told before each retry, e.g. "MQTT broker … is not reachable (ECONNREFUSED): retrying in 2 s". */
  onRetry: (message: string) => void;
  /** Gives up waiting (the promise rejects). */
  signal?: AbortSignal;
}

/** A CONNACK refusal carries the numeric return code; socket errors carry a string code. */
const isRefusal = (err: Error) => typeof (err as { code?: unknown }).code === "number";

export function connectSimulatorClient(
  url: string,
  options: IClientOptions,
  wait: WaitForBroker | undefined,
): Promise<MqttClient> {
  if (wait === undefined) return mqtt.connectAsync(url, options, false);
  const { onRetry, signal } = wait;
  return new Promise((resolve, reject) => {
    if (signal?.aborted) {
      reject(new Error("stopped while waiting for the MQTT broker"));
      return;
    }
    const steadyPeriod = options.reconnectPeriod ?? 1000;
    const client = mqtt.connect(url, { ...options, reconnectPeriod: FIRST_RETRY_MS });
    let delay = FIRST_RETRY_MS;
    const done = () => {
      client.off("connect", onConnect);
      client.off("error", onError);
      signal?.removeEventListener("abort", onAbort);
    };
    const onConnect = () => {
      done();
      // Once up, a lost connection is retried at the usual pace.
      client.options.reconnectPeriod = steadyPeriod;
      resolve(client);
    };
    const onError = (err: Error) => {
      if (isRefusal(err)) {
        done();
        client.end(true);
        reject(err);
        return;
      }
      const code = (err as { code?: unknown }).code;
      onRetry(
        `MQTT broker ${url} is not reachable (${typeof code === "string" ? code : err.message}): retrying in ${delay / 1000} s`,
      );
      // mqtt.js reads the period when it schedules the next attempt, after this error's close.
      client.options.reconnectPeriod = delay;
      delay = Math.min(delay * 2, MAX_RETRY_MS);
    };
    const onAbort = () => {
      done();
      client.end(true);
      reject(new Error("stopped while waiting for the MQTT broker"));
    };
    client.on("connect", onConnect);
    client.on("error", onError);
    signal?.addEventListener("abort", onAbort, { once: true });
  });
}
