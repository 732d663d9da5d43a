import { describe, expect, it } from "vitest";
import { hasCredentials, hostAllowed, imageAllowed, redactUrl, urlHost } from "../src/security/outbound.js";

/** The outbound allowlists' globs and URL redaction. */

describe("hostAllowed", () => {
  it("allows any host with an empty allowlist", () => {
    expect(hostAllowed("10.0.0.1", [])).toBe(true);
    expect(hostAllowed("anything.example", [])).toBe(true);
  });

  it("matches names case-insensitively, ignoring a trailing dot and IPv6 brackets", () => {
    expect(hostAllowed("Engine.Example", ["engine.example"])).toBe(true);
    expect(hostAllowed("engine.example.", ["ENGINE.example"])).toBe(true);
    expect(hostAllowed("[::1]", ["::1"])).toBe(true);
    expect(hostAllowed("::1", ["[::1]"])).toBe(true);
    expect(hostAllowed("10.0.0.1", ["engine.example"])).toBe(false);
    expect(hostAllowed("engine.example.evil", ["engine.example"])).toBe(false);
    expect(hostAllowed("", ["engine.example"])).toBe(false);
  });

  it("lets * stand for one label, never crossing a dot", () => {
    const list = ["*.example.com", "10.0.0.*", "edge-*.site"];
    expect(hostAllowed("a.example.com", list)).toBe(true);
    expect(hostAllowed("a.b.example.com", list)).toBe(false);
    expect(hostAllowed("example.com", list)).toBe(false);
    expect(hostAllowed("evilexample.com", list)).toBe(false);
    expect(hostAllowed("10.0.0.7", list)).toBe(true);
    expect(hostAllowed("10.0.1.7", list)).toBe(false);
    expect(hostAllowed("edge-12.site", list)).toBe(true);
    expect(hostAllowed("edge-12.evil.site", list)).toBe(false);
  });

  it("treats regular-expression characters in entries literally", () => {
    expect(hostAllowed("engineXexample", ["engine.example"])).toBe(false);
    expect(hostAllowed("a", ["(a|b)"])).toBe(false);
  });
});

describe("imageAllowed", () => {
  it("allows any image with an empty allowlist", () => {
    expect(imageAllowed("evil/miner:latest", [])).toBe(true);
  });

  it("lets a glob cover one path component and any tag when the entry has none", () => {
    const list = ["registry.example/dtc/*"];
    expect(imageAllowed("registry.example/dtc/twin:1.2", list)).toBe(true);
    expect(imageAllowed("registry.example/dtc/twin", list)).toBe(true);
    expect(imageAllowed(`registry.example/dtc/twin@sha256:${"a".repeat(64)}`, list)).toBe(true);
    expect(imageAllowed("registry.example/dtc/sub/twin:1", list)).toBe(false);
    expect(imageAllowed("registry.example/other/twin:1", list)).toBe(false);
    expect(imageAllowed("evil/miner:latest", list)).toBe(false);
    expect(imageAllowed("registry.example.evil/dtc/twin:1", list)).toBe(false);
  });

  it("matches tags and digests an entry names", () => {
    const list = ["registry.example:5000/dtc/twin:1.*", `dtc/pinned@sha256:${"b".repeat(64)}`];
    expect(imageAllowed("registry.example:5000/dtc/twin:1.4", list)).toBe(true);
    expect(imageAllowed("registry.example:5000/dtc/twin:2.0", list)).toBe(false);
    // No tag means latest, which 1.* does not cover.
    expect(imageAllowed("registry.example:5000/dtc/twin", list)).toBe(false);
    expect(imageAllowed(`dtc/pinned@sha256:${"b".repeat(64)}`, list)).toBe(true);
    expect(imageAllowed(`dtc/pinned@sha256:${"c".repeat(64)}`, list)).toBe(false);
    expect(imageAllowed("dtc/pinned:latest", list)).toBe(false);
  });

  it("spells Docker Hub names out, so both ways of writing one match", () => {
    expect(imageAllowed("nginx:1.27", ["docker.io/library/nginx"])).toBe(true);
    expect(imageAllowed("docker.io/library/nginx", ["nginx"])).toBe(true);
    expect(imageAllowed("index.docker.io/dtc/twin:1", ["dtc/*"])).toBe(true);
    expect(imageAllowed("dtc/twin:1", ["docker.io/dtc/*"])).toBe(true);
    expect(imageAllowed("localhost/dtc/twin", ["dtc/*"])).toBe(false);
  });

  it("refuses what is not an image reference", () => {
    const list = ["registry.example/dtc/*"];
    expect(imageAllowed("registry.example/dtc/*", list)).toBe(false);
    expect(imageAllowed("registry.example/dtc/twin:", list)).toBe(false);
    expect(imageAllowed("registry.example//twin", list)).toBe(false);
    expect(imageAllowed("registry.example/dtc/twin 1", list)).toBe(false);
    expect(imageAllowed("", list)).toBe(false);
  });
});

describe("broker URLs", () => {
  it("tells URLs with a user name or password", () => {
    expect(hasCredentials("mqtt://u:p@127.0.0.1:1883")).toBe(true);
    expect(hasCredentials("mqtt://:p@broker")).toBe(true);
    expect(hasCredentials("wss://u@broker/mqtt")).toBe(true);
    expect(hasCredentials("mqtt://broker:1883")).toBe(false);
    expect(hasCredentials("not a url")).toBe(false);
  });

  it("redacts user, password, query and fragment", () => {
    expect(redactUrl("mqtt://u:secret@127.0.0.1:1883/x?token=secret#secret")).toBe("mqtt://127.0.0.1:1883/x");
    expect(redactUrl("wss://u:secret@broker.example/mqtt")).toBe("wss://broker.example/mqtt");
    expect(redactUrl("mqtts://[::1]:8883")).toBe("mqtts://[::1]:8883");
    expect(redactUrl("u:secret@nowhere")).not.toContain("secret");
  });

  it("gives a URL's host without brackets", () => {
    expect(urlHost("mqtt://u:p@Broker.Example:1883")).toBe("broker.example");
    expect(urlHost("mqtts://[::1]:8883")).toBe("::1");
    expect(urlHost("nope")).toBeUndefined();
  });
});
