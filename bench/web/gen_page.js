/**
 * The browser generation bench's page (bench/web/gen_bench.py builds it with esbuild against a
 * fresh tsc build of runtime-web/src, so what runs is the product's `loadModel` + `generate`).
 *
 * `index.html?auto`: the page drives itself (no automation driver, no node where it runs). It reads
 * /__config, then
 *   1. reports the WebGPU adapter (info, features, limits) from its own `requestAdapter()`;
 *   2. `loadModel(config.modelUrl, { variant })` — a pinned Hub-style URL
 *      (`…/<org>/<name>/resolve/<commit>/manifest.json`), no cache, so every byte crosses the
 *      network; times the download and each component's GPU setup from `onProgress`;
 *   3. generates `config.images` images (the first cold, the rest warm) with the fixed prompt, seed,
 *      steps, guidance and scheduler; per image: the Pipeline's own `timings` (text encoder ×2,
 *      UNet loop, per-step, VAE, total), the onStep timestamps, and each component call timed by
 *      wrapping the loaded components' `run` (host upload + dispatches + readback of that call);
 *   4. with `config.profile`: one more image with every compute pass given `timestampWrites`
 *      (see `Profiler`), aggregated per component and kernel;
 * and POSTs a line per stage to /__progress, each image's RGBA to /__image?name=…&w=…&h=…, and the
 * result (or `fatal`, with the console's last lines) to /__result.
 */
import { loadModel } from "sdpack-rt/engine.js";

import { drive, post } from "./auto.js";

const now = () => performance.now();
const median = (xs) => {
  if (!xs.length) return null;
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[s.length >> 1] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};

const LIMITS = [
  "maxBufferSize", "maxStorageBufferBindingSize", "maxUniformBufferBindingSize", "maxComputeWorkgroupStorageSize",
  "maxComputeInvocationsPerWorkgroup", "maxComputeWorkgroupSizeX", "maxComputeWorkgroupSizeY", "maxComputeWorkgroupSizeZ",
  "maxComputeWorkgroupsPerDimension", "maxStorageBuffersPerShaderStage", "maxBindGroups", "maxBindingsPerBindGroup",
  "minStorageBufferOffsetAlignment", "minUniformBufferOffsetAlignment", "minSubgroupSize", "maxSubgroupSize",
];

function limitsOf(l) {
  const out = {};
  for (const k of LIMITS) if (l[k] !== undefined) out[k] = l[k];
  return out;
}

async function adapterReport() {
  if (!navigator.gpu) throw new Error("no WebGPU (navigator.gpu is undefined)");
  // No powerPreference: "high-performance" returns null on the lent NVIDIA machine (docs/design.md).
  // The first request of a page can come back null on the lent NVIDIA machine while a later one
  // gets the GPU (an adapter probe asking twice saw null, then NVIDIA): ask a few times.
  let adapter = null;
  for (let i = 0; i < 5 && !adapter; i++) {
    if (i) await new Promise((r) => setTimeout(r, 200));
    adapter = await navigator.gpu.requestAdapter();
  }
  if (!adapter) throw new Error("no WebGPU adapter (requestAdapter gave null, 5 tries)");
  const i = adapter.info ?? {};
  return {
    vendor: i.vendor, architecture: i.architecture, device: i.device, description: i.description,
    subgroupMinSize: i.subgroupMinSize, subgroupMaxSize: i.subgroupMaxSize,
    isFallbackAdapter: i.isFallbackAdapter ?? adapter.isFallbackAdapter,
    features: [...adapter.features].sort(), limits: limitsOf(adapter.limits),
  };
}

/**
 * Per-dispatch GPU time. tvmjs (lib/index.js, WebGPUContext.createShader → submitShader) records
 * every kernel launch as its own compute pass — beginComputePass, setPipeline, setBindGroup,
 * dispatchWorkgroups, end — into one shared command encoder (`pendingEncoder`) that it finishes and
 * submits only at a sync, a readback or a host→GPU write (flushCommands). Its pipelines carry no
 * label; their `compute.entryPoint` is the kernel's name (finfo.name). So:
 *   - GPUAdapter.requestDevice gets "timestamp-query" added to requiredFeatures where the adapter
 *     has it (tvmjs's detectGPUDevice asks only for shader-f16 and subgroups);
 *   - GPUDevice.createComputePipeline(Async) remember pipeline → entryPoint;
 *   - while enabled, GPUCommandEncoder.beginComputePass adds `timestampWrites` (begin/end of the
 *     pass) at the next two slots of a 4096-query QuerySet (a new one when full), and the pass's
 *     setPipeline / dispatchWorkgroups name the slot (kernel, grid) and tag it with the component
 *     call running (`tag`);
 *   - GPUCommandEncoder.finish first resolves the slots it wrote (resolveQuerySet) and copies them
 *     into a MAP_READ buffer, read back by `collect()` after the image.
 * A pass's time is end − begin of that pass (the dispatch and Dawn's barriers inside the pass, not
 * the gaps between passes); `spanMs` per call is last end − first begin, so span − sum = idle GPU
 * time between passes within the call (encoding, submits, host work). Chromium quantizes
 * timestamps to 100 µs unless started with --enable-webgpu-developer-features (gen_bench.py adds
 * it with --profile).
 */
