/**
 * decodePool.ts: decode workers, driven in-process (node has no Web Workers, so a stand-in runs
 * the worker's own handler with real transfers), and the fallback to the calling thread.
 */
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, test } from "node:test";

import { MemoryCache } from "../src/cache.js";
import { defaultConcurrency, defaultWorkers, type WorkerLike } from "../src/decodePool.js";
import {
  type DecodeRequest,
  type DecodeResponse,
  handleDecodeRequest,
  SpareBuffers,
  WORKER_READY,
} from "../src/decodeProtocol.js";
import { decodeVerified } from "../src/encoding.js";
import type { FileEntry } from "../src/formats.js";
import { loadBundleFiles, streamBundleFiles } from "../src/stream.js";
import type { LoadOptions } from "../src/types.js";

import { bundleError, TESTDATA } from "./helpers.js";

const sha = (b: Uint8Array) => createHash("sha256").update(b).digest("hex");
const BASE = "https://hub.test/org/golden/resolve/0123abc/";
const manifestText = readFileSync(join(TESTDATA, "bundle", "manifest.json"), "utf8");
const golden = JSON.parse(manifestText) as { files: FileEntry[] };
const SHARD = "weights/unet/params_shard_1.bin.zst";
/** A fetch over the golden bundle (the manifest optionally edited), recording requests. */
function hub(
  editManifest?: (m: { files: FileEntry[] }) => void,
  editFile?: (path: string, body: Uint8Array) => Uint8Array,
) {
  const m = JSON.parse(manifestText);
  editManifest?.(m);
  const files = new Map<string, Uint8Array>([
    ["manifest.json", new TextEncoder().encode(JSON.stringify(m))],
  ]);
  for (const f of golden.files)
    files.set(f.path, new Uint8Array(readFileSync(join(TESTDATA, "bundle", f.path))));
  const requests: string[] = [];
  const fetch = async (input: RequestInfo | URL): Promise<Response> => {
    const path = String(input).slice(BASE.length);
    requests.push(path);
    const body = files.get(path);
    if (!body) return new Response(null, { status: 404, statusText: "Not Found" });
    return new Response(
      (editFile ? editFile(path, body.slice()) : body.slice()) as Uint8Array<ArrayBuffer>,
      { headers: { "content-length": String(body.length) } },
    );
  };
  return {
    fetch: fetch as typeof globalThis.fetch,
    requests,
    manifest: m as { files: FileEntry[] },
  };
}
/** Every file of a load verified (decoded files against raw_sha256). */
function assertGolden(files: Map<string, Uint8Array>) {
  assert.equal(files.size, golden.files.length);
  for (const f of golden.files)
    assert.equal(sha(files.get(f.path)!), f.encoding ? f.encoding.raw_sha256 : f.sha256, f.path);
}
/**
 * A Web Worker stand-in: runs the decode worker's own handler (decodeProtocol.ts) on a later
 * task, with messages passed through structuredClone and the transfer lists, so a transferred
 * buffer is detached on the sender's side exactly as postMessage does.
 */
class InProcessWorker implements WorkerLike {
  static started: InProcessWorker[] = [];
  private listeners: Record<string, ((event: any) => void)[]> = {
    message: [],
    error: [],
    messageerror: [],
  };
  requests = 0;
  given = 0;
  terminated = false;
  private readonly spare = new SpareBuffers(3);

  constructor(private readonly mode: "ok" | "failToStart" | "crash" = "ok") {
    InProcessWorker.started.push(this);
    setTimeout(() =>
      mode === "failToStart"
        ? this.emit("error", { message: "worker script 404" })
        : this.emit("message", { data: WORKER_READY }),
    );
  }

  private emit(type: string, event: unknown) {
    if (!this.terminated) for (const l of this.listeners[type]) l(event);
  }

