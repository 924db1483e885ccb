// The browser half of bench/web_loader.py: loads a bundle's weight shards two ways and times them.
// Bundled by esbuild against runtime-web's compiled sources (the alias `sdpack-rt` points at a
// `tsc` build of runtime-web/src), so the measured path is the product's code:
//   peer     fetch + arrayBuffer() of every .zst shard of every component;
//   runtime  the same fetch, then decodeShard (sha256 of the stored bytes, zstd, unshuffle, sha256
//            of the raw bytes), shardTensors, and one GPUBuffer + queue.writeBuffer per tensor,
//            waiting for queue.onSubmittedWorkDone() after each shard;
//   split    diagnostic, concurrency 1: decodeShard's steps timed one by one on fetched shards
//            (sha256Hex, zstddec — the runtime's decoder library —, unshuffle, sha256Hex);
//   loader   loadBundleFiles (the product's loader, stream reads, its own pool), weights only,
//            no upload: what loadModel does before the GPU phase.
// Shards are processed and dropped one at a time per worker; only GPU buffers stay (as loadModel
// keeps them), destroyed at the end of each run.
import { ZSTDDecoder } from "zstddec";

import { decodeShard, unshuffle } from "sdpack-rt/encoding.js";
import { sha256Hex } from "sdpack-rt/hash.js";
import { halfToFloat32 } from "sdpack-rt/half.js";
import { loadBundleFiles } from "sdpack-rt/loader.js";
import { parseManifest } from "sdpack-rt/manifest.js";
import { parseTensorCache, shardTensors } from "sdpack-rt/tensorCache.js";

const now = () => performance.now();

// Time every WebCrypto digest the runtime makes (hash.ts calls globalThis.crypto.subtle.digest).
const digestStats = { ms: 0, bytes: 0, calls: 0 };
{
  const subtle = globalThis.crypto.subtle;
  const digest = subtle.digest.bind(subtle);
  subtle.digest = async (alg, data) => {
    const t = now();
    try {
      return await digest(alg, data);
    } finally {
      digestStats.ms += now() - t;
      digestStats.bytes += data.byteLength;
      digestStats.calls += 1;
    }
  };
}

async function pool(items, width, work) {
  let next = 0;
  const worker = async () => {
    while (next < items.length) await work(items[next++]);
  };
  await Promise.all(Array.from({ length: Math.max(1, Math.min(width, items.length)) }, worker));
}

let state;

/** Manifest, the shard list (every encoded shard of every component) and a WebGPU device. */
async function init(bundleUrl) {
  const base = new URL(bundleUrl, location.href).href.replace(/\/?$/, "/");
  const manifest = parseManifest(new Uint8Array(await (await fetch(base + "manifest.json")).arrayBuffer()));
  const shards = [];
  for (const [component, comp] of Object.entries(manifest.components)) {
    const index = parseTensorCache(new Uint8Array(await (await fetch(base + comp.weights)).arrayBuffer()), comp.weights);
    const dir = comp.weights.slice(0, comp.weights.lastIndexOf("/") + 1);
    for (const record of index.records) {
      const path = dir + record.dataPath;
      const entry = manifest.files.find((f) => f.path === `${path}.zst`) ?? manifest.files.find((f) => f.path === path);
      shards.push({ component, entry, record, url: base + entry.path });
    }
  }
  const adapter = await navigator.gpu?.requestAdapter();
  if (!adapter) throw new Error("no WebGPU adapter");
  const device = await adapter.requestDevice();
  const info = adapter.info ?? {};
  const limits = (l) => ({ maxBufferSize: l.maxBufferSize, maxStorageBufferBindingSize: l.maxStorageBufferBindingSize });
  state = { base, manifest, shards, device };
  const storedBytes = shards.reduce((a, s) => a + s.entry.size, 0);
  const rawBytes = shards.reduce((a, s) => a + s.record.nbytes, 0);
  return {
    shards: shards.length, storedBytes, rawBytes, tensors: shards.reduce((a, s) => a + s.record.records.length, 0),
    adapter: `${info.vendor ?? "?"}/${info.architecture ?? "?"}`, features: [...adapter.features],
    adapterLimits: limits(adapter.limits), deviceLimits: limits(device.limits),
  };
}

