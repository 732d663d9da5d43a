/**
 * What the gateway's TDs (twins', the manager's, the directory's) say about authentication, so that
 * an unmodified WoT client knows what to send. The gateway takes a token (an API token, or a JWT of
 * the configured authorization server) as a bearer token or as the password of HTTP Basic, and as
 * the MQTT CONNECT password. The TDs name `basic_sc` as their security: it is the one scheme
 * node-wot 0.9 consumers can send over HTTP and MQTT alike (its MQTT client takes only `basic`
 * credentials, and it hands form-level schemes the credential list instead of the credentials, so
 * a bearer scheme for HTTP beside a basic one for MQTT forms cannot work with it); `bearer_sc` is
 * declared too, for clients that send `Authorization: Bearer`.
 */
import type { JsonObject } from "../wot/rdf.js";

export interface TdSecurity {
  enabled: boolean;
  /** The OIDC issuer, named as the bearer scheme's authorization server. */
  authorization?: string;
}

/** A copy of `td` declaring the gateway's security (unchanged when authentication is off). */
export function secureTd(td: JsonObject, security: TdSecurity): JsonObject {
  if (!security.enabled) return td;
  const out = structuredClone(td);
  out.securityDefinitions = {
    basic_sc: {
      scheme: "basic",
      in: "header",
      description:
        "A dtc API token (POST /api/tokens) or a JWT of the authorization server as the password, any user name; over MQTT, the CONNECT password.",
    },
    bearer_sc: {
      scheme: "bearer",
      in: "header",
      name: "Authorization",
      description: "The same token as a bearer token (HTTP).",
      ...(security.authorization ? { authorization: security.authorization, format: "jwt" } : {}),
    },
  };
  out.security = ["basic_sc"];
  return out;
}
