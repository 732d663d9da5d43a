import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { measureBrokerLatency } from "../src/mqtt/latency.js";
import { freePort, startBroker, type TestBroker } from "./brokers.js";

describe("broker latency", () => {
  let broker: TestBroker;

  beforeAll(async () => {
    broker = await startBroker("aedes");
  });

  afterAll(async () => {
    await broker?.stop();
  });

  it("measures a small positive one-way latency to a broker on loopback", async () => {
    const latency = await measureBrokerLatency(broker.url);
    expect(latency).toBeGreaterThan(0);
    expect(latency).toBeLessThan(50);
    // Rounded to 0.01 ms.
    expect(Math.round(latency * 100) / 100).toBe(latency);
    expect(await measureBrokerLatency(broker.url, 1)).toBeGreaterThan(0);
  });

  it("rejects clearly when the broker is unreachable, and for a bad sample count", async () => {
    const url = `mqtt://127.0.0.1:${await freePort()}`;
    await expect(measureBrokerLatency(url)).rejects.toThrow(`MQTT broker ${url} is unreachable`);
    await expect(measureBrokerLatency(broker.url, 0)).rejects.toThrow(RangeError);
  });
});
