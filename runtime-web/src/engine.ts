/**
 * Text-to-image in the browser: load a bundle by URL or lock record (only the files the chosen
 * WebGPU variant needs, each verified), put its components on the GPU, and run the loop
 * packer/runtime/generate.py runs — same tokens, same seeded noise, same scheduler steps,
 * classifier-free guidance over a batch of [unconditional, conditional], VAE decode, and
 * diffusers' conversion to 8-bit — so an image matches the native one for the same request.
 *
 *   const model = await loadModel("sdpack/tiny-sd@1.0.0", { onProgress: (p) => show(p.progress, p.text) });
 *   const image = await model.generate({ prompt: "a castle", seed: 42 });   // image.rgba, image.parameters
 */
import { openCache } from "./cache.js";
import { BundleError } from "./errors.js";
import { fetchManifest } from "./fetch.js";
import {
  COMPONENTS,
  MANIFEST_NAME,
  type ComponentName,
  type Manifest,
  type Target,
} from "./formats.js";
import {
  createWebGpuBackend,
  type GpuBackend,
  type GpuComponent,
  type GpuInfo,
  type HostTensor,
} from "./gpu.js";
import { float32ToHalf, halfToFloat32 } from "./half.js";
import { toImage } from "./image.js";
import { SOFTWARE, type GenerationParameters } from "./imageMetadata.js";
import { HUB_ENDPOINT, parseModelSpec, resolveModel, type ModelSpec } from "./modelSpec.js";
import { latents, parseSeed } from "./noise.js";
import { Monotone } from "./progress.js";
import { createScheduler } from "./schedulers/index.js";
import { PromptTokenizer } from "./tokenizer.js";
import type {
  GeneratedImage,
  GenerateOptions,
  LoadedBundle,
  LoadOptions,
  ModelLoadOptions,
} from "./types.js";
import { neededFiles, pickVariant } from "./variant.js";
import { collectingLoader, streamWeights } from "./weights.js";

/** A float input in the variant's dtype. */
function floatInput(
  values: Float32Array,
  shape: number[],
  dtype: "float32" | "float16",
): HostTensor {
  return { dtype, shape, data: dtype === "float16" ? float32ToHalf(values) : values };
}

/** An output as float32 (fp16 variants give float16 bits). */
function toFloat32(t: HostTensor): Float32Array {
  if (t.dtype === "float16") return halfToFloat32(t.data as Uint16Array);
  if (t.dtype === "float32") return t.data as Float32Array;
  throw new BundleError(`a component returned ${t.dtype}, not a float tensor`);
}

function now(): number {
  return globalThis.performance?.now() ?? Date.now();
}

/** Let the page paint and the abort signal land between GPU calls. */
function yieldToEventLoop(): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, 0));
}

export class Pipeline {
  readonly tokenizer: PromptTokenizer;
  readonly dtype: "float32" | "float16";

  constructor(
    readonly bundle: LoadedBundle,
    readonly variant: string,
    readonly target: Target,
    private readonly backend: GpuBackend,
    private readonly components: Record<ComponentName, GpuComponent>,
  ) {
    this.tokenizer = PromptTokenizer.fromBundle(bundle.manifest, bundle.files);
    this.dtype = target.dtype;
  }

  get manifest(): Manifest {
    return this.bundle.manifest;
  }

  get gpu(): GpuInfo {
    return this.backend.info;
  }

  /** `ORG/NAME@VERSION` from the manifest. */
  get modelId(): string {
    return `${this.manifest.model.id}@${this.manifest.model.version}`;
  }

  /** The Hub commit the bundle was read at, where known (a pinned spec or URL, or the server's `X-Repo-Commit`). */
  get commit(): string | undefined {
    return this.bundle.commit;
  }

  /** Text-encoder hidden states [1, 77, C] of one prompt, as float32. */
  async encodePrompt(text: string): Promise<{ data: Float32Array; shape: number[] }> {
    const ids: HostTensor = {
      dtype: "int32",
      shape: [1, this.tokenizer.maxLength],
      data: this.tokenizer.encode(text),
    };
    const out = await this.components.text_encoder.run([ids]);
    return { data: toFloat32(out), shape: out.shape };
  }

