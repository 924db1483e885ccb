// The browser half of bench/web/loader.py: loads a bundle's weights several ways and times them
// (`runAll`; with `index.html?auto` the page drives itself from the server's /__config).
// Bundled by esbuild against runtime-web's compiled sources (the alias `sdpack-rt` points at a
// `tsc` build of runtime-web/src; the decode worker is built next to this page), so the measured
// path is the product's code:
//   peer     fetch + arrayBuffer() of every weight file (the three tensor indexes and every shard),
//            `concurrency` at once: what a page that only downloads the bytes would take;
//   runtime  runtime-web's `streamWeights` — the weight path of `loadModel`: its fetch (BYOB),
//            its decode-worker pool (stored sha256, zstd, decoded size, unshuffle), `paramFor` (the
//            variant's dtype) and each parameter handed to a ComponentLoader, shard by shard, at
//            the loader's concurrency. The ComponentLoader here is the one thing not from the
//            product: the bundle has no WebGPU wasm for tvmjs, so each parameter goes into a
//            GPUBuffer of its own with one `queue.writeBuffer` — what tvmjs's `copyFromRawBytes`
//            does in the product's `TvmComponent.setParam` — and `finish` waits for the queue.
//            Variants: `runtime+full` (verify "full": also raw_sha256), `runtime+wN` (N workers; w0 =
//            decode on the page's thread);
//   loader   `loadBundleFiles` (weights only, no upload): keeps every decoded file, for comparison;
//   split    diagnostic, one shard at a time on the page's thread: the decode steps timed one by
//            one (sha256Hex, zstddec, the reference byte-loop unshuffle, the product's unshuffle,
//            sha256Hex of the raw bytes).
// GPU buffers, and the run's GPUDevice, are destroyed at the end of each run.
import { ZSTDDecoder } from "zstddec";

import { unshuffleInto, unshuffleReference } from "sdpack-rt/encoding.js";
import { sha256Hex } from "sdpack-rt/hash.js";
import { defaultConcurrency } from "sdpack-rt/decodePool.js";
import { loadBundleFiles } from "sdpack-rt/stream.js";
import { parseManifest } from "sdpack-rt/manifest.js";
import { streamWeights } from "sdpack-rt/weights.js";
import { parseTensorCache } from "sdpack-rt/tensorCache.js";

import { drive } from "./auto.js";

const now = () => performance.now();

async function pool(items, width, work) {
  let next = 0;
  const worker = async () => {
    while (next < items.length) await work(items[next++]);
  };
  await Promise.all(Array.from({ length: Math.max(1, Math.min(width, items.length)) }, worker));
}

let state;

const isWeights = (f) => f.path.startsWith("weights/");

