/** variant.ts: the WebGPU variant a device runs, and the files it needs. */
import assert from "node:assert/strict";
import { describe, test } from "node:test";

import type { GpuInfo } from "../src/gpu.js";
import { neededFiles, pickVariant } from "../src/variant.js";
import { extendedBundle } from "./fakeModel.js";

describe("pickVariant", () => {
  test("a bundle without WebGPU libraries, or a GPU with too small buffers, is refused", () => {
    const { manifest, remove } = extendedBundle();
    remove();
    const gpu: GpuInfo = {
      description: "x",
      features: [],
      maxBufferSize: 1 << 30,
      maxStorageBufferBindingSize: 1 << 30,
    };
    assert.equal(pickVariant(manifest, gpu).name, "webgpu-float32");
    assert.equal(
      pickVariant(manifest, { ...gpu, features: ["shader-f16"] }).name,
      "webgpu-float16",
    );
    assert.throws(
      () => pickVariant(manifest, { ...gpu, maxStorageBufferBindingSize: 1000 }),
      /needs GPU buffers of 1048576 bytes/,
    );
    assert.throws(() => pickVariant(manifest, gpu, "webgpu-float16"), /shader-f16/);
    const native = { ...manifest, targets: { "llvm-float32": manifest.targets["llvm-float32"] } };
    assert.throws(() => pickVariant(native, gpu), /has no WebGPU libraries.*llvm-float32/);
  });

  test("neededFiles: everything but the other targets' libraries", () => {
    const { manifest, remove } = extendedBundle();
    remove();
    const needed = manifest.files
      .filter(neededFiles(manifest, manifest.targets["webgpu-float16"]))
      .map((f) => f.path);
    assert.ok(
      needed.includes("libs/webgpu-float16/unet.wasm") &&
        needed.includes("tokenizer/tokenizer.json"),
    );
    assert.ok(!needed.some((p) => p.startsWith("libs/webgpu-float32/") || p.endsWith(".so")));
    assert.equal(needed.length, manifest.files.length - 6);
  });
});
