/**
 * A model without a GPU, for node tests: the golden bundle (formats/testdata/bundle) extended with
 * WebGPU and native targets and a vae_decoder, and a stand-in GPU backend whose components compute
 * simple known functions and record their inputs.
 */
import { createHash } from "node:crypto";
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";

import type { Manifest } from "../src/formats.js";
import type { GpuBackend, GpuComponent, GpuInfo, HostTensor } from "../src/gpu.js";
import { float32ToHalf, halfToFloat32 } from "../src/half.js";
import { parseManifest } from "../src/manifest.js";
import { bundleCopy } from "./helpers.js";

export const sha = (b: Uint8Array) => createHash("sha256").update(b).digest("hex");
/** The hidden size of the stand-in text encoder. */
export const C = 32;

/** The golden bundle plus libs for webgpu-float32/-float16 and llvm, and a vae_decoder component. */
export function extendedBundle(): { dir: string; remove: () => void; manifest: Manifest } {
  const copy = bundleCopy();
  const m = JSON.parse(readFileSync(join(copy.dir, "manifest.json"), "utf8"));
  const lib = (kind: string, dtype: string, ext: string) => {
    const libs: Record<string, string> = {};
    for (const comp of ["text_encoder", "unet", "vae_decoder"]) {
      const path = `libs/${kind}-${dtype}/${comp}.${ext}`;
      const bytes = new TextEncoder().encode(`${kind} ${dtype} ${comp}`);
      mkdirSync(join(copy.dir, `libs/${kind}-${dtype}`), { recursive: true });
      writeFileSync(join(copy.dir, path), bytes);
      m.files.push({ path, size: bytes.length, sha256: sha(bytes) });
      libs[comp] = path;
    }
    const features = kind === "webgpu" && dtype === "float16" ? ["shader-f16"] : [];
    m.targets[`${kind}-${dtype}`] = {
      kind,
      dtype,
      target: { kind },
      libs,
      requirements: { features, max_buffer_bytes: 1 << 20 },
    };
  };
  lib("webgpu", "float32", "wasm");
  lib("webgpu", "float16", "wasm");
  lib("llvm", "float32", "so");
  m.components.vae_decoder = {
    ...m.components.text_encoder,
    inputs: [{ name: "latents", dtype: "float32", shape: [1, 4, 8, 8] }],
  };
  m.files.sort((a: { path: string }, b: { path: string }) => (a.path < b.path ? -1 : 1));
  const text = JSON.stringify(m);
  writeFileSync(join(copy.dir, "manifest.json"), text);
  return { ...copy, manifest: parseManifest(text) };
}

export interface Call {
  component: string;
  inputs: HostTensor[];
}

/** A backend whose components compute simple known functions and record their inputs. */
export function fakeBackend(
  features: string[] = [],
): GpuBackend & { calls: Call[]; loaded: Map<string, HostTensor[]>; disposed: boolean } {
  const calls: Call[] = [];
  const loaded = new Map<string, HostTensor[]>();
  const info: GpuInfo = {
    description: "fake",
    features,
    maxBufferSize: 1 << 30,
    maxStorageBufferBindingSize: 1 << 30,
  };
  const asFloat = (t: HostTensor) =>
    t.dtype === "float16" ? halfToFloat32(t.data as Uint16Array) : (t.data as Float32Array);
  const wrap = (t: HostTensor, values: Float32Array, shape: number[]): HostTensor =>
    t.dtype === "float16"
      ? { dtype: "float16", shape, data: float32ToHalf(values) }
      : { dtype: "float32", shape, data: values };
  const backend = {
    info,
    calls,
    loaded,
    disposed: false,
    async loadComponent(
      name: string,
      _wasm: Uint8Array,
      params: HostTensor[],
    ): Promise<GpuComponent> {
      const component = name
        .split("/")
        .pop()!
        .replace(/\.wasm$/, "");
      loaded.set(name, params);
      return {
        async run(inputs: HostTensor[]): Promise<HostTensor> {
          calls.push({ component, inputs });
          if (component === "text_encoder") {
            const ids = inputs[0].data as Int32Array;
            const out = new Float32Array(77 * C).map((_, i) => ids[Math.floor(i / C)] / 1000);
            return {
              dtype: params[0].dtype,
              shape: [1, 77, C],
              data: params[0].dtype === "float16" ? float32ToHalf(out) : out,
            };
          }
          if (component === "unet") {
            const x = asFloat(inputs[0]);
            const h = asFloat(inputs[2]);
            const n = x.length / 2;
            // eps = 0.1 x + mean(hidden of that batch row): cond and uncond differ through the prompt.
            const out = new Float32Array(2 * n);
            for (let b = 0; b < 2; b++) {
              const rows = h.subarray((b * h.length) / 2, ((b + 1) * h.length) / 2);
              const mean = rows.reduce((a, v) => a + v, 0) / rows.length;
              for (let j = 0; j < n; j++) out[b * n + j] = 0.1 * x[b * n + j] + mean;
            }
            return wrap(inputs[0], out, inputs[0].shape);
          }
          const z = asFloat(inputs[0]);
          const img = new Float32Array(3 * 64 * 64).map((_, i) => Math.tanh(z[i % z.length]));
          return wrap(inputs[0], img, [1, 3, 64, 64]);
        },
        dispose() {},
      };
    },
    dispose() {
      backend.disposed = true;
    },
  };
  return backend;
}
