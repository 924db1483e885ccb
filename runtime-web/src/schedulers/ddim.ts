/** DDIM (diffusers DDIMScheduler) with eta = 0, as the Stable Diffusion pipeline runs it. */
import {
  alphasCumprod,
  type BaseConfig,
  checkLengths,
  checkSteps,
  readConfig,
  type Scheduler,
  spacedTimesteps,
} from "./common.js";

export interface DdimConfig extends BaseConfig {
  clip_sample: boolean;
  clip_sample_range: number;
  set_alpha_to_one: boolean;
}

export class DdimScheduler implements Scheduler {
  readonly name = "ddim" as const;
  readonly initNoiseSigma = 1;
  readonly config: DdimConfig;
  timesteps: number[] = [];
  private numInferenceSteps = 0;
  private readonly alphasCumprod: Float64Array;
  private readonly finalAlphaCumprod: number;

  constructor(raw: Record<string, unknown> = {}) {
    this.config = readConfig<DdimConfig>(
      raw,
      {
        clip_sample: true,
        clip_sample_range: 1,
        set_alpha_to_one: true,
        timestep_spacing: "leading",
      },
      "ddim",
    );
    this.alphasCumprod = alphasCumprod(this.config);
    this.finalAlphaCumprod = this.config.set_alpha_to_one ? 1 : this.alphasCumprod[0];
  }

  setTimesteps(n: number): void {
    checkSteps(n, this.config, this.name);
    this.numInferenceSteps = n;
    this.timesteps = spacedTimesteps(this.config, n, true);
  }

  scaleModelInput(sample: Float32Array): Float32Array {
    return sample;
  }

  step(modelOutput: Float32Array, t: number, sample: Float32Array): Float32Array {
    checkLengths(this.name, modelOutput, sample);
    if (!this.numInferenceSteps) throw new Error("ddim: call setTimesteps first");
    const prevT = t - Math.floor(this.config.num_train_timesteps / this.numInferenceSteps);
    const aT = this.alphasCumprod[t];
    const aPrev = prevT >= 0 ? this.alphasCumprod[prevT] : this.finalAlphaCumprod;
    const bT = 1 - aT;
    const sqrtA = Math.sqrt(aT);
    const sqrtB = Math.sqrt(bT);
    const sqrtAPrev = Math.sqrt(aPrev);
    const direction = Math.sqrt(1 - aPrev);
    const clip = this.config.clip_sample ? this.config.clip_sample_range : Infinity;
    const out = new Float32Array(sample.length);
    for (let k = 0; k < sample.length; k++) {
      let x0: number;
      let eps: number;
      if (this.config.prediction_type === "epsilon") {
        x0 = (sample[k] - sqrtB * modelOutput[k]) / sqrtA;
        eps = modelOutput[k];
      } else {
        x0 = sqrtA * sample[k] - sqrtB * modelOutput[k];
        eps = sqrtA * modelOutput[k] + sqrtB * sample[k];
      }
      x0 = Math.min(clip, Math.max(-clip, x0));
      out[k] = sqrtAPrev * x0 + direction * eps;
    }
    return out;
  }
}
