/**
 * Loader faults over a fake fetch: retries with exponential backoff for HTTP 5xx and
 * network errors (never for 4xx or failed checks), a cache that runs out of quota, and aborts.
 * After every fault the cache holds no entry for the bad file and a normal load succeeds.
 */
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, test } from "node:test";

import { MemoryCache } from "../src/cache.js";
import { type BundleError, LoadAbortedError } from "../src/errors.js";
import { loadBundleFiles } from "../src/stream.js";
import type { LoadedBundle, LoadOptions } from "../src/types.js";
import { retryDelayMs } from "../src/fetch.js";
import { bundleError, TESTDATA } from "./helpers.js";

const BASE = "https://hub.test/org/golden/resolve/0123abc/";
const manifestBytes = readFileSync(join(TESTDATA, "bundle", "manifest.json"));
const manifest = JSON.parse(manifestBytes.toString("utf8")) as { files: { path: string; size: number; sha256: string }[] };
const FILES = new Map<string, Uint8Array>([["manifest.json", new Uint8Array(manifestBytes)]]);
for (const f of manifest.files) FILES.set(f.path, new Uint8Array(readFileSync(join(TESTDATA, "bundle", f.path))));
const SHARD = "weights/unet/params_shard_1.bin.zst"; // the largest file
const OTHER = "weights/unet/params_shard_2.bin.zst";
const sha = (path: string) => manifest.files.find((f) => f.path === path)!.sha256;
const hex = (b: Uint8Array) => createHash("sha256").update(b).digest("hex");

/** What a fault does with request number `n` (1-based) of its file; undefined = answer normally. */
type Fault = (n: number, body: Uint8Array, signal?: AbortSignal) => Response | Promise<Response> | undefined;

/** A fetch over FILES that records requests and lets `faults` answer some of them. */
function fakeHub(faults: Record<string, Fault> = {}) {
  const requests: string[] = [];
  const fetch = async (input: RequestInfo | URL, init?: RequestInit): Promise<Response> => {
    const path = String(input).slice(BASE.length);
    requests.push(path);
    init?.signal?.throwIfAborted();
    const body = FILES.get(path);
    const answer = body && faults[path]?.(requests.filter((p) => p === path).length, body, init?.signal ?? undefined);
    if (answer) return answer;
    if (!body) return new Response(null, { status: 404, statusText: "Not Found" });
    return new Response(body.slice(), { status: 200, headers: { "content-length": String(body.length) } });
  };
  return { fetch: fetch as typeof globalThis.fetch, requests, count: (path: string) => requests.filter((p) => p === path).length };
}

/** A body that delivers the first half of `body`, then breaks (or, with `signal`, waits for the abort). */
function halfThen(body: Uint8Array, signal?: AbortSignal, onHalf?: () => void): ReadableStream<Uint8Array> {
  return new ReadableStream({
    start(controller) {
      controller.enqueue(body.slice(0, body.length >> 1));
      onHalf?.();
      if (!signal) controller.error(new TypeError("network error"));
      else if (signal.aborted) controller.error(signal.reason);
      else signal.addEventListener("abort", () => controller.error(signal.reason), { once: true });
    },
  });
}

const unavailable = () => new Response("busy", { status: 503, statusText: "Service Unavailable" });
const FAST: LoadOptions["retry"] = { delayMs: 1 };

/** Every file verified (the loader returns decoded bytes: compare with raw_sha256 or sha256). */
function assertVerified(b: LoadedBundle) {
  assert.equal(b.files.size, manifest.files.length);
  for (const f of b.manifest.files) assert.equal(hex(b.files.get(f.path)!), f.encoding ? f.encoding.raw_sha256 : f.sha256, f.path);
}

/** A later normal load with the same cache succeeds and fetches what was not cached. */
async function cleanLoadWorks(cache: MemoryCache, mustFetch: string[]) {
  const hub = fakeHub();
  const b = await loadBundleFiles(BASE, { fetch: hub.fetch, cache });
  assertVerified(b);
  for (const path of mustFetch) assert.equal(hub.count(path), 1, `${path} fetched again`);
  for (const f of manifest.files) assert.ok(cache.entries.has(f.sha256), `${f.path} cached after the clean load`);
}

