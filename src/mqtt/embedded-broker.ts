/**
 * The MQTT broker inside the gateway's process (aedes), the default when no external broker is
 * configured. With `security`, every client authenticates in CONNECT (an API token or an OIDC JWT as
 * the password, any user name; or an internal user and its password) and every PUBLISH (the last
 * will included) and SUBSCRIBE is checked against src/security/mqtt-acl.ts. Without it
 * (DTC_AUTH=off) the broker is open. A refused publish is acknowledged and dropped, as mosquitto
 * does: MQTT 3.1.1 cannot tell the client, and closing its connection instead would make a device
 * that sends one wrong topic flap. A refused subscription gets SUBACK 0x80.
 */

import { readFileSync } from "node:fs";
import net from "node:net";
import tls from "node:tls";
import aedesModule, {
  type Aedes,
  type AedesOptions,
  type AuthenticateError,
  type Client,
  type PublishPacket,
} from "aedes";
import { errorMessage } from "../domain/errors.js";
import type { Logger } from "../logger.js";
import type { Authenticator } from "../security/authenticator.js";
import {
  cachedTwinTopics,
  type MqttAction,
  mqttDecision,
  type TwinTopics,
  type TwinTopicsSource,
} from "../security/mqtt-acl.js";
import type { Principal } from "../security/principal.js";

// aedes is CommonJS: under ESM its factory is the default export, which its typings do not say.
const createAedes = aedesModule as unknown as (options?: AedesOptions) => Aedes;

/** An MQTT broker inside the process (aedes), the default when no external broker is configured. */
export interface EmbeddedBroker {
  /** mqtt://host:port, for clients of this process and outside it. */
  url: string;
  port: number;
  /** mqtts://host:port of the TLS listener, when there is one. */
  tlsUrl: string | undefined;
  tlsPort: number | undefined;
  /**
   * Authenticates every connected client again with the credentials it connected with and closes
   * those that no longer pass (a revoked or expired token); resolves with how many were closed.
   * Also runs every `revalidateIntervalMs`. Without security: nothing to do (0).
   */
  revalidate(): Promise<number>;
  /** Clients connected now, and messages received from clients and delivered to them since the start. */
  stats(): { clients: number; messagesIn: number; messagesOut: number };
  close(): Promise<void>;
}

export interface EmbeddedBrokerSecurity {
  authenticator: Authenticator;
  /**
   * A twin's PT topics (from its TD's dtc:physicalInterface), asked about the twin of a device or
   * twin container on its publishes and subscriptions, at most once per twin per `twinTopicsTtlMs`
   * (and once per 0.5 s about a twin it does not know). May answer asynchronously.
   */
  twinTopics: TwinTopicsSource;
  /** How long an answer of twinTopics is used, ms (default 5000). */
  twinTopicsTtlMs?: number;
  logger?: Logger;
  /** How often connected clients are authenticated again, ms (default 60,000; 0 = never). */
  revalidateIntervalMs?: number;
}

export interface EmbeddedBrokerOptions {
  /** 0: a free port. */
  port: number;
  /** Address both listeners bind (default 127.0.0.1). */
  host?: string;
  /** Authentication and ACLs; absent = an open broker (DTC_AUTH=off). */
  security?: EmbeddedBrokerSecurity;
  /** An MQTT-over-TLS listener too (PEM files), on `port` (0: a free port). */
  tls?: { certFile: string; keyFile: string; port: number };
}

/** What a refused publish becomes: a `$` topic nobody subscribes to, dropped before delivery. */
const DENIED_TOPIC = "$dtc/denied";
/** Refusals logged per client at warn level; after that one line in every 1000. */
const LOGGED_DENIALS = 5;

/** Refused connections logged per minute; the others are counted in one line. */
const REFUSALS_LOGGED_PER_MINUTE = 60;

