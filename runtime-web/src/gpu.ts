/**
 * The GPU side of the web runtime: one WebGPU device, and per component one tvmjs instance of
 * the bundle's compiled `.wasm` with its parameters uploaded once. A component is a Relax VM
 * `main(*inputs, *params)`; inputs go up and the (first) output comes back as host arrays.
 *
 * The pipeline talks to `GpuBackend` only, so node tests can run it with a stand-in backend.
 */
import type * as Tvm from "@mlc-ai/web-runtime";

import { BundleError, UnsupportedError } from "./errors.js";

export type Tvmjs = typeof Tvm;

export type HostDtype = "float32" | "float16" | "int32" | "uint32";

/** A tensor in host memory; float16 as its raw bits. */
export interface HostTensor {
  dtype: HostDtype;
  shape: number[];
  data: Float32Array | Uint16Array | Int32Array | Uint32Array;
}

/** What a bundle variant is checked against. */
export interface GpuInfo {
  /** "vendor/architecture" of the adapter, for display. */
  description: string;
  /** Features the device was created with (e.g. "shader-f16"). */
  features: string[];
  /** The device's limits on one buffer and one storage binding. */
  maxBufferSize: number;
  maxStorageBufferBindingSize: number;
}

export interface GpuComponent {
  /** Run `main(*inputs, *params)` and bring the first output back to the host. */
  run(inputs: HostTensor[]): Promise<HostTensor>;
  dispose(): void;
}

/**
 * A component whose parameters arrive one by one (as `loadModel` streams the shards): each is
 * uploaded when it is set, so the host keeps none of them.
 */
export interface ComponentLoader {
  /** Upload parameter `index` (in `main`'s order); `tensor` may be reused by the caller once this returns. */
  setParam(index: number, tensor: HostTensor): void | Promise<void>;
  /** Every parameter is set: finish (e.g. compile the shaders) and give the runnable component. */
  finish(): Promise<GpuComponent>;
  /** Give up (a failed load): free what was uploaded. */
  dispose(): void;
}

export interface GpuBackend {
  readonly info: GpuInfo;
  /** Instantiate a component's wasm on the device and upload its parameters (in `main`'s order). */
  loadComponent(name: string, wasm: Uint8Array, params: HostTensor[]): Promise<GpuComponent>;
  /**
   * Instantiate a component's wasm, its `paramCount` parameters to follow through the loader.
   * Optional: `loadModel` falls back to `loadComponent` (holding one component's parameters at a
   * time) for backends without it.
   */
  beginComponent?(name: string, wasm: Uint8Array, paramCount: number): Promise<ComponentLoader>;
  /** Release every component and the device. */
  dispose(): void;
}

/** tvmjs: the global a `<script>` tag defines, else the npm package. */
export async function loadTvmjs(): Promise<Tvmjs> {
  const global = (globalThis as { tvmjs?: Tvmjs }).tvmjs;
  if (global) return global;
  const mod = (await import("@mlc-ai/web-runtime")) as Tvmjs & { default?: Tvmjs };
  return mod.default ?? mod;
}

function bytesOf(t: HostTensor): Uint8Array {
  return new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength);
}

interface GpuDeviceLike {
  features: { has(name: string): boolean; forEach(cb: (name: string) => void): void };
  limits: { maxBufferSize: number; maxStorageBufferBindingSize: number };
  destroy(): void;
}

/**
 * The WebGPU device (tvmjs `detectGPUDevice` through `detectDevice`; one device every component shares) and a
 * backend on it. Throws `UnsupportedError` where the browser has no WebGPU adapter.
 */
export async function createWebGpuBackend(tvmjs?: Tvmjs): Promise<GpuBackend> {
  const lib = tvmjs ?? (await loadTvmjs());
  if (typeof navigator === "undefined" || !(navigator as { gpu?: unknown }).gpu) {
    throw new UnsupportedError(
      "this browser has no WebGPU",
      "use a recent Chrome, Edge or Safari, or enable WebGPU",
    );
  }
  const detected = await detectDevice(lib);
  return new WebGpuBackend(
    lib,
    detected.device as unknown as GpuDeviceLike,
    detected.adapterInfo as { vendor?: string; architecture?: string },
  );
}

/** Power preferences asked for in turn, `ADAPTER_RETRY_MS` apart. */
const ADAPTER_ATTEMPTS = ["high-performance", "high-performance", "low-power"] as const;
const ADAPTER_RETRY_MS = 200;

