/**
 * OAuth2/OIDC bearer JWTs, verified with jose against the authorization server's JWKS (a URL,
 * fetched and cached by jose, or a file read at start). The role comes from a configurable claim
 * (a string or an array; dotted paths such as `realm_access.roles` reach nested claims); the
 * highest dtc role named wins, and `device:{twin id}` makes a device principal.
 */
import { readFile } from "node:fs/promises";
import { createLocalJWKSet, createRemoteJWKSet, type JWTPayload, jwtVerify } from "jose";
import type { SecurityConfig } from "../config.js";
import { type Principal, parseRoleName, ROLES, type Role } from "./principal.js";

export type JwtVerifier = (token: string) => Promise<Principal>;

export class JwtError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = "JwtError";
  }
}

function claimAt(payload: JWTPayload, path: string): unknown {
  let value: unknown = payload;
  for (const key of path.split(".")) {
    if (value === null || typeof value !== "object" || !Object.hasOwn(value, key)) return undefined;
    value = (value as Record<string, unknown>)[key];
  }
  return value;
}

/** The principal a verified token's claims name, or a JwtError saying why none. */
export function principalOf(payload: JWTPayload, rolesClaim: string): Principal {
  const claim = claimAt(payload, rolesClaim);
  const names = typeof claim === "string" ? claim.split(" ") : Array.isArray(claim) ? claim : [];
  let best: Role | undefined;
  let device: string | undefined;
  for (const name of names) {
    if (typeof name !== "string") continue;
    const role = parseRoleName(name);
    if (role === undefined) continue;
    if ("device" in role) device ??= role.device;
    else if (best === undefined || ROLES.indexOf(role.role) > ROLES.indexOf(best)) best = role.role;
  }
  const id = `jwt:${payload.iss ?? ""}#${payload.sub ?? ""}`;
  if (best !== undefined) return { kind: "user", id, role: best, via: "jwt" };
  if (device !== undefined) return { kind: "device", id, twin: device, via: "jwt" };
  throw new JwtError(
    `the token's ${rolesClaim} claim names no dtc role (reader, operator, admin, device:{twin id})`,
  );
}

export async function createJwtVerifier(oidc: NonNullable<SecurityConfig["oidc"]>): Promise<JwtVerifier> {
  const keys = /^https?:\/\//.test(oidc.jwks)
    ? createRemoteJWKSet(new URL(oidc.jwks), { timeoutDuration: 5000 })
    : createLocalJWKSet(JSON.parse(await readFile(oidc.jwks, "utf8")));
  return async (token) => {
    let payload: JWTPayload;
    try {
      ({ payload } = await jwtVerify(token, keys, {
        issuer: oidc.issuer,
        ...(oidc.audience ? { audience: oidc.audience } : {}),
        // A token must say when it ends: one without exp would be good forever.
        requiredClaims: ["exp"],
        clockTolerance: 30,
      }));
    } catch (err) {
      throw new JwtError(`invalid token: ${err instanceof Error ? err.message : String(err)}`, {
        cause: err,
      });
    }
    return principalOf(payload, oidc.rolesClaim);
  };
}
