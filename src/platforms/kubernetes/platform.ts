import type { PlatformPlugin } from "../registry.js";

/** Kubernetes: nodes and packages can be registered; its driver comes with the cluster platforms. */
export const kubernetesPlatform = {
  name: "kubernetes",
  individual: "Kubernetes",
  artefact: "image",
} as const satisfies PlatformPlugin<"kubernetes">;