  async generate(opts: GenerateOptions): Promise<GeneratedImage> {
    const t0 = now();
    const m = this.manifest;
    const lat = m.architecture.latent;
    const steps = opts.steps ?? m.scheduler.steps;
    const guidance = opts.guidance ?? m.scheduler.guidance;
    const seed = parseSeed(opts.seed ?? 0);
    if (!Number.isInteger(steps) || steps < 1)
      throw new RangeError(`steps must be a positive integer, got ${steps}`);
    if (!Number.isFinite(guidance))
      throw new RangeError(`guidance must be a number, got ${guidance}`);
    const schedulerName = opts.scheduler ?? m.scheduler.default;
    const scheduler = createScheduler(schedulerName, m.scheduler.config, { seed });
    const abort = () => opts.signal?.throwIfAborted();
    abort();

    const uncond = await this.encodePrompt(opts.negativePrompt ?? "");
    const cond = await this.encodePrompt(opts.prompt);
    const hiddenShape = [2, ...uncond.shape.slice(1)];
    const hidden = new Float32Array(uncond.data.length * 2);
    hidden.set(uncond.data);
    hidden.set(cond.data, uncond.data.length);
    const hiddenInput = floatInput(hidden, hiddenShape, this.dtype);
    const t1 = now();

    const shape = [1, lat.channels, lat.height, lat.width];
    const n = lat.channels * lat.height * lat.width;
    scheduler.setTimesteps(steps);
    const sigma = Math.fround(scheduler.initNoiseSigma);
    let x: Float32Array = latents(seed, shape).map((v) => v * sigma);
    const g = Math.fround(guidance);
    const total = scheduler.timesteps.length;
    const perStep: number[] = [];
    for (let i = 0; i < total; i++) {
      abort();
      const ts = now();
      const t = scheduler.timesteps[i];
      const xIn = scheduler.scaleModelInput(x, t);
      const batch = new Float32Array(2 * n);
      batch.set(xIn);
      batch.set(xIn, n);
      const timestep: HostTensor = { dtype: "float32", shape: [2], data: new Float32Array([t, t]) };
      const out = await this.components.unet.run([
        floatInput(batch, [2, ...shape.slice(1)], this.dtype),
        timestep,
        hiddenInput,
      ]);
      const pred = toFloat32(out);
      const guided = new Float32Array(n);
      for (let j = 0; j < n; j++) {
        const u = pred[j];
        guided[j] = u + g * Math.fround(pred[n + j] - u);
      }
      x = scheduler.step(guided, t, x);
      perStep.push(now() - ts);
      opts.onStep?.(i + 1, total);
      await yieldToEventLoop();
    }
    abort();
    const t2 = now();

    const scale = Math.fround(lat.scaling_factor);
    const z = x.map((v) => v / scale);
    const image = await this.components.vae_decoder.run([floatInput(z, shape, this.dtype)]);
    const [, , height, width] = image.shape;
    const { rgba, float } = toImage(toFloat32(image), height, width);
    const t3 = now();
    const parameters: GenerationParameters = {
      prompt: opts.prompt,
      negativePrompt: opts.negativePrompt ?? "",
      seed: seed.toString(),
      steps,
      guidance,
      scheduler: schedulerName,
      model: this.modelId,
      ...(this.commit ? { commit: this.commit } : {}),
      width,
      height,
      variant: this.variant,
      software: SOFTWARE,
    };
    const timings = {
      textEncoder: t1 - t0,
      unet: t2 - t1,
      vae: t3 - t2,
      total: t3 - t0,
      steps: total,
      perStep,
    };
    return { width, height, rgba, float, timings, parameters };
  }

  /** Free the GPU memory (and the device). */
  dispose(): void {
    this.backend.dispose();
  }
}

