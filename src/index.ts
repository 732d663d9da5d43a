// The dtc library surface: what other packages (and later issues) build on.
export { type Config, ConfigError, ENVIRONMENT, loadConfig } from "./config.js";
export { type Gateway, startGateway } from "./gateway.js";
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
