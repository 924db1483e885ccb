/**
 * The demo page: load a model by spec (`ORG/NAME@VERSION` on the chosen Hub endpoint) or URL
 * (`?model=` and `?endpoint=` pre-fill them), then generate with the chosen prompt, seed, steps,
 * guidance and scheduler, showing load and step progress and timings. Every image of the session
 * goes into the gallery with its parameters and a button that saves it as a PNG carrying them
 * (formats/README.md "Image metadata"). Bundled by esbuild into dist/demo.js (npm run build:demo);
 * `window.sdpack` exposes the runtime and `window.sdpackDemo` the page's state.
 */
import * as sdpack from "../src/index.js";
import {
  BundleError,
  deleteModelFromCache,
  encodePng,
  imageMetadata,
  loadModel,
  requestPersistentStorage,
  type CacheChoice,
  type GeneratedImage,
  type Pipeline,
  type SchedulerName,
} from "../src/index.js";

const $ = <T extends HTMLElement>(id: string) => document.getElementById(id) as T;
const field = (id: string) => $<HTMLInputElement>(id);

let model: Pipeline | undefined;
let running: AbortController | undefined;

interface DemoState {
  model?: Pipeline;
  last?: GeneratedImage & { seed: string };
  /** This session's images, oldest first. */
  gallery: GeneratedImage[];
  loadMs?: number;
  /** Files of the last load checked and decoded in a decode worker / on the page's thread. */
  decodedBy: { worker: number; thread: number };
  /** The last load's progress fractions, in order. */
  progress: number[];
  error?: string;
  busy: boolean;
}
const state: DemoState = {
  busy: false,
  gallery: [],
  decodedBy: { worker: 0, thread: 0 },
  progress: [],
};
Object.assign(globalThis, { sdpack, sdpackDemo: state });

function status(text: string): void {
  $("status").textContent = text;
}

function showError(err: unknown): void {
  const e = err as Error & { hint?: string };
  const text =
    err instanceof BundleError && e.hint
      ? `${e.message}\n${e.hint}`
      : e.name === "AbortError"
        ? "stopped"
        : String(e.message ?? e);
  state.error = text;
  $("error").textContent = text;
}

function timings(rows: [string, number][]): void {
  $("timings").innerHTML = rows
    .map(([k, ms]) => `<tr><td>${k}</td><td>${(ms / 1000).toFixed(2)} s</td></tr>`)
    .join("");
}

function modelOptions(): { endpoint: string; cache: CacheChoice } {
  return {
    endpoint: field("endpoint").value.trim() || sdpack.HUB_ENDPOINT,
    cache: $<HTMLSelectElement>("cache").value as CacheChoice,
  };
}

async function load(): Promise<void> {
  const spec = field("model").value.trim();
  if (!spec) return;
  running?.abort();
  model?.dispose();
  model = state.model = undefined;
  state.busy = true;
  state.error = undefined;
  $("error").textContent = "";
  field("generate").disabled = true;
  const bar = $<HTMLProgressElement>("download");
  const t0 = performance.now();
  running = new AbortController();
  state.decodedBy = { worker: 0, thread: 0 };
  state.progress = [];
  try {
    status("loading…");
    model = await loadModel(spec, {
      ...modelOptions(),
      signal: running.signal,
      onProgress: (p) => {
        if (p.phase === "download" && p.fileDone && p.decodedBy) state.decodedBy[p.decodedBy] += 1;
        state.progress.push(p.progress);
        bar.value = p.progress;
        status(p.text);
      },
    });
    state.model = model;
    state.loadMs = performance.now() - t0;
    const m = model.manifest;
    $("model-info").textContent =
      `${model.modelId}${model.commit ? ` @ ${model.commit.slice(0, 10)}` : ""} · ${model.variant} · ${model.gpu.description}`;
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
    draw($<HTMLCanvasElement>("image"), image);
    state.last = { ...image, seed };
    addToGallery(image);
    const t = image.timings;
    timings([
      ["load", state.loadMs ?? 0],
      ["text encoder ×2", t.textEncoder],
      [`UNet ×${t.steps}`, t.unet],
      ["per step", t.unet / t.steps],
      ["VAE", t.vae],
      ["total", t.total],
    ]);
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

function draw(canvas: HTMLCanvasElement, image: GeneratedImage): void {
  canvas.width = image.width;
  canvas.height = image.height;
  canvas
    .getContext("2d")!
    .putImageData(
      new ImageData(image.rgba as Uint8ClampedArray<ArrayBuffer>, image.width, image.height),
      0,
      0,
    );
}

/** Download the image as a PNG whose text chunks carry its parameters. */
async function save(image: GeneratedImage): Promise<void> {
  const png = await encodePng(image, imageMetadata(image.parameters));
  const url = URL.createObjectURL(
    new Blob([png as Uint8Array<ArrayBuffer>], { type: "image/png" }),
  );
  const a = document.createElement("a");
  a.href = url;
  a.download = `sdpack-${image.parameters.seed}-${state.gallery.indexOf(image) + 1}.png`;
  a.click();
  setTimeout(() => URL.revokeObjectURL(url), 60_000);
}

/** A gallery entry: the image, its parameters as the PNG will carry them, and a save button. */
function addToGallery(image: GeneratedImage): void {
  state.gallery.push(image);
  const entry = document.createElement("figure");
  const canvas = document.createElement("canvas");
  draw(canvas, image);
  const params = document.createElement("dl");
  for (const [key, value] of imageMetadata(image.parameters)) {
    if (key === "parameters") continue;
    const dt = document.createElement("dt");
    const dd = document.createElement("dd");
    dt.textContent = key;
    dd.textContent = value;
    params.append(dt, dd);
  }
  const button = document.createElement("button");
  button.type = "button";
  button.className = "save";
  button.textContent = "Save PNG";
  button.addEventListener("click", () => void save(image).catch(showError));
  entry.append(canvas, params, button);
  $("gallery").prepend(entry);
}

async function persist(): Promise<void> {
  const s = await requestPersistentStorage();
  const mb = (n?: number) => (n === undefined ? "?" : (n / 1e6).toFixed(0));
  $("storage").textContent =
    `${s.persisted ? "persistent" : "not persistent (the browser may evict it)"}; ${mb(s.usage)} of ${mb(s.quota)} MB used`;
}

async function forget(): Promise<void> {
  const spec = field("model").value.trim();
  if (!spec) return;
  try {
    const { deleted } = await deleteModelFromCache(spec, modelOptions());
    $("storage").textContent = `removed ${deleted} files of ${spec} from the cache`;
  } catch (err) {
    showError(err);
  }
}

field("load").addEventListener("click", () => void load());
field("generate").addEventListener("click", () => void generate());
field("stop").addEventListener("click", () => running?.abort());
field("persist").addEventListener("click", () => void persist().catch(showError));
field("forget").addEventListener("click", () => void forget());
const query = new URLSearchParams(location.search);
if (query.get("model")) field("model").value = query.get("model")!;
if (query.get("endpoint")) field("endpoint").value = query.get("endpoint")!;
