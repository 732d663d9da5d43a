import { PtSimulator, type SetRateCommand, type SimulatorOptions } from "./pt-simulator.js";

/** Road-user categories of the MASA camera schema. */
export const CATEGORIES = ["pedestrian", "bicycle", "car", "motorcycle", "bus", "truck"] as const;
export type Category = (typeof CATEGORIES)[number];

/** Options of a simulated MASA smart camera (schema thing-models/masa-camera.tm.jsonld). Default rate: 10 Hz. */
export interface CameraOptions extends SimulatorOptions {
  /** Where the camera is (default: Modena, the MASA area); detections fall within about 50 m of it. */
  latitude?: number;
  longitude?: number;
  /** Most road users in one frame (default 8). */
  maxDetections?: number;
}

export interface Detection {
  category: Category;
  confidence: number;
  latitude: number;
  longitude: number;
  /** km/h. */
  speed: number;
  /** Degrees from north, in [0, 360]. */
  heading: number;
}

/** One frame of the camera, on `dtc/masa/cameras/{id}/detections`. */
export interface CameraFrame {
  ts: number;
  /** 1 for the first frame, +1 per frame, lost ones included. */
  frame: number;
  detections: Detection[];
  count: number;
}

export const MASA_LATITUDE = 44.6556;
export const MASA_LONGITUDE = 10.9309;

// How common each category is in urban traffic, and its top speed (km/h).
const MIX: readonly { category: Category; weight: number; maxSpeed: number }[] = [
  { category: "pedestrian", weight: 0.25, maxSpeed: 6 },
  { category: "bicycle", weight: 0.15, maxSpeed: 25 },
  { category: "car", weight: 0.45, maxSpeed: 60 },
  { category: "motorcycle", weight: 0.07, maxSpeed: 70 },
  { category: "bus", weight: 0.04, maxSpeed: 50 },
  { category: "truck", weight: 0.04, maxSpeed: 50 },
];

/** Detections lie within this many degrees of latitude of the camera (about 50 m). */
const SPREAD_DEG = 0.00045;

const round = (value: number, decimals: number) => {
  const f = 10 ** decimals;
  return Math.round(value * f) / f;
};

/**
 * A MASA smart camera: publishes the road users it detects in each frame at `rate` frames per second.
 * It takes no commands.
 */
export class CameraSimulator extends PtSimulator {
  readonly latitude: number;
  readonly longitude: number;
  protected readonly telemetryTopic: string;
  protected readonly statusTopic: string;
  protected readonly commandTopic = undefined;
  readonly #maxDetections: number;
  readonly #lonSpread: number;

  constructor(options: CameraOptions) {
    super(options, 10);
    const latitude = options.latitude ?? MASA_LATITUDE;
    const longitude = options.longitude ?? MASA_LONGITUDE;
    if (!(latitude >= -90 && latitude <= 90))
      throw new RangeError(`latitude must be in [-90, 90] (got ${latitude})`);
    if (!(longitude >= -180 && longitude <= 180)) {
      throw new RangeError(`longitude must be in [-180, 180] (got ${longitude})`);
    }
    const max = options.maxDetections ?? 8;
    if (!(Number.isInteger(max) && max >= 0))
      throw new RangeError(`maxDetections must be an integer >= 0 (got ${max})`);
    this.latitude = latitude;
    this.longitude = longitude;
    this.#maxDetections = max;
    // The same ground distance east-west as north-south.
    this.#lonSpread = SPREAD_DEG / Math.max(0.01, Math.cos((latitude * Math.PI) / 180));
    this.telemetryTopic = `dtc/masa/cameras/${this.id}/detections`;
    this.statusTopic = `dtc/masa/cameras/${this.id}/status`;
  }

  protected sample(seq: number, ts: number): CameraFrame {
    const random = this.random;
    const n = Math.floor(random() * (this.#maxDetections + 1));
    const detections: Detection[] = [];
    for (let i = 0; i < n; i++) {
      let pick = random();
      let kind = MIX[0] as (typeof MIX)[number];
      for (const k of MIX) {
        kind = k;
        pick -= k.weight;
        if (pick < 0) break;
      }
      detections.push({
        category: kind.category,
        confidence: round(0.5 + 0.5 * random(), 3),
        latitude: round(this.latitude + (random() * 2 - 1) * SPREAD_DEG, 7),
        longitude: round(this.longitude + (random() * 2 - 1) * this.#lonSpread, 7),
        speed: round(random() * kind.maxSpeed, 1),
        heading: round(random() * 360, 1),
      });
    }
    return { ts, frame: seq, detections, count: detections.length };
  }

  protected applyCommand(): SetRateCommand {
    throw new Error("the camera takes no commands");
  }
}
