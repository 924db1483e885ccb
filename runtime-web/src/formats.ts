/**
 * The format's facts, in one place for the runtime: the types of manifest.json and lock records
 * and the constants, all generated from formats/ (the JSON Schemas and formats/constants.json) by
 * scripts/generate-schema.mjs, so they cannot drift from what packer writes.
 */
import type { COMPONENTS, DTYPE_SIZES } from "./generated/formats.js";

export {
  COMMIT_PATTERN,
  COMPONENTS,
  DTYPE_SIZES,
  FORMAT,
  FORMAT_VERSION,
  LOCK_VERSION,
  MANIFEST_NAME,
  MAX_PATH,
  REPO_ID_PATTERN,
  SCHEDULER_NAMES,
  SEMVER_PATTERN,
  SHA256_PATTERN,
  TEXT_MAX_LENGTH,
} from "./generated/formats.js";
export type {
  Component,
  FileEncoding,
  FileEntry,
  Latent,
  LockRecord,
  Manifest,
  SchedulerName,
  Target,
  TensorSpec,
} from "./generated/types.js";

/** A compiled component of a bundle (`text_encoder`, `unet`, `vae_decoder`). */
export type ComponentName = (typeof COMPONENTS)[number];

/** A tensor-cache record's dtype. */
export type Dtype = keyof typeof DTYPE_SIZES;

/** The largest manifest.json a reader accepts (a bound on what a hostile server can make it parse). */
export const MAX_MANIFEST_BYTES = 16 << 20;
