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
import { openCache, type CacheChoice } from "./cache.js";
import { BundleError, UnsupportedError } from "./errors.js";
import { createWebGpuBackend, type ComponentLoader, type GpuBackend, type GpuComponent, type GpuInfo, type HostDtype, type HostTensor } from "./gpu.js";
import { float32ToHalf, halfToFloat32 } from "./half.js";
import { SOFTWARE, type GenerationParameters } from "./imageMetadata.js";
import { componentLayout, streamBundleFiles, type ComponentLayout, type LoadedBundle, type LoadOptions, type LoadProgress } from "./loader.js";
import { MANIFEST_NAME, type FileEntry, type Manifest, type SchedulerName, type Target } from "./manifest.js";
import { HUB_ENDPOINT, parseModelSpec, resolveModel, type ModelSpec } from "./modelSpec.js";
import { latents, parseSeed, type Seed } from "./noise.js";
import { Monotone } from "./progress.js";
import { createScheduler } from "./schedulers/index.js";
import { shardTensors, type Tensor, type TensorCacheIndex } from "./tensorCache.js";
import { PromptTokenizer } from "./tokenizer.js";

export const COMPONENTS = ["text_encoder", "unet", "vae_decoder"] as const;

/**
 * Progress of `loadModel`: resolving a version on the Hub, downloading files, then setting up each
 * component on the GPU. Every event has `progress` (0..1 over the whole load, never going back)
 * and `text` (one line for people); the phases add their details.
 */
export type ModelLoadProgress = { progress: number; text: string } & (
  | { phase: "resolve"; spec: string }
  | ({ phase: "download" } & LoadProgress)
  | { phase: "gpu"; component: string; componentsDone: number; componentsTotal: number }
);

export interface ModelLoadOptions {
  onProgress?: (progress: ModelLoadProgress) => void;
  signal?: AbortSignal;
  fetch?: typeof globalThis.fetch;
  /**
   * Where verified files are kept between visits: `"cache-api"` (the default, where the browser
   * has it), `"opfs"`, `"indexeddb"`, `"none"`, or a `ContentCache`. Entries are keyed by sha256
   * and verified again when taken out.
   */
  cache?: CacheChoice;
  /** The Hub that `ORG/NAME@VERSION` specs are resolved on (default https://huggingface.co). */
  endpoint?: string;
  /** Force a variant (a key of the manifest's `targets`), instead of the best one for the device. */
  variant?: string;
  /** The GPU to run on (default: the browser's WebGPU device). */
  backend?: GpuBackend;
  /** What the loader checks: "stored" (default) or "full" (also each shard's raw_sha256); see `LoadOptions.verify`. */
  verify?: LoadOptions["verify"];
  /** Decode workers (see `LoadOptions.workers`; default one per core beyond the page's own, 2..8). */
  workers?: number;
  /** Files in flight at once (default: 4, or one per decode worker; see `LoadOptions.concurrency`). */
  concurrency?: number;
  /** The decode worker's script (default: `decodeWorker.js` next to the runtime's module; see `LoadOptions.workerUrl`). */
  workerUrl?: string | URL;
}

export interface GenerateOptions {
  prompt: string;
  negativePrompt?: string;
  /** A seed in [0, 2^64) (default 0). */
  seed?: Seed;
  /** Defaults: the manifest's `scheduler` block. */
  steps?: number;
  guidance?: number;
  scheduler?: SchedulerName;
  /** Called after each denoising step. */
  onStep?: (step: number, total: number) => void;
  signal?: AbortSignal;
}

export interface GeneratedImage {
  width: number;
  height: number;
  /** 8-bit RGBA (alpha 255), as a canvas `ImageData` takes it. */
  rgba: Uint8ClampedArray;
  /** The image in [0, 1], float32 [height, width, 3] (what the native pipeline returns). */
  float: Float32Array;
  /** Milliseconds per stage. */
  timings: { textEncoder: number; unet: number; vae: number; total: number; steps: number; perStep: number[] };
  /** What made it, defaults filled in (`imageMetadata(parameters)` gives its PNG text). */
  parameters: GenerationParameters;
}

/**
 * The WebGPU variant to run: `webgpu-float16` where the device has `shader-f16` (and the bundle
 * has one), else `webgpu-float32`; its requirements checked against the device.
 */
