import net from "node:net";

/**
 * A TCP port free on this host's loopback now (a server started a moment later binds it): for
 * containers on the host network, and for tests' private engines and brokers.
 */
export async function freePort(): Promise<number> {
  const server = net.createServer();
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(0, "127.0.0.1", resolve);
  });
  const { port } = server.address() as net.AddressInfo;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}
