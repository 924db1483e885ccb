// A small app as an npm user writes it, against the published package only (its `exports`):
// load a model by ORG/NAME@VERSION in a model worker (default cache), generate, write the PNG
// with its parameters, and ask about and clear the cache. tests/web/test_browser.py builds it from
// `npm pack`'s tarball with esbuild and drives it through `globalThis.app` (test/browser/run.mjs).
import {
  deleteModelFromCache,
  encodePng,
  hasModelInCache,
  imageMetadata,
  loadModelInWorker,
  requestPersistentStorage,
} from "@sdpack/runtime-web";

const base64 = (bytes) => {
  let bin = "";
  for (let i = 0; i < bytes.length; i += 0x8000)
    bin += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  return btoa(bin);
};

async function run({ spec, endpoint, request }) {
  const worker = new Worker(new URL("./worker.js", import.meta.url), { type: "module" });
  const progress = [];
  const decodedBy = { worker: 0, thread: 0 };
  const t0 = performance.now();
  const model = await loadModelInWorker(worker, spec, {
    endpoint,
    onProgress: (p) => {
      progress.push({ phase: p.phase, progress: p.progress, text: p.text });
      if (p.phase === "download" && p.fileDone) decodedBy[p.decodedBy] += 1;
    },
  });
  const loadMs = performance.now() - t0;
  const steps = [];
  const image = await model.generate({
    ...request,
    onStep: (step, total) => steps.push([step, total]),
  });
  const png = await encodePng(image, imageMetadata(image.parameters));
  const out = {
    ok: true,
    loadMs,
    modelId: model.modelId,
    variant: model.variant,
    commit: model.commit,
    stats: model.stats,
    decodedBy,
    progress,
    steps,
    image: {
      width: image.width,
      height: image.height,
      float_b64: base64(
        new Uint8Array(image.float.buffer, image.float.byteOffset, image.float.byteLength),
      ),
      timings: image.timings,
    },
    png_b64: base64(png),
    inCache: await hasModelInCache(spec, { endpoint }),
    storage: await requestPersistentStorage(),
  };
  await model.dispose();
  worker.terminate();
  return out;
}

async function forget({ spec, endpoint }) {
  const deleted = await deleteModelFromCache(spec, { endpoint });
  return { deleted, inCache: await hasModelInCache(spec, { endpoint }) };
}

globalThis.app = { run, forget };