class Profiler {
  constructor() {
    this.enabled = false;
    this.tag = "";
    this.device = null;
    this.hasTimestamps = false;
    this.names = new WeakMap(); // GPUComputePipeline -> kernel name
    this.passes = new WeakMap(); // GPUComputePassEncoder -> slot record
    this.segments = new WeakMap(); // GPUCommandEncoder -> [{ set, start, count, recs }]
    this.set = null;
    this.next = 0;
    this.pending = [];
    this.records = [];
    this.dropped = 0;
  }

  install() {
    if (typeof GPUAdapter === "undefined") return;
    const self = this;
    const requestDevice = GPUAdapter.prototype.requestDevice;
    GPUAdapter.prototype.requestDevice = async function (desc = {}) {
      const want = this.features.has("timestamp-query");
      const features = [...(desc.requiredFeatures ?? [])];
      if (want && !features.includes("timestamp-query")) features.push("timestamp-query");
      const device = await requestDevice.call(this, { ...desc, requiredFeatures: features });
      if (want) {
        self.device = device;
        self.hasTimestamps = device.features.has("timestamp-query");
      }
      return device;
    };
    for (const method of ["createComputePipeline", "createComputePipelineAsync"]) {
      const original = GPUDevice.prototype[method];
      GPUDevice.prototype[method] = function (desc) {
        const name = desc?.compute?.entryPoint ?? desc?.label ?? "?";
        const out = original.call(this, desc);
        if (out && typeof out.then === "function") return out.then((p) => (self.names.set(p, name), p));
        self.names.set(out, name);
        return out;
      };
    }
    const begin = GPUCommandEncoder.prototype.beginComputePass;
    GPUCommandEncoder.prototype.beginComputePass = function (desc) {
      if (!self.enabled || !self.hasTimestamps || desc?.timestampWrites) return begin.call(this, desc);
      const rec = self.slot(this);
      const pass = begin.call(this, { ...(desc ?? {}), timestampWrites: { querySet: rec.set, beginningOfPassWriteIndex: rec.index, endOfPassWriteIndex: rec.index + 1 } });
      self.passes.set(pass, rec);
      return pass;
    };
    const setPipeline = GPUComputePassEncoder.prototype.setPipeline;
    GPUComputePassEncoder.prototype.setPipeline = function (pipeline) {
      const rec = self.passes.get(this);
      if (rec) rec.name = self.names.get(pipeline) ?? pipeline.label ?? "?";
      return setPipeline.call(this, pipeline);
    };
    const dispatch = GPUComputePassEncoder.prototype.dispatchWorkgroups;
    GPUComputePassEncoder.prototype.dispatchWorkgroups = function (x, y = 1, z = 1) {
      const rec = self.passes.get(this);
      if (rec) rec.grid = `${x}x${y}x${z}`;
      return dispatch.call(this, x, y, z);
    };
    const finish = GPUCommandEncoder.prototype.finish;
    GPUCommandEncoder.prototype.finish = function (desc) {
      const segs = self.segments.get(this);
      if (segs) {
        self.segments.delete(this);
        for (const seg of segs) {
          const bytes = seg.count * 8;
          const resolve = self.device.createBuffer({ size: bytes, usage: GPUBufferUsage.QUERY_RESOLVE | GPUBufferUsage.COPY_SRC });
          const read = self.device.createBuffer({ size: bytes, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST });
          this.resolveQuerySet(seg.set, seg.start, seg.count, resolve, 0);
          this.copyBufferToBuffer(resolve, 0, read, 0, bytes);
          self.pending.push({ resolve, read, recs: seg.recs });
        }
      }
      return finish.call(this, desc);
    };
  }

  /** Two query slots for a pass of `encoder`, recorded as a segment of that encoder. */
  slot(encoder) {
    if (!this.set || this.next + 2 > 4096) {
      this.set = this.device.createQuerySet({ type: "timestamp", count: 4096 });
      this.next = 0;
    }
    const rec = { set: this.set, index: this.next, name: "?", grid: "", tag: this.tag };
    this.next += 2;
    let segs = this.segments.get(encoder);
    if (!segs) this.segments.set(encoder, (segs = []));
    const last = segs[segs.length - 1];
    if (last && last.set === rec.set && last.start + last.count === rec.index) last.count += 2;
    else segs.push({ set: rec.set, start: rec.index, count: 2, recs: [] });
    segs[segs.length - 1].recs.push(rec);
    return rec;
  }

