import assert from "node:assert/strict";
import { test } from "node:test";

import { BrowserCache, MemoryCache } from "../src/cache.js";

/** The part of the Cache API BrowserCache uses, over a Map (node 20 has Response but no caches). */
class FakeCacheStorage {
  readonly stores = new Map<string, Map<string, Response>>();
  async open(name: string) {
    const store = this.stores.get(name) ?? new Map<string, Response>();
    this.stores.set(name, store);
    return {
      match: async (url: string) => store.get(url)?.clone(),
      put: async (url: string, response: Response) => void store.set(url, response),
      delete: async (url: string) => store.delete(url),
    };
  }
}

const SHA = "ab".repeat(32);

for (const make of [
  () => new MemoryCache(),
  () => new BrowserCache("t", new FakeCacheStorage() as unknown as CacheStorage),
]) {
  test(`${make().constructor.name}: put, get, delete by sha256`, async () => {
    const cache = make();
    assert.equal(await cache.get(SHA), undefined);
    await cache.put(SHA, Uint8Array.from([1, 2, 3]));
    assert.deepEqual([...(await cache.get(SHA))!], [1, 2, 3]);
    await cache.delete(SHA);
    assert.equal(await cache.get(SHA), undefined);
    await assert.rejects(cache.get("../etc"), /not a sha256/);
  });
}
