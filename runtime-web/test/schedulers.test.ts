import assert from "node:assert/strict";
import { test } from "node:test";

import { UnsupportedError } from "../src/errors.js";
import type { SchedulerName } from "../src/formats.js";
import { latents } from "../src/noise.js";
import { createScheduler, SCHEDULER_NAMES } from "../src/schedulers/index.js";
import { readJson } from "./helpers.js";

interface Case {
  config_name: string;
  config: Record<string, unknown>;
  scheduler: SchedulerName;
  steps: number;
  timesteps: number[];
  sigmas?: number[];
  init_noise_sigma: number;
  initial_sample: number[];
  records: { t: number; scaled: number[]; model_output: number[]; prev_sample: number[] }[];
}

const vectors = readJson<{ seed: string; latent_shape: number[]; cases: Case[] }>(
  "schedulers.json",
);
const TOL = 1e-5;

/** max |got - want| / max |want|: the error relative to the values' scale. */
function relErr(got: ArrayLike<number>, want: ArrayLike<number>): number {
  assert.equal(got.length, want.length);
  let scale = 0;
  let err = 0;
  for (let i = 0; i < want.length; i++) {
    scale = Math.max(scale, Math.abs(want[i]));
    err = Math.max(err, Math.abs(got[i] - want[i]));
  }
  return err / Math.max(scale, 1e-30);
}

let worst = 0;
function near(got: ArrayLike<number>, want: ArrayLike<number>, what: string): void {
  const e = relErr(got, want);
  worst = Math.max(worst, e);
  assert.ok(e <= TOL, `${what}: relative error ${e.toExponential(2)} > ${TOL}`);
}

for (const c of vectors.cases) {
  const make = () => {
    const sched = createScheduler(c.scheduler, c.config, { seed: vectors.seed });
    sched.setTimesteps(c.steps);
    return sched;
  };

  test(`${c.scheduler} ${c.config_name} ${c.steps} steps matches diffusers step by step`, () => {
    const sched = make();
    assert.deepEqual([...sched.timesteps], c.timesteps, "timesteps");
    if (c.sigmas) near(sched.sigmas!, c.sigmas, "sigmas");
    near([sched.initNoiseSigma], [c.init_noise_sigma], "init_noise_sigma");
    const init = latents(vectors.seed, vectors.latent_shape).map((v) => v * sched.initNoiseSigma);
    near(init, c.initial_sample, "initial sample");
    // Each step starts from diffusers' own previous sample, so every step is checked on its own.
    c.records.forEach((r, i) => {
      const x = Float32Array.from(i ? c.records[i - 1].prev_sample : c.initial_sample);
      const t = sched.timesteps[i];
      assert.equal(t, r.t);
      near(sched.scaleModelInput(x, t), r.scaled, `step ${i} scaled input`);
      near(
        sched.step(Float32Array.from(r.model_output), t, x),
        r.prev_sample,
        `step ${i} prev sample`,
      );
    });
  });

  test(`${c.scheduler} ${c.config_name} ${c.steps} steps chained ends where diffusers does`, () => {
    // Run on our own samples: float32 rounding at the scale of the noisiest sample carries through.
    const sched = make();
    let x: Float32Array = Float32Array.from(c.initial_sample);
    const scale = Math.max(...c.initial_sample.map(Math.abs));
    for (const [i, r] of c.records.entries()) {
      const t = sched.timesteps[i];
      sched.scaleModelInput(x, t);
      x = sched.step(Float32Array.from(r.model_output), t, x);
    }
    const err = Math.max(...c.records.at(-1)!.prev_sample.map((v, k) => Math.abs(v - x[k])));
    assert.ok(
      err <= TOL * scale,
      `chained error ${err.toExponential(2)} > ${TOL} x ${scale.toFixed(2)}`,
    );
  });
}

test("every scheduler name has vectors", (t) => {
  for (const name of SCHEDULER_NAMES)
    assert.ok(
      vectors.cases.some((c) => c.scheduler === name),
      name,
    );
  t.diagnostic(`worst relative error over all scheduler vectors: ${worst.toExponential(2)}`);
});

test("unsupported scheduler configs are refused by name", () => {
  assert.throws(() => createScheduler("euler", { use_karras_sigmas: true }), UnsupportedError);
  assert.throws(
    () => createScheduler("ddim", { beta_schedule: "squaredcos_cap_v2" }),
    /beta_schedule/,
  );
  assert.throws(() => createScheduler("pndm", { skip_prk_steps: false }), /skip_prk_steps/);
  assert.throws(() => createScheduler("euler-a", {}), /seed/);
  assert.throws(() => createScheduler("lms" as SchedulerName, {}), /unknown scheduler/);
});
