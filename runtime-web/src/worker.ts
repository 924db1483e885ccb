/**
 * The worker side of a model worker (`@sdpack/runtime-web/worker`): runs `loadModel` and
 * `generate` inside a dedicated Web Worker, so the WebGPU calls, the scheduler's math and the
 * decode workers' bookkeeping stay off the page's thread. Your worker script is two lines:
 *
 *   import { handleModelRequests } from "@sdpack/runtime-web/worker";
 *   handleModelRequests();
 *
 * and the page drives it with `loadModelInWorker(new Worker(new URL("./worker.js", import.meta.url),
 * { type: "module" }), "ORG/NAME@1.0.0")`. One model per worker: a new load disposes the old one.
 */
import { UnsupportedError } from "./errors.js";
import { toWire, type EngineRequest, type EngineResponse } from "./engineProtocol.js";
import type { GpuBackend } from "./gpu.js";
import { loadModel, type Pipeline } from "./engine.js";

/** The part of a worker's global scope the handler uses. */
export interface MessageScope {
  addEventListener(type: "message", listener: (event: { data: EngineRequest }) => void): void;
  postMessage(message: EngineResponse, transfer?: Transferable[]): void;
}

export interface ModelWorkerOptions {
  /** The GPU to load on (default: the worker's WebGPU device); a stand-in for tests. */
  createBackend?: () => Promise<GpuBackend>;
}

/**
 * Answer the page's requests (see `loadModelInWorker`) on `scope` (default: this worker's global
 * scope). Requests run one at a time, in order; an abort reaches the one it names at once.
 */
export function handleModelRequests(
  scope: MessageScope = globalThis as unknown as MessageScope,
  options: ModelWorkerOptions = {},
): void {
  let model: Pipeline | undefined;
  let queue: Promise<void> = Promise.resolve();
  const running = new Map<number, AbortController>();
  const post = (message: EngineResponse, transfer: Transferable[] = []) =>
    scope.postMessage(message, transfer);

  const handle = async (
    req: Exclude<EngineRequest, { type: "abort" }>,
    signal: AbortSignal,
  ): Promise<void> => {
    if (req.type === "dispose") {
      model?.dispose();
      model = undefined;
      post({ type: "disposed", id: req.id });
      return;
    }
    if (req.type === "load") {
      model?.dispose();
      model = undefined;
      const backend = options.createBackend ? await options.createBackend() : undefined;
      try {
        model = await loadModel(req.spec, {
          ...req.options,
          backend,
          signal,
          onProgress: (progress) => post({ type: "progress", id: req.id, progress }),
        });
      } catch (err) {
        backend?.dispose();
        throw err;
      }
      const { manifest, manifestUrl, commit, stats, warnings } = model.bundle;
      const info = {
        manifest,
        manifestUrl,
        variant: model.variant,
        gpu: model.gpu,
        commit,
        stats,
        warnings: warnings.map(({ file, message }) => ({ file, message })),
      };
      post({ type: "loaded", id: req.id, model: info });
      return;
    }
    if (!model)
      throw new UnsupportedError(
        "no model is loaded in this worker",
        "call loadModelInWorker first",
      );
    const image = await model.generate({
      ...req.options,
      signal,
      onStep: (step, total) => post({ type: "step", id: req.id, step, total }),
    });
    post({ type: "image", id: req.id, image }, [
      image.rgba.buffer as ArrayBuffer,
      image.float.buffer as ArrayBuffer,
    ]);
  };

  scope.addEventListener("message", ({ data: req }) => {
    if (req.type === "abort") {
      running.get(req.id)?.abort(new DOMException("stopped by the page", "AbortError"));
      return;
    }
    const controller = new AbortController();
    running.set(req.id, controller);
    queue = queue.then(() =>
      handle(req, controller.signal)
        .catch((err) => post({ type: "error", id: req.id, error: toWire(err) }))
        .finally(() => running.delete(req.id)),
    );
  });
}
