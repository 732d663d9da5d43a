/**
 * /api/tokens (admin): create an API token (its secret is in the answer once, never again), list
 * and revoke them; /api/whoami: the caller's principal, for clients checking their credentials.
 */

import type { Hono } from "hono";
import { z } from "zod";
import { errorMessage } from "../domain/errors.js";
import { principalOf } from "../http/auth.js";
import { limitBody, problem } from "../http/problem.js";
import { TokenError, type TokenService } from "./tokens.js";

const tokenInput = z.strictObject({
  name: z.string().min(1).max(200),
  role: z.string().min(1).max(80),
  /** Life of the token; unset = until revoked. */
  ttlSeconds: z
    .number()
    .int()
    .min(1)
    .max(10 * 365 * 86_400)
    .optional(),
});

export function mountTokensApi(
  app: Hono,
  { tokens, publicBase }: { tokens: TokenService; publicBase: () => string },
): void {
  app.get("/api/whoami", (c) => c.json(principalOf(c) ?? { kind: "anonymous" }));
  app.get("/api/tokens", (c) => c.json(tokens.list()));
  app.get("/api/tokens/:id", (c) => {
    const token = tokens.get(c.req.param("id"));
    return token
      ? c.json(token)
      : problem(c, { title: "Not Found", status: 404, detail: `no token "${c.req.param("id")}"` });
  });
  app.post("/api/tokens", limitBody(16 * 1024, "token requests"), async (c) => {
    let input: z.output<typeof tokenInput>;
    try {
      const parsed = tokenInput.safeParse(JSON.parse(await c.req.text()));
      if (!parsed.success) {
        return problem(c, {
          title: "Bad Request",
          status: 400,
          detail: "invalid token request",
          validationErrors: parsed.error.issues.map((i) => ({
            field: i.path.length ? i.path.join(".") : "(root)",
            description: i.message,
          })),
        });
      }
      input = parsed.data;
    } catch (err) {
      return problem(c, {
        title: "Bad Request",
        status: 400,
        detail: `the body is not JSON: ${errorMessage(err)}`,
      });
    }
    try {
      const created = tokens.create(input);
      c.header("Location", `${publicBase()}/api/tokens/${created.id}`);
      c.header("Cache-Control", "no-store");
      return c.json(created, 201);
    } catch (err) {
      if (err instanceof TokenError) {
        return problem(c, {
          title: "Bad Request",
          status: 400,
          detail: err.message,
          validationErrors: [{ field: "role", description: err.message }],
        });
      }
      throw err;
    }
  });
  app.delete("/api/tokens/:id", (c) =>
    tokens.revoke(c.req.param("id"))
      ? c.body(null, 204)
      : problem(c, { title: "Not Found", status: 404, detail: `no token "${c.req.param("id")}"` }),
  );
}
