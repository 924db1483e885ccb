/**
 * Weights streamed onto the GPU shard by shard: each verified, decoded shard's tensors converted
 * to the variant's dtype and handed to their component's loader, then the shard dropped.
 */
import { BundleError, UnsupportedError } from "./errors.js";
import { fetchManifest, type FetchedManifest } from "./fetch.js";
import { MANIFEST_NAME, type FileEntry, type Manifest } from "./formats.js";
import type { ComponentLoader, GpuBackend, GpuComponent, HostTensor } from "./gpu.js";
import { float32ToHalf, halfToFloat32 } from "./half.js";
import { componentLayout, type ComponentLayout } from "./layout.js";
import { streamBundleFiles } from "./stream.js";
import { shardTensors, type Tensor, type TensorCacheIndex } from "./tensorCache.js";
import type { LoadedBundle, LoadOptions } from "./types.js";

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
export function collectingLoader(backend: GpuBackend, name: string, wasm: Uint8Array, count: number): ComponentLoader {
  let params: HostTensor[] = new Array(count);
  return {
    // A copy: the tensor may be a view of a shard the loader lets go of once this returns.
    setParam: (i, t) => { params[i] = { dtype: t.dtype, shape: t.shape, data: t.data.slice() }; },
    finish: () => backend.loadComponent(name, wasm, params).finally(() => (params = [])),
    dispose: () => { params = []; },
  };
}
