// The dtc library surface: what other packages (and later issues) build on.
export { type Config, ConfigError, ENVIRONMENT, loadConfig } from "./config.js";
export {
  type EntanglementFigures,
  type EntanglementObservations,
  EntanglementWindow,
  type FidelityParams,
} from "./domain/entanglement.js";
export {
  LIFECYCLE_EVENTS,
  LIFECYCLE_STATES,
  LIFECYCLE_TRANSITIONS,
  Lifecycle,
  type LifecycleChange,
  type LifecycleEvent,
  type LifecycleState,
} from "./domain/lifecycle.js";
export type { FidelityOverrides, TwinConfig, TwinState } from "./domain/twin-state.js";
export { type Gateway, startGateway } from "./gateway.js";
export { createLogger, type Logger } from "./logger.js";
export { MqttConnections, SharedMqttConnection } from "./mqtt/connections.js";
export { type EmbeddedBroker, startEmbeddedBroker } from "./mqtt/embedded-broker.js";
export { AugmentationError, Augmentations } from "./runtime/augmentation.js";
export { DigitalInterface } from "./runtime/digital-interface.js";
export { Twin, type TwinListener, TwinStateError } from "./runtime/twin.js";
export { describeTwin, TWIN_AFFORDANCES } from "./runtime/twin-description.js";
export {
  MANAGEMENT_TOPIC,
  TwinConflictError,
  TwinNotFoundError,
  TwinRuntime,
  type TwinRuntimeOptions,
} from "./runtime/twin-runtime.js";
export * from "./simulator/index.js";
export {
  type InstantiateOptions,
  instantiate,
  type ModelSource,
  TD_MEDIA_TYPE,
  TM_MEDIA_TYPE,
  toExposedThingInit,
} from "./wot/instantiate.js";
export {
  DISCOVERY_CONTEXT_URL,
  DTC_CONTEXT_URL,
  DTC_NS,
  knownContextUrls,
  offlineDocumentLoader,
  RemoteContextRefusedError,
  registerContext,
  TD_CONTEXT_1_0,
  TD_CONTEXT_1_1,
} from "./wot/jsonld-loader.js";
export {
  loadThingModels,
  ModelResolutionError,
  SAMPLE_SCHEMA_BASE,
  ThingModelRegistry,
} from "./wot/model-registry.js";
export { expand, type JsonObject, toNQuads } from "./wot/rdf.js";
export { type Link, type ThingModel, validateThingModel } from "./wot/thing-model.js";
export {
  ValidationError,
  type ValidationIssue,
  type ValidationResult,
  validateThingDescription,
} from "./wot/validation.js";