/**
 * tvmjs's `detectGPUDevice`, asked again when it finds no adapter: a browser can answer a page's
 * first `requestAdapter` with null while the GPU process is still starting (seen with Chromium on
 * NVIDIA's Vulkan driver), and some adapters only answer the low-power preference. Exported for tests.
 */
export async function detectDevice(
  lib: Pick<Tvmjs, "detectGPUDevice">,
  sleep: (ms: number) => Promise<void> = (ms) => new Promise((r) => setTimeout(r, ms)),
): Promise<NonNullable<Awaited<ReturnType<Tvmjs["detectGPUDevice"]>>>> {
  let last = "no WebGPU adapter found";
  for (const [i, preference] of ADAPTER_ATTEMPTS.entries()) {
    if (i > 0) await sleep(ADAPTER_RETRY_MS);
    try {
      const detected = await lib.detectGPUDevice(preference);
      if (detected) return detected;
    } catch (err) {
      last = (err as Error).message;
    }
  }
  throw new UnsupportedError(
    `no usable WebGPU adapter after ${ADAPTER_ATTEMPTS.length} requests: ${last}`,
  );
}

class WebGpuBackend implements GpuBackend {
  readonly info: GpuInfo;
  private readonly components = new Set<TvmComponent>();

  constructor(
    private readonly tvmjs: Tvmjs,
    private readonly device: GpuDeviceLike,
    adapterInfo: { vendor?: string; architecture?: string },
  ) {
    const features: string[] = [];
    device.features.forEach((f) => {
      features.push(f);
    });
    this.info = {
      description:
        [adapterInfo.vendor, adapterInfo.architecture].filter(Boolean).join("/") ||
        "unknown adapter",
      features,
      maxBufferSize: device.limits.maxBufferSize,
      maxStorageBufferBindingSize: device.limits.maxStorageBufferBindingSize,
    };
  }

  async loadComponent(name: string, wasm: Uint8Array, params: HostTensor[]): Promise<GpuComponent> {
    const loader = await this.beginComponent(name, wasm, params.length);
    try {
      params.forEach((p, i) => {
        loader.setParam(i, p);
      });
    } catch (err) {
      loader.dispose();
      throw err;
    }
    return loader.finish();
  }

  async beginComponent(
    name: string,
    wasm: Uint8Array,
    paramCount: number,
  ): Promise<ComponentLoader> {
    const buffer = wasm.buffer.slice(
      wasm.byteOffset,
      wasm.byteOffset + wasm.byteLength,
    ) as ArrayBuffer;
    let inst: Tvm.Instance;
    try {
      inst = await this.tvmjs.instantiate(
        buffer,
        this.tvmjs.createPolyfillWASI() as unknown as Record<string, unknown>,
        () => {},
      );
    } catch (err) {
      throw new BundleError(
        `${name}: the WebGPU library does not load (${(err as Error).message})`,
        {
          cause: err,
          hint: "repack the bundle with this sdpack version's webgpu target",
        },
      );
    }
    // Shared device: tvmjs destroys it in dispose(), so only the backend's dispose() ends it.
    inst.initWebGPU(this.device as unknown as Parameters<Tvm.Instance["initWebGPU"]>[0]);
    const component = new TvmComponent(name, inst, paramCount);
    this.components.add(component);
    try {
      component.init();
    } catch (err) {
      this.components.delete(component);
      component.dispose();
      throw err;
    }
    return {
      setParam: (index, tensor) => component.setParam(index, tensor),
      finish: async () => {
        try {
          component.checkParams();
          await component.compileShaders();
          component.transformParams();
        } catch (err) {
          this.components.delete(component);
          component.dispose();
          throw err;
        }
        return component;
      },
      dispose: () => {
        this.components.delete(component);
        component.dispose();
      },
    };
  }

  dispose(): void {
    for (const c of this.components) c.dispose();
    this.components.clear();
    this.device.destroy();
  }
}

/**
 * The optional second VM function of a library: `main_transform_params(params) -> params'`,
 * run once after upload; `main` then takes its result (e.g. convolution weights permuted to the
 * layout the kernels read).
 */
export const TRANSFORM_PARAMS = "main_transform_params";

class TvmComponent implements GpuComponent {
  private readonly dev: Tvm.DLDevice;
  private vm?: Tvm.VirtualMachine;
  private main?: Tvm.PackedFunc;
  private transform?: Tvm.PackedFunc;
  private params: (Tvm.Tensor | undefined)[] = [];

  constructor(
    readonly name: string,
    private readonly inst: Tvm.Instance,
    private readonly paramCount: number,
  ) {
    this.dev = inst.webgpu();
    this.params = new Array(paramCount);
  }

