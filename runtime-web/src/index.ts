/**
 * @sdpack/runtime-web: run sdpack bundles in the browser. `loadModel(spec)` and
 * `model.generate(...)` on the page, or `loadModelInWorker` with a worker running
 * `handleModelRequests` (`@sdpack/runtime-web/worker`); and the parts under them — fetch and
 * verify the bundle, cache it, decode its weight shards, tokenize prompts, make the seeded initial
 * noise, step the schedulers, write PNGs with their parameters — each reproducing the formats/
 * spec and the native pipeline (packer/runtime/generate.py).
 */
export { BundleError, DAMAGED, LoadAbortedError, UnsupportedError } from "./errors.js";
export { sha256Hex } from "./hash.js";
export {
  checkPath,
  FORMAT,
  FORMAT_VERSION,
  MANIFEST_NAME,
  parseManifest,
  validateManifest,
  type Component,
  type Dtype,
  type FileEncoding,
  type FileEntry,
  type Manifest,
  type SchedulerName,
  type Target,
  type TensorSpec,
} from "./manifest.js";
export { GENERATOR as NOISE_GENERATOR, VERSION as NOISE_VERSION, latents, parseSeed, philox4x32_10, standardNormal, uint32Stream, type Seed } from "./noise.js";
export { decodeShard, decodeVerified, unshuffle, unshuffleInto, unshuffleReference, verifyStored, zstdContentSize, type DecodeTimings, type VerifyLevel } from "./encoding.js";
export { defaultConcurrency, defaultWorkers, type WorkerFactory, type WorkerLike } from "./decodePool.js";
export {
  DTYPE_SIZES,
  INDEX_NAME,
  parseTensorCache,
  shardTensors,
  type ShardRecord,
  type Tensor,
  type TensorCacheIndex,
  type TensorData,
  type TensorRecord,
} from "./tensorCache.js";
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
export { deleteModelFromCache, hasModelInCache, type DeletedModel, type ModelCacheOptions } from "./modelCache.js";
export {
  commitInUrl,
  HUB_ENDPOINT,
  lockManifest,
  parseModelSpec,
  resolveModel,
  resolveRevision,
  type LockRecord,
  type ModelSpec,
  type ParsedSpec,
  type ResolvedModel,
  type ResolveOptions,
} from "./modelSpec.js";
export { encodePng, crc32, type RgbaImage } from "./png.js";
export { imageMetadata, numberText, parametersText, SOFTWARE, type GenerationParameters } from "./imageMetadata.js";
export { RUNTIME_VERSION } from "./generated/version.js";
export {
  componentLayout,
  componentTensors,
  fetchManifest,
  hubManifestUrl,
  loadBundleFiles,
  resolveBundleUrl,
  streamBundleFiles,
  type ComponentLayout,
  type FileConsumer,
  type LoadedFile,
  type LoadStats,
  type StreamedBundle,
  type LoadedBundle,
  type LoadOptions,
  type LoadProgress,
  type LoadWarning,
  type RetryOptions,
} from "./loader.js";
export { PromptTokenizer, type PromptTokenizerOptions } from "./tokenizer.js";
export * from "./schedulers/index.js";
export { floatToHalf, float32ToHalf, halfToFloat, halfToFloat32 } from "./half.js";
export { createWebGpuBackend, loadTvmjs, type ComponentLoader, type GpuBackend, type GpuComponent, type GpuInfo, type HostDtype, type HostTensor, type Tvmjs } from "./gpu.js";
export {
  COMPONENTS,
  loadModel,
  neededFiles,
  pickVariant,
  Pipeline,
  streamWeights,
  type StreamWeightsOptions,
  toImage,
  type GeneratedImage,
  type GenerateOptions,
  type ModelLoadOptions,
  type ModelLoadProgress,
} from "./pipeline.js";
export { loadModelInWorker, WorkerModel, type EngineWorker, type WorkerModelLoadOptions } from "./workerModel.js";
export type { LoadedModelInfo, WorkerLoadOptions } from "./engineProtocol.js";