/**
 * Load a model for WebGPU, by `ModelSpec`: `ORG/NAME@VERSION` (its tag resolved to a commit on
 * `endpoint`, then loaded by commit), `ORG/NAME@<commit>`, a manifest URL (any host, e.g.
 * `…/resolve/{commit}/manifest.json`) or bundle folder URL, or a lock record (its commit and
 * manifest sha256 pinned). Only the manifest, tokenizer, weights and the chosen variant's wasm
 * are fetched; each file is verified before use or caching (in the Cache API by default, see
 * `ModelLoadOptions.cache`), and weight shards stream to the GPU one by one (`streamWeights`),
 * decoded in Web Workers: the page never holds the decoded model. Errors are `BundleError`s naming
 * the file or the spec (`UnsupportedError` for a GPU or bundle that cannot run here).
 */
export async function loadModel(spec: ModelSpec, opts: ModelLoadOptions = {}): Promise<Pipeline> {
  const total = COMPONENTS.length;
  const fraction = new Monotone();
  let download = 0;
  let gpuDone = 0;
  // 90% for the files, 10% for the GPU setup (which overlaps the last downloads).
  const overall = () => fraction.next(0.9 * download + 0.1 * (gpuDone / total));
  const parsed = parseModelSpec(spec);
  if (parsed.kind === "hub" && parsed.version !== undefined) {
    const what = `${parsed.repo}@${parsed.version}`;
    opts.onProgress?.({
      phase: "resolve",
      spec: what,
      progress: 0,
      text: `Resolving ${what} on ${opts.endpoint ?? HUB_ENDPOINT}`,
    });
  }
  const resolved = await resolveModel(spec, {
    endpoint: opts.endpoint,
    fetch: opts.fetch,
    signal: opts.signal,
  });
  const cache = openCache(opts.cache);

  const backend = opts.backend ?? (await createWebGpuBackend());
  try {
    const loadOptions: LoadOptions = {
      fetch: opts.fetch,
      cache,
      signal: opts.signal,
      manifestSha256: resolved.manifestSha256,
      expectModel:
        resolved.repo === undefined ? undefined : { id: resolved.repo, version: resolved.version },
      verify: opts.verify,
      workers: opts.workers,
      concurrency: opts.concurrency,
      workerUrl: opts.workerUrl,
    };
    // The manifest says which variant runs here, and so which files to fetch and in which dtype.
    const fetched = await fetchManifest(resolved.manifestUrl, loadOptions);
    const { manifest } = fetched;
    const { name, target } = pickVariant(manifest, backend.info, opts.variant);
    const { bundle, components } = await streamWeights(fetched, {
      ...loadOptions,
      include: neededFiles(manifest, target),
      dtype: target.dtype,
      components: COMPONENTS,
      begin: async (comp, files) => {
        const lib = target.libs[comp];
        const wasm = lib === undefined ? undefined : files.get(lib);
        if (!lib || !wasm)
          throw new BundleError(`${name}: no library or weights for ${comp}`, {
            file: MANIFEST_NAME,
          });
        const count = manifest.components[comp].params.length;
        return backend.beginComponent
          ? backend.beginComponent(lib, wasm, count)
          : collectingLoader(backend, lib, wasm, count);
      },
      onProgress: (p) => {
        download = p.progress;
        opts.onProgress?.({ ...p, phase: "download", progress: overall() });
      },
      onComponent: (component, done) => {
        gpuDone = done;
        const text = `Preparing ${component} on the GPU (${done + 1}/${total})`;
        opts.onProgress?.({
          phase: "gpu",
          component,
          componentsDone: done,
          componentsTotal: total,
          progress: overall(),
          text,
        });
      },
    });
    gpuDone = total;
    download = 1;
    const ready = `Ready: ${manifest.model.id} ${manifest.model.version} (${name})`;
    opts.onProgress?.({
      phase: "gpu",
      component: "",
      componentsDone: total,
      componentsTotal: total,
      progress: overall(),
      text: ready,
    });
    return new Pipeline(
      bundle,
      name,
      target,
      backend,
      components as Record<ComponentName, GpuComponent>,
    );
  } catch (err) {
    if (!opts.backend) backend.dispose();
    throw err;
  }
}
