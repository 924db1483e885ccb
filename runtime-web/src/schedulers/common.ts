/**
 * What the five schedulers share: the config a bundle carries (diffusers' scheduler config),
 * the beta schedule, and numpy's spacing/rounding/interpolation as diffusers uses them.
 *
 * diffusers computes the noise schedule in float32 torch (cumprod accumulates in double) and
 * the timestep grids in float64 numpy; this module does the same so timesteps are identical and
 * sigmas match to float32 rounding. Per-element arithmetic runs in float64 and is stored in
 * float32 arrays, within 1e-6 of diffusers' float32 results.
 */
import { UnsupportedError } from "../errors.js";
import type { SchedulerName } from "../formats.js";

export type PredictionType = "epsilon" | "v_prediction" | "sample";
export type TimestepSpacing = "linspace" | "leading" | "trailing";

/** The step protocol of every scheduler (diffusers' `set_timesteps` / `scale_model_input` / `step`). */
export interface Scheduler {
  readonly name: SchedulerName;
  /** The model is called once per entry, in order (PNDM repeats one). */
  readonly timesteps: readonly number[];
  /** What the initial standard-normal latents are multiplied by. */
  readonly initNoiseSigma: number;
  /** Euler, Euler a and DPM++: the noise levels, one more than timesteps (the last is 0). */
  readonly sigmas?: Float32Array;
  setTimesteps(numInferenceSteps: number): void;
  /** The model input for timestep `t` (the sample itself for DPM++, DDIM and PNDM). */
  scaleModelInput(sample: Float32Array, t: number): Float32Array;
  /** The sample for the next timestep, from the model output at `t` (a new array). */
  step(modelOutput: Float32Array, t: number, sample: Float32Array): Float32Array;
}

/** The config keys the schedulers read, with diffusers' class defaults merged in. */
export interface BaseConfig {
  num_train_timesteps: number;
  beta_start: number;
  beta_end: number;
  beta_schedule: string;
  trained_betas: number[] | null;
  prediction_type: PredictionType;
  timestep_spacing: TimestepSpacing;
  steps_offset: number;
}

const BASE_DEFAULTS: BaseConfig = {
  num_train_timesteps: 1000,
  beta_start: 0.0001,
  beta_end: 0.02,
  beta_schedule: "linear",
  trained_betas: null,
  prediction_type: "epsilon",
  timestep_spacing: "linspace",
  steps_offset: 0,
};

/** Options diffusers has that change the schedule; none of them is set by SD 1.5 configs. */
const UNSUPPORTED_FLAGS = [
  "use_karras_sigmas",
  "use_exponential_sigmas",
  "use_beta_sigmas",
  "use_lu_lambdas",
  "use_flow_sigmas",
  "use_dynamic_shifting",
  "thresholding",
  "rescale_betas_zero_snr",
];

/**
 * `raw` (a bundle's `scheduler.config`) over diffusers' defaults for one class, as
 * `from_config` does: keys starting with "_" and keys the class does not take are ignored, and
 * null means "the default". Throws `UnsupportedError` for options this runtime does not implement.
 */
export function readConfig<T extends BaseConfig>(
  raw: Record<string, unknown>,
  classDefaults: Partial<T> & Omit<T, keyof BaseConfig>,
  scheduler: string,
  allowed: { [K in keyof T]?: readonly unknown[] } = {},
): T {
  for (const flag of UNSUPPORTED_FLAGS) {
    if (raw[flag])
      throw new UnsupportedError(
        `${scheduler}: scheduler config option ${flag} is not supported by the web runtime`,
      );
  }
  const config = { ...BASE_DEFAULTS, ...classDefaults } as T;
  for (const key of Object.keys(config) as (keyof T & string)[]) {
    const value = raw[key];
    if (value !== undefined && value !== null) (config as Record<string, unknown>)[key] = value;
  }
  const checks: { [K in keyof T]?: readonly unknown[] } = {
    prediction_type: ["epsilon", "v_prediction"],
    timestep_spacing: ["linspace", "leading", "trailing"],
    beta_schedule: ["linear", "scaled_linear"],
    ...allowed,
  } as { [K in keyof T]?: readonly unknown[] };
  for (const [key, values] of Object.entries(checks) as [string, readonly unknown[]][]) {
    const value = (config as Record<string, unknown>)[key];
    if (key === "beta_schedule" && config.trained_betas) continue;
    if (!values.includes(value)) {
      throw new UnsupportedError(
        `${scheduler}: scheduler config ${key}=${JSON.stringify(value)} is not supported`,
        `use one of ${JSON.stringify(values)}`,
      );
    }
  }
  for (const key of ["num_train_timesteps", "steps_offset"] as const) {
    if (!Number.isInteger(config[key]) || config[key] < 0)
      throw new UnsupportedError(`${scheduler}: ${key} must be a non-negative integer`);
  }
  return config;
}

