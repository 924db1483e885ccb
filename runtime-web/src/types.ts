/**
 * The shapes a load takes, reports and gives back: options, progress events, statistics and the
 * loaded bundle (for `loadBundleFiles`, `streamBundleFiles` and `loadModel`), and what a
 * generation takes and gives (`Pipeline.generate`).
 */
import type { CacheChoice, ContentCache } from "./cache.js";
import type { WorkerFactory } from "./decodePool.js";
import type { VerifyLevel } from "./encoding.js";
import type { FileEntry, Manifest, SchedulerName } from "./formats.js";
import type { GpuBackend } from "./gpu.js";
import type { GenerationParameters } from "./imageMetadata.js";
import type { Seed } from "./noise.js";
import type { Tensor, TensorCacheIndex } from "./tensorCache.js";

export interface LoadProgress {
  /** The file this event is about. */
  file: string;
  /** Bytes of all included files obtained so far (fetched or from the cache), and their total. */
  loadedBytes: number;
  totalBytes: number;
  filesDone: number;
  filesTotal: number;
  /** True once `file` is verified (and decoded). */
  fileDone: boolean;
  fromCache: boolean;
  /** Set on the `fileDone` event of a file that was loaded but could not be cached (see `LoadWarning`). */
  warning?: string;
  /** On `fileDone` events: where the file was checked and decoded (a decode worker, or the calling thread). */
  decodedBy?: "worker" | "thread";
  /** The load's fraction done, 0..1 (by bytes, the last 2% by files verified and handed over); it never goes back (a retried file's bytes do not count twice). */
  progress: number;
  /** One line for people: files and MiB done, and how many came from the cache. */
  text: string;
}

/** What one load did, for progress displays and benchmarks. Times are summed over files (which overlap). */
export interface LoadStats {
  verify: VerifyLevel;
  /** Decode workers started (0: none available or asked for), and why none could be used, if so. */
  workers: number;
  workerError?: string;
  /** Files checked and decoded in a decode worker, and on the calling thread. */
  decodedInWorkers: number;
  decodedInThread: number;
  /** Files taken from the cache (verified again). */
  fromCache: number;
  /** Bytes verified as stored, and as handed over (decoded). */
  storedBytes: number;
  contentBytes: number;
  /**
   * Milliseconds: `total` wall time of the load; summed per file: `fetch` (request to last byte),
   * `decode` (hand-over to result, queueing in the pool included), its parts `sha256` (stored
   * bytes), `zstd`, `unshuffle`, `rawSha256` (only with verify "full"), `cache` (get and put)
   * and `consume` (the `onFile` consumer, e.g. the GPU upload).
   */
  ms: {
    total: number;
    fetch: number;
    decode: number;
    sha256: number;
    zstd: number;
    unshuffle: number;
    rawSha256: number;
    cache: number;
    consume: number;
  };
}

/** Something that went wrong without failing the load (e.g. a verified file the cache could not store). */
export interface LoadWarning {
  file: string;
  message: string;
  cause?: unknown;
}

/** Retrying of HTTP 5xx answers and network errors (never of 4xx answers or failed checks). */
export interface RetryOptions {
  /** Tries after the first one (default 3; 0 turns retrying off). */
  retries?: number;
  /** The wait before the first retry in ms, doubled before each further one (default 200: 200, 400, 800). */
  delayMs?: number;
  /** The longest wait between two tries in ms (default 5000). */
  maxDelayMs?: number;
}