/** Nothing may come from the Cache API between runs (the HTTP server sends no-store). */
async function clearCaches() {
  if (globalThis.caches) for (const name of await caches.keys()) await caches.delete(name);
}

async function peer(concurrency) {
  await clearCaches();
  let bytes = 0;
  let fetchMs = 0;
  const t0 = now();
  await pool(state.shards, concurrency, async (s) => {
    const t = now();
    const response = await fetch(s.url);
    const body = await response.arrayBuffer();
    fetchMs += now() - t;
    if (body.byteLength !== s.entry.size) throw new Error(`${s.entry.path}: got ${body.byteLength} bytes`);
    bytes += body.byteLength;
  });
  return { wallMs: now() - t0, storedBytes: bytes, fetchMs };
}

function upload(device, tensors, buffers, asFloat32) {
  let bytes = 0;
  for (const t of tensors) {
    let src = t.bytes;
    if (asFloat32 && t.dtype === "float16") {
      const f = halfToFloat32(t.data); // what loadModel's paramFor does for a webgpu-float32 variant
      src = new Uint8Array(f.buffer, f.byteOffset, f.byteLength);
    }
    const size = (src.byteLength + 3) & ~3;
    if (size !== src.byteLength) {
      const padded = new Uint8Array(size);
      padded.set(src);
      src = padded;
    }
    const buffer = device.createBuffer({ size: Math.max(4, size), usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_DST });
    device.queue.writeBuffer(buffer, 0, src.buffer, src.byteOffset, size);
    buffers.push(buffer);
    bytes += size;
  }
  return bytes;
}

async function runtime(concurrency, asFloat32 = false) {
  await clearCaches();
  const { device } = state;
  const buffers = [];
  const ms = { fetch: 0, verifyDecode: 0, tensors: 0, upload: 0 };
  let stored = 0;
  let raw = 0;
  let uploaded = 0;
  const d0 = { ...digestStats };
  const t0 = now();
  await pool(state.shards, concurrency, async (s) => {
    let t = now();
    const response = await fetch(s.url);
    const bytes = new Uint8Array(await response.arrayBuffer());
    ms.fetch += now() - t;
    stored += bytes.byteLength;
    t = now();
    const decoded = await decodeShard(bytes, s.entry);
    ms.verifyDecode += now() - t;
    raw += decoded.byteLength;
    t = now();
    const tensors = shardTensors(decoded, s.record, s.entry.path);
    ms.tensors += now() - t;
    t = now();
    uploaded += upload(device, tensors, buffers, asFloat32);
    await device.queue.onSubmittedWorkDone();
    ms.upload += now() - t;
  });
  const wallMs = now() - t0;
  const sha = { ms: digestStats.ms - d0.ms, bytes: digestStats.bytes - d0.bytes, calls: digestStats.calls - d0.calls };
  for (const b of buffers) b.destroy();
  await device.queue.onSubmittedWorkDone();
  // decodeShard = 2 digests + zstd + unshuffle; at concurrency 1 nothing overlaps, so this splits it exactly.
  return { wallMs, storedBytes: stored, rawBytes: raw, uploadedBytes: uploaded, buffers: buffers.length, ms, sha,
    decodeMs: ms.verifyDecode - sha.ms };
}

async function loader(concurrency) {
  await clearCaches();
  const t0 = now();
  const bundle = await loadBundleFiles(state.base + "manifest.json", { concurrency, include: (f) => f.path.startsWith("weights/") });
  const wallMs = now() - t0;
  let raw = 0;
  for (const [path, bytes] of bundle.files) if (path.endsWith(".zst")) raw += bytes.byteLength;
  return { wallMs, rawBytes: raw, files: bundle.files.size };
}

async function split() {
  const zstd = new ZSTDDecoder();
  await zstd.init();
  const ms = { shaStored: 0, zstd: 0, unshuffle: 0, shaRaw: 0 };
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
    t = now();
    const bytes = unshuffle(payload, s.entry.encoding.shuffle ?? 1);
    ms.unshuffle += now() - t;
    t = now();
    await sha256Hex(bytes);
    ms.shaRaw += now() - t;
    raw += bytes.byteLength;
  }
  return { wallMs: now() - t0, rawBytes: raw, ms };
}

globalThis.bench = { init, peer, runtime, loader, split };
globalThis.benchReady = true;
