/**
 * API tokens: random, shown once at creation, kept only as hashes in the manager's store. A token
 * reads `dtc_{id}_{secret}`: the id finds the record in O(1), the SHA-256 of the whole token is
 * compared in constant time. SHA-256 suffices (no slow hash) because the secret is 256 random bits,
 * not a password. Each record also keeps the PBKDF2 hash mosquitto's password file takes, so that an
 * external mosquitto can be given the same credentials (src/security/mosquitto.ts).
 */
import { createHash, pbkdf2Sync, randomBytes, timingSafeEqual } from "node:crypto";
import type { ManagerStore, StoredToken } from "../manager/manager-store.js";
import { type Principal, parseRoleName } from "./principal.js";

const TOKEN = /^dtc_([0-9a-f]{16})_([A-Za-z0-9_-]{43})$/;

/** What the API shows of a token: never its secret or hashes. */
export interface TokenView {
  id: string;
  name: string;
  role: string;
  created: string;
  expires?: string;
}

export interface CreatedToken extends TokenView {
  /** The token itself: shown once, not kept. */
  token: string;
}

export class TokenError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "TokenError";
  }
}

const sha256 = (token: string) => createHash("sha256").update(token).digest("hex");

/** mosquitto_passwd's `$7$` format: PBKDF2-HMAC-SHA512, 101 iterations, 12-byte salt, 64-byte key. */
export function mosquittoHash(password: string, salt = randomBytes(12), iterations = 101): string {
  const key = pbkdf2Sync(password, salt, iterations, 64, "sha512");
  return `$7$${iterations}$${salt.toString("base64")}$${key.toString("base64")}`;
}

const view = ({ id, name, role, created, expires }: StoredToken): TokenView => ({
  id,
  name,
  role,
  created,
  ...(expires ? { expires } : {}),
});

export class TokenService {
  readonly #store: ManagerStore;
  readonly #now: () => number;

  constructor(store: ManagerStore, now: () => number = Date.now) {
    this.#store = store;
    this.#now = now;
  }

  /** Makes a token for `role` (reader, operator, admin, device:{twin id}); `ttlSeconds` bounds its life. */
  create(input: { name: string; role: string; ttlSeconds?: number }): CreatedToken {
    if (parseRoleName(input.role) === undefined) {
      throw new TokenError(
        `role must be reader, operator, admin or device:{twin id} (got ${JSON.stringify(input.role)})`,
      );
    }
    const id = randomBytes(8).toString("hex");
    const token = `dtc_${id}_${randomBytes(32).toString("base64url")}`;
    const now = this.#now();
    const record: StoredToken = {
      id,
      name: input.name,
      role: input.role,
      created: new Date(now).toISOString(),
      ...(input.ttlSeconds !== undefined
        ? { expires: new Date(now + input.ttlSeconds * 1000).toISOString() }
        : {}),
      sha256: sha256(token),
      mosquitto: mosquittoHash(token),
    };
    this.#store.tokens.put(id, record);
    return { ...view(record), token };
  }

  list(): TokenView[] {
    return this.#store.tokens.all().map(view);
  }

  get(id: string): TokenView | undefined {
    const record = this.#store.tokens.get(id);
    return record ? view(record) : undefined;
  }

  revoke(id: string): boolean {
    return this.#store.tokens.delete(id);
  }

  /** Records with their mosquitto hashes, for the generated password file. */
  records(): readonly Readonly<StoredToken>[] {
    return [...this.#store.tokens.peek()];
  }

  /** Whether `token` looks like one of ours (else it may be a JWT). */
  static isToken(token: string): boolean {
    return token.startsWith("dtc_");
  }

  /** The principal of a valid, unexpired token; undefined for anything else. */
  verify(token: string): Principal | undefined {
    const match = TOKEN.exec(token);
    if (!match) return undefined;
    const id = match[1] as string;
    const record = this.#store.tokens.get(id);
    if (!record) return undefined;
    const expected = Buffer.from(record.sha256, "hex");
    if (!timingSafeEqual(expected, Buffer.from(sha256(token), "hex"))) return undefined;
    if (record.expires !== undefined && Date.parse(record.expires) <= this.#now()) return undefined;
    const role = parseRoleName(record.role);
    if (role === undefined) return undefined;
    return "device" in role
      ? { kind: "device", id: `token:${id}`, twin: role.device, via: "token" }
      : { kind: "user", id: `token:${id}`, role: role.role, via: "token" };
  }

  /** Whether any unexpired admin token exists. */
  hasAdmin(): boolean {
    const now = this.#now();
    for (const t of this.#store.tokens.peek()) {
      if (t.role === "admin" && (t.expires === undefined || Date.parse(t.expires) > now)) return true;
    }
    return false;
  }
}