  postMessage(message: DecodeRequest, transfer: Transferable[]): void {
    const req = structuredClone(message, { transfer: transfer as ArrayBuffer[] });
    this.requests += 1;
    this.given += req.give?.length ?? 0;
    setTimeout(async () => {
      if (this.mode === "crash") return this.emit("error", { message: "out of memory" });
      const { response, transfer: back } = await handleDecodeRequest(
        req,
        decodeVerified,
        this.spare,
      );
      this.emit("message", {
        data: structuredClone(response, { transfer: back as ArrayBuffer[] }) as DecodeResponse,
      });
    });
  }

  addEventListener(type: string, listener: (event: any) => void): void {
    this.listeners[type].push(listener);
  }

  terminate(): void {
    this.terminated = true;
  }
}
const withWorkers = (mode: "ok" | "failToStart" | "crash" = "ok", workers = 2): LoadOptions => ({
  workers,
  createWorker: () => new InProcessWorker(mode),
});

describe("decode workers", () => {
  test("defaults by core count: workers one per core beyond the page's, 2..8; files in flight 4, or one per worker", () => {
    const had = Object.getOwnPropertyDescriptor(globalThis, "navigator");
    const at = (cores: number | undefined) => {
      Object.defineProperty(globalThis, "navigator", {
        value: cores === undefined ? undefined : { hardwareConcurrency: cores },
        configurable: true,
      });
      return [defaultWorkers(), defaultConcurrency()];
    };
    try {
      assert.deepEqual(at(undefined), [2, 4]);
      assert.deepEqual(at(2), [2, 4]);
      assert.deepEqual(at(4), [3, 4]);
      assert.deepEqual(at(6), [5, 5]);
      assert.deepEqual(at(16), [8, 8]);
      assert.deepEqual(at(128), [8, 8]);
    } finally {
      if (had) Object.defineProperty(globalThis, "navigator", had);
      else delete (globalThis as { navigator?: unknown }).navigator;
    }
    assert.equal(defaultConcurrency(1), 4);
  });

  test("without a concurrency, files in flight follow the workers asked for", async () => {
    let inFlight = 0;
    let most = 0;
    const base = hub().fetch;
    const fetch = async (url: RequestInfo | URL, init?: RequestInit) => {
      most = Math.max(most, ++inFlight);
      try {
        await new Promise((r) => setTimeout(r, 5));
        return await base(url, init);
      } finally {
        inFlight -= 1;
      }
    };
    const b = await loadBundleFiles(BASE, { fetch, ...withWorkers("ok", 6) });
    assertGolden(b.files);
    assert.equal(b.stats!.workers, 6);
    assert.equal(most, Math.min(6, golden.files.length));
  });

  test("every file is checked and decoded in the workers, bit-exact; stored bytes come back for the cache", async () => {
    InProcessWorker.started = [];
    const cache = new MemoryCache();
    const events: string[] = [];
    const b = await loadBundleFiles(BASE, {
      fetch: hub().fetch,
      cache,
      ...withWorkers(),
      onProgress: (p) => p.fileDone && events.push(p.decodedBy!),
    });
    assertGolden(b.files);
    assert.equal(b.stats!.workers, 2);
    assert.equal(b.stats!.decodedInWorkers, golden.files.length);
    assert.equal(b.stats!.decodedInThread, 0);
    assert.deepEqual(
      events,
      golden.files.map(() => "worker"),
    );
    assert.equal(InProcessWorker.started.length, 2);
    assert.ok(
      InProcessWorker.started.every((w) => w.requests > 0),
      "both workers got files",
    );
    assert.ok(
      InProcessWorker.started.every((w) => w.terminated),
      "the workers end with the load",
    );
    for (const f of golden.files)
      assert.equal(sha(cache.entries.get(f.sha256)!), f.sha256, `${f.path} cached, intact`);
    // From the cache: its entries are copied to the workers, never transferred (they stay intact).
    const again = await loadBundleFiles(BASE, { fetch: hub().fetch, cache, ...withWorkers() });
    assertGolden(again.files);
    assert.equal(again.stats!.fromCache, golden.files.length);
    for (const f of golden.files)
      assert.equal(
        cache.entries.get(f.sha256)!.length,
        f.size,
        `${f.path}: cache entry not detached`,
      );
  });

  test("buffers a consumer releases go back to the workers and are decoded into again, bit-exact", async () => {
    InProcessWorker.started = [];
    const digests = new Map<string, string>();
    const released: ArrayBuffer[] = [];
    const { stats } = await streamBundleFiles(
      BASE,
      {
        releases: true,
        onFile: ({ entry, content, release }) => {
          digests.set(entry.path, sha(content));
          if (entry.encoding) {
            released.push(content.buffer as ArrayBuffer);
            release();
            release(); // twice is harmless
          }
        },
      },
      { fetch: hub().fetch, concurrency: 1, ...withWorkers("ok", 1) },
    );
    for (const f of golden.files)
      assert.equal(digests.get(f.path), f.encoding ? f.encoding.raw_sha256 : f.sha256, f.path);
    assert.equal(stats.decodedInWorkers, golden.files.length);
    const shards = golden.files.filter((f) => f.encoding).length;
    assert.ok(
      InProcessWorker.started[0].given >= shards - 1,
      `${InProcessWorker.started[0].given} buffers given back for ${shards} shards`,
    );
    assert.ok(
      released.slice(0, -1).every((b) => b.byteLength === 0),
      "a released buffer went to the worker (detached here)",
    );
  });

  test("a tampered shard is refused by the worker path, naming the file; not cached", async () => {
    const cache = new MemoryCache();
    const h = hub(undefined, (path, body) => (path === SHARD ? ((body[100] ^= 1), body) : body));
    const err = await bundleError(
      loadBundleFiles(BASE, { fetch: h.fetch, cache, concurrency: 1, ...withWorkers() }),
    );
    assert.equal(err.file, SHARD);
    assert.equal(err.message, `${SHARD}: sha256 mismatch`);
    assert.match(err.hint!, /damaged or was tampered with/);
    const entry = golden.files.find((f) => f.path === SHARD)!;
    assert.ok(!cache.entries.has(entry.sha256));
  });

  test("a worker that cannot start: the load decodes on the calling thread and says why", async () => {
    const b = await loadBundleFiles(BASE, { fetch: hub().fetch, ...withWorkers("failToStart") });
    assertGolden(b.files);
    assert.equal(b.stats!.decodedInWorkers, 0);
    assert.equal(b.stats!.decodedInThread, golden.files.length);
    assert.match(b.stats!.workerError!, /worker script 404/);
  });

  test("a worker that dies with a file in hand fails the load naming that file", async () => {
    const err = await bundleError(
      loadBundleFiles(BASE, { fetch: hub().fetch, concurrency: 1, ...withWorkers("crash", 1) }),
    );
    assert.ok(err.file && golden.files.some((f) => f.path === err.file));
    assert.match(err.message, /the decode worker failed \(out of memory\)/);
  });

  test("workers: 0 and environments without Worker decode on the calling thread", async () => {
    const b = await loadBundleFiles(BASE, {
      fetch: hub().fetch,
      workers: 0,
      createWorker: () => assert.fail("no worker wanted"),
    });
    assertGolden(b.files);
    assert.equal(b.stats!.decodedInThread, golden.files.length);
    assert.equal(typeof (globalThis as { Worker?: unknown }).Worker, "undefined"); // node: the fallback is what ran above too
    const plain = await loadBundleFiles(BASE, { fetch: hub().fetch });
    assert.equal(plain.stats!.decodedInThread, golden.files.length);
  });

  test("the protocol's answer for a file without encoding gives the stored bytes back as its content", async () => {
    const entry = golden.files.find((f) => !f.encoding)!;
    const bytes = new Uint8Array(readFileSync(join(TESTDATA, "bundle", entry.path)));
    const req: DecodeRequest = {
      id: 7,
      buffer: bytes.buffer,
      byteOffset: bytes.byteOffset,
      byteLength: bytes.byteLength,
      entry,
      verify: "stored",
    };
    const { response, transfer } = await handleDecodeRequest(req, decodeVerified);
    assert.ok(response.ok && response.content === undefined);
    assert.deepEqual(transfer, [bytes.buffer]);
  });
});