/** Allows `perMinute` events a minute; tells `onSuppressed` how many it held back in the last one. */
function logBudget(perMinute: number, onSuppressed: (count: number) => void): { take(): boolean } {
  let windowStart = 0;
  let used = 0;
  let suppressed = 0;
  return {
    take: () => {
      const now = Date.now();
      if (now - windowStart >= 60_000) {
        if (suppressed > 0) onSuppressed(suppressed);
        windowStart = now;
        used = 0;
        suppressed = 0;
      }
      if (used < perMinute) {
        used++;
        return true;
      }
      suppressed++;
      return false;
    },
  };
}

/** A connected client's principal and the credentials it presented (for revalidate). */
interface Session {
  principal: Principal;
  username: string | undefined;
  password: string;
  denials: number;
}

const authError = (message: string, returnCode: 4 | 5): AuthenticateError =>
  Object.assign(new Error(message), { returnCode }) as AuthenticateError;

const remoteOf = (client: Client): string | undefined =>
  "remoteAddress" in client.conn ? client.conn.remoteAddress : undefined;

/** Starts aedes on `host:port` (port 0: a free port). Rejects when a port is taken. */
export async function startEmbeddedBroker(options: EmbeddedBrokerOptions): Promise<EmbeddedBroker> {
  const host = options.host ?? "127.0.0.1";
  const broker = createAedes();
  const guard = options.security ? secure(broker, options.security) : undefined;
  // Two counts (the metrics read them): a publish from a client, and each delivery of one.
  const counts = { in: 0, out: 0 };
  broker.on("publish", (_packet, client) => {
    if (client) counts.in++;
  });
  const forward = broker.authorizeForward;
  broker.authorizeForward = (client, packet) => {
    const forwarded = forward.call(broker, client, packet);
    if (forwarded) counts.out++;
    return forwarded;
  };
  // The certificate is read before anything listens: a missing file is a configuration error.
  let tlsFiles: { cert: Buffer; key: Buffer } | undefined;
  if (options.tls) {
    try {
      tlsFiles = { cert: readFileSync(options.tls.certFile), key: readFileSync(options.tls.keyFile) };
    } catch (err) {
      broker.close();
      guard?.stop();
      throw new Error(`embedded MQTT broker: cannot read its TLS certificate or key: ${errorMessage(err)}`);
    }
  }
  // No Nagle: MQTT exchanges are small request/answer packets (subscribe/suback), which Nagle plus
  // delayed ACKs hold back ~40 ms each.
  const servers: net.Server[] = [net.createServer({ noDelay: true }, broker.handle)];
  if (tlsFiles) servers.push(tls.createServer({ ...tlsFiles, noDelay: true }, broker.handle));
  const closeServers = () =>
    Promise.all(
      servers.map(
        (server) =>
          new Promise<void>((resolve) => (server.listening ? server.close(() => resolve()) : resolve())),
      ),
    );
  try {
    await listen(servers[0] as net.Server, options.port, host, "");
    if (servers[1] && options.tls) await listen(servers[1], options.tls.port, host, " (TLS)");
  } catch (err) {
    guard?.stop();
    await new Promise<void>((resolve) => broker.close(() => resolve()));
    await closeServers();
    throw err;
  }
  const portOf = (server: net.Server | undefined) => (server?.address() as net.AddressInfo | null)?.port;
  const port = portOf(servers[0]) as number;
  const tlsPort = portOf(servers[1]);
  const urlHost = host === "0.0.0.0" || host === "::" ? "127.0.0.1" : host.includes(":") ? `[${host}]` : host;
  return {
    url: `mqtt://${urlHost}:${port}`,
    port,
    tlsUrl: tlsPort === undefined ? undefined : `mqtts://${urlHost}:${tlsPort}`,
    tlsPort,
    revalidate: () => guard?.revalidate() ?? Promise.resolve(0),
    stats: () => ({ clients: broker.connectedClients, messagesIn: counts.in, messagesOut: counts.out }),
    close: async () => {
      guard?.stop();
      // aedes closes its clients' sockets, without which server.close() would wait for them.
      await new Promise<void>((resolve) => broker.close(() => resolve()));
      await closeServers();
    },
  };
}

