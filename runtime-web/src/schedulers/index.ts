/** The five schedulers a bundle can name (manifest `scheduler.default`), by name. */
import { UnsupportedError } from "../errors.js";
import { SCHEDULER_NAMES as NAMES, type SchedulerName } from "../formats.js";
import { latents, type Seed } from "../noise.js";
import type { Scheduler } from "./common.js";
import { DdimScheduler } from "./ddim.js";
import { DpmSolverMultistepScheduler } from "./dpmSolver.js";
import { EulerAncestralScheduler, EulerScheduler, type StepNoise } from "./euler.js";
import { PndmScheduler } from "./pndm.js";

export const SCHEDULER_NAMES: readonly SchedulerName[] = NAMES;

export interface SchedulerOptions {
  /** The generation's seed: Euler a draws step i's noise from its stream i + 1. */
  seed?: Seed;
  /** Overrides where Euler a's step noise comes from. */
  stepNoise?: StepNoise;
}

/** Step i's noise for `seed`: the spec's stream i + 1, `length` values (latent-shaped, C order). */
export function seededStepNoise(seed: Seed): StepNoise {
  return (stepIndex, length) => latents(seed, [length], stepIndex + 1);
}

/** A fresh scheduler `name` configured from a bundle's `scheduler.config` (diffusers keys). */
export function createScheduler(
  name: SchedulerName,
  config: Record<string, unknown>,
  options: SchedulerOptions = {},
): Scheduler {
  switch (name) {
    case "dpm++":
      return new DpmSolverMultistepScheduler(config);
    case "euler":
      return new EulerScheduler(config);
    case "euler-a": {
      const noise =
        options.stepNoise ??
        (options.seed !== undefined ? seededStepNoise(options.seed) : undefined);
      if (!noise)
        throw new UnsupportedError("euler-a needs the generation's seed for its step noise");
      return new EulerAncestralScheduler(config, noise);
    }
    case "ddim":
      return new DdimScheduler(config);
    case "pndm":
      return new PndmScheduler(config);
    default:
      throw new UnsupportedError(
        `unknown scheduler ${JSON.stringify(name)}`,
        `choose one of ${SCHEDULER_NAMES.join(", ")}`,
      );
  }
}

export type { Scheduler, BaseConfig, PredictionType, TimestepSpacing } from "./common.js";
export {
  DdimScheduler,
  DpmSolverMultistepScheduler,
  EulerAncestralScheduler,
  EulerScheduler,
  PndmScheduler,
};
export type { StepNoise };
