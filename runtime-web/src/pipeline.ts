/**
 * Text-to-image in the browser: load a bundle by URL or lock record (only the files the chosen
 * WebGPU variant needs, each verified), put its components on the GPU, and run the loop
 * packer/runtime/generate.py runs — same tokens, same seeded noise, same scheduler steps,
 * classifier-free guidance over a batch of [unconditional, conditional], VAE decode, and
 * diffusers' conversion to 8-bit — so an image matches the native one for the same request.
 *
 *   const model = await loadModel("https://huggingface.co/org/m/resolve/<commit>/manifest.json",
 *                                 { cache: new BrowserCache(), onProgress: (p) => show(p) });
 *   const { rgba, width, height } = await model.generate({ prompt: "a castle", seed: 42 });
 */
import type { ContentCache } from "./cache.js";
import { BundleError, UnsupportedError } from "./errors.js";
import { createWebGpuBackend, type GpuBackend, type GpuComponent, type GpuInfo, type HostDtype, type HostTensor } from "./gpu.js";
import { float32ToHalf, halfToFloat32 } from "./half.js";
import { hubManifestUrl, loadBundleFiles, type LoadedBundle, type LoadProgress } from "./loader.js";
import type { FileEntry, Manifest, SchedulerName, Target } from "./manifest.js";
import { latents, parseSeed, type Seed } from "./noise.js";
import { createScheduler } from "./schedulers/index.js";
import type { Tensor } from "./tensorCache.js";
import { PromptTokenizer } from "./tokenizer.js";

export const COMPONENTS = ["text_encoder", "unet", "vae_decoder"] as const;

/** A lock record (manifests/lock.schema.json), as `packer resolve --lock-out` writes it. */
export interface LockRecord {
  lock_version: 1;
  repo: string;
  version: string;
  commit: string;
  manifest_sha256: string;
  endpoint: string;
}

/** Progress of `loadModel`: downloading files, then setting up each component on the GPU. */
export type ModelLoadProgress =
  | ({ phase: "download" } & LoadProgress)
  | { phase: "gpu"; component: string; componentsDone: number; componentsTotal: number };

export interface ModelLoadOptions {
  onProgress?: (progress: ModelLoadProgress) => void;
  signal?: AbortSignal;
  fetch?: typeof globalThis.fetch;
  cache?: ContentCache;
  /** Force a variant (a key of the manifest's `targets`), instead of the best one for the device. */
  variant?: string;
  /** The GPU to run on (default: the browser's WebGPU device). */
  backend?: GpuBackend;
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
}

const COMMIT = /^[0-9a-f]{40}$/;
const SHA256 = /^[0-9a-f]{64}$/;

/** The manifest URL and pinned manifest sha256 of a lock record. */
export function lockManifest(lock: LockRecord): { url: string; manifestSha256: string } {
  const bad = (why: string) => new BundleError(`lock record: ${why}`, { hint: "write it with `packer resolve --lock-out`" });
  if (typeof lock !== "object" || lock === null) throw bad("not an object");
  if (lock.lock_version !== 1) throw bad(`unknown lock_version ${JSON.stringify(lock.lock_version)}`);
  if (typeof lock.repo !== "string" || !/^[^/\s]+\/[^/\s]+$/.test(lock.repo)) throw bad("repo must be ORG/NAME");
  if (typeof lock.commit !== "string" || !COMMIT.test(lock.commit)) throw bad("commit must be a 40-hex commit sha");
  if (typeof lock.manifest_sha256 !== "string" || !SHA256.test(lock.manifest_sha256)) throw bad("manifest_sha256 must be 64 hex digits");
  if (typeof lock.endpoint !== "string" || !/^https?:\/\//.test(lock.endpoint)) throw bad("endpoint must be an http(s) URL");
  return { url: hubManifestUrl(lock.repo, lock.commit, lock.endpoint), manifestSha256: lock.manifest_sha256 };
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
    const scheduler = createScheduler(opts.scheduler ?? m.scheduler.default, m.scheduler.config, { seed });
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
    return { width, height, rgba, float, timings: { textEncoder: t1 - t0, unet: t2 - t1, vae: t3 - t2, total: t3 - t0, steps: total, perStep } };
  }

  /** Free the GPU memory (and the device). */
  dispose(): void {
    this.backend.dispose();
  }
}

function isLockRecord(x: unknown): x is LockRecord {
  return typeof x === "object" && x !== null && !(x instanceof URL) && "lock_version" in x;
}

/**
 * Load a model for WebGPU: a manifest URL (any host, e.g. `…/resolve/{commit}/manifest.json`),
 * a bundle folder URL, or a lock record (its commit and manifest sha256 pinned). Only the
 * manifest, tokenizer, weights and the chosen variant's wasm are fetched; each file is verified
 * before use or caching. Errors are `BundleError`s naming the file (`UnsupportedError` for a GPU
 * or bundle that cannot run here).
 */
export async function loadModel(source: string | URL | LockRecord, opts: ModelLoadOptions = {}): Promise<Pipeline> {
  let url: string | URL;
  let manifestSha256: string | undefined;
  if (isLockRecord(source)) ({ url, manifestSha256 } = lockManifest(source));
  else url = source;

  const backend = opts.backend ?? (await createWebGpuBackend());
  try {
    let chosen: { name: string; target: Target } | undefined;
    const bundle = await loadBundleFiles(url, {
      fetch: opts.fetch,
      cache: opts.cache,
      signal: opts.signal,
      manifestSha256,
      onProgress: (p) => opts.onProgress?.({ phase: "download", ...p }),
      include: (entry, manifest) => {
        chosen ??= pickVariant(manifest, backend.info, opts.variant);
        return neededFiles(manifest, chosen.target)(entry);
      },
    });
    chosen ??= pickVariant(bundle.manifest, backend.info, opts.variant);
    const { name, target } = chosen;
    const components = {} as Record<(typeof COMPONENTS)[number], GpuComponent>;
    let done = 0;
    for (const comp of COMPONENTS) {
      opts.signal?.throwIfAborted();
      const lib = target.libs[comp];
      const tensors = bundle.tensors[comp];
      if (!lib || !tensors) throw new BundleError(`${name}: no library or weights for ${comp}`, { file: "manifest.json" });
      opts.onProgress?.({ phase: "gpu", component: comp, componentsDone: done, componentsTotal: COMPONENTS.length });
      const params = bundle.manifest.components[comp].params.map((p) => paramFor(tensors.get(p)!, target.dtype));
      components[comp] = await backend.loadComponent(`${lib}`, bundle.files.get(lib)!, params);
      done += 1;
      await yieldToEventLoop();
    }
    opts.onProgress?.({ phase: "gpu", component: "", componentsDone: done, componentsTotal: COMPONENTS.length });
    return new Pipeline(bundle, name, target, backend, components);
  } catch (err) {
    if (!opts.backend) backend.dispose();
    throw err;
  }
}

export type { GpuBackend, GpuComponent, GpuInfo, HostDtype, HostTensor };