export function pickVariant(manifest: Manifest, gpu: GpuInfo, forced?: string): { name: string; target: Target } {
  const webgpu = Object.entries(manifest.targets).filter(([, t]) => t.kind === "webgpu");
  if (!webgpu.length) {
    throw new UnsupportedError(`${manifest.model.id} ${manifest.model.version} has no WebGPU libraries (it has: ${Object.keys(manifest.targets).join(", ") || "none"})`, "repack with --targets including webgpu");
  }
  const has = (f: string) => gpu.features.includes(f);
  const fits = ([, t]: [string, Target]) => (t.requirements.features ?? []).every(has);
  let chosen: [string, Target] | undefined;
  if (forced) {
    chosen = webgpu.find(([name]) => name === forced);
    if (!chosen) throw new UnsupportedError(`no WebGPU variant ${JSON.stringify(forced)} in this bundle`, `choose one of ${webgpu.map(([n]) => n).join(", ")}`);
    if (!fits(chosen)) throw new UnsupportedError(`${forced} needs ${(chosen[1].requirements.features ?? []).join(", ")}, which this GPU lacks`);
  } else {
    const usable = webgpu.filter(fits);
    const fp16 = has("shader-f16") ? usable.find(([, t]) => t.dtype === "float16") : undefined;
    chosen = fp16 ?? usable.find(([, t]) => t.dtype === "float32");
    if (!chosen) {
      const wants = [...new Set(webgpu.flatMap(([, t]) => t.requirements.features ?? []))].filter((f) => !has(f));
      throw new UnsupportedError(`this GPU cannot run any WebGPU variant of the bundle (missing: ${wants.join(", ") || "a float32 variant"})`);
    }
  }
  const [name, target] = chosen;
  const need = target.requirements.max_buffer_bytes;
  const limit = Math.min(gpu.maxBufferSize, gpu.maxStorageBufferBindingSize);
  if (need !== undefined && need > limit) {
    throw new UnsupportedError(`${name} needs GPU buffers of ${need} bytes; this GPU allows ${limit}`, "try a browser or GPU with larger WebGPU limits, or a float16 bundle");
  }
  return { name, target };
}

/**
 * The files a variant needs: everything but the other targets' libraries (native `.so`, the
 * other WebGPU dtype) — manifest, tokenizer, weights and this variant's wasm.
 */
export function neededFiles(manifest: Manifest, target: Target): (entry: FileEntry) => boolean {
  const mine = new Set(Object.values(target.libs));
  const others = new Set(Object.values(manifest.targets).flatMap((t) => Object.values(t.libs)));
  return (entry) => mine.has(entry.path) || !others.has(entry.path);
}

/** A parameter as the variant's `main` takes it: float tensors in the variant's dtype. */
function paramFor(t: Tensor, dtype: "float32" | "float16"): HostTensor {
  if (t.dtype === "float16") {
    const bits = t.data as Uint16Array;
    return dtype === "float16" ? { dtype, shape: t.shape, data: bits } : { dtype, shape: t.shape, data: halfToFloat32(bits) };
  }
  if (t.dtype === "float32") {
    const values = t.data as Float32Array;
    return dtype === "float32" ? { dtype, shape: t.shape, data: values } : { dtype, shape: t.shape, data: float32ToHalf(values) };
  }
  if (t.dtype === "int32") return { dtype: "int32", shape: t.shape, data: t.data as Int32Array };
  // Packed codes of a quantized weight (formats/README.md, "Quantized weights"): uploaded as stored.
  if (t.dtype === "uint32") return { dtype: "uint32", shape: t.shape, data: t.data as Uint32Array };
  throw new UnsupportedError(`parameter ${t.name} has dtype ${t.dtype}, which the web runtime cannot upload`);
}

/** A float input in the variant's dtype. */
function floatInput(values: Float32Array, shape: number[], dtype: "float32" | "float16"): HostTensor {
  return { dtype, shape, data: dtype === "float16" ? float32ToHalf(values) : values };
}

/** An output as float32 (fp16 variants give float16 bits). */
function toFloat32(t: HostTensor): Float32Array {
  if (t.dtype === "float16") return halfToFloat32(t.data as Uint16Array);
  if (t.dtype === "float32") return t.data as Float32Array;
  throw new BundleError(`a component returned ${t.dtype}, not a float tensor`);
}