function listen(server: net.Server, port: number, host: string, what: string): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    const onError = (err: Error) =>
      reject(new Error(`embedded MQTT broker${what} cannot listen on ${host}:${port}: ${err.message}`));
    server.once("error", onError);
    server.listen(port, host, () => {
      server.off("error", onError);
      resolve();
    });
  });
}

/** Installs authentication and the ACL on `broker`; returns what revalidates and stops it. */
function secure(
  broker: Aedes,
  {
    authenticator,
    twinTopics,
    twinTopicsTtlMs,
    logger,
    revalidateIntervalMs = 60_000,
  }: EmbeddedBrokerSecurity,
): { revalidate(): Promise<number>; stop(): void } {
  const topicsOf = cachedTwinTopics(
    twinTopics,
    twinTopicsTtlMs === undefined ? {} : { ttlMs: twinTopicsTtlMs },
  );
  const sessions = new WeakMap<Client, Session>();
  const connected = new Set<Client>();
  broker.on("clientDisconnect", (client) => connected.delete(client));

  const context = (client: Client) => ({
    client: client.id,
    principal: sessions.get(client)?.principal.id,
    remote: remoteOf(client),
  });

  // Refused connections are logged at most so often: a client retrying bad credentials every
  // second, or many of them, must not flood the log.
  const refusals = logBudget(REFUSALS_LOGGED_PER_MINUTE, (suppressed) =>
    logger?.warn({ suppressed }, "MQTT: more connections were refused than logged"),
  );

  broker.authenticate = (client, username, password, done) => {
    // Never throws into aedes: any failure refuses the connection.
    const refuse = (err: AuthenticateError) => {
      try {
        done(err, false);
      } catch (callbackError) {
        logger?.error(
          { client: client.id, err: errorMessage(callbackError) },
          "MQTT: refusing a client failed",
        );
      }
    };
    let secret: string | undefined;
    try {
      secret =
        password === undefined || password === null ? undefined : Buffer.from(password).toString("utf8");
    } catch {
      secret = undefined;
    }
    authenticator.authenticate(secret, username || undefined).then(
      (result) => {
        if (!result.ok) {
          if (refusals.take()) {
            logger?.warn(
              { client: client.id, user: username, remote: remoteOf(client), reason: result.description },
              "MQTT: connection refused",
            );
          }
          // 5 "not authorized" without credentials, 4 "bad user name or password" with wrong ones.
          refuse(authError(result.description, result.error === "missing" ? 5 : 4));
          return;
        }
        sessions.set(client, {
          principal: result.principal,
          username,
          password: secret as string,
          denials: 0,
        });
        connected.add(client);
        logger?.debug({ ...context(client), kind: result.principal.kind }, "MQTT: client authenticated");
        try {
          done(null, true);
        } catch (err) {
          logger?.error({ client: client.id, err: errorMessage(err) }, "MQTT: accepting a client failed");
        }
      },
      (err: unknown) => {
        logger?.error({ client: client.id, err: errorMessage(err) }, "MQTT: authentication failed");
        refuse(authError("authentication failed", 5));
      },
    );
  };

  const logDenial = (
    client: Client,
    session: Session | undefined,
    action: MqttAction,
    topic: string,
    reason: string,
  ) => {
    const count = session ? ++session.denials : 1;
    if (count <= LOGGED_DENIALS || count % 1000 === 0) {
      logger?.warn({ ...context(client), action, topic, reason, refused: count }, `MQTT: ${action} refused`);
    }
  };

  /**
   * Judges `topic` for `client`'s principal and calls `answer` exactly once: at once when the twin's
   * topics are known (so that a client's packets are judged in their order), else once they are.
   * Whatever fails is logged and refused, never thrown into aedes.
   */
  const check = (
    client: Client | null,
    action: MqttAction,
    topic: string,
    answer: (allowed: boolean) => void,
  ) => {
    let answered = false;
    const reply = (allowed: boolean) => {
      if (answered) return;
      answered = true;
      try {
        answer(allowed);
      } catch (err) {
        logger?.error(
          { client: client?.id, topic, err: errorMessage(err) },
          `MQTT: answering a ${action} check failed`,
        );
      }
    };
    const judge = (session: Session, twin: string | undefined, topics: TwinTopics | undefined) => {
      try {
        // The policy asks only about the principal's own twin.
        const { allowed, reason } = mqttDecision(session.principal, action, topic, (id) =>
          id === twin ? topics : undefined,
        );
        if (!allowed && client) logDenial(client, session, action, topic, reason);
        reply(allowed);
      } catch (err) {
        failed(err);
      }
    };
    const failed = (err: unknown) => {
      logger?.error(
        { client: client?.id, action, topic, err: errorMessage(err) },
        `MQTT: ${action} check failed`,
      );
      reply(false);
    };
    try {
      const session = client ? sessions.get(client) : undefined;
      if (!session) {
        logger?.warn(
          { client: client?.id, action, topic },
          `MQTT: ${action} without an authenticated session refused`,
        );
        reply(false);
        return;
      }
      const principal = session.principal;
      const twin = principal.kind === "user" ? undefined : principal.twin;
      const topics = twin === undefined ? undefined : topicsOf(twin);
      if (topics instanceof Promise) topics.then((known) => judge(session, twin, known), failed);
      else judge(session, twin, topics);
    } catch (err) {
      failed(err);
    }
  };

  broker.authorizePublish = (client, packet, callback) => {
    // aedes's own guard against clients flooding its $SYS topics, for every client.
    if (typeof packet?.topic === "string" && packet.topic.startsWith("$SYS/")) {
      callback(new Error("$SYS topics are reserved"));
      return;
    }
    check(client, "publish", packet?.topic ?? "", (allowed) => {
      if (!allowed) drop(packet);
      callback(null);
    });
  };

  broker.authorizeSubscribe = (client, subscription, callback) => {
    check(client, "subscribe", subscription?.topic ?? "", (allowed) =>
      callback(null, allowed ? subscription : null),
    );
  };

  // What a refused publish became goes to nobody.
  broker.authorizeForward = (_client, packet) => (packet.topic === DENIED_TOPIC ? null : packet);

  const revalidate = async (): Promise<number> => {
    let closed = 0;
    for (const client of [...connected]) {
      const session = sessions.get(client);
      if (client.closed || !session) {
        connected.delete(client);
        continue;
      }
      try {
        const result = await authenticator.authenticate(session.password, session.username);
        if (result.ok) {
          session.principal = result.principal;
          continue;
        }
        logger?.info(
          { ...context(client), reason: result.description },
          "MQTT: closing a client whose credentials are no longer valid",
        );
      } catch (err) {
        logger?.error(
          { ...context(client), err: errorMessage(err) },
          "MQTT: revalidation failed; closing the client",
        );
      }
      connected.delete(client);
      client.close();
      closed++;
    }
    return closed;
  };
  const timer =
    revalidateIntervalMs > 0
      ? setInterval(() => {
          revalidate().catch((err: unknown) =>
            logger?.debug({ err }, "MQTT: revalidating the clients failed"),
          );
        }, revalidateIntervalMs)
      : undefined;
  timer?.unref();
  return { revalidate, stop: () => clearInterval(timer) };
}

/**
 * Turns a refused packet into one nobody receives: aedes then acknowledges it as usual (QoS 1 and
 * 2), retains nothing, and authorizeForward drops it.
 */
function drop(packet: PublishPacket): void {
  packet.topic = DENIED_TOPIC;
  packet.retain = false;
  packet.payload = Buffer.alloc(0);
}
