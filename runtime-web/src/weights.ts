/**
 * Weights streamed onto the GPU shard by shard: each verified, decoded shard's tensors converted
 * to the variant's dtype and handed to their component's loader, then the shard dropped.
 */
import { BundleError, UnsupportedError } from "./errors.js";
import { type BundleSource, manifestOf } from "./fetch.js";
import { MANIFEST_NAME, type FileEntry, type Manifest } from "./formats.js";
import type { ComponentLoader, GpuBackend, GpuComponent, HostTensor } from "./gpu.js";
import { float32ToHalf, halfToFloat32 } from "./half.js";
import { componentLayout, type ComponentLayout } from "./layout.js";
import { referencedPaths } from "./manifest.js";
import { streamBundleFiles } from "./stream.js";
import { shardTensors, type Tensor, type TensorCacheIndex } from "./tensorCache.js";
import type { FileConsumer, LoadedBundle, LoadedFile, LoadOptions } from "./types.js";

/** A parameter as the variant's `main` takes it: float tensors in the variant's dtype. */
function paramFor(t: Tensor, dtype: "float32" | "float16"): HostTensor {
  if (t.dtype === "float16") {
    const bits = t.data as Uint16Array;
    return dtype === "float16"
      ? { dtype, shape: t.shape, data: bits }
      : { dtype, shape: t.shape, data: halfToFloat32(bits) };
  }
  if (t.dtype === "float32") {
    const values = t.data as Float32Array;
    return dtype === "float32"
      ? { dtype, shape: t.shape, data: values }
      : { dtype, shape: t.shape, data: float32ToHalf(values) };
  }
  if (t.dtype === "int32") return { dtype: "int32", shape: t.shape, data: t.data as Int32Array };
  // Packed codes of a quantized weight (formats/README.md, "Quantized weights"): uploaded as stored.
  if (t.dtype === "uint32") return { dtype: "uint32", shape: t.shape, data: t.data as Uint32Array };
  throw new UnsupportedError(
    `parameter ${t.name} has dtype ${t.dtype}, which the web runtime cannot upload`,
  );
}

/** What `streamWeights` needs besides the loader's options. */
export interface StreamWeightsOptions extends LoadOptions {
  /** The dtype float parameters are uploaded in (the variant's `dtype`). */
  dtype: "float32" | "float16";
  /** The components to load (default: every component whose tensor index is included). */
  components?: readonly string[];
  /**
   * Where a component's parameters go, called once per component when every file the manifest
   * names (tokenizer, tensor indexes, libraries) is in `files`; its parameters then follow in
   * order of arrival, then `finish`.
   */
  begin: (component: string, files: Map<string, Uint8Array>) => Promise<ComponentLoader>;
  /** A component's parameters are all set and it is finishing (`done` components finished before it). */
  onComponent?: (component: string, done: number, total: number) => void;
}

