/**
 * `node dist/src/mosquitto-config.js --out DIR`: writes the password and ACL files that give an
 * external mosquitto the gateway's tokens and MQTT policy (src/security/mosquitto.ts), from
 * DTC_DATA_DIR's manager.sqlite: the tokens, and each instance's TD (its last saved state's, else
 * made again from its schema and configuration) for its PT topics. The internal user is
 * DTC_MQTT_USERNAME with DTC_MQTT_PASSWORD, as the gateway connects with them. Prints the lines
 * mosquitto.conf needs. Run it again after creating or revoking tokens and starting twins, then
 * reload mosquitto (SIGHUP).
 */

import { chmodSync, existsSync, mkdirSync, renameSync, writeFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { pathToFileURL } from "node:url";
import { parseArgs } from "node:util";
import { ENVIRONMENT } from "./config.js";
import { errorMessage } from "./domain/errors.js";
import { twinTdId } from "./domain/vocabulary.js";
import { ManagerStore } from "./manager/manager-store.js";
import { thingModelsDir } from "./paths.js";
import { mosquittoFiles } from "./security/mosquitto.js";
import { type TwinTopics, twinTopicsOf } from "./security/mqtt-acl.js";
import { TokenService } from "./security/tokens.js";
import { instantiate } from "./wot/instantiate.js";
import { loadThingModels, ThingModelRegistry } from "./wot/model-registry.js";

const USAGE = `Usage: node dist/src/mosquitto-config.js --out <dir>

Writes <dir>/passwd (mode 0600; <dir> is made if missing) and <dir>/acl for an external mosquitto from DTC_DATA_DIR's
manager.sqlite (default ${ENVIRONMENT.DTC_DATA_DIR.default}), with DTC_MQTT_USERNAME/DTC_MQTT_PASSWORD as the gateway's user.
MQTT clients then connect with user name = token id (the 16 hex characters after dtc_) and
password = the token. Run it again after creating or revoking tokens, then reload mosquitto (SIGHUP).
`;

class UsageError extends Error {}

export interface MosquittoConfigOptions {
  dataDir: string;
  outDir: string;
  internal: { username: string; password: string };
  /** Told about twins whose PT topics could not be found. */
  onWarning?: (message: string) => void;
}

export interface MosquittoConfigResult {
  passwordFile: string;
  aclFile: string;
  /** Users in the password file (the internal one included). */
  users: number;
  /** Twins whose PT topics went into the ACL. */
  twins: number;
}

/** Writes `file` whole or not at all: mosquitto may reload while it is written. */
function writeAtomically(file: string, text: string, mode: number): void {
  const temporary = `${file}.${process.pid}.tmp`;
  writeFileSync(temporary, text, { mode });
  // writeFileSync's mode applies only to a new file.
  chmodSync(temporary, mode);
  renameSync(temporary, file);
}

/** Every instance's PT topics: from its saved state's TD, else from its schema made again. */
async function twinTopics(
  store: ManagerStore,
  warn: (message: string) => void,
): Promise<{ id: string; topics: TwinTopics }[]> {
  let registry: ThingModelRegistry | undefined;
  const models = async () => {
    if (registry) return registry;
    registry = new ThingModelRegistry();
    const builtIn = new Set(await loadThingModels(registry, thingModelsDir));
    for (const { summary, model } of store.schemas.all()) {
      if (builtIn.has(summary.iri)) continue;
      try {
        registry.register(summary.iri, model);
      } catch (err) {
        warn(`schema ${summary.iri} cannot be loaded: ${errorMessage(err)}`);
      }
    }
    return registry;
  };
  const twins: { id: string; topics: TwinTopics }[] = [];
  for (const record of store.instances.all()) {
    let td = store.states.get(record.id)?.td;
    if (td === undefined) {
      try {
        td = await instantiate(await models(), record.schema, {
          placeholders: record.configuration,
          id: twinTdId(record.id),
        });
      } catch (err) {
        warn(`twin ${record.id}: its TD cannot be made from schema ${record.schema}: ${errorMessage(err)}`);
        continue;
      }
    }
    const topics = twinTopicsOf(td);
    if (topics === undefined) warn(`twin ${record.id}: its TD has no physical interface (no device topics)`);
    else twins.push({ id: record.id, topics });
  }
  return twins;
}

/** Reads the store and writes the two files into `outDir`. */
export async function writeMosquittoConfig(options: MosquittoConfigOptions): Promise<MosquittoConfigResult> {
  const database = join(options.dataDir, "manager.sqlite");
  // ManagerStore would create an empty store: a wrong DTC_DATA_DIR must not pass for one without tokens.
  if (!existsSync(database))
    throw new UsageError(`no manager.sqlite in ${options.dataDir} (set DTC_DATA_DIR)`);
  mkdirSync(options.outDir, { recursive: true, mode: 0o755 });
  const store = new ManagerStore(database);
  try {
    const tokens = new TokenService(store).records();
    const twins = await twinTopics(store, options.onWarning ?? (() => {}));
    const files = mosquittoFiles({ tokens, internal: options.internal, twins });
    const passwordFile = resolve(options.outDir, "passwd");
    const aclFile = resolve(options.outDir, "acl");
    writeAtomically(passwordFile, files.passwordFile, 0o600);
    writeAtomically(aclFile, files.aclFile, 0o644);
    const users = files.passwordFile.split("\n").filter((line) => line !== "").length;
    return { passwordFile, aclFile, users, twins: twins.length };
  } finally {
    store.close();
  }
}

async function main(): Promise<void> {
  let outDir: string;
  let internal: { username: string; password: string };
  try {
    const { values } = parseArgs({
      args: process.argv.slice(2),
      strict: true,
      options: { out: { type: "string" }, help: { type: "boolean", short: "h" } },
    });
    if (values.help) {
      process.stdout.write(USAGE);
      return;
    }
    if (values.out === undefined || values.out === "") throw new UsageError("--out <dir> is required");
    outDir = values.out;
    const username = process.env.DTC_MQTT_USERNAME ?? "";
    const password = process.env.DTC_MQTT_PASSWORD ?? "";
    if (username === "" || password === "") {
      throw new UsageError(
        "DTC_MQTT_USERNAME and DTC_MQTT_PASSWORD are required: the gateway's user on mosquitto",
      );
    }
    internal = { username, password };
  } catch (err) {
    process.stderr.write(`mosquitto-config: ${errorMessage(err)}\n\n${USAGE}`);
    process.exit(2);
  }
  const dataDir = resolve(process.env.DTC_DATA_DIR || ENVIRONMENT.DTC_DATA_DIR.default);
  let result: MosquittoConfigResult;
  try {
    result = await writeMosquittoConfig({
      dataDir,
      outDir,
      internal,
      onWarning: (message) => process.stderr.write(`warning: ${message}\n`),
    });
  } catch (err) {
    process.stderr.write(`mosquitto-config: ${errorMessage(err)}\n`);
    process.exit(err instanceof UsageError ? 2 : 1);
  }
  process.stdout.write(
    [
      `wrote ${result.passwordFile} (${result.users} users) and ${result.aclFile} (${result.twins} twins with PT topics)`,
      "Add to mosquitto.conf (the files must be readable by the user mosquitto runs as):",
      `  password_file ${result.passwordFile}`,
      `  acl_file ${result.aclFile}`,
      "  allow_anonymous false",
      "then reload mosquitto (SIGHUP). Clients connect with user name = token id, password = the token.",
      "",
    ].join("\n"),
  );
}

// A command when run, a module when imported (the tests call writeMosquittoConfig).
if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(resolve(process.argv[1])).href) {
  main().catch((err) => {
    process.stderr.write(`mosquitto-config: ${errorMessage(err)}\n`);
    process.exit(1);
  });
}