/** Manifest, the weight files (indexes + shards), the shard list and the adapter (devices with the limits tvmjs asks for). */
async function init(bundleUrl) {
  const base = new URL(bundleUrl, location.href).href.replace(/\/?$/, "/");
  const manifest = parseManifest(new Uint8Array(await (await fetch(base + "manifest.json")).arrayBuffer()));
  const shards = [];
  for (const comp of Object.values(manifest.components)) {
    const index = parseTensorCache(new Uint8Array(await (await fetch(base + comp.weights)).arrayBuffer()), comp.weights);
    const dir = comp.weights.slice(0, comp.weights.lastIndexOf("/") + 1);
    for (const record of index.records) {
      const path = dir + record.dataPath;
      const entry = manifest.files.find((f) => f.path === `${path}.zst`) ?? manifest.files.find((f) => f.path === path);
      shards.push({ entry, record, url: base + entry.path });
    }
  }
  const weightFiles = manifest.files.filter(isWeights).map((entry) => ({ entry, url: base + entry.path }));
  const adapter = await navigator.gpu?.requestAdapter();
  if (!adapter) throw new Error(navigator.gpu ? "no WebGPU adapter (requestAdapter gave null)" : "no WebGPU (navigator.gpu is undefined)");
  const want = (n) => Math.min(n, 1 << 30);
  // A device per run (as loadModel makes one per load), destroyed after it: what a run leaves on the
  // GPU process is freed before the next one.
  const newDevice = async () => {
    const a = await navigator.gpu.requestAdapter(); // an adapter gives one device
    return a.requestDevice({
      requiredLimits: { maxBufferSize: want(a.limits.maxBufferSize), maxStorageBufferBindingSize: want(a.limits.maxStorageBufferBindingSize) },
    });
  };
  const device = await newDevice();
  device.destroy();
  const info = adapter.info ?? {};
  const limits = (l) => ({ maxBufferSize: l.maxBufferSize, maxStorageBufferBindingSize: l.maxStorageBufferBindingSize });
  state = { base, manifest, shards, weightFiles, newDevice };
  return {
    files: weightFiles.length, shards: shards.length,
    storedBytes: weightFiles.reduce((a, f) => a + f.entry.size, 0),
    shardStoredBytes: shards.reduce((a, s) => a + s.entry.size, 0),
    rawBytes: shards.reduce((a, s) => a + s.record.nbytes, 0),
    tensors: shards.reduce((a, s) => a + s.record.records.length, 0),
    adapter: `${info.vendor ?? "?"}/${info.architecture ?? "?"}`, features: [...adapter.features],
    adapterLimits: limits(adapter.limits), deviceLimits: limits(device.limits),
    hardwareConcurrency: navigator.hardwareConcurrency, defaultConcurrency: defaultConcurrency(),
  };
}

/** Nothing may come from the Cache API between runs (the HTTP server sends no-store). */
async function clearCaches() {
  if (globalThis.caches) for (const name of await caches.keys()) await caches.delete(name);
}

/** Concurrency 0 in the config: the runtime's own default (`defaultConcurrency`: 4, or one per decode worker). */
const inFlight = (concurrency) => concurrency || defaultConcurrency();

async function peer(concurrency) {
  concurrency = inFlight(concurrency);
  await clearCaches();
  let bytes = 0;
  let fetchMs = 0;
  const t0 = now();
  await pool(state.weightFiles, concurrency, async (f) => {
    const t = now();
    const response = await fetch(f.url);
    const body = await response.arrayBuffer();
    fetchMs += now() - t;
    if (body.byteLength !== f.entry.size) throw new Error(`${f.entry.path}: got ${body.byteLength} bytes`);
    bytes += body.byteLength;
  });
  return { wallMs: now() - t0, storedBytes: bytes, fetchMs };
}

/**
 * Where the bench's parameters go: a GPUBuffer each, filled by one `writeBuffer` (tvmjs's
 * `copyFromRawBytes`; sizes that are not a multiple of 4 padded, as tvmjs's host-tensor path does).
 */
function bufferLoader(device, sink) {
  return {
    setParam(index, t) {
      let bytes = new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength);
      if (bytes.byteLength % 4) {
        const padded = new Uint8Array((bytes.byteLength + 3) & ~3);
        padded.set(bytes);
        bytes = padded;
      }
      const buffer = device.createBuffer({ size: Math.max(4, bytes.byteLength), usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST });
      device.queue.writeBuffer(buffer, 0, bytes.buffer, bytes.byteOffset, bytes.byteLength);
      sink.buffers.push(buffer);
      sink.bytes += bytes.byteLength;
      sink.params += 1;
    },
    async finish() {
      await device.queue.onSubmittedWorkDone();
      return { run: async () => { throw new Error("bench component"); }, dispose() {} };
    },
    dispose() {},
  };
}

/** `runtime`, `runtime+full`, `runtime+w0`, `runtime+w2+full`, …: the product's streaming weight path. */
async function runtime(concurrency, asFloat32 = false, variant = "") {
  await clearCaches();
  const device = await state.newDevice();
  const opts = { verify: variant.includes("+full") ? "full" : "stored" };
  const w = /\+w(\d+)/.exec(variant);
  if (w) opts.workers = Number(w[1]);
  const sink = { buffers: [], bytes: 0, params: 0 };
  const t0 = now();
  const { bundle, components } = await streamWeights(state.base + "manifest.json", {
    ...opts,
    concurrency: concurrency || undefined,
    include: isWeights,
    dtype: asFloat32 ? "float32" : "float16",
    begin: async () => bufferLoader(device, sink),
  });
  const wallMs = now() - t0;
  for (const b of sink.buffers) b.destroy();
  await device.queue.onSubmittedWorkDone();
  device.destroy();
  return { wallMs, stats: bundle.stats, uploadedBytes: sink.bytes, params: sink.params, buffers: sink.buffers.length, components: Object.keys(components).length };
}