/**
 * diffusers' image conversion: x / 2 + 0.5 clamped to [0, 1] (float32 HWC), and
 * round(x * 255) into RGBA. `chw` is the VAE output [3, height, width].
 */
export function toImage(chw: Float32Array, height: number, width: number): { rgba: Uint8ClampedArray; float: Float32Array } {
  const plane = height * width;
  const float = new Float32Array(plane * 3);
  const rgba = new Uint8ClampedArray(plane * 4);
  for (let p = 0; p < plane; p++) {
    for (let c = 0; c < 3; c++) {
      const v = Math.min(1, Math.max(0, Math.fround(Math.fround(chw[c * plane + p] / 2) + 0.5)));
      float[p * 3 + c] = v;
      rgba[p * 4 + c] = roundHalfEven(Math.fround(v * 255)); // numpy's round(), on float32 as numpy computes it
    }
    rgba[p * 4 + 3] = 255;
  }
  return { rgba, float };
}

/** numpy's round() of a non-negative number: halves go to the even neighbour. */
function roundHalfEven(y: number): number {
  const r = Math.round(y);
  return r - y === 0.5 && r % 2 !== 0 ? r - 1 : r;
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
    private readonly components: Record<(typeof COMPONENTS)[number], GpuComponent>,
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
    const ids: HostTensor = { dtype: "int32", shape: [1, this.tokenizer.maxLength], data: this.tokenizer.encode(text) };
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
    if (!Number.isInteger(steps) || steps < 1) throw new RangeError(`steps must be a positive integer, got ${steps}`);
    if (!Number.isFinite(guidance)) throw new RangeError(`guidance must be a number, got ${guidance}`);
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
      const out = await this.components.unet.run([floatInput(batch, [2, ...shape.slice(1)], this.dtype), timestep, hiddenInput]);
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
    const timings = { textEncoder: t1 - t0, unet: t2 - t1, vae: t3 - t2, total: t3 - t0, steps: total, perStep };
    return { width, height, rgba, float, timings, parameters };
  }

  /** Free the GPU memory (and the device). */
  dispose(): void {
    this.backend.dispose();
  }
}

/** What `streamWeights` needs besides the loader's options. */
export interface StreamWeightsOptions extends LoadOptions {
  /** The dtype float parameters are uploaded in (a variant's `dtype`), given the verified manifest. */
  dtype: (manifest: Manifest) => "float32" | "float16";
  /** The components to load (default: every component whose tensor index is included). */
  components?: readonly string[];
  /**
   * Where a component's parameters go, called once per component when every file that is not a
   * weight shard (tokenizer, tensor indexes, libraries) is in `files`; its parameters then follow
   * in `params` order of arrival, then `finish`.
   */
  begin: (component: string, files: Map<string, Uint8Array>, manifest: Manifest) => Promise<ComponentLoader>;
  /** A component's parameters are all set and it is finishing (`done` components finished before it). */
  onComponent?: (component: string, done: number, total: number) => void;
}

/** A promise with its resolve/reject at hand. */
function deferred<T>(): { promise: Promise<T>; resolve: (v: T) => void; reject: (e: unknown) => void } {
  let resolve!: (v: T) => void;
  let reject!: (e: unknown) => void;
  const promise = new Promise<T>((res, rej) => { resolve = res; reject = rej; });
  promise.catch(() => {}); // awaited later, or never once the load failed
  return { promise, resolve, reject };
}

/** Resolves with `p`, or rejects as soon as `signal` aborts. */
function untilAborted<T>(p: Promise<T>, signal: AbortSignal): Promise<T> {
  if (signal.aborted) return Promise.reject(signal.reason);
  return new Promise((resolve, reject) => {
    const onAbort = () => reject(signal.reason);
    signal.addEventListener("abort", onAbort, { once: true });
    p.then(resolve, reject).finally(() => signal.removeEventListener("abort", onAbort));
  });
}