describe("retries", () => {
  test("the backoff doubles from 200 ms and is capped", () => {
    assert.deepEqual([0, 1, 2].map((n) => retryDelayMs(undefined, n)), [200, 400, 800]);
    assert.deepEqual([0, 1, 2, 3].map((n) => retryDelayMs({ delayMs: 50, maxDelayMs: 300 }, n)), [50, 100, 200, 300]);
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
    assert.ok(cache.entries.has(sha(SHARD)));
    assert.deepEqual(b.warnings, []);
  });

  test("network errors (fetch rejects) are retried", async () => {
    const hub = fakeHub({ [SHARD]: (n) => (n <= 2 ? Promise.reject(new TypeError("Failed to fetch")) : undefined) });
    assertVerified(await loadBundleFiles(BASE, { fetch: hub.fetch, retry: FAST }));
    assert.equal(hub.count(SHARD), 3);
  });

  test("a connection that breaks mid-body is retried, and its bytes are taken back from the progress", async () => {
    const hub = fakeHub({ [SHARD]: (n, body) => (n === 1 ? new Response(halfThen(body), { headers: { "content-length": String(body.length) } }) : undefined) });
    const seen: number[] = [];
    let total = 0;
    const b = await loadBundleFiles(BASE, { fetch: hub.fetch, retry: FAST, onProgress: (p) => (seen.push(p.loadedBytes), (total = p.totalBytes)) });
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
    assert.match(err.message, new RegExp(`^${SHARD}: HTTP 503 Service Unavailable from .*; gave up after 4 tries$`));
    assert.match(err.hint!, /try again later/);
    assert.equal(hub.count(SHARD), 4);
    assert.ok(!cache.entries.has(sha(SHARD)));
    await cleanLoadWorks(cache, [SHARD]);
  });

  test("retries: 0 turns retrying off", async () => {
    const hub = fakeHub({ [SHARD]: () => unavailable() });
    const err = await bundleError(loadBundleFiles(BASE, { fetch: hub.fetch, retry: { retries: 0 } }));
    assert.match(err.message, /HTTP 503/);
    assert.doesNotMatch(err.message, /gave up/);
    assert.equal(hub.count(SHARD), 1);
  });

  test("the manifest is retried too", async () => {
    const hub = fakeHub({ "manifest.json": (n) => (n === 1 ? unavailable() : undefined) });
    assertVerified(await loadBundleFiles(BASE, { fetch: hub.fetch, retry: FAST }));
    assert.equal(hub.count("manifest.json"), 2);
  });

  for (const [status, statusText] of [[404, "Not Found"], [403, "Forbidden"], [429, "Too Many Requests"]] as const) {
    test(`HTTP ${status} is not retried`, async () => {
      const hub = fakeHub({ [SHARD]: () => new Response(null, { status, statusText }) });
      const cache = new MemoryCache();
      const err = await bundleError(loadBundleFiles(BASE, { fetch: hub.fetch, cache, retry: FAST }));
      assert.equal(err.message.split(" from ")[0], `${SHARD}: HTTP ${status} ${statusText}`);
      if (status === 404) assert.match(err.hint!, /URL/);
      assert.equal(hub.count(SHARD), 1);
      assert.ok(!cache.entries.has(sha(SHARD)));
      await cleanLoadWorks(cache, [SHARD]);
    });
  }
});

describe("failed checks are not retried", () => {
  const cases: [string, Fault, RegExp][] = [
    ["a truncated body", (_n, body) => new Response(body.slice(0, body.length - 100)), new RegExp(`^${SHARD}: size \\d+ != \\d+ in the manifest$`)],
    ["another file's bytes of the right length", (_n, body) => {
      const other = FILES.get("tokenizer/tokenizer.json")!.slice(0, body.length);
      return new Response(other);
    }, new RegExp(`^${SHARD}: sha256 mismatch$`)],
    ["a body larger than the manifest says", (_n, body) => new Response(new Uint8Array(body.length + 1)), /larger than the \d+ bytes expected/],
  ];
  for (const [name, fault, message] of cases) {
    test(name, async () => {
      const hub = fakeHub({ [SHARD]: fault });
      const cache = new MemoryCache();
      const err = await bundleError(loadBundleFiles(BASE, { fetch: hub.fetch, cache, retry: FAST }));
      assert.match(err.message, message);
      assert.equal(err.file, SHARD);
      assert.match(err.hint!, /damaged or was tampered with/);
      assert.equal(hub.count(SHARD), 1);
      assert.ok(!cache.entries.has(sha(SHARD)));
      await cleanLoadWorks(cache, [SHARD]);
    });
  }
});

/** A MemoryCache whose `put` fails like a full Cache API for `full` (after storing part of it, when `partial`). */
class QuotaCache extends MemoryCache {
  deleted: string[] = [];
  constructor(private readonly full: Set<string>, private readonly partial = false) {
    super();
  }
  override async put(sha256: string, bytes: Uint8Array): Promise<void> {
    if (this.full.has(sha256)) {
      if (this.partial) await super.put(sha256, bytes.subarray(0, bytes.length >> 1));
      throw new DOMException("Quota exceeded.", "QuotaExceededError");
    }
    await super.put(sha256, bytes);
  }
  override async delete(sha256: string): Promise<void> {
    this.deleted.push(sha256);
    await super.delete(sha256);
  }
}

