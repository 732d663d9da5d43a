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
export { checkFaults, checkRate, type Faults, MAX_RATE, seededRandom } from "./faults.js";
export {
  type IiotDeviceOptions,
  IiotDeviceSimulator,
  IiotFleet,
  type IiotFleetOptions,
  type IiotTelemetry,
} from "./iiot-device.js";
export {
  PtSimulator,
  type SetRateCommand,
  type SimulatorEvents,
  type SimulatorOptions,
  type SimulatorState,
  WILL_PAYLOAD,
} from "./pt-simulator.js";
export { defaultScheduler, type ScheduledTask, Scheduler } from "./scheduler.js";
