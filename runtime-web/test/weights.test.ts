/** weights.ts: weight shards streamed into GPU component loaders, routed by the tensor indexes. */
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { mkdirSync, readFileSync, renameSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { describe, test } from "node:test";

import { MemoryCache } from "../src/cache.js";
import { loadModel } from "../src/engine.js";
import type { FileEntry } from "../src/formats.js";
import type { ComponentLoader, GpuBackend, GpuComponent, HostTensor } from "../src/gpu.js";
import { halfToFloat32 } from "../src/half.js";
import { loadBundleFiles } from "../src/stream.js";
import { bundleCopy, bundleError, serve } from "./helpers.js";

const sha = (b: Uint8Array) => createHash("sha256").update(b).digest("hex");

/** The golden bundle plus a webgpu-float32 target (its "wasm" is text) and a vae_decoder sharing the text encoder's weights. */
function webgpuBundle(): { dir: string; remove: () => void } {
  const copy = bundleCopy();
  const m = JSON.parse(readFileSync(join(copy.dir, "manifest.json"), "utf8"));
  const libs: Record<string, string> = {};
  mkdirSync(join(copy.dir, "libs/webgpu-float32"), { recursive: true });
  for (const comp of ["text_encoder", "unet", "vae_decoder"]) {
    const path = `libs/webgpu-float32/${comp}.wasm`;
    const bytes = new TextEncoder().encode(`wasm of ${comp}`);
    writeFileSync(join(copy.dir, path), bytes);
    m.files.push({ path, size: bytes.length, sha256: sha(bytes) });
    libs[comp] = path;
  }
  m.targets["webgpu-float32"] = {
    kind: "webgpu",
    dtype: "float32",
    target: { kind: "webgpu" },
    libs,
    requirements: { features: [] },
  };
  m.components.vae_decoder = {
    ...m.components.text_encoder,
    inputs: [{ name: "latents", dtype: "float32", shape: [1, 4, 8, 8] }],
  };
  m.files.sort((a: FileEntry, b: FileEntry) => (a.path < b.path ? -1 : 1));
  writeFileSync(join(copy.dir, "manifest.json"), JSON.stringify(m));
  return copy;
}

describe("loadModel streams shards into component loaders", () => {
  /** A backend with beginComponent that records each setParam; tensors it gets are copied (the loader may reuse them). */
  function streamingBackend() {
    const log: string[] = [];
    const params = new Map<string, HostTensor[]>();
    const backend: GpuBackend & {
      log: string[];
      params: Map<string, HostTensor[]>;
      disposedLoaders: number;
      disposedComponents: number;
    } = {
      info: {
        description: "stream",
        features: [],
        maxBufferSize: 1 << 30,
        maxStorageBufferBindingSize: 1 << 30,
      },
      log,
      params,
      disposedLoaders: 0,
      disposedComponents: 0,
      async loadComponent() {
        throw new Error("loadModel should stream through beginComponent");
      },
      async beginComponent(
        name: string,
        wasm: Uint8Array,
        count: number,
      ): Promise<ComponentLoader> {
        log.push(`begin ${name} ${count} (${new TextDecoder().decode(wasm)})`);
        const got: HostTensor[] = new Array(count);
        params.set(name, got);
        return {
          setParam(i, t) {
            assert.equal(got[i], undefined, "each parameter once");
            got[i] = { dtype: t.dtype, shape: t.shape, data: t.data.slice() };
          },
          async finish(): Promise<GpuComponent> {
            assert.equal(
              got.filter(Boolean).length,
              count,
              `${name}: finish after every parameter`,
            );
            log.push(`finish ${name}`);
            return {
              run: async () => assert.fail("not run"),
              dispose: () => void (backend.disposedComponents += 1),
            };
          },
          dispose() {
            backend.disposedLoaders += 1;
          },
        };
      },
      dispose() {},
    };
    return backend;
  }

  test("every parameter arrives once, in the variant's dtype; the model keeps no shard", async () => {
    const copy = webgpuBundle();
    const server = await serve(copy.dir);
    const m = JSON.parse(readFileSync(join(copy.dir, "manifest.json"), "utf8"));
    try {
      const backend = streamingBackend();
      const cache = new MemoryCache();
      const model = await loadModel(`${server.url}manifest.json`, { backend, cache, workers: 2 });
      const reference = await loadBundleFiles(`${server.url}manifest.json`);
      for (const comp of ["text_encoder", "unet", "vae_decoder"]) {
        const got = backend.params.get(`libs/webgpu-float32/${comp}.wasm`)!;
        const names: string[] = m.components[comp].params;
        assert.equal(got.length, names.length);
        names.forEach((name, i) => {
          const t = reference.tensors[comp].get(name)!;
          assert.deepEqual(got[i].shape, t.shape);
          const want = t.dtype === "float16" ? halfToFloat32(t.data as Uint16Array) : t.data;
          assert.deepEqual(got[i].data, want, `${comp}/${name}`);
        });
      }
      // Each component begins once every non-shard file is in, and finishes once its parameters are.
      assert.deepEqual(backend.log.filter((l) => l.startsWith("begin")).length, 3);
      assert.ok(
        backend.log.indexOf("finish libs/webgpu-float32/unet.wasm") >
          backend.log.indexOf("begin libs/webgpu-float32/unet.wasm (wasm of unet)"),
      );
      assert.deepEqual(model.bundle.tensors, {});
      assert.ok(
        ![...model.bundle.files.keys()].some((p) => p.includes("params_shard")),
        "no shard kept",
      );
      assert.ok(model.bundle.files.has("tokenizer/tokenizer.json"));
      assert.equal(model.bundle.stats!.decodedInThread, m.files.length); // node: no Worker
    } finally {
      await server.close();
      copy.remove();
    }
  });

  test("a tampered shard fails the load naming it; every component begun is given up", async () => {
    const copy = webgpuBundle();
    const path = join(copy.dir, "weights/unet/params_shard_2.bin.zst");
    const bytes = readFileSync(path);
    bytes[bytes.length >> 1] ^= 1;
    writeFileSync(path, bytes);
    const server = await serve(copy.dir);
    try {
      const backend = streamingBackend();
      const cache = new MemoryCache();
      const err = await bundleError(
        loadModel(`${server.url}manifest.json`, { backend, cache, concurrency: 1 }),
      );
      assert.equal(err.file, "weights/unet/params_shard_2.bin.zst");
      assert.match(err.message, /sha256 mismatch/);
      const begun = backend.log.filter((l) => l.startsWith("begin")).length;
      const finished = backend.log.filter((l) => l.startsWith("finish")).length;
      await new Promise((r) => setTimeout(r, 10));
      assert.equal(begun, 3);
      assert.equal(backend.disposedComponents, finished, "finished components disposed");
      assert.equal(backend.disposedLoaders, begun - finished, "the others' loaders given up");
      for (const [sha256, b] of cache.entries) assert.equal(sha(b), sha256);
    } finally {
      await server.close();
      copy.remove();
    }
  });

  test("shard membership comes from the tensor index, not from folders: an index at the bundle root", async () => {
    // unet's index and shards moved to the bundle root: no folder tells its shards from the
    // tokenizer or the libraries, only the index does.
    const copy = webgpuBundle();
    const m = JSON.parse(readFileSync(join(copy.dir, "manifest.json"), "utf8"));
    const moved = (path: string) =>
      path.startsWith("weights/unet/") ? path.slice("weights/unet/".length) : path;
    for (const f of m.files as FileEntry[]) {
      if (moved(f.path) !== f.path)
        renameSync(join(copy.dir, f.path), join(copy.dir, moved(f.path)));
      f.path = moved(f.path);
    }
    m.components.unet.weights = moved(m.components.unet.weights);
    m.files.sort((a: FileEntry, b: FileEntry) => (a.path < b.path ? -1 : 1));
    writeFileSync(join(copy.dir, "manifest.json"), JSON.stringify(m));
    const server = await serve(copy.dir);
    try {
      const backend = streamingBackend();
      const model = await loadModel(`${server.url}manifest.json`, { backend, concurrency: 1 });
      const got = backend.params.get("libs/webgpu-float32/unet.wasm")!;
      assert.equal(got.filter(Boolean).length, m.components.unet.params.length);
      assert.equal(backend.log.filter((l) => l.startsWith("finish")).length, 3);
      assert.ok(
        ![...model.bundle.files.keys()].some((p) => p.includes("params_shard")),
        "no shard kept",
      );
      assert.ok(
        model.bundle.files.has("tensor-cache.json") &&
          model.bundle.files.has("libs/webgpu-float32/unet.wasm"),
      );
    } finally {
      await server.close();
      copy.remove();
    }
  });
});
