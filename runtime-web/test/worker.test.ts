/**
 * The worker-hosted engine over a real MessageChannel (node's structured clone and transfer): the
 * page's `loadModelInWorker` / `WorkerModel` against `handleModelRequests` on the other port, with
 * the stand-in GPU backend. The browser run (a module Worker, WebGPU) is tests/web/test_browser.py.
 */
import assert from "node:assert/strict";
import { MessageChannel, type MessagePort } from "node:worker_threads";
import { after, before, describe, test } from "node:test";

import { MemoryCache } from "../src/cache.js";
import { loadModel } from "../src/engine.js";
import { BundleError } from "../src/errors.js";
import type { ModelLoadProgress } from "../src/types.js";
import { type EngineWorker, loadModelInWorker } from "../src/workerModel.js";
import { handleModelRequests, type MessageScope } from "../src/worker.js";
import { extendedBundle, fakeBackend } from "./fakeModel.js";
import { serve, type FileServer } from "./helpers.js";

/** A page end and a worker end, the worker end answering with the stand-in backend; `transfers` records what the worker end transferred. */
function channel(): { page: EngineWorker; close: () => void; transfers: Transferable[][] } {
  const { port1, port2 } = new MessageChannel();
  const asTarget = (port: MessagePort) => {
    port.start();
    return port as unknown as EngineWorker & MessageScope;
  };
  const transfers: Transferable[][] = [];
  const worker = asTarget(port2);
  const scope: MessageScope = {
    addEventListener: (type, listener) => worker.addEventListener(type, listener),
    postMessage: (message, transfer = []) => (
      transfers.push(transfer), worker.postMessage(message, transfer)
    ),
  };
  handleModelRequests(scope, { createBackend: async () => fakeBackend() });
  return { page: asTarget(port1), close: () => (port1.close(), port2.close()), transfers };
}

describe("loadModelInWorker", () => {
  let bundle: ReturnType<typeof extendedBundle>;
  let server: FileServer;
  before(async () => {
    bundle = extendedBundle();
    server = await serve(bundle.dir);
  });
  after(async () => {
    await server.close();
    bundle.remove();
  });

  test("loads with progress forwarded, and generates the same image as on the page, steps forwarded", async () => {
    const { page, close, transfers } = channel();
    try {
      const events: ModelLoadProgress[] = [];
      const model = await loadModelInWorker(page, `${server.url}manifest.json`, {
        cache: "none",
        onProgress: (p) => events.push(p),
      });
      assert.equal(model.variant, "webgpu-float32");
      assert.equal(model.modelId, "sdpack/golden@1.0.0");
      assert.equal(model.gpu.description, "fake");
      assert.ok(model.stats && model.stats.storedBytes > 0);
      assert.ok(
        events.length > 2 &&
          events.at(-1)!.progress === 1 &&
          events.at(-1)!.text.startsWith("Ready"),
      );
      const steps: number[] = [];
      const request = {
        prompt: "a red cat",
        negativePrompt: "blurry",
        seed: 18446744073709551615n,
        steps: 3,
        guidance: 6.5,
        scheduler: "ddim" as const,
      };
      const image = await model.generate({ ...request, onStep: (i, n) => steps.push(i * 10 + n) });
      assert.deepEqual(steps, [13, 23, 33]);
      // The pixels were transferred: the worker's buffers are detached (byteLength 0) after the post.
      const sent = transfers.at(-1)! as ArrayBuffer[];
      assert.equal(sent.length, 2);
      assert.ok(sent.every((b) => b.byteLength === 0));
      const direct = await (
        await loadModel(`${server.url}manifest.json`, { backend: fakeBackend() })
      ).generate(request);
      assert.ok(image.rgba instanceof Uint8ClampedArray && image.float instanceof Float32Array);
      assert.deepEqual(image.rgba, direct.rgba);
      assert.deepEqual(image.float, direct.float);
      assert.deepEqual(image.parameters, direct.parameters);
      assert.equal(image.parameters.seed, "18446744073709551615");
      await model.dispose();
      await assert.rejects(
        model.generate(request),
        (err: BundleError) =>
          err.name === "UnsupportedError" && /no model is loaded/.test(err.message),
      );
    } finally {
      close();
    }
  });

  test("an abort reaches the worker: the generation stops between steps with an AbortError", async () => {
    const { page, close } = channel();
    try {
      const model = await loadModelInWorker(page, `${server.url}manifest.json`, { cache: "none" });
      const controller = new AbortController();
      const steps: number[] = [];
      const run = model.generate({
        prompt: "x",
        steps: 50,
        signal: controller.signal,
        onStep: (i) => (steps.push(i), i === 2 && controller.abort()),
      });
      await assert.rejects(
        run,
        (err: Error) => err.name === "AbortError" && err instanceof BundleError,
      );
      assert.ok(steps.length < 50, `${steps.length} steps ran`);
    } finally {
      close();
    }
  });

  test("errors cross as the runtime's errors; a bad spec or a cache object fails on the page", async () => {
    const { page, close } = channel();
    try {
      await assert.rejects(
        loadModelInWorker(page, `${server.url}nope/manifest.json`, { cache: "none", workers: 0 }),
        (err: BundleError) => {
          assert.ok(err instanceof BundleError);
          assert.equal(err.file, "manifest.json");
          assert.match(err.message, /HTTP 404/);
          return true;
        },
      );
      await assert.rejects(
        loadModelInWorker(page, "sdpack/golden"),
        /model "sdpack\/golden": it does not say which version/,
      );
      await assert.rejects(
        loadModelInWorker(page, `${server.url}manifest.json`, {
          cache: new MemoryCache() as never,
        }),
        /a ContentCache object cannot cross into a worker/,
      );
      await assert.rejects(
        loadModelInWorker(page, `${server.url}manifest.json`, { cache: "opfs" }),
        (err: Error) => err.name === "UnsupportedError" && /cache "opfs"/.test(err.message),
      );
    } finally {
      close();
    }
  });
});
