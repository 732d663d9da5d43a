/**
 * The HTTP edge of security: finds the route's entry in the access table (src/http/routes.ts),
 * authenticates the bearer token when the route needs one, and answers 401 (with
 * `WWW-Authenticate`, RFC 6750) or 403 problem details. The principal is kept on the context for
 * the routes and the rate limit.
 */
import type { Context, MiddlewareHandler } from "hono";
import type { Authenticator } from "../security/authenticator.js";
import { AUTH_OFF, allows, type Principal } from "../security/principal.js";
import { problem } from "./problem.js";
import { routeFor } from "./routes.js";

export interface AuthOptions {
  /** undefined = authentication off (everyone is an anonymous admin). */
  authenticator: Authenticator | undefined;
  /** Directory reads without credentials. */
  anonymousDiscovery: boolean;
}

declare module "hono" {
  interface ContextVariableMap {
    principal: Principal | undefined;
  }
}

const REALM = 'Bearer realm="dtc"';

/** The principal of the request (undefined on public routes called without credentials). */
export const principalOf = (c: Context): Principal | undefined => c.get("principal");

/**
 * The token of an Authorization header: `Bearer <token>` (RFC 6750), or `Basic` with the token as the
 * password and any user name (what node-wot consumers send for the TDs' basic_sc). undefined: no
 * header; null: a header that is neither.
 */
function credential(header: string | undefined): string | undefined | null {
  if (header === undefined) return undefined;
  const bearer = /^Bearer[ ]+([A-Za-z0-9\-._~+/]+=*)\s*$/i.exec(header);
  if (bearer) return bearer[1] as string;
  const basic = /^Basic[ ]+([A-Za-z0-9+/]+=*)\s*$/i.exec(header);
  if (!basic) return null;
  const decoded = Buffer.from(basic[1] as string, "base64").toString("utf8");
  const colon = decoded.indexOf(":");
  return colon < 0 || colon === decoded.length - 1 ? null : decoded.slice(colon + 1);
}

export function authenticate({ authenticator, anonymousDiscovery }: AuthOptions): MiddlewareHandler {
  return async (c, next) => {
    if (authenticator === undefined) {
      c.set("principal", AUTH_OFF);
      return next();
    }
    const route = routeFor(c.req.method, c.req.path);
    const access =
      route === undefined ? "admin" : route.discovery && anonymousDiscovery ? "public" : route.access;
    const token = credential(c.req.header("Authorization"));
    if (token === undefined && access === "public") {
      c.set("principal", undefined);
      return next();
    }
    if (token === null || token === undefined) {
      c.header(
        "WWW-Authenticate",
        token === null
          ? `${REALM}, error="invalid_request", error_description="use Authorization: Bearer <token>"`
          : REALM,
      );
      return problem(c, {
        title: "Unauthorized",
        status: 401,
        detail:
          token === null
            ? "the Authorization header must be Bearer <token> (or Basic with the token as the password)"
            : `${c.req.method} ${c.req.path} needs credentials: Authorization: Bearer <token>`,
      });
    }
    const result = await authenticator.authenticate(token);
    if (!result.ok) {
      c.header(
        "WWW-Authenticate",
        `${REALM}, error="invalid_token", error_description="${result.description.replace(/["\\]/g, "'")}"`,
      );
      return problem(c, { title: "Unauthorized", status: 401, detail: result.description });
    }
    c.set("principal", result.principal);
    if (!allows(result.principal, access)) {
      return problem(c, {
        title: "Forbidden",
        status: 403,
        detail: `${c.req.method} ${c.req.path} needs the ${access} role`,
      });
    }
    return next();
  };
}
