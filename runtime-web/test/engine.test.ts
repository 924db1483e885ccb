/**
 * engine.ts: loadModel and Pipeline without a GPU: the golden bundle extended with WebGPU and
 * native targets and a vae_decoder, run on a stand-in backend that records every call. The real
 * WebGPU run is tests/web/test_browser.py.
 */
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, test } from "node:test";

import { MemoryCache } from "../src/cache.js";
import { loadModel } from "../src/engine.js";
import type { BundleError } from "../src/errors.js";
import { RUNTIME_VERSION } from "../src/generated/version.js";
import { float32ToHalf, halfToFloat32 } from "../src/half.js";
import { lockManifest } from "../src/lock.js";
import { latents } from "../src/noise.js";
import { createScheduler } from "../src/schedulers/index.js";
import { loadBundleFiles } from "../src/stream.js";
import { PromptTokenizer } from "../src/tokenizer.js";
import type { ModelLoadProgress } from "../src/types.js";

import { C, extendedBundle, fakeBackend, sha } from "./fakeModel.js";
import { serve, serveHub } from "./helpers.js";

describe("loadModel", () => {
  test("fetches only the manifest, tokenizer, weights and the chosen variant's wasm", async () => {
    const bundle = extendedBundle();
    const server = await serve(bundle.dir);
    try {
      const backend = fakeBackend();
      const progress: string[] = [];
      const model = await loadModel(`${server.url}manifest.json`, {
        backend,
        onProgress: (p) => progress.push(p.phase),
      });
      assert.equal(model.variant, "webgpu-float32");
      const fetched = server.requests.map((p) => p.slice(1)).sort();
      const expected = bundle.manifest.files
        .map((f) => f.path)
        .filter((p) => !p.startsWith("libs/") || p.startsWith("libs/webgpu-float32/"));
      assert.deepEqual(fetched, ["manifest.json", ...expected].sort());
      assert.ok(progress.includes("download") && progress.includes("gpu"));
      // float16 weights are widened to float32 for the fp32 variant, in the manifest's params order.
      const params = backend.loaded.get("libs/webgpu-float32/unet.wasm")!;
      assert.equal(params.length, bundle.manifest.components.unet.params.length);
      // The model keeps no weights on the host: only the files that are not shards.
      assert.deepEqual(model.bundle.tensors, {});
      assert.ok(![...model.bundle.files.keys()].some((p) => p.includes("params_shard")));
      const raw = (await loadBundleFiles(`${server.url}manifest.json`)).tensors.unet;
      bundle.manifest.components.unet.params.forEach((name, i) => {
        const t = raw.get(name)!;
        assert.deepEqual(params[i].shape, t.shape);
        if (t.dtype === "float16") {
          assert.equal(params[i].dtype, "float32");
          assert.deepEqual(params[i].data, halfToFloat32(t.data as Uint16Array));
        }
      });
    } finally {
      await server.close();
      bundle.remove();
    }
  });

  test("takes webgpu-float16 where the device has shader-f16, uploading float16 bits as they are", async () => {
    const bundle = extendedBundle();
    const server = await serve(bundle.dir);
    try {
      const backend = fakeBackend(["shader-f16"]);
      const model = await loadModel(`${server.url}manifest.json`, { backend });
      assert.equal(model.variant, "webgpu-float16");
      assert.ok(server.requests.some((p) => p.startsWith("/libs/webgpu-float16/")));
      assert.ok(
        !server.requests.some((p) => p.startsWith("/libs/webgpu-float32/") || p.endsWith(".so")),
      );
      const params = backend.loaded.get("libs/webgpu-float16/unet.wasm")!;
      const reference = (await loadBundleFiles(`${server.url}manifest.json`)).tensors.unet;
      bundle.manifest.components.unet.params.forEach((name, i) => {
        const t = reference.get(name)!;
        if (t.dtype === "int32")
          return assert.deepEqual(params[i], { dtype: "int32", shape: t.shape, data: t.data });
        assert.equal(params[i].dtype, "float16");
        assert.deepEqual(
          params[i].data,
          t.dtype === "float16" ? t.data : float32ToHalf(t.data as Float32Array),
        ); // float16 bits as they are
      });
      assert.equal(model.variant, "webgpu-float16");
    } finally {
      await server.close();
      bundle.remove();
    }
  });

  test("a lock record pins the commit URL and the manifest sha256, and the manifest must be the locked model", async () => {
    const bundle = extendedBundle();
    const commit = "a".repeat(40);
    const server = await serve(bundle.dir, `/sdpack/golden/resolve/${commit}/`);
    try {
      const manifestSha = sha(readFileSync(join(bundle.dir, "manifest.json")));
      const endpoint = server.url.replace(/\/sdpack\/.*$/, "");
      const lock = {
        lock_version: 1 as const,
        repo: "sdpack/golden",
        version: "1.0.0",
        commit,
        manifest_sha256: manifestSha,
        endpoint,
      };
      assert.equal(lockManifest(lock).url, `${server.url}manifest.json`);
      const model = await loadModel(lock, { backend: fakeBackend() });
      assert.equal(model.manifest.model.id, bundle.manifest.model.id);
      assert.equal(model.commit, commit);
      const backend = fakeBackend();
      await assert.rejects(
        loadModel({ ...lock, manifest_sha256: "0".repeat(64) }, { backend }),
        (err: BundleError) => {
          assert.equal(err.file, "manifest.json");
          assert.match(err.message, /sha256 differs/);
          return true;
        },
      );
      await assert.rejects(
        loadModel({ ...lock, version: "2.0.0" }, { backend }),
        /manifest\.json: is sdpack\/golden 1\.0\.0, not sdpack\/golden 2\.0\.0/,
      );
      assert.throws(() => lockManifest({ ...lock, commit: "main" }), /commit/);
      assert.throws(
        () => lockManifest({ ...lock, lock_version: 2 as unknown as 1 }),
        /lock_version/,
      );
    } finally {
      await server.close();
      bundle.remove();
    }
  });

  test("ORG/NAME@VERSION resolves its tag to a commit through the Hub API, then loads by commit", async () => {
    const bundle = extendedBundle();
    const commit = "c".repeat(40);
    const hub = await serveHub(bundle.dir, "sdpack/golden", { "v1.0.0": commit, "v2.0.0": commit });
    try {
      const model = await loadModel("sdpack/golden@1.0.0", {
        backend: fakeBackend(),
        endpoint: hub.url,
      });
      assert.equal(hub.requests[0], "/api/models/sdpack/golden/revision/v1.0.0");
      assert.ok(
        hub.requests.slice(1).every((p) => p.startsWith(`/sdpack/golden/resolve/${commit}/`)),
        hub.requests.join(" "),
      );
      assert.equal(model.commit, commit);
      assert.equal(model.modelId, "sdpack/golden@1.0.0");
      // v-prefixed versions and commits work too; a commit needs no API call.
      hub.requests.length = 0;
      await loadModel(`sdpack/golden@${commit}`, { backend: fakeBackend(), endpoint: hub.url });
      assert.ok(!hub.requests.some((p) => p.startsWith("/api/")));
      await loadModel("sdpack/golden@v1.0.0", { backend: fakeBackend(), endpoint: `${hub.url}/` });
      // A tag that holds another version, a missing version, a missing repository: one clear error each.
      await assert.rejects(
        loadModel("sdpack/golden@2.0.0", { backend: fakeBackend(), endpoint: hub.url }),
        /is sdpack\/golden 1\.0\.0, not sdpack\/golden 2\.0\.0/,
      );
      await assert.rejects(
        loadModel("sdpack/golden@3.0.0", { backend: fakeBackend(), endpoint: hub.url }),
        (err: BundleError) => {
          assert.equal(
            err.message,
            `sdpack/golden@v3.0.0: no such revision in sdpack/golden on ${hub.url}`,
          );
          assert.match(err.hint!, /tag/);
          return true;
        },
      );
      await assert.rejects(
        loadModel("sdpack/nope@1.0.0", { backend: fakeBackend(), endpoint: hub.url }),
        /repository sdpack\/nope not found/,
      );
      await assert.rejects(
        loadModel("sdpack/golden", { backend: fakeBackend(), endpoint: hub.url }),
        /model "sdpack\/golden": it does not say which version.*accepted: ORG\/NAME@VERSION/,
      );
    } finally {
      await hub.close();
      bundle.remove();
    }
  });

  test("progress: one fraction over the whole load that never goes back and ends at 1, with a line of text", async () => {
    const bundle = extendedBundle();
    const hub = await serveHub(bundle.dir, "sdpack/golden", { "v1.0.0": "d".repeat(40) });
    try {
      const events: ModelLoadProgress[] = [];
      await loadModel("sdpack/golden@1.0.0", {
        backend: fakeBackend(),
        endpoint: hub.url,
        onProgress: (p) => events.push(p),
      });
      const fractions = events.map((p) => p.progress);
      assert.ok(
        fractions.every((f, i) => f >= 0 && f <= 1 && (i === 0 || f >= fractions[i - 1])),
        fractions.join(" "),
      );
      assert.equal(fractions.at(-1), 1);
      assert.deepEqual([...new Set(events.map((p) => p.phase))], ["resolve", "download", "gpu"]);
      assert.equal(events[0].text, `Resolving sdpack/golden@1.0.0 on ${hub.url}`);
      assert.match(
        events.find((p) => p.phase === "download")!.text,
        /^Loading files: \d+\/\d+, [\d.]+ of [\d.]+ MiB$/,
      );
      assert.match(
        events.find((p) => p.phase === "gpu")!.text,
        /^Preparing (text_encoder|unet|vae_decoder) on the GPU \(\d\/3\)$/,
      );
      assert.equal(events.at(-1)!.text, "Ready: sdpack/golden 1.0.0 (webgpu-float32)");
    } finally {
      await hub.close();
      bundle.remove();
    }
  });

  test("a second load comes from the cache (only the manifest is fetched)", async () => {
    const bundle = extendedBundle();
    const server = await serve(bundle.dir);
    try {
      const cache = new MemoryCache();
      await loadModel(`${server.url}manifest.json`, { backend: fakeBackend(), cache });
      const first = server.requests.length;
      await loadModel(`${server.url}manifest.json`, { backend: fakeBackend(), cache });
      assert.deepEqual(server.requests.slice(first), ["/manifest.json"]);
    } finally {
      await server.close();
      bundle.remove();
    }
  });
});