  init(): void {
    const inst = this.inst;
    inst.beginScope();
    try {
      this.vm = inst.detachFromCurrentScope(inst.createVirtualMachine(this.dev));
      this.main = inst.detachFromCurrentScope(this.vm.getFunction("main"));
      let transform: Tvm.PackedFunc | undefined;
      try {
        transform = this.vm.getFunction(TRANSFORM_PARAMS) ?? undefined;
      } catch {
        transform = undefined; // a library without the function: main takes the params as stored
      }
      if (transform) this.transform = inst.detachFromCurrentScope(transform);
    } finally {
      inst.endScope();
    }
  }

  /** Upload parameter `index` into a device tensor of its own (tvmjs: one GPUBuffer + `queue.writeBuffer`). */
  setParam(index: number, t: HostTensor): void {
    if (!Number.isInteger(index) || index < 0 || index >= this.paramCount)
      throw new RangeError(`${this.name}: no parameter ${index}`);
    if (this.params[index]) throw new Error(`${this.name}: parameter ${index} set twice`);
    const inst = this.inst;
    inst.beginScope();
    try {
      this.params[index] = inst.detachFromCurrentScope(this.upload(t));
    } finally {
      inst.endScope();
    }
  }

  checkParams(): void {
    for (let i = 0; i < this.paramCount; i++)
      if (!this.params[i]) throw new BundleError(`${this.name}: parameter ${i} was never uploaded`);
  }

  /**
   * Replace the uploaded params by `main_transform_params(params)` where the library has that
   * function. Params only the transform reads are released with their old handles.
   */
  transformParams(): void {
    if (!this.transform) return;
    const inst = this.inst;
    inst.beginScope();
    try {
      const out = this.transform(inst.makeTVMArray(this.params as Tvm.Tensor[])) as Tvm.TVMArray;
      const next: Tvm.Tensor[] = [];
      for (let i = 0; i < out.size(); i++)
        next.push(inst.detachFromCurrentScope(out.get(i) as unknown as Tvm.Tensor));
      for (const p of this.params) p?.dispose();
      this.params = next;
    } finally {
      inst.endScope();
    }
    this.transform.dispose();
    this.transform = undefined;
  }

  /**
   * Create every compute pipeline now, asynchronously (else each is compiled, blocking, on its
   * first dispatch: tens of seconds of the first image on a software GPU).
   */
  async compileShaders(): Promise<void> {
    await this.inst.asyncLoadWebGPUPipelines(this.vm!.getInternalModule());
  }

  /** A device tensor holding `t` (inside the caller's scope). */
  private upload(t: HostTensor): Tvm.Tensor {
    const gpu = this.inst.empty(t.shape, t.dtype, this.dev);
    const bytes = bytesOf(t);
    if (bytes.byteLength % 4 === 0) return gpu.copyFromRawBytes(bytes);
    // WebGPU writes whole words: an odd-sized float16 tensor goes through a host tensor, which pads.
    const host = this.inst.empty(t.shape, t.dtype, this.inst.cpu()).copyFromRawBytes(bytes);
    return gpu.copyFrom(host);
  }

  async run(inputs: HostTensor[]): Promise<HostTensor> {
    if (!this.main) throw new Error(`${this.name}: disposed`);
    const inst = this.inst;
    inst.beginScope();
    try {
      const args = inputs.map((t) => this.upload(t));
      let out = this.main(...args, ...this.params) as Tvm.Tensor | Tvm.TVMArray;
      if (!("shape" in out)) out = (out as Tvm.TVMArray).get(0) as unknown as Tvm.Tensor; // torch-exported: a tuple
      const dtype = out.dtype as HostDtype;
      const host = inst.empty(out.shape, dtype, inst.cpu());
      host.copyFrom(out);
      await this.dev.sync();
      const raw = host.toRawBytes();
      const shape = [...out.shape];
      const data =
        dtype === "float16"
          ? new Uint16Array(raw.buffer, raw.byteOffset, raw.byteLength / 2)
          : dtype === "int32"
            ? new Int32Array(raw.buffer, raw.byteOffset, raw.byteLength / 4)
            : new Float32Array(raw.buffer, raw.byteOffset, raw.byteLength / 4);
      return { dtype, shape, data };
    } finally {
      inst.endScope();
    }
  }

  dispose(): void {
    for (const p of this.params) p?.dispose();
    this.params = [];
    this.main?.dispose();
    this.transform?.dispose();
    this.vm?.dispose();
    this.main = undefined;
    this.transform = undefined;
    this.vm = undefined;
  }
}
