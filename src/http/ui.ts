import { existsSync } from "node:fs";
import { readFile, stat } from "node:fs/promises";
import { extname, join, resolve, sep } from "node:path";
import type { Context, Hono } from "hono";
import { projectRoot } from "../paths.js";
import { problem } from "./problem.js";

/**
 * The dashboard (ui/, built by `npm run build` into dist/ui): its files at /ui/*, its index.html for
 * every other path under /ui (the app's own routes). The app is public; every API call it makes
 * carries the user's token, so what it may show is the API's to decide.
 */

export const UI_DIR = join(projectRoot, "dist", "ui");

const TYPES: Record<string, string> = {
  ".html": "text/html; charset=utf-8",
  ".js": "text/javascript; charset=utf-8",
  ".css": "text/css; charset=utf-8",
  ".svg": "image/svg+xml",
  ".png": "image/png",
  ".ico": "image/x-icon",
  ".json": "application/json",
  ".map": "application/json",
  ".woff2": "font/woff2",
  ".txt": "text/plain; charset=utf-8",
};

/** Scripts and styles of the app's own origin only; nothing framed, nothing posted elsewhere. */
const CSP = [
  "default-src 'self'",
  "script-src 'self'",
  "style-src 'self'",
  "img-src 'self' data:",
  "connect-src 'self'",
  "object-src 'none'",
  "base-uri 'self'",
  "form-action 'self'",
  "frame-ancestors 'none'",
].join("; ");

/** Vite names built assets by their content hash: such a file never changes under its name. */
const HASHED = /^assets\/.+-[A-Za-z0-9_-]{8,}\.[a-z0-9]+$/;

export interface UiOptions {
  /** Where the built app is (default dist/ui). */
  dir?: string;
}

export function mountUi(app: Hono, options: UiOptions = {}): void {
  const root = resolve(options.dir ?? UI_DIR);

  const headers = (type: string, cache: string) => ({
    "Content-Type": type,
    "Cache-Control": cache,
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
  });

  async function index(c: Context): Promise<Response> {
    const file = join(root, "index.html");
    if (!existsSync(file)) {
      return problem(c, {
        title: "Not Found",
        status: 404,
        detail: "the dashboard is not built: run npm run build",
      });
    }
    return c.body(await readFile(file), 200, headers(TYPES[".html"] as string, "no-cache"));
  }

  app.get("/ui", (c) => c.redirect("/ui/", 308));
  app.get("/ui/*", async (c) => {
    const rest = c.req.path.slice("/ui/".length);
    let relative: string;
    try {
      relative = decodeURIComponent(rest);
    } catch {
      return problem(c, {
        title: "Bad Request",
        status: 400,
        detail: "malformed percent-encoding in the path",
      });
    }
    // No way out of the app's directory: no dot segments, no NUL, nothing resolving outside root.
    const target = resolve(root, relative);
    const inside = target === root || target.startsWith(root + sep);
    if (!inside || relative.includes("\0") || relative.split(/[\\/]/).includes("..")) {
      return problem(c, { title: "Not Found", status: 404, detail: "no such file of the dashboard" });
    }
    const type = TYPES[extname(target).toLowerCase()];
    const file = type ? await stat(target).catch(() => undefined) : undefined;
    if (type && file?.isFile()) {
      const cache = HASHED.test(relative) ? "public, max-age=31536000, immutable" : "no-cache";
      return c.body(await readFile(target), 200, headers(type, cache));
    }
    // A missing asset is a 404; any other path is one of the app's routes.
    if (relative.startsWith("assets/") || extname(relative) !== "") {
      return problem(c, { title: "Not Found", status: 404, detail: "no such file of the dashboard" });
    }
    return index(c);
  });
}
