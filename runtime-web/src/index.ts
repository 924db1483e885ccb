/**
 * @sdpack/runtime-web: run sdpack bundles in the browser. `loadModel(spec)` and
 * `model.generate(...)` on the page, or `loadModelInWorker` with a worker running
 * `handleModelRequests` (`@sdpack/runtime-web/worker`). What a user of the package needs, by
 * concern; the parts under them (decoding, tensor layout, schedulers' internals, noise, half
 * floats) are imported from their own modules (README.md, "Modules").
 */

// Loading and running a model.
export { loadModel, Pipeline } from "./engine.js";
export {
  loadModelInWorker,
  WorkerModel,
  type EngineWorker,
  type WorkerModelLoadOptions,
} from "./workerModel.js";
export type { LoadedModelInfo, WorkerLoadOptions } from "./engineProtocol.js";
export type {
  GeneratedImage,
  GenerateOptions,
  ModelLoadOptions,
  ModelLoadProgress,
} from "./types.js";

// Naming a model: Hub pins, URLs, lock records.
export {
  HUB_ENDPOINT,
  parseModelSpec,
  resolveModel,
  type ModelSpec,
  type ResolvedModel,
  type ResolveOptions,
} from "./modelSpec.js";
export { lockManifest, type LockRecord } from "./lock.js";

// Errors.
export { BundleError, LoadAbortedError, UnsupportedError } from "./errors.js";

// Caching verified files between visits.
export {
  BrowserCache,
  CACHE_CHOICES,
  MemoryCache,
  openCache,
  requestPersistentStorage,
  type CacheChoice,
  type ContentCache,
  type StorageState,
} from "./cache.js";
export { OpfsCache } from "./opfsCache.js";
export { IndexedDbCache } from "./indexedDbCache.js";
export {
  deleteModelFromCache,
  hasModelInCache,
  type DeletedModel,
  type ModelCacheOptions,
} from "./modelCache.js";

// Images with their parameters.
export { encodePng, type RgbaImage } from "./png.js";
export { imageMetadata, type GenerationParameters } from "./imageMetadata.js";

// Bundles below the model: the manifest, verified files, streamed files.
export { fetchManifest, type FetchedManifest } from "./fetch.js";
export { parseManifest } from "./manifest.js";
export { loadBundleFiles, streamBundleFiles } from "./stream.js";
export type {
  FileConsumer,
  LoadedBundle,
  LoadedFile,
  LoadOptions,
  LoadProgress,
  LoadStats,
  LoadWarning,
  RetryOptions,
  StreamedBundle,
} from "./types.js";
export {
  SCHEDULER_NAMES,
  type FileEntry,
  type Manifest,
  type SchedulerName,
  type Target,
} from "./formats.js";

// The GPU-free parts of the pipeline, each reproducing formats/ and the native pipeline.
export { PromptTokenizer } from "./tokenizer.js";
export { latents } from "./noise.js";
export { createScheduler } from "./schedulers/index.js";

// The GPU a model runs on (to bring your own device or backend).
export { createWebGpuBackend, type GpuBackend, type GpuInfo } from "./gpu.js";

export { RUNTIME_VERSION } from "./generated/version.js";