describe("Pipeline.generate", () => {
  for (const features of [[], ["shader-f16"]]) {
    test(`runs the native loop: CFG batch [uncond, cond], float32[2] timesteps, latents / scaling_factor (${features.length ? "fp16" : "fp32"})`, async () => {
      const bundle = extendedBundle();
      const server = await serve(bundle.dir);
      try {
        const backend = fakeBackend(features);
        const model = await loadModel(`${server.url}manifest.json`, { backend });
        const steps: number[] = [];
        const image = await model.generate({
          prompt: "a red cat",
          negativePrompt: "blurry",
          seed: "7",
          steps: 4,
          guidance: 5,
          scheduler: "euler",
          onStep: (i) => steps.push(i),
        });
        assert.deepEqual(steps, [1, 2, 3, 4]);
        const calls = backend.calls;
        assert.deepEqual(
          calls.map((c) => c.component),
          ["text_encoder", "text_encoder", "unet", "unet", "unet", "unet", "vae_decoder"],
        );
        const tok = PromptTokenizer.fromBundle(model.manifest, model.bundle.files);
        assert.deepEqual(calls[0].inputs[0].data, tok.encode("blurry"));
        assert.deepEqual(calls[1].inputs[0].data, tok.encode("a red cat"));
        const sched = createScheduler("euler", model.manifest.scheduler.config, { seed: "7" });
        sched.setTimesteps(4);
        const dt = features.length ? "float16" : "float32";
        calls.slice(2, 6).forEach((c, i) => {
          assert.deepEqual(
            c.inputs.map((t) => t.dtype),
            [dt, "float32", dt],
          );
          assert.deepEqual(
            c.inputs[1].data,
            new Float32Array([sched.timesteps[i], sched.timesteps[i]]),
          );
          assert.deepEqual(c.inputs[2].shape, [2, 77, C]);
          const x = c.inputs[0].data;
          assert.deepEqual(x.subarray(0, 256), x.subarray(256)); // both halves are the same latents
        });
        // The first UNet input: the seeded noise × init sigma, scaled for the first timestep.
        const x0 = latents("7", [1, 4, 8, 8]).map((v) => v * Math.fround(sched.initNoiseSigma));
        const expected = sched.scaleModelInput(x0, sched.timesteps[0]);
        const got = calls[2].inputs[0];
        const first =
          got.dtype === "float16"
            ? halfToFloat32(got.data.subarray(0, 256) as Uint16Array)
            : got.data.subarray(0, 256);
        if (dt === "float32") assert.deepEqual(first, expected);
        else assert.deepEqual(first, halfToFloat32(float32ToHalf(expected)));
        // Unconditional half sees the negative prompt's hidden states, conditional the prompt's.
        const h = calls[2].inputs[2].data;
        assert.notDeepEqual(h.subarray(0, 77 * C), h.subarray(77 * C));
        assert.equal(image.width, 64);
        assert.equal(image.height, 64);
        assert.equal(image.rgba.length, 64 * 64 * 4);
        assert.equal(image.float.length, 64 * 64 * 3);
        assert.equal(image.timings.steps, 4);
        assert.deepEqual(image.parameters, {
          prompt: "a red cat",
          negativePrompt: "blurry",
          seed: "7",
          steps: 4,
          guidance: 5,
          scheduler: "euler",
          model: "sdpack/golden@1.0.0",
          width: 64,
          height: 64,
          variant: dt === "float16" ? "webgpu-float16" : "webgpu-float32",
          software: `sdpack runtime-web ${RUNTIME_VERSION}`,
        });
      } finally {
        await server.close();
        bundle.remove();
      }
    });
  }

  test("an aborted generation stops between steps", async () => {
    const bundle = extendedBundle();
    const server = await serve(bundle.dir);
    try {
      const backend = fakeBackend();
      const model = await loadModel(`${server.url}manifest.json`, { backend });
      const controller = new AbortController();
      await assert.rejects(
        model.generate({
          prompt: "x",
          steps: 10,
          signal: controller.signal,
          onStep: (i) => i === 2 && controller.abort(),
        }),
        { name: "AbortError" },
      );
      assert.equal(backend.calls.filter((c) => c.component === "unet").length, 2);
    } finally {
      await server.close();
      bundle.remove();
    }
  });
});
