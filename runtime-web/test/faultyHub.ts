/**
 * A fake fetch over the golden bundle that injects faults per file (HTTP errors, broken
 * connections, aborts), and a cache that runs out of quota: for the loader's fault tests
 * (fetch.test.ts: retries; stream.test.ts: failed checks, quota, abort).
 */
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { readFileSync } from "node:fs";
import { join } from "node:path";

import { MemoryCache } from "../src/cache.js";
import { loadBundleFiles } from "../src/stream.js";
import type { LoadedBundle, LoadOptions } from "../src/types.js";

import { TESTDATA } from "./helpers.js";

export const BASE = "https://hub.test/org/golden/resolve/0123abc/";

export const manifestBytes = readFileSync(join(TESTDATA, "bundle", "manifest.json"));

export const manifest = JSON.parse(manifestBytes.toString("utf8")) as {
  files: { path: string; size: number; sha256: string }[];
};

export const FILES = new Map<string, Uint8Array>([
  ["manifest.json", new Uint8Array(manifestBytes)],
]);

for (const f of manifest.files)
  FILES.set(f.path, new Uint8Array(readFileSync(join(TESTDATA, "bundle", f.path))));

export const SHARD = "weights/unet/params_shard_1.bin.zst"; // the largest file

export const OTHER = "weights/unet/params_shard_2.bin.zst";

export const listedSha = (path: string) => manifest.files.find((f) => f.path === path)!.sha256;

export const hex = (b: Uint8Array) => createHash("sha256").update(b).digest("hex");

/** What a fault does with request number `n` (1-based) of its file; undefined = answer normally. */
export type Fault = (
  n: number,
  body: Uint8Array,
  signal?: AbortSignal,
) => Response | Promise<Response> | undefined;

/** A fetch over FILES that records requests and lets `faults` answer some of them. */
export function fakeHub(faults: Record<string, Fault> = {}) {
  const requests: string[] = [];
  const fetch = async (input: RequestInfo | URL, init?: RequestInit): Promise<Response> => {
    const path = String(input).slice(BASE.length);
    requests.push(path);
    init?.signal?.throwIfAborted();
    const body = FILES.get(path);
    const answer =
      body &&
      faults[path]?.(requests.filter((p) => p === path).length, body, init?.signal ?? undefined);
    if (answer) return answer;
    if (!body) return new Response(null, { status: 404, statusText: "Not Found" });
    return new Response(body.slice(), {
      status: 200,
      headers: { "content-length": String(body.length) },
    });
  };
  return {
    fetch: fetch as typeof globalThis.fetch,
    requests,
    count: (path: string) => requests.filter((p) => p === path).length,
  };
}

/** A body that delivers the first half of `body`, then breaks (or, with `signal`, waits for the abort). */
export function halfThen(
  body: Uint8Array,
  signal?: AbortSignal,
  onHalf?: () => void,
): ReadableStream<Uint8Array> {
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

export const unavailable = () =>
  new Response("busy", { status: 503, statusText: "Service Unavailable" });

export const FAST: LoadOptions["retry"] = { delayMs: 1 };

/** Every file verified (the loader returns decoded bytes: compare with raw_sha256 or sha256). */
export function assertVerified(b: LoadedBundle) {
  assert.equal(b.files.size, manifest.files.length);
  for (const f of b.manifest.files)
    assert.equal(hex(b.files.get(f.path)!), f.encoding ? f.encoding.raw_sha256 : f.sha256, f.path);
}

/** A later normal load with the same cache succeeds and fetches what was not cached. */
export async function cleanLoadWorks(cache: MemoryCache, mustFetch: string[]) {
  const hub = fakeHub();
  const b = await loadBundleFiles(BASE, { fetch: hub.fetch, cache });
  assertVerified(b);
  for (const path of mustFetch) assert.equal(hub.count(path), 1, `${path} fetched again`);
  for (const f of manifest.files)
    assert.ok(cache.entries.has(f.sha256), `${f.path} cached after the clean load`);
}

/** A MemoryCache whose `put` fails like a full Cache API for `full` (after storing part of it, when `partial`). */
export class QuotaCache extends MemoryCache {
  deleted: string[] = [];
  constructor(
    private readonly full: Set<string>,
    private readonly partial = false,
  ) {
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