  /** Read back every resolved segment: [{ name, grid, tag, begin (ns, BigInt), ms }]. */
  async collect() {
    await this.device.queue.onSubmittedWorkDone();
    const out = [];
    for (const p of this.pending.splice(0)) {
      await p.read.mapAsync(GPUMapMode.READ);
      const t = new BigUint64Array(p.read.getMappedRange().slice(0));
      p.read.unmap();
      p.read.destroy();
      p.resolve.destroy();
      p.recs.forEach((rec, i) => {
        const a = t[2 * i];
        const b = t[2 * i + 1];
        if (a === 0n || b < a) this.dropped += 1; // not written (or reordered): left out
        else out.push({ name: rec.name, grid: rec.grid, tag: rec.tag, begin: a, end: b, ms: Number(b - a) / 1e6 });
      });
    }
    return out;
  }
}

/**
 * Aggregates: per component, the mean per call (UNet: per step) of dispatch count, summed pass
 * time and the call's GPU span; its kernels by name (count and ms per call, share, mean µs per
 * dispatch, the grids seen), sorted by time. `step` (a UNet call index) also gets a table of its own.
 */
function aggregate(records, step) {
  const byTag = new Map();
  for (const r of records) {
    if (!byTag.has(r.tag)) byTag.set(r.tag, []);
    byTag.get(r.tag).push(r);
  }
  const table = (rs, calls) => {
    const k = new Map();
    let total = 0;
    for (const r of rs) {
      const e = k.get(r.name) ?? { name: r.name, count: 0, ms: 0, grids: new Set() };
      e.count += 1;
      e.ms += r.ms;
      if (e.grids.size < 4) e.grids.add(r.grid);
      k.set(r.name, e);
      total += r.ms;
    }
    return [...k.values()].sort((a, b) => b.ms - a.ms).map((e) => ({
      name: e.name, count: e.count / calls, ms: e.ms / calls, share: total ? e.ms / total : 0,
      meanUs: (e.ms / e.count) * 1000, grids: [...e.grids],
    }));
  };
  const span = (rs) => {
    let lo = rs[0].begin;
    let hi = rs[0].end;
    for (const r of rs) {
      if (r.begin < lo) lo = r.begin;
      if (r.end > hi) hi = r.end;
    }
    return Number(hi - lo) / 1e6;
  };
  const components = {};
  for (const [tag, rs] of byTag) {
    const comp = tag.split("#")[0] || "(outside a component call)";
    (components[comp] ??= { calls: 0, rs: [], spans: [] }).calls += 1;
    components[comp].rs.push(...rs);
    components[comp].spans.push(span(rs));
  }
  const out = { components: {} };
  for (const [comp, c] of Object.entries(components)) {
    out.components[comp] = {
      calls: c.calls, dispatchesPerCall: c.rs.length / c.calls,
      gpuMsPerCall: c.rs.reduce((a, r) => a + r.ms, 0) / c.calls,
      spanMsPerCall: c.spans.reduce((a, b) => a + b, 0) / c.calls,
      kernels: table(c.rs, c.calls),
    };
  }
  const one = byTag.get(`unet#${step}`);
  if (one) out.unetStep = { step, dispatches: one.length, gpuMs: one.reduce((a, r) => a + r.ms, 0), spanMs: span(one), kernels: table(one, 1) };
  return out;
}

const profiler = new Profiler();
profiler.install();

/** Time each call of the loaded components' `run` (the Pipeline's private field, reachable from JS). */
function wrapComponents(model, calls) {
  const comps = model.components;
  if (!comps) return false;
  for (const [name, comp] of Object.entries(comps)) {
    const run = comp.run.bind(comp);
    comp.run = async (inputs) => {
      const i = calls.filter((c) => c.component === name).length; // within this image: `calls` is emptied per image
      const t0 = now();
      profiler.tag = `${name}#${i}`;
      try {
        return await run(inputs);
      } finally {
        calls.push({ component: name, index: i, ms: now() - t0, start: t0 });
        profiler.tag = "";
      }
    };
  }
  return true;
}

