/**
 * PNDM (diffusers PNDMScheduler) with `skip_prk_steps`, i.e. PLMS: linear multistep on the
 * model outputs, one extra model call at the start (the second timestep is repeated).
 */
import { UnsupportedError } from "../errors.js";
import {
  alphasCumprod,
  type BaseConfig,
  checkLengths,
  checkSteps,
  readConfig,
  type Scheduler,
  spacedTimesteps,
} from "./common.js";

export interface PndmConfig extends BaseConfig {
  skip_prk_steps: boolean;
  set_alpha_to_one: boolean;
}

export class PndmScheduler implements Scheduler {
  readonly name = "pndm" as const;
  readonly initNoiseSigma = 1;
  readonly config: PndmConfig;
  timesteps: number[] = [];
  private numInferenceSteps = 0;
  private readonly alphasCumprod: Float64Array;
  private readonly finalAlphaCumprod: number;
  private ets: Float32Array[] = [];
  private counter = 0;
  private curSample: Float32Array | null = null;

  constructor(raw: Record<string, unknown> = {}) {
    this.config = readConfig<PndmConfig>(
      raw,
      { skip_prk_steps: false, set_alpha_to_one: false, timestep_spacing: "leading" },
      "pndm",
    );
    if (!this.config.skip_prk_steps) {
      throw new UnsupportedError(
        "pndm: only skip_prk_steps=true (PLMS) is supported",
        "set skip_prk_steps in the scheduler config, as SD 1.5 does",
      );
    }
    this.alphasCumprod = alphasCumprod(this.config);
    this.finalAlphaCumprod = this.config.set_alpha_to_one ? 1 : this.alphasCumprod[0];
  }

  setTimesteps(n: number): void {
    checkSteps(n, this.config, this.name);
    this.numInferenceSteps = n;
    const asc = spacedTimesteps(this.config, n, true).reverse();
    // diffusers: concat(ts[:-1], ts[-2:-1], ts[-1:]) reversed: the second timestep runs twice.
    this.timesteps = [...asc.slice(0, -1), ...asc.slice(-2, -1), ...asc.slice(-1)].reverse();
    this.ets = [];
    this.counter = 0;
    this.curSample = null;
  }

  scaleModelInput(sample: Float32Array): Float32Array {
    return sample;
  }

  step(modelOutput: Float32Array, t: number, sample: Float32Array): Float32Array {
    checkLengths(this.name, modelOutput, sample);
    if (!this.numInferenceSteps) throw new Error("pndm: call setTimesteps first");
    const ratio = Math.floor(this.config.num_train_timesteps / this.numInferenceSteps);
    let timestep = t;
    let prevT = t - ratio;
    if (this.counter !== 1) {
      this.ets = [...this.ets.slice(-3), modelOutput];
    } else {
      prevT = t;
      timestep = t + ratio;
    }
    const e = this.ets;
    let combined: Float32Array;
    let x = sample;
    if (e.length === 1 && this.counter === 0) {
      combined = modelOutput;
      this.curSample = sample;
    } else if (e.length === 1 && this.counter === 1) {
      combined = modelOutput.map((v, k) => (v + e[0][k]) / 2);
      x = this.curSample!;
      this.curSample = null;
    } else if (e.length === 2) {
      combined = e[1].map((v, k) => (3 * v - e[0][k]) / 2);
    } else if (e.length === 3) {
      combined = e[2].map((v, k) => (23 * v - 16 * e[1][k] + 5 * e[0][k]) / 12);
    } else {
      combined = e[3].map(
        (v, k) => (1 / 24) * (55 * v - 59 * e[2][k] + 37 * e[1][k] - 9 * e[0][k]),
      );
    }
    const out = this.prevSample(x, timestep, prevT, combined);
    this.counter += 1;
    return out;
  }

  private prevSample(
    sample: Float32Array,
    t: number,
    prevT: number,
    modelOutput: Float32Array,
  ): Float32Array {
    const aT = this.alphasCumprod[t];
    const aPrev = prevT >= 0 ? this.alphasCumprod[prevT] : this.finalAlphaCumprod;
    const bT = 1 - aT;
    const bPrev = 1 - aPrev;
    const sampleCoeff = Math.sqrt(aPrev / aT);
    const denom = aT * Math.sqrt(bPrev) + Math.sqrt(aT * bT * aPrev);
    const out = new Float32Array(sample.length);
    for (let k = 0; k < sample.length; k++) {
      const eps =
        this.config.prediction_type === "v_prediction"
          ? Math.sqrt(aT) * modelOutput[k] + Math.sqrt(bT) * sample[k]
          : modelOutput[k];
      out[k] = sampleCoeff * sample[k] - ((aPrev - aT) * eps) / denom;
    }
    return out;
  }
}