describe("storage quota", () => {
  for (const partial of [false, true]) {
    test(`a QuotaExceededError from put does not fail the load${partial ? " (and a partial entry is removed)" : ""}`, async () => {
      const cache = new QuotaCache(new Set([sha(SHARD), sha(OTHER)]), partial);
      const events: string[] = [];
      const b = await loadBundleFiles(BASE, { fetch: fakeHub().fetch, cache, onProgress: (p) => p.warning && events.push(p.warning) });
      assertVerified(b);
      assert.deepEqual(b.warnings.map((w) => w.file).sort(), [SHARD, OTHER]);
      for (const w of b.warnings) {
        assert.match(w.message, new RegExp(`^${w.file}: verified and used but not cached: the browser's storage quota is exceeded \\(QuotaExceededError: Quota exceeded.\\)`));
        assert.equal((w.cause as DOMException).name, "QuotaExceededError");
      }
      assert.deepEqual(events.sort(), b.warnings.map((w) => w.message).sort());
      assert.ok(!cache.entries.has(sha(SHARD)) && !cache.entries.has(sha(OTHER)));
      assert.deepEqual(cache.deleted.sort(), [sha(SHARD), sha(OTHER)].sort());
      assert.equal(cache.entries.size, manifest.files.length - 2);
      await cleanLoadWorks(new MemoryCache(), []);
      // The same cache, with room again: the two files are fetched, the rest come from the cache.
      const hub = fakeHub();
      const again = await loadBundleFiles(BASE, { fetch: hub.fetch, cache: Object.assign(cache, { full: new Set() }) });
      assertVerified(again);
      assert.deepEqual(hub.requests.sort(), ["manifest.json", OTHER, SHARD].sort());
      assert.deepEqual(again.warnings, []);
    });
  }

  test("any other put failure is a warning too", async () => {
    const cache = new MemoryCache();
    cache.put = async () => {
      throw new DOMException("The operation is insecure.", "SecurityError");
    };
    const b = await loadBundleFiles(BASE, { fetch: fakeHub().fetch, cache });
    assertVerified(b);
    assert.equal(b.warnings.length, manifest.files.length);
    assert.match(b.warnings[0].message, /not cached: the cache refused it \(SecurityError: The operation is insecure\.\)/);
  });
});

describe("abort", () => {
  async function aborted(p: Promise<unknown>): Promise<BundleError> {
    const err = await bundleError(p);
    assert.ok(err instanceof LoadAbortedError);
    assert.equal(err.name, "AbortError");
    return err;
  }

  test("mid-body: AbortError naming the file, nothing of it cached, a later load succeeds", async () => {
    const controller = new AbortController();
    const hub = fakeHub({
      [SHARD]: (_n, body, signal) => new Response(halfThen(body, signal, () => setTimeout(() => controller.abort(), 5)), { headers: { "content-length": String(body.length) } }),
    });
    const cache = new MemoryCache();
    const err = await aborted(loadBundleFiles(BASE, { fetch: hub.fetch, cache, signal: controller.signal, concurrency: 1 }));
    assert.equal(err.file, SHARD);
    assert.match(err.message, new RegExp(`^${SHARD}: loading aborted \\(.+\\); the file was not cached$`));
    assert.equal(hub.count(SHARD), 1, "an abort is not retried");
    assert.ok(!cache.entries.has(sha(SHARD)));
    assert.ok(!hub.requests.includes("weights/unet/tensor-cache.json"), "no file is started after the abort");
    await cleanLoadWorks(cache, [SHARD]);
  });

  test("with a reason: the message carries it", async () => {
    const controller = new AbortController();
    const hub = fakeHub({ [SHARD]: (_n, body, signal) => new Response(halfThen(body, signal, () => controller.abort(new Error("user pressed Stop")))) });
    const err = await aborted(loadBundleFiles(BASE, { fetch: hub.fetch, signal: controller.signal }));
    assert.match(err.message, /loading aborted \(user pressed Stop\)/);
  });

  test("during a retry's backoff: stops at once", async () => {
    const controller = new AbortController();
    const hub = fakeHub({ [SHARD]: () => (setTimeout(() => controller.abort(), 20), unavailable()) });
    const t0 = performance.now();
    const err = await aborted(loadBundleFiles(BASE, { fetch: hub.fetch, signal: controller.signal, retry: { delayMs: 10_000 } }));
    assert.ok(performance.now() - t0 < 2000);
    assert.equal(err.file, SHARD);
    assert.equal(hub.count(SHARD), 1);
  });

  test("already aborted: nothing is fetched", async () => {
    const hub = fakeHub();
    const err = await aborted(loadBundleFiles(BASE, { fetch: hub.fetch, signal: AbortSignal.abort() }));
    assert.equal(err.file, "manifest.json");
    assert.deepEqual(hub.requests, ["manifest.json"]);
  });

  test("after the last byte but before caching: not cached", async () => {
    const controller = new AbortController();
    const hub = fakeHub({
      [SHARD]: (_n, body) => new Response(new ReadableStream({ pull: (c) => (c.enqueue(body.slice()), c.close(), controller.abort()) })),
    });
    const cache = new MemoryCache();
    const err = await aborted(loadBundleFiles(BASE, { fetch: hub.fetch, cache, signal: controller.signal, concurrency: 1 }));
    assert.equal(err.file, SHARD);
    assert.ok(!cache.entries.has(sha(SHARD)));
  });
});