async function image(model, config, name, calls, onLine) {
  calls.length = 0;
  const stepAt = [];
  const t0 = now();
  const img = await model.generate({
    prompt: config.prompt, negativePrompt: config.negativePrompt, seed: config.seed, steps: config.steps,
    guidance: config.guidance, scheduler: config.scheduler,
    onStep: (step) => stepAt.push(now() - t0),
  });
  const wallMs = now() - t0;
  const t = img.timings;
  const of = (c) => calls.filter((x) => x.component === c).map((x) => x.ms);
  const unetCalls = of("unet");
  const r = {
    name, wallMs, width: img.width, height: img.height,
    timings: { textEncoderMs: t.textEncoder, unetMs: t.unet, vaeMs: t.vae, totalMs: t.total, steps: t.steps, perStepMs: t.perStep, medianStepMs: median(t.perStep) },
    onStepMs: stepAt.map((x, i) => x - (i ? stepAt[i - 1] : 0)),
    calls: { textEncoderMs: of("text_encoder"), unetMs: unetCalls, medianUnetCallMs: median(unetCalls), vaeMs: of("vae_decoder") },
  };
  // The image goes back as raw RGBA (the server writes the PNG), plus a checksum of the bytes.
  const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", img.rgba));
  r.rgbaSha256 = [...digest].map((b) => b.toString(16).padStart(2, "0")).join("");
  let sum = 0;
  for (let i = 0; i < img.float.length; i++) sum += img.float[i];
  r.meanPixel = sum / img.float.length;
  await post(`/__image?name=${encodeURIComponent(name)}&w=${img.width}&h=${img.height}`, img.rgba);
  await onLine(`${name}: ${(wallMs / 1000).toFixed(2)} s (text ${(t.textEncoder / 1000).toFixed(2)}, UNet ${(t.unet / 1000).toFixed(2)} = ${t.steps} x median ${(r.timings.medianStepMs / 1000).toFixed(3)}, VAE ${(t.vae / 1000).toFixed(2)})`);
  return r;
}

async function runAll(config, onLine) {
  const result = { config, adapter: await adapterReport(), images: [] };
  await onLine(`adapter ${result.adapter.vendor}/${result.adapter.architecture} (${result.adapter.description || "-"}), features: ${result.adapter.features.join(" ")}`);
  const load = { phases: [] };
  let lastDownload = 0;
  const t0 = now();
  const model = await loadModel(config.modelUrl, {
    cache: "none", // every run measures a download, whatever the profile holds
    variant: config.variant || undefined,
    verify: config.verify || undefined,
    onProgress: (p) => {
      if (p.phase === "download") {
        load.totalBytes = p.totalBytes;
        load.loadedBytes = p.loadedBytes;
        load.files = p.filesTotal;
        lastDownload = now() - t0;
      } else if (p.phase === "gpu") {
        load.phases.push({ component: p.component, done: p.componentsDone, atMs: now() - t0 });
      }
    },
  });
  load.ms = now() - t0;
  load.downloadEndMs = lastDownload;
  load.stats = model.bundle.stats;
  result.load = load;
  result.variant = model.variant;
  result.model = { id: model.manifest.model.id, version: model.manifest.model.version, url: config.modelUrl, latent: model.manifest.architecture.latent };
  result.device = { description: model.gpu.description, features: [...model.gpu.features].sort(), maxBufferSize: model.gpu.maxBufferSize, maxStorageBufferBindingSize: model.gpu.maxStorageBufferBindingSize, timestampQuery: profiler.hasTimestamps };
  await onLine(`loaded ${model.variant} in ${(load.ms / 1000).toFixed(2)} s (${((load.totalBytes ?? 0) / 1e6).toFixed(1)} MB; device features: ${result.device.features.join(" ")})`);
  const calls = [];
  result.componentCallsTimed = wrapComponents(model, calls);
  for (let i = 0; i < (config.images ?? 2); i++) result.images.push(await image(model, config, i ? `warm${i}` : "cold", calls, onLine));
  if (config.profile) {
    if (!profiler.hasTimestamps) result.profile = { error: "the device has no timestamp-query" };
    else {
      profiler.enabled = true;
      let img;
      try {
        img = await image(model, config, "profiled", calls, onLine);
      } finally {
        profiler.enabled = false;
      }
      const records = await profiler.collect();
      const step = Math.min(config.profileStep ?? Math.floor(config.steps / 2), config.steps - 1);
      result.profile = { image: img, dispatchesTimed: records.length, dropped: profiler.dropped, ...aggregate(records, step) };
      const u = result.profile.components.unet;
      if (u) await onLine(`profile: UNet ${u.dispatchesPerCall.toFixed(0)} dispatches per step, ${u.gpuMsPerCall.toFixed(1)} ms in passes, ${u.spanMsPerCall.toFixed(1)} ms span`);
    }
  }
  model.dispose();
  return result;
}

/** `index.html?auto` (bench/web/auto.js); a fatal result carries the adapter where one came up. */
async function onFatal(fatal) {
  const result = { fatal };
  try {
    result.adapter = await adapterReport();
  } catch (e) {
    result.adapterError = String(e);
  }
  return result;
}

globalThis.genBench = { runAll, adapterReport, profiler };
if (new URLSearchParams(location.search).has("auto")) drive(runAll, { onFatal, consoleLines: 60 });