/**
 * Stream a bundle's weights into GPU components, shard by shard: the tokenizer, tensor indexes and
 * libraries first (kept: they are small), then every weight shard fetched, verified and decoded (in
 * decode workers), its tensors converted to `dtype` and handed to its component's loader, and the
 * shard dropped — so no more than `concurrency` shards are ever in memory. Each component finishes
 * (e.g. compiles its shaders) as soon as its last parameter is in, while the others still load.
 * The returned bundle has `files` without the shards and no `tensors`. On failure every component
 * begun is disposed. `loadModel` runs this with its GPU backend.
 */
export async function streamWeights(
  url: string | URL,
  opts: StreamWeightsOptions,
): Promise<{ bundle: LoadedBundle; components: Record<string, GpuComponent> }> {
  interface State {
    name: string;
    layout?: ComponentLayout;
    loader: ReturnType<typeof deferred<ComponentLoader>>;
    paramIndex?: Map<string, number>;
    remaining: number;
    finished?: Promise<GpuComponent>;
  }
  const files = new Map<string, Uint8Array>();
  const states = new Map<string, State>();
  const shardOwners = new Map<string, State[]>(); // components may share a tensor index (and its shards)
  let manifest!: Manifest;
  let dtype: "float32" | "float16" = "float32";
  let firstLeft = 0;
  let done = 0;
  const firstIn = deferred<void>();
  const isShard = (entry: FileEntry, m: Manifest) =>
    Object.values(m.components).some((c) => entry.path !== c.weights && entry.path.startsWith(c.weights.slice(0, c.weights.lastIndexOf("/") + 1)));
  const beginAll = () => {
    for (const state of states.values()) {
      if (!state.layout) {
        state.loader.reject(new BundleError(`${manifest.components[state.name].weights}: not loaded`, { file: manifest.components[state.name].weights }));
        continue;
      }
      opts.begin(state.name, files, manifest).then(state.loader.resolve, state.loader.reject);
    }
    firstIn.resolve();
  };

  let streamed: Awaited<ReturnType<typeof streamBundleFiles>>;
  try {
    streamed = await streamBundleFiles(
      url,
      {
        releases: true,
        first: (entry, m) => !isShard(entry, m),
        start: (m, entries) => {
          manifest = m;
          dtype = opts.dtype(m);
          const names = opts.components ?? Object.keys(m.components).filter((c) => entries.some((e) => e.path === m.components[c].weights));
          for (const name of names) {
            if (!m.components[name]) throw new BundleError(`bundle has no component ${JSON.stringify(name)}`, { file: MANIFEST_NAME });
            states.set(name, { name, loader: deferred(), remaining: m.components[name].params.length });
          }
          firstLeft = entries.filter((e) => !isShard(e, m)).length;
          if (firstLeft === 0) beginAll();
        },
        onFile: async ({ entry, content, release }, signal) => {
          if (!isShard(entry, manifest)) {
            files.set(entry.path, content);
            for (const owner of states.values()) {
              if (manifest.components[owner.name].weights !== entry.path) continue;
              owner.layout = componentLayout(manifest, owner.name, content);
              owner.paramIndex = new Map(manifest.components[owner.name].params.map((p, i) => [p, i]));
              for (const path of owner.layout.shards.keys()) shardOwners.set(path, [...(shardOwners.get(path) ?? []), owner]);
            }
            if (--firstLeft === 0) beginAll();
            return;
          }
          await untilAborted(firstIn.promise, signal);
          const owners = shardOwners.get(entry.path);
          if (!owners) {
            files.set(entry.path, content); // in a weights folder but no index names it: keep it as a plain file
            return;
          }
          for (const state of owners) {
            const loader = await untilAborted(state.loader.promise, signal);
            const shard = state.layout!.shards.get(entry.path)!;
            for (const t of shardTensors(content, shard, entry.path)) {
              await loader.setParam(state.paramIndex!.get(t.name)!, paramFor(t, dtype));
              state.remaining -= 1;
            }
            if (state.remaining === 0) {
              opts.onComponent?.(state.name, done, states.size);
              state.finished = loader.finish();
              state.finished.then(() => (done += 1), () => {});
            }
          }
          release(); // every tensor is uploaded (loaders copy what they keep): the buffer is decoded into again
        },
      },
      opts,
    );
    for (const state of states.values()) {
      if (state.remaining > 0) {
        const weights = manifest.components[state.name].weights;
        throw new BundleError(`${state.name}: ${state.remaining} parameters were not loaded (are all shards of ${weights} included?)`, { file: weights });
      }
    }
    const components: Record<string, GpuComponent> = {};
    for (const state of states.values()) components[state.name] = await state.finished!;
    const indexes: Record<string, TensorCacheIndex> = {};
    for (const state of states.values()) indexes[state.name] = state.layout!.index;
    const { manifestUrl, baseUrl, commit, warnings, stats } = streamed;
    return { bundle: { manifest, manifestUrl, baseUrl, commit, files, indexes, tensors: {}, warnings, stats }, components };
  } catch (err) {
    // Free what is on the GPU: finished components, and the loaders of the others.
    for (const state of states.values()) {
      if (state.finished) state.finished.then((c) => c.dispose(), () => {});
      else state.loader.promise.then((l) => l.dispose(), () => {});
    }
    throw err;
  }
}

