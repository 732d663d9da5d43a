import net from "node:net";
import aedesModule, { type Aedes, type AedesOptions } from "aedes";

// aedes is CommonJS: under ESM its factory is the default export, which its typings do not say.
const createAedes = aedesModule as unknown as (options?: AedesOptions) => Aedes;

/** An MQTT broker inside the process (aedes), the default when no external broker is configured. */
export interface EmbeddedBroker {
  /** mqtt://host:port, for clients of this process and outside it. */
  url: string;
  port: number;
  close(): Promise<void>;
}

/** Starts aedes on `host:port` (port 0: a free port). Rejects when the port is taken. */
export async function startEmbeddedBroker(options: { port: number; host?: string }): Promise<EmbeddedBroker> {
  const host = options.host ?? "127.0.0.1";
  const broker = createAedes();
  // No Nagle: MQTT exchanges are small request/answer packets (subscribe/suback), which Nagle plus
  // delayed ACKs hold back ~40 ms each.
  const server = net.createServer({ noDelay: true }, broker.handle);
  await new Promise<void>((resolve, reject) => {
    server.once("error", (err) => {
      broker.close();
      reject(new Error(`embedded MQTT broker cannot listen on ${host}:${options.port}: ${err.message}`));
    });
    server.listen(options.port, host, resolve);
  });
  const port = (server.address() as net.AddressInfo).port;
  const urlHost = host === "0.0.0.0" || host === "::" ? "127.0.0.1" : host.includes(":") ? `[${host}]` : host;
  return {
    url: `mqtt://${urlHost}:${port}`,
    port,
    close: async () => {
      // aedes closes its clients' sockets, without which server.close() would wait for them.
      await new Promise<void>((resolve) => broker.close(() => resolve()));
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
