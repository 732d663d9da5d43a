/**
 * Who is calling, and what a role lets them do. Roles are ordered: an admin may do what an operator
 * may, an operator what a reader may. A device is a physical twin's credential, bound to one twin:
 * it publishes that twin's PT telemetry and status and receives its commands, nothing else. The
 * gateway's own MQTT clients (twin runtimes, twin containers) are internal principals.
 */

export type Role = "reader" | "operator" | "admin";

export const ROLES: readonly Role[] = ["reader", "operator", "admin"];

/** What a route or topic needs: a role, or nothing (`public`). */
export type Access = Role | "public";

export type Principal =
  | { kind: "user"; id: string; role: Role; via: "token" | "jwt" | "anonymous" }
  | { kind: "device"; id: string; twin: string; via: "token" | "jwt" }
  /** The gateway itself (`twin` unset) or one of its twin containers (bound to `twin`). */
  | { kind: "internal"; id: string; twin?: string };

/** The principal everybody is when authentication is off. */
export const AUTH_OFF: Principal = { kind: "user", id: "anonymous", role: "admin", via: "anonymous" };

const rank = (role: Role) => ROLES.indexOf(role);

/** Whether `principal` may do what needs `access`. */
export function allows(principal: Principal | undefined, access: Access): boolean {
  if (access === "public") return true;
  if (principal === undefined) return false;
  if (principal.kind === "internal") return principal.twin === undefined;
  if (principal.kind === "device") return false;
  return rank(principal.role) >= rank(access);
}

/** A role named by a token request or a JWT claim: reader, operator, admin, or device:{twin id}. */
export function parseRoleName(name: string): { role: Role } | { device: string } | undefined {
  if ((ROLES as readonly string[]).includes(name)) return { role: name as Role };
  const device = /^device:([a-z0-9][a-z0-9_-]{0,62})$/.exec(name);
  return device ? { device: device[1] as string } : undefined;
}
