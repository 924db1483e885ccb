/**
 * Euler (diffusers EulerDiscreteScheduler) and Euler ancestral (EulerAncestralDiscreteScheduler),
 * deterministic `s_churn = 0` sampling in sigma space. The ancestral variant adds noise at
 * step i from the spec's noise generator, stream i + 1 (formats/README.md "Seeded noise").
 */
import { UnsupportedError } from "../errors.js";
import type { SchedulerName } from "../formats.js";
import {
  alphasCumprod,
  type BaseConfig,
  checkLengths,
  checkSteps,
  indexForTimestep,
  interpIndex,
  readConfig,
  type Scheduler,
  spacedTimesteps,
  trainingSigmas,
} from "./common.js";

export interface EulerConfig extends BaseConfig {
  interpolation_type: string;
  timestep_type: string;
  final_sigmas_type: string;
}

/** Where Euler a gets the noise it adds at step `stepIndex` (a fresh array of `length` normals). */
export type StepNoise = (stepIndex: number, length: number) => Float32Array;

abstract class SigmaScheduler implements Scheduler {
  abstract readonly name: SchedulerName;
  timesteps: number[] = [];
  sigmas = new Float32Array(0);
  protected stepIndex: number | null = null;
  protected readonly trainSigmas: Float64Array;

  constructor(readonly config: EulerConfig) {
    this.trainSigmas = trainingSigmas(alphasCumprod(config));
  }

  get initNoiseSigma(): number {
    const max = this.sigmas.reduce((a, b) => Math.max(a, b), 0);
    if (this.config.timestep_spacing === "linspace" || this.config.timestep_spacing === "trailing")
      return max;
    return Math.fround(Math.sqrt(Math.fround(Math.fround(max * max) + 1)));
  }

  setTimesteps(n: number): void {
    checkSteps(n, this.config, this.name);
    const grid = spacedTimesteps(this.config, n, false).map(Math.fround);
    this.timesteps = grid;
    const sigmas = new Float32Array(n + 1);
    grid.forEach((t, i) => {
      sigmas[i] = interpIndex(t, this.trainSigmas);
    });
    sigmas[n] = this.config.final_sigmas_type === "sigma_min" ? this.trainSigmas[0] : 0;
    this.sigmas = sigmas;
    this.stepIndex = null;
  }

  protected index(t: number): number {
    if (this.stepIndex === null) this.stepIndex = indexForTimestep(this.timesteps, t, this.name);
    return this.stepIndex;
  }

  scaleModelInput(sample: Float32Array, t: number): Float32Array {
    const sigma = this.sigmas[this.index(t)];
    const scale = Math.sqrt(sigma * sigma + 1);
    return sample.map((v) => v / scale);
  }

  /** x0 from the model output at noise level sigma (before any churn). */
  protected predictOriginal(
    modelOutput: Float32Array,
    sample: Float32Array,
    sigma: number,
    i: number,
  ): number {
    if (this.config.prediction_type === "epsilon") return sample[i] - sigma * modelOutput[i];
    const s2 = sigma * sigma + 1;
    return modelOutput[i] * (-sigma / Math.sqrt(s2)) + sample[i] / s2;
  }

  abstract step(modelOutput: Float32Array, t: number, sample: Float32Array): Float32Array;
}

function eulerConfig(raw: Record<string, unknown>, name: string): EulerConfig {
  const config = readConfig<EulerConfig>(
    raw,
    { interpolation_type: "linear", timestep_type: "discrete", final_sigmas_type: "zero" },
    name,
    {
      interpolation_type: ["linear"],
      timestep_type: ["discrete"],
      final_sigmas_type: ["zero", "sigma_min"],
    },
  );
  return config;
}

export class EulerScheduler extends SigmaScheduler {
  readonly name = "euler" as const;

  constructor(raw: Record<string, unknown> = {}) {
    super(eulerConfig(raw, "euler"));
  }

  step(modelOutput: Float32Array, t: number, sample: Float32Array): Float32Array {
    checkLengths(this.name, modelOutput, sample);
    const i = this.index(t);
    const sigma = this.sigmas[i];
    const dt = this.sigmas[i + 1] - sigma;
    const out = new Float32Array(sample.length);
    for (let k = 0; k < sample.length; k++) {
      const derivative = (sample[k] - this.predictOriginal(modelOutput, sample, sigma, k)) / sigma;
      out[k] = sample[k] + derivative * dt;
    }
    this.stepIndex = i + 1;
    return out;
  }
}

export class EulerAncestralScheduler extends SigmaScheduler {
  readonly name = "euler-a" as const;

  /** `noise(i, length)` gives step i's noise: use `seededStepNoise(seed)` for the spec's streams. */
  constructor(
    raw: Record<string, unknown>,
    private readonly noise: StepNoise,
  ) {
    // EulerAncestralDiscreteScheduler has none of Euler's extra options: it always ends at sigma 0.
    super({
      ...readConfig<BaseConfig>(raw, {}, "euler-a"),
      interpolation_type: "linear",
      timestep_type: "discrete",
      final_sigmas_type: "zero",
    });
    if (typeof noise !== "function")
      throw new UnsupportedError("euler-a needs a noise source (a seed)");
  }

  step(modelOutput: Float32Array, t: number, sample: Float32Array): Float32Array {
    checkLengths(this.name, modelOutput, sample);
    const i = this.index(t);
    const sigmaFrom = this.sigmas[i];
    const sigmaTo = this.sigmas[i + 1];
    const sigmaUp = Math.sqrt(
      (sigmaTo * sigmaTo * (sigmaFrom * sigmaFrom - sigmaTo * sigmaTo)) / (sigmaFrom * sigmaFrom),
    );
    const sigmaDown = Math.sqrt(sigmaTo * sigmaTo - sigmaUp * sigmaUp);
    const dt = sigmaDown - sigmaFrom;
    const noise = this.noise(i, sample.length);
    if (noise.length !== sample.length)
      throw new RangeError("euler-a: step noise has the wrong length");
    const out = new Float32Array(sample.length);
    for (let k = 0; k < sample.length; k++) {
      const derivative =
        (sample[k] - this.predictOriginal(modelOutput, sample, sigmaFrom, k)) / sigmaFrom;
      out[k] = sample[k] + derivative * dt + noise[k] * sigmaUp;
    }
    this.stepIndex = i + 1;
    return out;
  }
}