/** torch.linspace(start, end, steps, dtype=float32) as ATen's CPU kernel computes it (to 1 ulp). */
function linspaceF32(start: number, end: number, steps: number): number[] {
  const s = Math.fround(start);
  const e = Math.fround(end);
  if (steps === 1) return [s];
  const step = Math.fround(Math.fround(e - s) / (steps - 1));
  const half = Math.floor(steps / 2);
  return Array.from({ length: steps }, (_, i) =>
    i < half
      ? Math.fround(s + Math.fround(step * i))
      : Math.fround(e - Math.fround(step * (steps - i - 1))),
  );
}

/** alphas_cumprod (float32 values) for the config's beta schedule. */
export function alphasCumprod(config: BaseConfig): Float64Array {
  const n = config.num_train_timesteps;
  let betas: number[];
  if (config.trained_betas) {
    betas = config.trained_betas.map(Math.fround);
  } else if (config.beta_schedule === "linear") {
    betas = linspaceF32(config.beta_start, config.beta_end, n);
  } else {
    betas = linspaceF32(Math.sqrt(config.beta_start), Math.sqrt(config.beta_end), n).map((b) =>
      Math.fround(b * b),
    );
  }
  const out = new Float64Array(betas.length);
  let acc = 1;
  for (let i = 0; i < betas.length; i++) {
    acc *= Math.fround(1 - betas[i]);
    out[i] = Math.fround(acc);
  }
  return out;
}

/** ((1 - ᾱ) / ᾱ) ** 0.5 in float32, as diffusers' torch expression gives it. */
export function trainingSigmas(alphasCumprod: Float64Array): Float64Array {
  return alphasCumprod.map((a) => Math.fround(Math.sqrt(Math.fround(Math.fround(1 - a) / a))));
}

/** numpy's round(): half to even. */
export function roundHalfEven(x: number): number {
  const r = Math.round(x);
  return Math.abs(x % 1) === 0.5 && r % 2 !== 0 ? r - 1 : r;
}

/** np.linspace(start, stop, num) in float64 (endpoint included). */
export function linspace(start: number, stop: number, num: number): number[] {
  if (num === 1) return [start];
  const step = (stop - start) / (num - 1);
  return Array.from({ length: num }, (_, i) => (i === num - 1 ? stop : i * step + start));
}

/** np.arange(start, stop, step) for a float step. */
export function arange(start: number, stop: number, step: number): number[] {
  const n = Math.max(0, Math.ceil((stop - start) / step));
  return Array.from({ length: n }, (_, i) => start + i * step);
}

/** np.interp(x, arange(len(table)), table) for x within [0, len - 1]. */
export function interpIndex(x: number, table: ArrayLike<number>): number {
  if (x <= 0) return table[0];
  const last = table.length - 1;
  if (x >= last) return table[last];
  const i = Math.floor(x);
  const frac = x - i;
  return frac === 0 ? table[i] : table[i] + (table[i + 1] - table[i]) * frac;
}

/**
 * The spacing diffusers' DDIM/PNDM/Euler use for `n` steps (descending, before any class-specific
 * reordering), as float64 integers or (linspace) fractions.
 */
export function spacedTimesteps(config: BaseConfig, n: number, roundLinspace: boolean): number[] {
  const train = config.num_train_timesteps;
  switch (config.timestep_spacing) {
    case "linspace": {
      const grid = linspace(0, train - 1, n);
      return (roundLinspace ? grid.map(roundHalfEven) : grid).reverse();
    }
    case "leading": {
      const ratio = Math.floor(train / n);
      return Array.from(
        { length: n },
        (_, i) => roundHalfEven(i * ratio) + config.steps_offset,
      ).reverse();
    }
    case "trailing":
      return arange(train, 0, -train / n).map((t) => roundHalfEven(t) - 1);
  }
}

/** diffusers' index_for_timestep: the position of `t` (the second one if it appears twice). */
export function indexForTimestep(timesteps: readonly number[], t: number, name: string): number {
  const hits: number[] = [];
  timesteps.forEach((v, i) => {
    if (v === t) hits.push(i);
  });
  if (!hits.length) throw new RangeError(`${name}: timestep ${t} is not in this schedule`);
  return hits.length > 1 ? hits[1] : hits[0];
}

export function checkSteps(n: number, config: BaseConfig, name: string): void {
  if (!Number.isInteger(n) || n < 1 || n > config.num_train_timesteps) {
    throw new RangeError(
      `${name}: steps must be an integer in [1, ${config.num_train_timesteps}], got ${n}`,
    );
  }
}

export function checkLengths(name: string, ...arrays: Float32Array[]): void {
  if (arrays.some((a) => a.length !== arrays[0].length))
    throw new RangeError(`${name}: model output and sample differ in length`);
}