/** A `ComponentLoader` over a backend without `beginComponent`: collects the parameters, then `loadComponent`. */
function collectingLoader(backend: GpuBackend, name: string, wasm: Uint8Array, count: number): ComponentLoader {
  let params: HostTensor[] = new Array(count);
  return {
    // A copy: the tensor may be a view of a shard the loader lets go of once this returns.
    setParam: (i, t) => { params[i] = { dtype: t.dtype, shape: t.shape, data: t.data.slice() }; },
    finish: () => backend.loadComponent(name, wasm, params).finally(() => (params = [])),
    dispose: () => { params = []; },
  };
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
    opts.onProgress?.({ phase: "resolve", spec: what, progress: 0, text: `Resolving ${what} on ${opts.endpoint ?? HUB_ENDPOINT}` });
  }
  const resolved = await resolveModel(spec, { endpoint: opts.endpoint, fetch: opts.fetch, signal: opts.signal });
  const cache = openCache(opts.cache);

  const backend = opts.backend ?? (await createWebGpuBackend());
  try {
    let chosen: { name: string; target: Target } | undefined;
    const choose = (manifest: Manifest) => (chosen ??= pickVariant(manifest, backend.info, opts.variant));
    const { bundle, components } = await streamWeights(resolved.manifestUrl, {
      fetch: opts.fetch,
      cache,
      signal: opts.signal,
      manifestSha256: resolved.manifestSha256,
      expectModel: resolved.repo === undefined ? undefined : { id: resolved.repo, version: resolved.version },
      verify: opts.verify,
      workers: opts.workers,
      concurrency: opts.concurrency,
      workerUrl: opts.workerUrl,
      onProgress: (p) => {
        download = p.progress;
        opts.onProgress?.({ ...p, phase: "download", progress: overall() });
      },
      include: (entry, manifest) => neededFiles(manifest, choose(manifest).target)(entry),
      dtype: (manifest) => choose(manifest).target.dtype,
      components: COMPONENTS,
      begin: async (comp, files, manifest) => {
        const { name, target } = choose(manifest);
        const lib = target.libs[comp];
        const wasm = lib === undefined ? undefined : files.get(lib);
        if (!lib || !wasm) throw new BundleError(`${name}: no library or weights for ${comp}`, { file: MANIFEST_NAME });
        const count = manifest.components[comp].params.length;
        return backend.beginComponent ? backend.beginComponent(lib, wasm, count) : collectingLoader(backend, lib, wasm, count);
      },
      onComponent: (component, done) => {
        gpuDone = done;
        const text = `Preparing ${component} on the GPU (${done + 1}/${total})`;
        opts.onProgress?.({ phase: "gpu", component, componentsDone: done, componentsTotal: total, progress: overall(), text });
      },
    });
    const { name, target } = choose(bundle.manifest);
    gpuDone = total;
    download = 1;
    const ready = `Ready: ${bundle.manifest.model.id} ${bundle.manifest.model.version} (${name})`;
    opts.onProgress?.({ phase: "gpu", component: "", componentsDone: total, componentsTotal: total, progress: overall(), text: ready });
    return new Pipeline(bundle, name, target, backend, components as Record<(typeof COMPONENTS)[number], GpuComponent>);
  } catch (err) {
    if (!opts.backend) backend.dispose();
    throw err;
  }
}

export type { ComponentLoader, GpuBackend, GpuComponent, GpuInfo, HostDtype, HostTensor };