async function loader(concurrency) {
  await clearCaches();
  const t0 = now();
  const bundle = await loadBundleFiles(state.base + "manifest.json", { concurrency: inFlight(concurrency), include: isWeights });
  const wallMs = now() - t0;
  let raw = 0;
  for (const [path, bytes] of bundle.files) if (path.endsWith(".zst")) raw += bytes.byteLength;
  return { wallMs, rawBytes: raw, files: bundle.files.size, stats: bundle.stats };
}

async function split() {
  const zstd = new ZSTDDecoder();
  await zstd.init();
  const ms = { shaStored: 0, zstd: 0, unshuffleRef: 0, unshuffle: 0, shaRaw: 0 };
  let raw = 0;
  const t0 = now();
  for (const s of state.shards) {
    const stored = new Uint8Array(await (await fetch(s.url)).arrayBuffer());
    let t = now();
    await sha256Hex(stored);
    ms.shaStored += now() - t;
    t = now();
    const payload = zstd.decode(stored, s.entry.encoding.raw_size);
    ms.zstd += now() - t;
    const k = s.entry.encoding.shuffle ?? 1;
    t = now();
    const ref = unshuffleReference(payload, k);
    ms.unshuffleRef += now() - t;
    t = now();
    const bytes = unshuffleInto(payload, k, new Uint8Array(payload.length));
    ms.unshuffle += now() - t;
    if (bytes.length !== ref.length || bytes[bytes.length >> 1] !== ref[ref.length >> 1]) throw new Error("unshuffle differs from the reference");
    t = now();
    await sha256Hex(bytes);
    ms.shaRaw += now() - t;
    raw += bytes.byteLength;
  }
  return { wallMs: now() - t0, rawBytes: raw, ms };
}

const modes = { peer, runtime, loader, split };

/** Bundle requests the server has answered so far (bench/web/loader.py counts them). */
const requestCount = async () => (await (await fetch("/__count")).json()).bundle;

/**
 * The whole bench as bench/web/loader.py configures it: for each concurrency, `warmup` unrecorded
 * passes over the modes (a fresh browser's first run is slower for every mode), then `repeats`
 * recorded ones. `onRun(line)` hears of every run as it ends.
 */
async function runAll(config, onRun = async () => {}) {
  const result = { runs: [], info: await init("/bundle/") };
  for (const concurrency of config.concurrency) {
    for (let rep = -(config.warmup ?? 0); rep < config.repeats; rep++) {
      for (const mode of config.modes) {
        if (mode === "split" && concurrency !== 1) continue;
        const run = modes[mode.split("+")[0]]; // "runtime+full+w2" → runtime(concurrency, f32, "runtime+full+w2")
        if (!run) throw new Error(`unknown mode ${mode}`);
        const before = await requestCount();
        const startMs = Date.now();
        const r = await run(concurrency, config.asFloat32, mode);
        r.requests = (await requestCount()) - before;
        Object.assign(r, { mode, concurrency, rep, startMs, endMs: Date.now() });
        if (rep >= 0) result.runs.push(r);
        await onRun(`${mode} c${concurrency} ${rep < 0 ? "warm-up" : `#${rep}`}: ${(r.wallMs / 1000).toFixed(2)} s, ${r.requests} requests`);
      }
    }
  }
  return result;
}

globalThis.bench = { init, runAll, ...modes };
globalThis.benchReady = true;
// `index.html?auto`: bench/web/auto.js drives the page from the server's /__config.
if (new URLSearchParams(location.search).has("auto")) drive(runAll, { onFatal: async (fatal) => ({ runs: [], fatal }) });