export interface LoadOptions {
  /** The fetch to use (default: globalThis.fetch). */
  fetch?: typeof globalThis.fetch;
  /** Where verified files are kept between loads; none by default. */
  cache?: ContentCache;
  onProgress?: (progress: LoadProgress) => void;
  signal?: AbortSignal;
  /** The manifest's sha256 from a lock record: the manifest is rejected unless it matches. */
  manifestSha256?: string;
  /** The model the manifest must say it is (`model.id`, and `model.version` when given), e.g. from a Hub pin. */
  expectModel?: { id: string; version?: string };
  /**
   * Which listed files to load (default: all), given the verified manifest. Tensor indexes of
   * skipped components are not built.
   */
  include?: (entry: FileEntry, manifest: Manifest) => boolean;
  /** Files fetched at once (default: 4, or the number of decode workers where that is more). */
  concurrency?: number;
  /** Retrying of HTTP 5xx answers and network errors (default: 3 retries after 200, 400, 800 ms). */
  retry?: RetryOptions;
  /**
   * What is checked (formats/README.md "Hashing"): `"stored"` (default) — size and sha256 of the
   * stored bytes, the zstd frame's declared size and the decoded size (decoding is deterministic,
   * so the stored sha256 pins the decoded bytes too); `"full"` — also the sha256 of the decoded
   * bytes against `raw_sha256` (as `packer verify`; costs a second hash over the raw bytes).
   */
  verify?: VerifyLevel;
  /**
   * Decode workers (module Web Workers that check and decode files off the page's thread):
   * default one per core beyond the page's own, 2..4; 0 decodes on the calling thread, as happens
   * anyway where `Worker` does not exist or the worker script cannot be started.
   */
  workers?: number;
  /** The decode worker's script (default: `decodeWorker.js` next to the loader's module). */
  workerUrl?: string | URL;
  /** How to start a decode worker (default: `new Worker(url, { type: "module" })`). */
  createWorker?: WorkerFactory;
}

export interface LoadedBundle {
  manifest: Manifest;
  manifestUrl: string;
  /** The URL that bundle paths are relative to (ends with "/"). */
  baseUrl: string;
  /** Verified content of every loaded file by bundle path; encoded shards come decoded. */
  files: Map<string, Uint8Array>;
  /** Each component's tensor-cache index. */
  indexes: Record<string, TensorCacheIndex>;
  /** Each component's tensors, in the manifest's `params` order. */
  tensors: Record<string, Map<string, Tensor>>;
  /** What went wrong without failing the load (files that could not be cached), in order. */
  warnings: LoadWarning[];
  /** How the load went: workers, bytes, time per step. */
  stats?: LoadStats;
  /** The Hub commit the manifest was read at (its URL's `resolve/<commit>/`, or the server's `X-Repo-Commit`), where known. */
  commit?: string;
}

/** A verified file as `streamBundleFiles` hands it to its consumer. */
export interface LoadedFile {
  entry: FileEntry;
  /** Verified content; encoded shards come decoded (zstd, unshuffled). */
  content: Uint8Array;
  fromCache: boolean;
  /**
   * Done with `content` for good (call at most once, and touch it no more): its buffer is decoded
   * into again for a later file (a consumer that sets `releases` does this for every file it drops).
   */
  release(): void;
}

/** What `streamBundleFiles` hands the files to. */
export interface FileConsumer {
  /** The consumer releases (`LoadedFile.release`) the files it does not keep: decode buffers are sized for reuse. */
  releases?: boolean;
  /** Files to start before all others (e.g. the tensor indexes before the shards). */
  first?(entry: FileEntry, manifest: Manifest): boolean;
  /** Called once, with the verified manifest and the files to load in the order they are started. */
  start?(manifest: Manifest, entries: FileEntry[]): void;
  /**
   * Each verified file, as soon as it is ready (`concurrency` at most at once). The next file of
   * this slot is fetched once this returns, so a consumer that uploads and drops keeps memory
   * bounded. `signal` aborts when the load fails or is aborted.
   */
  onFile(file: LoadedFile, signal: AbortSignal): void | Promise<void>;
}

/** What `streamBundleFiles` returns once every file went through `onFile`. */
export interface StreamedBundle {
  manifest: Manifest;
  manifestUrl: string;
  baseUrl: string;
  /** The Hub commit the manifest was read at, where known (see `fetchManifest`). */
  commit?: string;
  warnings: LoadWarning[];
  stats: LoadStats;
}

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
  timings: {
    textEncoder: number;
    unet: number;
    vae: number;
    total: number;
    steps: number;
    perStep: number[];
  };
  /** What made it, defaults filled in (`imageMetadata(parameters)` gives its PNG text). */
  parameters: GenerationParameters;
}
