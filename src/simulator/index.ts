// Physical-twin simulators for tests, benchmarks and demos (CLI: src/simulate.ts).
export {
  CATEGORIES,
  type CameraFrame,
  type CameraOptions,
  CameraSimulator,
  type Category,
  type Detection,
  MASA_LATITUDE,
  MASA_LONGITUDE,
} from "./camera.js";
export { connectSimulatorClient, type WaitForBroker } from "./connect.js";
export {
  checkFaults,
  checkRate,
  defaultScheduler,
  type Faults,
  MAX_RATE,
  PtSimulator,
  type ScheduledTask,
  Scheduler,
  type SetRateCommand,
  type SimulatorEvents,
  type SimulatorOptions,
  type SimulatorState,
  seededRandom,
  WILL_PAYLOAD,
} from "./faults.js";
export {
  type IiotDeviceOptions,
  IiotDeviceSimulator,
  IiotFleet,
  type IiotFleetOptions,
  type IiotTelemetry,
} from "./iiot-device.js";