/** A promise with its resolve/reject at hand. */
function deferred<T>(): {
  promise: Promise<T>;
  resolve: (v: T) => void;
  reject: (e: unknown) => void;
} {
  let resolve!: (v: T) => void;
  let reject!: (e: unknown) => void;
  const promise = new Promise<T>((res, rej) => {
    resolve = res;
    reject = rej;
  });
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

/** One component on its way to the GPU. */
interface ComponentUpload {
  name: string;
  /** Its tensor index checked against the manifest, once that file is in. */
  layout?: ComponentLayout;
  loader: ReturnType<typeof deferred<ComponentLoader>>;
  paramIndex: Map<string, number>;
  remaining: number;
  finished?: Promise<GpuComponent>;
}

/**
 * Routes a bundle's verified files as they arrive: the files the manifest names are kept, and
 * each tensor index read for which shard files hold which component's parameters; once all of
 * them are in, the components begin, and each shard's tensors go to the components its index
 * lists it under (components may share an index, and so its shards). A file no index lists is
 * kept as a plain file.
 */
class WeightRouter {
  readonly files = new Map<string, Uint8Array>();
  readonly uploads = new Map<string, ComponentUpload>();
  /** Shard bundle path → the components whose tensor index lists it. */
  private readonly owners = new Map<string, ComponentUpload[]>();
  private readonly named: Set<string>;
  private namedLeft: number;
  private readonly allNamedIn = deferred<void>();
  private done = 0;

  constructor(
    private readonly manifest: Manifest,
    included: FileEntry[],
    components: readonly string[],
    private readonly opts: StreamWeightsOptions,
  ) {
    for (const name of components) {
      const comp = manifest.components[name];
      if (!comp)
        throw new BundleError(`bundle has no component ${JSON.stringify(name)}`, {
          file: MANIFEST_NAME,
        });
      const paramIndex = new Map(comp.params.map((p, i) => [p, i]));
      this.uploads.set(name, {
        name,
        loader: deferred(),
        paramIndex,
        remaining: comp.params.length,
      });
    }
    this.named = referencedPaths(manifest);
    this.namedLeft = included.filter((e) => this.named.has(e.path)).length;
    if (this.namedLeft === 0) this.beginAll();
  }

  /** Files to start first: those the manifest names (the shards' owners are known once they are in). */
  isNamed(entry: FileEntry): boolean {
    return this.named.has(entry.path);
  }

  async onFile({ entry, content, release }: LoadedFile, signal: AbortSignal): Promise<void> {
    if (this.isNamed(entry)) {
      this.files.set(entry.path, content);
      this.readIndex(entry.path, content);
      if (--this.namedLeft === 0) this.beginAll();
      return;
    }
    await untilAborted(this.allNamedIn.promise, signal);
    const owners = this.owners.get(entry.path);
    if (!owners) {
      this.files.set(entry.path, content); // no tensor index lists it: a plain file of the bundle
      return;
    }
    for (const upload of owners) await this.upload(upload, entry.path, content, signal);
    release(); // every tensor is uploaded (loaders copy what they keep): the buffer is decoded into again
  }

  /** Every component's GPU component, once all parameters are in; throws if some never came. */
  async finished(): Promise<Record<string, GpuComponent>> {
    for (const upload of this.uploads.values()) {
      if (upload.remaining > 0) {
        const weights = this.manifest.components[upload.name].weights;
        throw new BundleError(
          `${upload.name}: ${upload.remaining} parameters were not loaded (are all shards of ${weights} included?)`,
          { file: weights },
        );
      }
    }
    const components: Record<string, GpuComponent> = {};
    for (const upload of this.uploads.values()) components[upload.name] = await upload.finished!;
    return components;
  }

  indexes(): Record<string, TensorCacheIndex> {
    const indexes: Record<string, TensorCacheIndex> = {};
    for (const upload of this.uploads.values()) indexes[upload.name] = upload.layout!.index;
    return indexes;
  }

  /** Free what is on the GPU: finished components, and the loaders of the others. */
  dispose(): void {
    for (const upload of this.uploads.values()) {
      if (upload.finished)
        upload.finished.then(
          (c) => c.dispose(),
          () => {},
        );
      else
        upload.loader.promise.then(
          (l) => l.dispose(),
          () => {},
        );
    }
  }

  /** If `path` is a component's tensor index: its layout, and its shards' owners. */
  private readIndex(path: string, content: Uint8Array): void {
    for (const upload of this.uploads.values()) {
      if (this.manifest.components[upload.name].weights !== path) continue;
      upload.layout = componentLayout(this.manifest, upload.name, content);
      for (const shard of upload.layout.shards.keys())
        this.owners.set(shard, [...(this.owners.get(shard) ?? []), upload]);
    }
  }

  private beginAll(): void {
    for (const upload of this.uploads.values()) {
      if (!upload.layout) {
        const weights = this.manifest.components[upload.name].weights;
        upload.loader.reject(new BundleError(`${weights}: not loaded`, { file: weights }));
        continue;
      }
      this.opts.begin(upload.name, this.files).then(upload.loader.resolve, upload.loader.reject);
    }
    this.allNamedIn.resolve();
  }

  private async upload(
    upload: ComponentUpload,
    path: string,
    content: Uint8Array,
    signal: AbortSignal,
  ): Promise<void> {
    const loader = await untilAborted(upload.loader.promise, signal);
    const shard = upload.layout!.shards.get(path)!;
    for (const t of shardTensors(content, shard, path)) {
      await loader.setParam(upload.paramIndex.get(t.name)!, paramFor(t, this.opts.dtype));
      upload.remaining -= 1;
    }
    if (upload.remaining === 0) {
      this.opts.onComponent?.(upload.name, this.done, this.uploads.size);
      upload.finished = loader.finish();
      upload.finished.then(
        () => (this.done += 1),
        () => {},
      );
    }
  }
}

/**
 * Stream a bundle's weights into GPU components, shard by shard: the files the manifest names
 * (tokenizer, tensor indexes, libraries) first (kept: they are small), then every weight shard
 * fetched, verified and decoded (in decode workers), its tensors converted to `dtype` and handed
 * to the components its tensor index lists it under, and the shard dropped — so no more than
 * `concurrency` shards are ever in memory. Each component finishes (e.g. compiles its shaders) as
 * soon as its last parameter is in, while the others still load. The returned bundle has `files`
 * without the shards and no `tensors`. On failure every component begun is disposed. `loadModel`
 * runs this with its GPU backend and the variant it chose from the manifest.
 */
export async function streamWeights(
  source: BundleSource,
  opts: StreamWeightsOptions,
): Promise<{ bundle: LoadedBundle; components: Record<string, GpuComponent> }> {
  const fetched = await manifestOf(source, opts);
  const { manifest } = fetched;
  const included = manifest.files.filter((f) => !opts.include || opts.include(f, manifest));
  const names =
    opts.components ??
    Object.keys(manifest.components).filter((c) =>
      included.some((e) => e.path === manifest.components[c].weights),
    );
  const router = new WeightRouter(manifest, included, names, opts);
  try {
    const consumer: FileConsumer = {
      releases: true,
      first: (entry) => router.isNamed(entry),
      onFile: (file, signal) => router.onFile(file, signal),
    };
    const { manifestUrl, baseUrl, commit, warnings, stats } = await streamBundleFiles(
      fetched,
      consumer,
      opts,
    );
    const components = await router.finished();
    const bundle: LoadedBundle = {
      manifest,
      manifestUrl,
      baseUrl,
      commit,
      files: router.files,
      indexes: router.indexes(),
      tensors: {},
      warnings,
      stats,
    };
    return { bundle, components };
  } catch (err) {
    router.dispose();
    throw err;
  }
}

/** A `ComponentLoader` over a backend without `beginComponent`: collects the parameters, then `loadComponent`. */
export function collectingLoader(
  backend: GpuBackend,
  name: string,
  wasm: Uint8Array,
  count: number,
): ComponentLoader {
  let params: HostTensor[] = new Array(count);
  return {
    // A copy: the tensor may be a view of a shard the loader lets go of once this returns.
    setParam: (i, t) => {
      params[i] = { dtype: t.dtype, shape: t.shape, data: t.data.slice() };
    },
    finish: () => backend.loadComponent(name, wasm, params).finally(() => (params = [])),
    dispose: () => {
      params = [];
    },
  };
}
