/** fetch.ts: bundle and Hub URLs, and retries of HTTP 5xx answers and network errors (not of 4xx). */
import assert from "node:assert/strict";
import { describe, test } from "node:test";

import { MemoryCache } from "../src/cache.js";
import { hubManifestUrl, resolveBundleUrl, retryDelayMs } from "../src/fetch.js";
import { loadBundleFiles } from "../src/stream.js";

import {
  assertVerified,
  BASE,
  cleanLoadWorks,
  fakeHub,
  FAST,
  halfThen,
  listedSha,
  SHARD,
  unavailable,
} from "./faultyHub.js";
import { bundleError } from "./helpers.js";

test("bundle URLs: manifest, Hub resolve, folder", () => {
  assert.deepEqual(resolveBundleUrl("https://h.test/org/m/resolve/abc/manifest.json"), {
    manifestUrl: "https://h.test/org/m/resolve/abc/manifest.json",
    baseUrl: "https://h.test/org/m/resolve/abc/",
  });
  assert.equal(
    resolveBundleUrl("https://h.test/b/v1").manifestUrl,
    "https://h.test/b/v1/manifest.json",
  );
  assert.equal(resolveBundleUrl("https://h.test/b/v1/").baseUrl, "https://h.test/b/v1/");
  assert.equal(
    hubManifestUrl("org/m", "refs/pr/1"),
    "https://huggingface.co/org/m/resolve/refs%2Fpr%2F1/manifest.json",
  );
});

describe("retries", () => {
  test("the backoff doubles from 200 ms and is capped", () => {
    assert.deepEqual(
      [0, 1, 2].map((n) => retryDelayMs(undefined, n)),
      [200, 400, 800],
    );
    assert.deepEqual(
      [0, 1, 2, 3].map((n) => retryDelayMs({ delayMs: 50, maxDelayMs: 300 }, n)),
      [50, 100, 200, 300],
    );
  });

  test("503 twice, then the file: the load succeeds after 200 + 400 ms, with 3 requests", async () => {
    const hub = fakeHub({ [SHARD]: (n) => (n <= 2 ? unavailable() : undefined) });
    const cache = new MemoryCache();
    const t0 = performance.now();
    const b = await loadBundleFiles(BASE, { fetch: hub.fetch, cache });
    const ms = performance.now() - t0;
    assertVerified(b);
    assert.equal(hub.count(SHARD), 3);
    assert.ok(ms >= 590, `waited ${ms} ms`);
    assert.ok(cache.entries.has(listedSha(SHARD)));
    assert.deepEqual(b.warnings, []);
  });

  test("network errors (fetch rejects) are retried", async () => {
    const hub = fakeHub({
      [SHARD]: (n) => (n <= 2 ? Promise.reject(new TypeError("Failed to fetch")) : undefined),
    });
    assertVerified(await loadBundleFiles(BASE, { fetch: hub.fetch, retry: FAST }));
    assert.equal(hub.count(SHARD), 3);
  });

  test("a connection that breaks mid-body is retried, and its bytes are taken back from the progress", async () => {
    const hub = fakeHub({
      [SHARD]: (n, body) =>
        n === 1
          ? new Response(halfThen(body), { headers: { "content-length": String(body.length) } })
          : undefined,
    });
    const seen: number[] = [];
    let total = 0;
    const b = await loadBundleFiles(BASE, {
      fetch: hub.fetch,
      retry: FAST,
      onProgress: (p) => (seen.push(p.loadedBytes), (total = p.totalBytes)),
    });
    assertVerified(b);
    assert.equal(hub.count(SHARD), 2);
    assert.ok(Math.max(...seen) <= total, "progress never counts a byte twice");
    assert.equal(seen.at(-1), total);
  });

  test("a server that keeps failing: the error names the file, the status and the tries; nothing cached", async () => {
    const hub = fakeHub({ [SHARD]: () => unavailable() });
    const cache = new MemoryCache();
    const err = await bundleError(loadBundleFiles(BASE, { fetch: hub.fetch, cache, retry: FAST }));
    assert.equal(err.file, SHARD);
    assert.match(
      err.message,
      new RegExp(`^${SHARD}: HTTP 503 Service Unavailable from .*; gave up after 4 tries$`),
    );
    assert.match(err.hint!, /try again later/);
    assert.equal(hub.count(SHARD), 4);
    assert.ok(!cache.entries.has(listedSha(SHARD)));
    await cleanLoadWorks(cache, [SHARD]);
  });

  test("retries: 0 turns retrying off", async () => {
    const hub = fakeHub({ [SHARD]: () => unavailable() });
    const err = await bundleError(
      loadBundleFiles(BASE, { fetch: hub.fetch, retry: { retries: 0 } }),
    );
    assert.match(err.message, /HTTP 503/);
    assert.doesNotMatch(err.message, /gave up/);
    assert.equal(hub.count(SHARD), 1);
  });

  test("the manifest is retried too", async () => {
    const hub = fakeHub({ "manifest.json": (n) => (n === 1 ? unavailable() : undefined) });
    assertVerified(await loadBundleFiles(BASE, { fetch: hub.fetch, retry: FAST }));
    assert.equal(hub.count("manifest.json"), 2);
  });

  for (const [status, statusText] of [
    [404, "Not Found"],
    [403, "Forbidden"],
    [429, "Too Many Requests"],
  ] as const) {
    test(`HTTP ${status} is not retried`, async () => {
      const hub = fakeHub({ [SHARD]: () => new Response(null, { status, statusText }) });
      const cache = new MemoryCache();
      const err = await bundleError(
        loadBundleFiles(BASE, { fetch: hub.fetch, cache, retry: FAST }),
      );
      assert.equal(err.message.split(" from ")[0], `${SHARD}: HTTP ${status} ${statusText}`);
      if (status === 404) assert.match(err.hint!, /URL/);
      assert.equal(hub.count(SHARD), 1);
      assert.ok(!cache.entries.has(listedSha(SHARD)));
      await cleanLoadWorks(cache, [SHARD]);
    });
  }
});
