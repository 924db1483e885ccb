/**
 * The page's side of a model worker: `loadModelInWorker` starts a load in a Web Worker that runs
 * `handleModelRequests` (`@sdpack/runtime-web/worker`), and gives a `WorkerModel` whose
 * `generate` has `Pipeline.generate`'s options and result — progress and step callbacks and the
 * abort signal are forwarded; the image's pixel buffers come back transferred, not copied.
 *
 *   const worker = new Worker(new URL("./worker.js", import.meta.url), { type: "module" });
 *   const model = await loadModelInWorker(worker, "sdpack/tiny-sd@1.0.0", { onProgress: (p) => show(p.text) });
 *   const image = await model.generate({ prompt: "a castle", seed: 42, onStep: (i, n) => bar(i / n) });
 */
import { BundleError } from "./errors.js";
import {
  fromWire,
  type EngineRequest,
  type EngineResponse,
  type LoadedModelInfo,
  type WorkerLoadOptions,
} from "./engineProtocol.js";
import type { GpuInfo } from "./gpu.js";
import type { LoadStats } from "./types.js";
import type { Manifest } from "./formats.js";
import { parseModelSpec, type LockRecord, type ModelSpec } from "./modelSpec.js";
import type { GeneratedImage, GenerateOptions, ModelLoadProgress } from "./types.js";

/** The part of a `Worker` the page's side uses. */
export interface EngineWorker {
  postMessage(message: EngineRequest, transfer?: Transferable[]): void;
  addEventListener(type: "message", listener: (event: { data: EngineResponse }) => void): void;
  addEventListener(
    type: "error" | "messageerror",
    listener: (event: { message?: string }) => void,
  ): void;
}

/** `loadModel`'s options that work across the worker boundary (a cache by name; no `fetch` or `backend`). */
export type WorkerModelLoadOptions = Omit<WorkerLoadOptions, "workerUrl"> & {
  onProgress?: (progress: ModelLoadProgress) => void;
  signal?: AbortSignal;
  /** The decode worker's script (resolved against the page; default: `decodeWorker.js` next to the model worker's script). */
  workerUrl?: string | URL;
};

interface Pending {
  resolve: (value: EngineResponse) => void;
  reject: (err: unknown) => void;
  onProgress?: (p: ModelLoadProgress) => void;
  onStep?: (step: number, total: number) => void;
}

/** A request before it has an id (per member of the union). */
type Unnumbered<T> = T extends unknown ? Omit<T, "id"> : never;

const here = () => (globalThis as { location?: { href: string } }).location?.href;

/** Request ids, replies and failures of one worker. */
class EngineClient {
  private nextId = 1;
  private readonly pending = new Map<number, Pending>();
  private failed?: Error;

  constructor(private readonly worker: EngineWorker) {
    worker.addEventListener("message", ({ data }) => {
      const p = this.pending.get(data.id);
      if (!p) return;
      if (data.type === "progress") return p.onProgress?.(data.progress);
      if (data.type === "step") return p.onStep?.(data.step, data.total);
      this.pending.delete(data.id);
      if (data.type === "error") p.reject(fromWire(data.error));
      else p.resolve(data);
    });
    const fail = (event: { message?: string }) => {
      this.failed = new BundleError(
        `the model worker failed: ${event?.message || "its script did not load or threw"}`,
        {
          hint: "check that the worker script is built and served next to the page (see the README's Web Worker section)",
        },
      );
      for (const p of this.pending.values()) p.reject(this.failed);
      this.pending.clear();
    };
    worker.addEventListener("error", fail);
    worker.addEventListener("messageerror", fail);
  }

  /** Send a request; resolves with its final reply. An aborted `signal` asks the worker to stop it. */
  request(
    message: Unnumbered<Exclude<EngineRequest, { type: "abort" }>>,
    callbacks: Omit<Pending, "resolve" | "reject">,
    signal?: AbortSignal,
  ): Promise<EngineResponse> {
    if (this.failed) return Promise.reject(this.failed);
    const id = this.nextId++;
    return new Promise<EngineResponse>((resolve, reject) => {
      const onAbort = () => this.worker.postMessage({ type: "abort", id });
      signal?.addEventListener("abort", onAbort, { once: true });
      const done = () => signal?.removeEventListener("abort", onAbort);
      this.pending.set(id, {
        ...callbacks,
        resolve: (v) => {
          done();
          resolve(v);
        },
        reject: (e) => {
          done();
          reject(e);
        },
      });
      this.worker.postMessage({ ...message, id } as EngineRequest);
      if (signal?.aborted) onAbort();
    });
  }
}

/** A model loaded in a worker: `Pipeline`'s description and `generate`, across the worker boundary. */
export class WorkerModel {
  readonly manifest: Manifest;
  readonly manifestUrl: string;
  readonly variant: string;
  readonly gpu: GpuInfo;
  /** The Hub commit the bundle was read at, where known. */
  readonly commit?: string;
  readonly stats?: LoadStats;
  readonly warnings: LoadedModelInfo["warnings"];

  constructor(
    private readonly client: EngineClient,
    info: LoadedModelInfo,
  ) {
    ({
      manifest: this.manifest,
      manifestUrl: this.manifestUrl,
      variant: this.variant,
      gpu: this.gpu,
      commit: this.commit,
      stats: this.stats,
      warnings: this.warnings,
    } = info);
  }

  /** `ORG/NAME@VERSION` from the manifest. */
  get modelId(): string {
    return `${this.manifest.model.id}@${this.manifest.model.version}`;
  }

  /** As `Pipeline.generate`: `onStep` is called as the worker's steps finish; `signal` stops it there. */
  async generate(opts: GenerateOptions): Promise<GeneratedImage> {
    const { onStep, signal, ...options } = opts;
    const reply = await this.client.request({ type: "generate", options }, { onStep }, signal);
    return (reply as Extract<EngineResponse, { type: "image" }>).image;
  }

  /** Free the model's GPU memory in the worker (the worker itself stays: terminate it if it is no longer needed). */
  async dispose(): Promise<void> {
    await this.client.request({ type: "dispose" }, {});
  }
}

/**
 * Load a model in `worker` (a module Web Worker running `handleModelRequests`), as `loadModel`
 * does on the page. The spec is checked here first (a bad spec fails without a round trip); URLs
 * are resolved against the page, not the worker's script.
 */
export async function loadModelInWorker(
  worker: EngineWorker,
  spec: ModelSpec,
  opts: WorkerModelLoadOptions = {},
): Promise<WorkerModel> {
  const parsed = parseModelSpec(spec);
  const wireSpec: string | LockRecord =
    parsed.kind === "url"
      ? new URL(String(parsed.url), here()).href
      : parsed.kind === "lock"
        ? parsed.lock
        : (spec as string);
  if (typeof opts.cache === "object")
    throw new BundleError("a ContentCache object cannot cross into a worker", {
      hint: 'name the cache instead: "cache-api", "opfs", "indexeddb" or "none"',
    });
  const { onProgress, signal, workerUrl, ...rest } = opts;
  const options: WorkerLoadOptions = {
    ...rest,
    ...(workerUrl === undefined ? {} : { workerUrl: new URL(String(workerUrl), here()).href }),
  };
  const client = new EngineClient(worker);
  const reply = await client.request(
    { type: "load", spec: wireSpec, options },
    { onProgress },
    signal,
  );
  return new WorkerModel(client, (reply as Extract<EngineResponse, { type: "loaded" }>).model);
}
