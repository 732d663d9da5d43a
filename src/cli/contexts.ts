import { chmodSync, existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { homedir } from "node:os";
import { dirname, join } from "node:path";
import { parse, stringify } from "yaml";
import { errorMessage } from "../domain/errors.js";
import { CliError, EXIT, usageError } from "./errors.js";

/**
 * Contexts, as kubeconfig has them: named gateways (URL + token) in a YAML file, one of them
 * current. What a command talks to: --server/--token flags, else DTC_SERVER/DTC_TOKEN, else the
 * context named by --context (or DTC_CONTEXT, or the file's currentContext).
 */

export interface Context {
  server: string;
  token?: string;
}

export interface ContextsFile {
  currentContext?: string;
  contexts: Record<string, Context>;
}

export const DEFAULT_SERVER = "http://127.0.0.1:8080";

export interface ConnectionFlags {
  context?: string;
  server?: string;
  token?: string;
}

export interface Connection {
  server: string;
  token: string | undefined;
  /** The context it came from, if any. */
  context: string | undefined;
}

/** $DTC_CONFIG, or ~/.config/dtc/config.yaml. */
export function configPath(env: NodeJS.ProcessEnv = process.env): string {
  return env.DTC_CONFIG || join(env.XDG_CONFIG_HOME || join(homedir(), ".config"), "dtc", "config.yaml");
}

export function readContexts(path: string = configPath()): ContextsFile {
  if (!existsSync(path)) return { contexts: {} };
  let parsed: unknown;
  try {
    parsed = parse(readFileSync(path, "utf8"));
  } catch (err) {
    throw new CliError(EXIT.usage, `bad config file: ${path}: ${errorMessage(err)}`);
  }
  if (parsed === null || parsed === undefined) return { contexts: {} };
  const file = parsed as Partial<ContextsFile>;
  if (typeof file !== "object" || Array.isArray(file)) {
    throw new CliError(
      EXIT.usage,
      `bad config file: ${path}: expected a mapping with currentContext and contexts`,
    );
  }
  const contexts: Record<string, Context> = {};
  for (const [name, value] of Object.entries(file.contexts ?? {})) {
    const ctx = value as Partial<Context> | null;
    if (!ctx || typeof ctx.server !== "string") {
      throw new CliError(EXIT.usage, `bad config file: ${path}: contexts.${name}.server must be a URL`);
    }
    contexts[name] = { server: ctx.server, ...(typeof ctx.token === "string" ? { token: ctx.token } : {}) };
  }
  return {
    ...(typeof file.currentContext === "string" ? { currentContext: file.currentContext } : {}),
    contexts,
  };
}

/** Writes the file readable by its owner only (it holds tokens). */
export function writeContexts(file: ContextsFile, path: string = configPath()): void {
  mkdirSync(dirname(path), { recursive: true, mode: 0o700 });
  writeFileSync(path, stringify(file), { mode: 0o600 });
  chmodSync(path, 0o600);
}

/** Flags over environment over the file. */
export function resolveConnection(flags: ConnectionFlags, env: NodeJS.ProcessEnv = process.env): Connection {
  const file = readContexts(configPath(env));
  const name = flags.context ?? env.DTC_CONTEXT ?? file.currentContext;
  const ctx = name === undefined ? undefined : file.contexts[name];
  if (name !== undefined && ctx === undefined && (flags.context !== undefined || env.DTC_CONTEXT)) {
    const known = Object.keys(file.contexts);
    throw usageError(
      `no context "${name}" in ${configPath(env)}${known.length ? ` (contexts: ${known.join(", ")})` : ""}`,
    );
  }
  const server = flags.server ?? env.DTC_SERVER ?? ctx?.server ?? DEFAULT_SERVER;
  try {
    const url = new URL(server);
    if (url.protocol !== "http:" && url.protocol !== "https:") throw new Error("not http(s)");
  } catch {
    throw usageError(`the server must be an http(s) URL, not ${JSON.stringify(server)}`);
  }
  return {
    server: server.replace(/\/+$/, ""),
    token: flags.token ?? env.DTC_TOKEN ?? ctx?.token,
    context: ctx ? name : undefined,
  };
}
