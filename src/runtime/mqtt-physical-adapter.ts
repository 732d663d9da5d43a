import type { SharedMqttConnection } from "../mqtt/connections.js";
import { SpanKind, traceHeaders, tracingOn, withSpan } from "../observability/tracing.js";
import { PhysicalTwinUnreachableError, type Twin } from "./twin.js";

/**
 * The physical adapter on MQTT ([dt-microservices]: the PT side of the twin): subscribes the twin to its
 * PT's telemetry and status topics on the process's shared connection, feeds it the messages and
 * the connection's ups and downs, and sends its commands.
 */
export interface PhysicalAttachment {
  /**
   * Resolves once the broker granted the subscriptions (never, while it is unreachable); rejects
   * with MqttSubscriptionRefusedError when its ACL refused one (the twin stays unsubscribed).
   */
  subscribed: Promise<void>;
  detach(): void;
}

/**
 * `onError`: told of what a message or a connection change made the twin throw. These run in
 * mqtt.js's handlers, where a throw would end the process: the twin drops that message and goes on.
 */
export function attachToPhysicalTwin(
  twin: Twin,
  connection: SharedMqttConnection,
  onError: (err: unknown, context: string) => void = () => {},
): PhysicalAttachment {
  const iface = twin.iface;
  const undo: (() => void)[] = [];
  let detached = false;
  const guarded =
    <A extends unknown[]>(context: string, handle: (...args: A) => void) =>
    (...args: A) => {
      try {
        handle(...args);
      } catch (err) {
        onError(err, context);
      }
    };
  twin.attach((topic, payload) => {
    // A QoS 1 publish while the broker is down would hold the request until it is back.
    if (!connection.connected) {
      return Promise.reject(
        new PhysicalTwinUnreachableError("the broker is unreachable: the command was not sent, try again"),
      );
    }
    if (!tracingOn()) return connection.publish(topic, payload, { qos: 1 });
    // A span per command; over MQTT 5 the PT gets its traceparent as a user property.
    return withSpan(
      "dtc.twin.command",
      { "dtc.twin": twin.id, "messaging.system": "mqtt", "messaging.destination.name": topic },
      () => {
        const { traceparent } = traceHeaders();
        return connection.publish(topic, payload, {
          qos: 1,
          ...(traceparent !== undefined && connection.v5 ? { userProperties: { traceparent } } : {}),
        });
      },
      { kind: SpanKind.PRODUCER },
    );
  });
  undo.push(
    connection.onConnection(
      guarded("a broker connection change", (connected: boolean, at: number) =>
        twin.setBrokerConnected(connected, at),
      ),
    ),
  );
  twin.setBrokerConnected(connection.connected, Date.now());
  const subscriptions: Promise<() => void>[] = [];
  if (iface) {
    subscriptions.push(
      connection.subscribe(
        iface.telemetryTopic,
        guarded("a telemetry message", (topic: string, payload: Buffer) => {
          twin.handleTelemetry(topic, payload, Date.now());
        }),
      ),
    );
    if (iface.statusTopic !== undefined) {
      subscriptions.push(
        connection.subscribe(
          iface.statusTopic,
          guarded("a status message", (_: string, payload: Buffer) => twin.handleStatus(payload, Date.now())),
        ),
      );
    }
  }
  const subscribed = Promise.allSettled(subscriptions).then((results) => {
    const unsubscribes = results.flatMap((r) => (r.status === "fulfilled" ? [r.value] : []));
    const failed = results.find((r): r is PromiseRejectedResult => r.status === "rejected");
    // A refused subscription (the broker's ACL) leaves the twin unsubscribed, with nothing half-made.
    if (detached || failed) {
      for (const unsubscribe of unsubscribes) unsubscribe();
      if (failed) throw failed.reason;
      return;
    }
    undo.push(...unsubscribes);
    twin.setSubscribed(true, Date.now());
  });
  return {
    subscribed,
    detach: () => {
      detached = true;
      for (const u of undo.splice(0)) u();
      twin.setSubscribed(false, Date.now());
    },
  };
}
