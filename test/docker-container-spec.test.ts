import type Docker from "dockerode";
import { describe, expect, it } from "vitest";
import {
  CONTAINER_HTTP_PORT,
  CONTAINER_MANAGEMENT_PORT,
  type ContainerRequest,
  containerAddresses,
  containerCreateOptions,
  envOf,
  exitReason,
  fresh,
  MAX_TWIN_ENV_BYTES,
  twinEnvironment,
} from "../src/platforms/docker/container-spec.js";
import { parseDockerEndpoint } from "../src/platforms/docker/endpoint.js";
import { LABEL } from "../src/platforms/docker/engine.js";
import type { InstanceSpec } from "../src/platforms/driver.js";
import { PlatformError } from "../src/platforms/driver.js";

// The container a twin gets, built without an engine: what the Docker driver sends to createContainer.

const SCHEMA = "https://example.org/tm/iiot-device";

function instance(overrides: Partial<InstanceSpec> = {}): InstanceSpec {
  return {
    id: "press-1",
    node: { id: "edge-1", platform: "docker", endpoint: {} },
    package: "iiot-docker",
    artefact: { image: "dtc-twin:test" },
    requirements: {},
    twin: { id: "ignored", schema: SCHEMA, placeholders: { device: "press-1" } },
    augmentations: [{ name: "double", source: "(s) => ({ x: s.x * 2 })" }],
    ...overrides,
  };
}

function request(overrides: Partial<ContainerRequest> & { endpointInput?: Record<string, unknown> } = {}) {
  const { endpointInput, ...rest } = overrides;
  const spec = fresh(instance());
  return {
    name: "dtc-press-1-abcdef",
    node: "edge-1",
    endpoint: parseDockerEndpoint(endpointInput ?? {}),
    spec,
    image: "dtc-twin:test",
    token: "secret-token",
    ports: { http: CONTAINER_HTTP_PORT, management: CONTAINER_MANAGEMENT_PORT },
    models: [{ "@type": "tm:ThingModel", title: "IIoT device" }],
    awaitState: false,
    gateway: { gatewayId: "gw-1", brokerUrl: "mqtt://127.0.0.1:1883", httpBaseUri: "http://gw:8080/twins" },
    ...rest,
  } satisfies ContainerRequest;
}

const env = (list: string[] | undefined) =>
  Object.fromEntries((list ?? []).map((e) => [e.slice(0, e.indexOf("=")), e.slice(e.indexOf("=") + 1)]));

function inspectInfo(partial: {
  labels?: Record<string, string>;
  networks?: Record<string, { IPAddress: string }>;
  ports?: Record<string, { HostIp: string; HostPort: string }[] | null>;
  env?: string[];
}): Docker.ContainerInspectInfo {
  return {
    Name: "/dtc-press-1-abcdef",
    Config: { Labels: partial.labels ?? {}, Env: partial.env ?? [] },
    NetworkSettings: { Networks: partial.networks ?? {}, Ports: partial.ports ?? {} },
  } as unknown as Docker.ContainerInspectInfo;
}

describe("fresh", () => {
  it("drops the state, names the twin after the instance and copies the spec", () => {
    const original = instance({ state: { version: 1 } as unknown as InstanceSpec["state"] });
    const spec = fresh(original);
    expect(spec).not.toHaveProperty("state");
    expect(spec.twin.id).toBe("press-1");
    spec.twin.placeholders = { device: "changed" };
    expect(original.twin.placeholders).toEqual({ device: "press-1" });
  });
});

