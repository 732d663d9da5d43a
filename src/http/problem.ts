import type { Context, MiddlewareHandler } from "hono";
import { bodyLimit } from "hono/body-limit";
import type { ContentfulStatusCode } from "hono/utils/http-status";
import type { ValidationIssue } from "../wot/validation.js";

/** RFC 9457 problem details; `validationErrors` is the WoT Discovery extension member. */
export interface Problem {
  type?: string;
  title: string;
  status: ContentfulStatusCode;
  detail?: string;
  instance?: string;
  validationErrors?: ValidationIssue[];
}

export const PROBLEM_MEDIA_TYPE = "application/problem+json";

export function problem(c: Context, p: Problem): Response {
  return c.body(JSON.stringify({ type: "about:blank", instance: c.req.path, ...p }), p.status, {
    "Content-Type": PROBLEM_MEDIA_TYPE,
  });
}

/** Hono's body limit, answering an oversized body with 413 problem details naming the limit. */
export function limitBody(maxBytes: number, what = "request bodies"): MiddlewareHandler {
  return bodyLimit({
    maxSize: maxBytes,
    onError: (c) =>
      problem(c, {
        title: "Content Too Large",
        status: 413,
        detail: `${what} are limited to ${maxBytes} bytes`,
      }),
  });
}
