/** Which of a bundle's WebGPU variants runs on this device, and the files it needs. */
import { UnsupportedError } from "./errors.js";
import type { FileEntry, Manifest, Target } from "./formats.js";
import type { GpuInfo } from "./gpu.js";

/**
 * The WebGPU variant to run: `webgpu-float16` where the device has `shader-f16` (and the bundle
 * has one), else `webgpu-float32`; its requirements checked against the device.
 */
export function pickVariant(
  manifest: Manifest,
  gpu: GpuInfo,
  forced?: string,
): { name: string; target: Target } {
  const webgpu = Object.entries(manifest.targets).filter(([, t]) => t.kind === "webgpu");
  if (!webgpu.length) {
    throw new UnsupportedError(
      `${manifest.model.id} ${manifest.model.version} has no WebGPU libraries (it has: ${Object.keys(manifest.targets).join(", ") || "none"})`,
      "repack with --targets including webgpu",
    );
  }
  const has = (f: string) => gpu.features.includes(f);
  const fits = ([, t]: [string, Target]) => (t.requirements.features ?? []).every(has);
  let chosen: [string, Target] | undefined;
  if (forced) {
    chosen = webgpu.find(([name]) => name === forced);
    if (!chosen)
      throw new UnsupportedError(
        `no WebGPU variant ${JSON.stringify(forced)} in this bundle`,
        `choose one of ${webgpu.map(([n]) => n).join(", ")}`,
      );
    if (!fits(chosen))
      throw new UnsupportedError(
        `${forced} needs ${(chosen[1].requirements.features ?? []).join(", ")}, which this GPU lacks`,
      );
  } else {
    const usable = webgpu.filter(fits);
    const fp16 = has("shader-f16") ? usable.find(([, t]) => t.dtype === "float16") : undefined;
    chosen = fp16 ?? usable.find(([, t]) => t.dtype === "float32");
    if (!chosen) {
      const wants = [...new Set(webgpu.flatMap(([, t]) => t.requirements.features ?? []))].filter(
        (f) => !has(f),
      );
      throw new UnsupportedError(
        `this GPU cannot run any WebGPU variant of the bundle (missing: ${wants.join(", ") || "a float32 variant"})`,
      );
    }
  }
  const [name, target] = chosen;
  const need = target.requirements.max_buffer_bytes;
  const limit = Math.min(gpu.maxBufferSize, gpu.maxStorageBufferBindingSize);
  if (need !== undefined && need > limit) {
    throw new UnsupportedError(
      `${name} needs GPU buffers of ${need} bytes; this GPU allows ${limit}`,
      "try a browser or GPU with larger WebGPU limits, or a float16 bundle",
    );
  }
  return { name, target };
}

/**
 * The files a variant needs: everything but the other targets' libraries (native `.so`, the
 * other WebGPU dtype) — manifest, tokenizer, weights and this variant's wasm.
 */
export function neededFiles(manifest: Manifest, target: Target): (entry: FileEntry) => boolean {
  const mine = new Set(Object.values(target.libs));
  const others = new Set(Object.values(manifest.targets).flatMap((t) => Object.values(t.libs)));
  return (entry) => mine.has(entry.path) || !others.has(entry.path);
}
