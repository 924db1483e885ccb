/**
 * The demo page: load a bundle by URL (`?model=` pre-fills it), then generate with the chosen
 * prompt, seed, steps, guidance and scheduler, showing download and step progress and timings.
 * Bundled by esbuild into dist/demo.js (npm run build:demo); `window.sdpack` exposes the runtime.
 */
import * as sdpack from "../src/index.js";
import { BrowserCache, BundleError, loadModel, MemoryCache, type GeneratedImage, type Pipeline, type SchedulerName } from "../src/index.js";

const $ = <T extends HTMLElement>(id: string) => document.getElementById(id) as T;
const field = (id: string) => $<HTMLInputElement>(id);

let model: Pipeline | undefined;
let running: AbortController | undefined;

interface DemoState {
  model?: Pipeline;
  last?: GeneratedImage & { seed: string };
  loadMs?: number;
  /** Files of the last load checked and decoded in a decode worker / on the page's thread. */
  decodedBy: { worker: number; thread: number };
  error?: string;
  busy: boolean;
}
const state: DemoState = { busy: false, decodedBy: { worker: 0, thread: 0 } };
Object.assign(globalThis, { sdpack, sdpackDemo: state });

function status(text: string): void {
  $("status").textContent = text;
}

function showError(err: unknown): void {
  const e = err as Error & { hint?: string };
  const text = err instanceof BundleError && e.hint ? `${e.message}\n${e.hint}` : e.name === "AbortError" ? "stopped" : String(e.message ?? e);
  state.error = text;
  $("error").textContent = text;
}

function timings(rows: [string, number][]): void {
  $("timings").innerHTML = rows.map(([k, ms]) => `<tr><td>${k}</td><td>${(ms / 1000).toFixed(2)} s</td></tr>`).join("");
}

async function load(): Promise<void> {
  const url = field("model").value.trim();
  if (!url) return;
  running?.abort();
  model?.dispose();
  model = state.model = undefined;
  state.busy = true;
  state.error = undefined;
  $("error").textContent = "";
  field("generate").disabled = true;
  const download = $<HTMLProgressElement>("download");
  const t0 = performance.now();
  running = new AbortController();
  state.decodedBy = { worker: 0, thread: 0 };
  try {
    status("loading…");
    model = await loadModel(url, {
      cache: BrowserCache.available() ? new BrowserCache() : new MemoryCache(),
      signal: running.signal,
      onProgress: (p) => {
        if (p.phase === "download") {
          if (p.fileDone && p.decodedBy) state.decodedBy[p.decodedBy] += 1;
          download.max = Math.max(1, p.totalBytes);
          download.value = p.loadedBytes;
          status(`downloading ${p.filesDone}/${p.filesTotal} files (${(p.loadedBytes / 2 ** 20).toFixed(1)} of ${(p.totalBytes / 2 ** 20).toFixed(1)} MiB)`);
        } else {
          status(p.component ? `preparing ${p.component} on the GPU (${p.componentsDone + 1}/${p.componentsTotal})` : "ready");
        }
      },
    });
    state.model = model;
    state.loadMs = performance.now() - t0;
    const m = model.manifest;
    $("model-info").textContent = `${m.model.id} ${m.model.version} · ${model.variant} · ${model.gpu.description}`;
    field("steps").value = String(m.scheduler.steps);
    field("guidance").value = String(m.scheduler.guidance);
    $<HTMLSelectElement>("scheduler").value = m.scheduler.default;
    field("generate").disabled = false;
    timings([["load", state.loadMs]]);
    status(`loaded in ${(state.loadMs / 1000).toFixed(1)} s`);
  } catch (err) {
    showError(err);
    status("load failed");
  } finally {
    state.busy = false;
  }
}

async function generate(): Promise<void> {
  if (!model) return;
  const stepsBar = $<HTMLProgressElement>("steps-progress");
  running = new AbortController();
  state.busy = true;
  state.error = undefined;
  $("error").textContent = "";
  field("generate").disabled = true;
  field("stop").disabled = false;
  const seed = field("seed").value.trim() || "0";
  try {
    status("generating…");
    const image = await model.generate({
      prompt: $<HTMLTextAreaElement>("prompt").value,
      negativePrompt: field("negative").value,
      seed,
      steps: Number(field("steps").value),
      guidance: Number(field("guidance").value),
      scheduler: $<HTMLSelectElement>("scheduler").value as SchedulerName,
      signal: running.signal,
      onStep: (step, total) => {
        stepsBar.max = total;
        stepsBar.value = step;
        status(`step ${step}/${total}`);
      },
    });
    const canvas = $<HTMLCanvasElement>("image");
    canvas.width = image.width;
    canvas.height = image.height;
    canvas.getContext("2d")!.putImageData(new ImageData(image.rgba as Uint8ClampedArray<ArrayBuffer>, image.width, image.height), 0, 0);
    state.last = { ...image, seed };
    const t = image.timings;
    timings([["load", state.loadMs ?? 0], ["text encoder ×2", t.textEncoder], [`UNet ×${t.steps}`, t.unet], ["per step", t.unet / t.steps], ["VAE", t.vae], ["total", t.total]]);
    status(`done in ${(t.total / 1000).toFixed(1)} s`);
  } catch (err) {
    showError(err);
    status("generation failed");
  } finally {
    state.busy = false;
    field("generate").disabled = false;
    field("stop").disabled = true;
  }
}

field("load").addEventListener("click", () => void load());
field("generate").addEventListener("click", () => void generate());
field("stop").addEventListener("click", () => running?.abort());
const preset = new URLSearchParams(location.search).get("model");
if (preset) field("model").value = preset;
