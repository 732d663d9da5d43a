import { execFileSync } from "node:child_process";
import dns from "node:dns";
import net from "node:net";
import { join } from "node:path";
import { expect } from "vitest";
import { thingModelsDir } from "../src/paths.js";
import { loadThingModels, SAMPLE_SCHEMA_BASE, ThingModelRegistry } from "../src/wot/model-registry.js";

/** The IRI a sample schema of thing-models/ is registered under. */
export const sample = (file: string): string => new URL(file, SAMPLE_SCHEMA_BASE).href;

export async function sampleRegistry(): Promise<ThingModelRegistry> {
  const registry = new ThingModelRegistry();
  await loadThingModels(registry, thingModelsDir);
  return registry;
}

/**
 * Makes the network unreachable for this process: every outgoing TCP connection and DNS lookup
 * fails (as on a machine with no route) and is recorded. Returns the attempts and a restore function.
 */
export function cutNetwork(): { attempts: string[]; restore: () => void } {
  const attempts: string[] = [];
  const connect = net.Socket.prototype.connect;
  const lookup = dns.lookup;
  const promisesLookup = dns.promises.lookup;
  net.Socket.prototype.connect = function (this: net.Socket, ...args: unknown[]) {
    attempts.push(`connect ${JSON.stringify(args[0])}`);
    throw Object.assign(new Error("ENETUNREACH: network is unreachable (test)"), { code: "ENETUNREACH" });
  } as typeof connect;
  (dns as { lookup: unknown }).lookup = (host: string) => {
    attempts.push(`lookup ${host}`);
    throw Object.assign(new Error(`ENOTFOUND ${host} (test)`), { code: "ENOTFOUND" });
  };
  dns.promises.lookup = (async (host: string) => {
    attempts.push(`lookup ${host}`);
    throw Object.assign(new Error(`ENOTFOUND ${host} (test)`), { code: "ENOTFOUND" });
  }) as typeof promisesLookup;
  return {
    attempts,
    restore: () => {
      net.Socket.prototype.connect = connect;
      (dns as { lookup: unknown }).lookup = lookup;
      dns.promises.lookup = promisesLookup;
    },
  };
}

/** The error `fn` throws, checked to be a `type`; fails the test when nothing of that type is thrown. */
export function thrown<E extends Error>(fn: () => unknown, type: new (...args: never[]) => E): E {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(type);
    return err as E;
  }
  throw new Error(`expected a ${type.name} to be thrown`);
}

/** Polls `check` until it returns a truthy value or `timeoutMs` passes (then fails, saying `what`). */
export async function waitFor<T>(
  what: string,
  check: () => T | Promise<T>,
  timeoutMs = 10_000,
): Promise<NonNullable<T>> {
  const until = Date.now() + timeoutMs;
  for (;;) {
    const value = await check();
    if (value) return value;
    if (Date.now() > until) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** A self-signed certificate for localhost and 127.0.0.1 (openssl), as cert.pem and key.pem in `dir`. */
export function selfSignedCertificate(dir: string): { certFile: string; keyFile: string } {
  const certFile = join(dir, "cert.pem");
  const keyFile = join(dir, "key.pem");
  execFileSync(
    "openssl",
    ["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "1"]
      .concat(["-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"])
      .concat(["-keyout", keyFile, "-out", certFile]),
    { stdio: "ignore" },
  );
  return { certFile, keyFile };
}