describe("twinEnvironment", () => {
  it("carries the twin's configuration, schemas and augmentations on a fresh start", () => {
    const vars = env(twinEnvironment(request()));
    const twin = JSON.parse(vars.DTC_TWIN as string);
    expect(twin.twin).toMatchObject({ id: "press-1", schema: SCHEMA });
    expect(twin.models).toEqual([{ "@type": "tm:ThingModel", title: "IIoT device" }]);
    expect(twin.augmentations).toEqual([{ name: "double", source: "(s) => ({ x: s.x * 2 })" }]);
    expect(twin).not.toHaveProperty("awaitState");
    expect(vars).toMatchObject({
      DTC_MQTT_URL: "mqtt://127.0.0.1:1883",
      DTC_TWIN_BASE_URI: "http://gw:8080/twins",
      DTC_TWIN_TOKEN: "secret-token",
      DTC_TWIN_PORT: String(CONTAINER_HTTP_PORT),
      DTC_TWIN_MANAGEMENT_PORT: String(CONTAINER_MANAGEMENT_PORT),
      DTC_TWIN_HOST: "0.0.0.0",
    });
    expect(vars).not.toHaveProperty("DTC_MQTT_USERNAME");
    expect(vars).not.toHaveProperty("DTC_ENTANGLEMENT_INTERVAL_MS");
    expect(vars).not.toHaveProperty("DTC_PT_CLOCK_SKEW_MS");
  });

  it("leaves the schemas and augmentations out of a container that awaits a state", () => {
    const twin = JSON.parse(env(twinEnvironment(request({ awaitState: true }))).DTC_TWIN as string);
    expect(twin).toEqual({ twin: expect.objectContaining({ id: "press-1" }), awaitState: true });
  });

  it("prefers the node's broker and passes credentials as variables, never in the URL", () => {
    const vars = env(
      twinEnvironment(
        request({
          endpointInput: { brokerUrl: "mqtts://broker.example:8883" },
          gateway: {
            gatewayId: "gw-1",
            brokerUrl: "mqtt://127.0.0.1:1883",
            httpBaseUri: "http://gw:8080/twins",
            brokerCredentials: { username: "twin-press-1", password: "pw" },
            pushIntervalMs: 250,
            ptClockSkewMs: 0,
          },
        }),
      ),
    );
    expect(vars.DTC_MQTT_URL).toBe("mqtts://broker.example:8883");
    expect(vars.DTC_MQTT_USERNAME).toBe("twin-press-1");
    expect(vars.DTC_MQTT_PASSWORD).toBe("pw");
    expect(vars.DTC_ENTANGLEMENT_INTERVAL_MS).toBe("250");
    expect(vars.DTC_PT_CLOCK_SKEW_MS).toBe("0");
  });

  it("binds a host-network twin of a local engine to loopback", () => {
    const vars = env(
      twinEnvironment(
        request({ endpointInput: { network: "host" }, ports: { http: 41001, management: 41002 } }),
      ),
    );
    expect(vars).toMatchObject({
      DTC_TWIN_HOST: "127.0.0.1",
      DTC_TWIN_PORT: "41001",
      DTC_TWIN_MANAGEMENT_PORT: "41002",
    });
  });

  it("refuses a configuration larger than an environment string may be, as a conflict", () => {
    const big = request();
    big.spec.twin.placeholders = { blob: "x".repeat(MAX_TWIN_ENV_BYTES) };
    const attempt = () => twinEnvironment(big);
    expect(attempt).toThrow(PlatformError);
    expect(attempt).toThrow(/more than a container's environment takes/);
    try {
      attempt();
    } catch (err) {
      expect((err as PlatformError).kind).toBe("conflict");
    }
  });

  it("labels the twin's metrics with its node and platform; no metrics token unless the gateway has one", () => {
    const vars = env(twinEnvironment(request()));
    expect(vars).toMatchObject({ DTC_TWIN_NODE: "edge-1", DTC_TWIN_PLATFORM: "docker" });
    expect(vars).not.toHaveProperty("DTC_METRICS_TOKEN");
  });

  it("passes the gateway's metrics token, beside the twin's own management token", () => {
    const base = request();
    const vars = env(
      twinEnvironment({ ...base, gateway: { ...base.gateway, metricsToken: "scrape-token" } }),
    );
    expect(vars).toMatchObject({ DTC_METRICS_TOKEN: "scrape-token", DTC_TWIN_TOKEN: "secret-token" });
  });
});

describe("containerCreateOptions", () => {
  it("labels the container for adoption and publishes both ports on loopback for a local engine", () => {
    const options = containerCreateOptions(request());
    expect(options.name).toBe("dtc-press-1-abcdef");
    expect(options.Image).toBe("dtc-twin:test");
    expect(options.Labels).toEqual({
      [LABEL.gateway]: "gw-1",
      [LABEL.node]: "edge-1",
      [LABEL.instance]: "press-1",
      [LABEL.package]: "iiot-docker",
      [LABEL.schema]: SCHEMA,
    });
    expect(Object.keys(options.ExposedPorts ?? {}).sort()).toEqual(["8080/tcp", "8081/tcp"]);
    expect(options.HostConfig?.NetworkMode).toBe("bridge");
    expect(options.HostConfig?.PortBindings).toEqual({
      "8080/tcp": [{ HostIp: "127.0.0.1", HostPort: "" }],
      "8081/tcp": [{ HostIp: "127.0.0.1", HostPort: "" }],
    });
    expect(options.HostConfig?.RestartPolicy).toEqual({ Name: "no" });
    expect(options.HostConfig).not.toHaveProperty("NanoCpus");
    expect(options.HostConfig).not.toHaveProperty("Memory");
    expect(options.Env).toEqual(twinEnvironment(request()));
  });

  it("publishes on every address of a remote engine", () => {
    const options = containerCreateOptions(request({ endpointInput: { host: "10.0.0.5", port: 2375 } }));
    expect(options.HostConfig?.PortBindings?.["8080/tcp"]).toEqual([{ HostIp: "", HostPort: "" }]);
  });

  it("puts a host-network twin's ports in labels and publishes nothing", () => {
    const options = containerCreateOptions(
      request({ endpointInput: { network: "host" }, ports: { http: 41001, management: 41002 } }),
    );
    expect(options.HostConfig?.NetworkMode).toBe("host");
    expect(options).not.toHaveProperty("ExposedPorts");
    expect(options.HostConfig).not.toHaveProperty("PortBindings");
    expect(options.Labels).toMatchObject({ [LABEL.httpPort]: "41001", [LABEL.managementPort]: "41002" });
  });

  it("turns the package's requirements into limits", () => {
    const limited = request();
    limited.spec.requirements = { cpu: 0.5, memory: 256, gpu: 1 };
    const host = containerCreateOptions(limited).HostConfig;
    expect(host?.NanoCpus).toBe(500_000_000);
    expect(host?.Memory).toBe(256 * 1024 * 1024);
    expect(host?.DeviceRequests).toEqual([{ Driver: "", Count: 1, Capabilities: [["gpu"]] }]);
  });
});

describe("containerAddresses", () => {
  it("reaches a host-network twin on the ports in its labels", () => {
    const info = inspectInfo({ labels: { [LABEL.httpPort]: "41001", [LABEL.managementPort]: "41002" } });
    expect(containerAddresses(parseDockerEndpoint({ network: "host" }), info)).toEqual({
      http: "http://127.0.0.1:41001",
      management: "http://127.0.0.1:41002",
    });
  });

  it("reaches a published twin on its host ports, at the publish host (IPv6 in brackets)", () => {
    const info = inspectInfo({
      ports: {
        "8080/tcp": [{ HostIp: "127.0.0.1", HostPort: "32768" }],
        "8081/tcp": [{ HostIp: "127.0.0.1", HostPort: "32769" }],
      },
    });
    expect(containerAddresses(parseDockerEndpoint({}), info)).toEqual({
      http: "http://127.0.0.1:32768",
      management: "http://127.0.0.1:32769",
    });
    expect(containerAddresses(parseDockerEndpoint({ host: "::1", publishHost: "fd00::7" }), info).http).toBe(
      "http://[fd00::7]:32768",
    );
    expect(containerAddresses(parseDockerEndpoint({ host: "engine.example" }), info).http).toBe(
      "http://engine.example:32768",
    );
  });

  it("reaches a twin on its network address with reach: network", () => {
    const info = inspectInfo({ networks: { dtc: { IPAddress: "172.20.0.9" } } });
    expect(containerAddresses(parseDockerEndpoint({ network: "dtc", reach: "network" }), info)).toEqual({
      http: "http://172.20.0.9:8080",
      management: "http://172.20.0.9:8081",
    });
  });

  it("says which address is missing", () => {
    expect(() =>
      containerAddresses(parseDockerEndpoint({}), inspectInfo({ ports: { "8080/tcp": null } })),
    ).toThrow(/has no published port for 8080/);
    expect(() =>
      containerAddresses(parseDockerEndpoint({ network: "dtc", reach: "network" }), inspectInfo({})),
    ).toThrow(/has no address on network dtc/);
  });
});

describe("exitReason and envOf", () => {
  it("names how a container ended", () => {
    expect(exitReason("c1", { exitCode: 1, oomKilled: false })).toBe("container c1 exited with code 1");
    expect(exitReason("c1", { exitCode: 137, oomKilled: false })).toBe(
      "container c1 exited with code 137 (killed)",
    );
    expect(exitReason("c1", { exitCode: 137, oomKilled: true })).toBe(
      "container c1 exited with code 137 (out of memory)",
    );
    expect(exitReason("c1", { exitCode: Number.NaN, oomKilled: false })).toBe("container c1 is gone");
  });

  it("reads a variable of the container's environment, values with = included", () => {
    const info = inspectInfo({ env: ["A=1", "DTC_TWIN_TOKEN=ab=cd", "DTC_TWIN_TOKENX=no"] });
    expect(envOf(info, "DTC_TWIN_TOKEN")).toBe("ab=cd");
    expect(envOf(info, "MISSING")).toBeUndefined();
  });
});
