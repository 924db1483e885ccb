/**
 * DPM++ 2M: diffusers DPMSolverMultistepScheduler with algorithm_type "dpmsolver++" and
 * solver_order 2 (the bundle's "dpm++"), with the class defaults the SD pipelines use:
 * lower_order_final, final sigma 0 (so the last step is first order), midpoint solver.
 */
import { UnsupportedError } from "../errors.js";
import {
  alphasCumprod,
  arange,
  type BaseConfig,
  checkLengths,
  checkSteps,
  indexForTimestep,
  linspace,
  readConfig,
  roundHalfEven,
  type Scheduler,
  trainingSigmas,
} from "./common.js";

export interface DpmSolverConfig extends BaseConfig {
  solver_type: "midpoint" | "heun";
  lower_order_final: boolean;
  euler_at_final: boolean;
  final_sigmas_type: "zero" | "sigma_min";
  lambda_min_clipped: number;
  variance_type: string | null;
}

/** (alpha_t, sigma_t) of a noise level sigma, in the VP parameterisation. */
function alphaSigma(sigma: number): [number, number] {
  const alpha = 1 / Math.sqrt(sigma * sigma + 1);
  return [alpha, sigma * alpha];
}

const lambda = ([alpha, sigma]: [number, number]) => Math.log(alpha) - Math.log(sigma);

export class DpmSolverMultistepScheduler implements Scheduler {
  readonly name = "dpm++" as const;
  readonly initNoiseSigma = 1;
  readonly config: DpmSolverConfig;
  timesteps: number[] = [];
  sigmas = new Float32Array(0);
  private readonly trainSigmas: Float64Array;
  private modelOutputs: (Float32Array | null)[] = [null, null];
  private lowerOrderNums = 0;
  private stepIndex: number | null = null;

  constructor(raw: Record<string, unknown> = {}) {
    this.config = readConfig<DpmSolverConfig>(
      raw,
      {
        solver_type: "midpoint",
        lower_order_final: true,
        euler_at_final: false,
        final_sigmas_type: "zero",
        lambda_min_clipped: -Infinity,
        variance_type: null,
      },
      "dpm++",
      {
        solver_type: ["midpoint", "heun"],
        final_sigmas_type: ["zero", "sigma_min"],
        variance_type: [null],
      },
    );
    if (this.config.lambda_min_clipped !== -Infinity)
      throw new UnsupportedError("dpm++: lambda_min_clipped is not supported");
    this.trainSigmas = trainingSigmas(alphasCumprod(this.config));
  }

  setTimesteps(n: number): void {
    checkSteps(n, this.config, this.name);
    const last = this.config.num_train_timesteps; // lambda_min_clipped = -inf clips nothing
    let ts: number[];
    switch (this.config.timestep_spacing) {
      case "linspace":
        ts = linspace(0, last - 1, n + 1)
          .map(roundHalfEven)
          .reverse()
          .slice(0, -1);
        break;
      case "leading": {
        const ratio = Math.floor(last / (n + 1));
        ts = Array.from({ length: n + 1 }, (_, i) => i * ratio)
          .reverse()
          .slice(0, -1)
          .map((t) => t + this.config.steps_offset);
        break;
      }
      case "trailing":
        ts = arange(last, 0, -this.config.num_train_timesteps / n).map((t) => roundHalfEven(t) - 1);
        break;
    }
    const sigmas = new Float32Array(ts.length + 1);
    ts.forEach((t, i) => {
      sigmas[i] = this.trainSigmas[t];
    });
    sigmas[ts.length] = this.config.final_sigmas_type === "sigma_min" ? this.trainSigmas[0] : 0;
    this.timesteps = ts;
    this.sigmas = sigmas;
    this.modelOutputs = [null, null];
    this.lowerOrderNums = 0;
    this.stepIndex = null;
  }

  scaleModelInput(sample: Float32Array): Float32Array {
    return sample;
  }

  /** The data prediction x0 at the current step (dpmsolver++ works on x0, not on epsilon). */
  private toX0(modelOutput: Float32Array, sample: Float32Array, i: number): Float32Array {
    const [alpha, sigma] = alphaSigma(this.sigmas[i]);
    if (this.config.prediction_type === "epsilon")
      return sample.map((x, k) => (x - sigma * modelOutput[k]) / alpha);
    return sample.map((x, k) => alpha * x - sigma * modelOutput[k]);
  }

  step(modelOutput: Float32Array, t: number, sample: Float32Array): Float32Array {
    checkLengths(this.name, modelOutput, sample);
    if (this.stepIndex === null) this.stepIndex = indexForTimestep(this.timesteps, t, this.name);
    const i = this.stepIndex;
    const n = this.timesteps.length;
    const lowerOrderFinal =
      i === n - 1 &&
      (this.config.euler_at_final ||
        (this.config.lower_order_final && n < 15) ||
        this.config.final_sigmas_type === "zero");
    const x0 = this.toX0(modelOutput, sample, i);
    this.modelOutputs = [this.modelOutputs[1], x0];
    const out =
      this.lowerOrderNums < 1 || lowerOrderFinal
        ? this.firstOrder(x0, sample, i)
        : this.secondOrder(sample, i);
    if (this.lowerOrderNums < 2) this.lowerOrderNums += 1;
    this.stepIndex = i + 1;
    return out;
  }

  private firstOrder(x0: Float32Array, sample: Float32Array, i: number): Float32Array {
    const [alphaT, sigmaT] = alphaSigma(this.sigmas[i + 1]);
    const [alphaS, sigmaS] = alphaSigma(this.sigmas[i]);
    const h = lambda([alphaT, sigmaT]) - lambda([alphaS, sigmaS]);
    const a = sigmaT / sigmaS;
    const b = alphaT * (Math.exp(-h) - 1);
    return sample.map((x, k) => a * x - b * x0[k]);
  }

  private secondOrder(sample: Float32Array, i: number): Float32Array {
    const t = alphaSigma(this.sigmas[i + 1]);
    const s0 = alphaSigma(this.sigmas[i]);
    const s1 = alphaSigma(this.sigmas[i - 1]);
    const [m1, m0] = this.modelOutputs as [Float32Array, Float32Array];
    const h = lambda(t) - lambda(s0);
    const r0 = (lambda(s0) - lambda(s1)) / h;
    const a = t[1] / s0[1];
    const b = t[0] * (Math.exp(-h) - 1);
    const c =
      this.config.solver_type === "midpoint" ? 0.5 * b : -t[0] * ((Math.exp(-h) - 1) / h + 1);
    return sample.map((x, k) => {
      const d1 = (1 / r0) * (m0[k] - m1[k]);
      return a * x - b * m0[k] - c * d1;
    });
  }
}
