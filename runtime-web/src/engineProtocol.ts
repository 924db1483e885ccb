/**
 * The messages between a page and a model worker (workerModel.ts ↔ worker.ts): the page asks
 * for a load, generations and a dispose by request id; the worker answers with progress, steps,
 * the loaded model's description, images (their pixel buffers transferred) and errors.
 */
import { BundleError, LoadAbortedError, UnsupportedError } from "./errors.js";
import type { GpuInfo } from "./gpu.js";
import type { LoadStats, LoadWarning } from "./types.js";
import type { Manifest } from "./formats.js";
import type { LockRecord } from "./modelSpec.js";
import type {
  GeneratedImage,
  GenerateOptions,
  ModelLoadOptions,
  ModelLoadProgress,
} from "./types.js";

/** Load options that can cross to a worker: a cache by name, no functions, objects or signals. */
export type WorkerLoadOptions = Pick<
  ModelLoadOptions,
  "endpoint" | "variant" | "verify" | "workers" | "concurrency"
> & {
  cache?: "cache-api" | "opfs" | "indexeddb" | "none";
  /** The decode worker's script, as an absolute URL. */
  workerUrl?: string;
};

export type WorkerGenerateOptions = Omit<GenerateOptions, "onStep" | "signal">;

export type EngineRequest =
  | { type: "load"; id: number; spec: string | LockRecord; options: WorkerLoadOptions }
  | { type: "generate"; id: number; options: WorkerGenerateOptions }
  /** Abort request `id` (a load or a generation). */
  | { type: "abort"; id: number }
  | { type: "dispose"; id: number };

/** What the page learns of a loaded model. */
export interface LoadedModelInfo {
  manifest: Manifest;
  manifestUrl: string;
  variant: string;
  gpu: GpuInfo;
  commit?: string;
  stats?: LoadStats;
  warnings: Omit<LoadWarning, "cause">[];
}

export interface WireError {
  name: string;
  message: string;
  hint?: string;
  file?: string;
}

export type EngineResponse =
  | { type: "progress"; id: number; progress: ModelLoadProgress }
  | { type: "step"; id: number; step: number; total: number }
  | { type: "loaded"; id: number; model: LoadedModelInfo }
  | { type: "image"; id: number; image: GeneratedImage }
  | { type: "disposed"; id: number }
  | { type: "error"; id: number; error: WireError };

/** An error as it crosses: its name, message, and the hint and file of a `BundleError`. */
export function toWire(err: unknown): WireError {
  const e = err as Partial<BundleError> | null;
  return {
    name: e?.name ?? "Error",
    message: e?.message ?? String(err),
    hint: e?.hint,
    file: e?.file,
  };
}

/** The error again on the page: `LoadAbortedError`, `UnsupportedError`, `BundleError`, or a plain `Error` of that name. */
export function fromWire(w: WireError): Error {
  if (w.name === "AbortError") return new LoadAbortedError(w.message, { file: w.file });
  if (w.name === "UnsupportedError") return new UnsupportedError(w.message, w.hint);
  if (w.name === "BundleError") return new BundleError(w.message, { file: w.file, hint: w.hint });
  const err =
    w.name === "RangeError"
      ? new RangeError(w.message)
      : w.name === "TypeError"
        ? new TypeError(w.message)
        : new Error(w.message);
  if (err.name !== w.name) err.name = w.name;
  return err;
}
