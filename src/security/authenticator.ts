/**
 * Turns a presented credential into a principal, for HTTP (a bearer token) and MQTT (the CONNECT
 * password) alike: an API token (`dtc_…`), an OIDC JWT when configured, or one of the gateway's
 * internal credentials (its own MQTT clients and its twin containers, derived from a secret kept in
 * the manager's store, so that they survive restarts without being stored anywhere else).
 */
import { createHmac, timingSafeEqual } from "node:crypto";
import { JwtError, type JwtVerifier } from "./jwt.js";
import type { Principal } from "./principal.js";
import { TokenService } from "./tokens.js";

export type AuthResult =
  | { ok: true; principal: Principal }
  /** `missing`: no credential; `invalid`: malformed, unknown, expired or wrong issuer. */
  | { ok: false; error: "missing" | "invalid"; description: string };

/** The user name of the gateway's own MQTT clients. */
export const INTERNAL_USER = "dtc-gateway";
/** The user name prefix of a twin container's MQTT client: `dtc-twin:{twin id}`. */
export const TWIN_USER_PREFIX = "dtc-twin:";

export interface AuthenticatorOptions {
  tokens: TokenService;
  jwt?: JwtVerifier;
  /** The secret internal credentials are derived from. */
  internalSecret: string;
}

const equal = (a: string, b: string) => {
  const x = Buffer.from(a);
  const y = Buffer.from(b);
  return x.length === y.length && timingSafeEqual(x, y);
};

export class Authenticator {
  readonly #tokens: TokenService;
  readonly #jwt: JwtVerifier | undefined;
  readonly #secret: string;

  constructor({ tokens, jwt, internalSecret }: AuthenticatorOptions) {
    this.#tokens = tokens;
    this.#jwt = jwt;
    this.#secret = internalSecret;
  }

  /** The password of an internal MQTT user (the gateway, or `dtc-twin:{id}` for a twin container). */
  internalPassword(user: string): string {
    return createHmac("sha256", this.#secret).update(user).digest("base64url");
  }

  /** A bearer token or an MQTT password (with its user name, which only internal users need). */
  async authenticate(credential: string | undefined, user?: string): Promise<AuthResult> {
    if (credential === undefined || credential === "") {
      return { ok: false, error: "missing", description: "credentials are required" };
    }
    if (user === INTERNAL_USER || user?.startsWith(TWIN_USER_PREFIX)) {
      if (!equal(credential, this.internalPassword(user))) {
        return { ok: false, error: "invalid", description: "bad internal credentials" };
      }
      return user === INTERNAL_USER
        ? { ok: true, principal: { kind: "internal", id: user } }
        : { ok: true, principal: { kind: "internal", id: user, twin: user.slice(TWIN_USER_PREFIX.length) } };
    }
    if (TokenService.isToken(credential)) {
      const principal = this.#tokens.verify(credential);
      return principal
        ? { ok: true, principal }
        : { ok: false, error: "invalid", description: "the token is unknown, revoked or expired" };
    }
    if (this.#jwt === undefined) {
      return {
        ok: false,
        error: "invalid",
        description: "not a dtc API token (no OIDC issuer is configured)",
      };
    }
    try {
      return { ok: true, principal: await this.#jwt(credential) };
    } catch (err) {
      return {
        ok: false,
        error: "invalid",
        description: err instanceof JwtError ? err.message : "the token could not be verified",
      };
    }
  }
}
