/** hasModelInCache / deleteModelFromCache over a MemoryCache, with models served Hub-style. */
import assert from "node:assert/strict";
import { rmSync } from "node:fs";
import { test } from "node:test";

import { MemoryCache, openCache } from "../src/cache.js";
import { loadModel } from "../src/engine.js";
import { deleteModelFromCache, hasModelInCache } from "../src/modelCache.js";
import { loadBundleFiles } from "../src/stream.js";
import { extendedBundle, fakeBackend } from "./fakeModel.js";
import { serve, serveHub } from "./helpers.js";

const V1 = "1".repeat(40);

test("a model is in the cache once a load has put every file it needs there; deleting removes exactly its files", async () => {
  const bundle = extendedBundle();
  const hub = await serveHub(bundle.dir, "sdpack/golden", { "v1.0.0": V1 });
  try {
    const cache = new MemoryCache();
    const opts = { cache, endpoint: hub.url };
    assert.equal(await hasModelInCache("sdpack/golden@1.0.0", opts), false);
    await loadModel("sdpack/golden@1.0.0", { ...opts, backend: fakeBackend() }); // the fp32 variant
    const needed = bundle.manifest.files.filter(
      (f) => !f.path.startsWith("libs/") || f.path.startsWith("libs/webgpu-float32/"),
    );
    assert.equal(cache.entries.size, new Set(needed.map((f) => f.sha256)).size);
    assert.equal(await hasModelInCache("sdpack/golden@1.0.0", opts), true);
    assert.equal(
      await hasModelInCache(`sdpack/golden@${V1}`, { ...opts, variant: "webgpu-float32" }),
      true,
    );
    assert.equal(
      await hasModelInCache("sdpack/golden@1.0.0", { ...opts, variant: "webgpu-float16" }),
      false,
    );
    await assert.rejects(
      hasModelInCache("sdpack/golden@1.0.0", { ...opts, variant: "llvm-float32" }),
      /no WebGPU variant "llvm-float32".*/,
    );
    // One missing weight file is enough to say no.
    const shard = needed.find((f) => f.path.includes("params_shard"))!;
    const bytes = cache.entries.get(shard.sha256)!;
    cache.entries.delete(shard.sha256);
    assert.equal(await hasModelInCache("sdpack/golden@1.0.0", opts), false);
    cache.entries.set(shard.sha256, bytes);

    // An unrelated entry stays; every file of the model goes.
    const other = "e".repeat(64);
    await cache.put(other, new Uint8Array([1]));
    assert.deepEqual(await deleteModelFromCache("sdpack/golden@1.0.0", opts), {
      deleted: new Set(needed.map((f) => f.sha256)).size,
      kept: 0,
    });
    assert.deepEqual([...cache.entries.keys()], [other]);
    assert.equal(await hasModelInCache("sdpack/golden@1.0.0", opts), false);
    assert.deepEqual(await deleteModelFromCache("sdpack/golden@1.0.0", opts), {
      deleted: 0,
      kept: 0,
    });
  } finally {
    await hub.close();
    bundle.remove();
  }
});

test("files another model lists are kept when it is named in keep, and deleted otherwise", async () => {
  const a = extendedBundle();
  const b = extendedBundle(); // the same files: every file is shared
  const hubA = await serveHub(a.dir, "sdpack/golden", { "v1.0.0": V1 });
  const hubB = await serve(b.dir);
  try {
    const cache = new MemoryCache();
    await loadBundleFiles(`${hubB.url}manifest.json`, { cache });
    const all = cache.entries.size;
    const kept = await deleteModelFromCache("sdpack/golden@1.0.0", {
      cache,
      endpoint: hubA.url,
      keep: [`${hubB.url}manifest.json`],
    });
    assert.deepEqual(kept, { deleted: 0, kept: all });
    assert.equal(cache.entries.size, all);
    const gone = await deleteModelFromCache("sdpack/golden@1.0.0", { cache, endpoint: hubA.url });
    assert.deepEqual(gone, { deleted: all, kept: 0 });
    assert.equal(cache.entries.size, 0);
  } finally {
    await hubA.close();
    await hubB.close();
    rmSync(a.dir, { recursive: true, force: true });
    b.remove();
  }
});

test("openCache: the Cache API by default where there is one, none in node; a backend named that is missing is an error", () => {
  assert.equal(openCache(), undefined); // node has no Cache API
  assert.equal(openCache("none"), undefined);
  const mine = new MemoryCache();
  assert.equal(openCache(mine), mine);
  assert.throws(
    () => openCache("cache-api"),
    /cache "cache-api": the Cache API is not available here/,
  );
  assert.throws(() => openCache("opfs"), /cache "opfs": the Origin Private File System/);
  assert.throws(() => openCache("indexeddb"), /cache "indexeddb": IndexedDB is not available here/);
  assert.throws(
    () => openCache("disk" as never),
    (err: Error & { hint?: string }) =>
      /no such cache/.test(err.message) && /cache-api, opfs, indexeddb, none/.test(err.hint!),
  );
});
