/**
 * stream.ts: the golden bundle loaded over HTTP and from the cache, tampered bundles refused
 * naming the file, the `verify` levels, cache writes one at a time, and faults (failed checks
 * not retried, a full storage quota, aborts) after which the cache holds nothing bad.
 */
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";

import { MemoryCache } from "../src/cache.js";
import type { WorkerLike } from "../src/decodePool.js";
import {
  type DecodeRequest,
  type DecodeResponse,
  handleDecodeRequest,
  SpareBuffers,
  WORKER_READY,
} from "../src/decodeProtocol.js";
import { decodeShard, decodeVerified } from "../src/encoding.js";
import { type BundleError, LoadAbortedError } from "../src/errors.js";
import type { FileEntry } from "../src/formats.js";
import { loadBundleFiles } from "../src/stream.js";
import { PromptTokenizer } from "../src/tokenizer.js";
import type { LoadOptions } from "../src/types.js";

import {
  assertVerified,
  BASE,
  cleanLoadWorks,
  fakeHub,
  FAST,
  type Fault,
  FILES,
  halfThen,
  listedSha,
  manifest,
  OTHER,
  QuotaCache,
  SHARD,
  unavailable,
} from "./faultyHub.js";
import { bundleCopy, bundleError, type FileServer, readJson, serve, TESTDATA } from "./helpers.js";

const expected = readJson("expected.json");
const sha256 = (b: Uint8Array) => createHash("sha256").update(b).digest("hex");
const manifestText = readFileSync(join(TESTDATA, "bundle", "manifest.json"), "utf8");
const goldenManifest = JSON.parse(manifestText);
const sha = (b: Uint8Array) => createHash("sha256").update(b).digest("hex");
const golden = JSON.parse(manifestText) as { files: FileEntry[] };
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

describe("golden bundle over HTTP", () => {
  let server: FileServer;
  before(async () => {
    server = await serve(join(TESTDATA, "bundle"), "/org/golden/resolve/0123abc/");
  });
  after(() => server.close());

  test("every file and tensor matches expected.json", async () => {
    const events: number[] = [];
    const b = await loadBundleFiles(`${server.url}manifest.json`, {
      onProgress: (p) => events.push(p.loadedBytes),
    });
    assert.equal(sha256(new TextEncoder().encode(manifestText)), expected.manifest_sha256);
    for (const [path, sha] of Object.entries(expected.files)) {
      const entry = b.manifest.files.find((f) => f.path === path)!;
      assert.equal(entry.sha256, sha);
      assert.equal(
        sha256(b.files.get(path)!),
        entry.encoding ? entry.encoding.raw_sha256 : sha,
        path,
      );
    }
    let count = 0;
    for (const [component, tensors] of Object.entries(b.tensors)) {
      assert.deepEqual([...tensors.keys()], b.manifest.components[component].params);
      for (const [name, tensor] of tensors) {
        const want = expected.tensors[`${component}/${name}`];
        assert.equal(tensor.dtype, want.dtype);
        assert.deepEqual(tensor.shape, want.shape);
        assert.equal(sha256(tensor.bytes), want.sha256, `${component}/${name}`);
        assert.equal(
          tensor.data.length,
          want.shape.reduce((a: number, d: number) => a * d, 1),
        );
        count += 1;
      }
    }
    assert.equal(count, Object.keys(expected.tensors).length);
    const total = b.manifest.files.reduce((a, f) => a + f.size, 0);
    assert.equal(events.at(-1), total);
    const tok = PromptTokenizer.fromBundle(b.manifest, b.files);
    assert.deepEqual([...tok.encode("")].slice(0, 3), [689, 690, 690]);
  });

  test("a second load is served from the cache: only the manifest is fetched", async () => {
    const cache = new MemoryCache();
    const start = server.requests.length;
    const first = await loadBundleFiles(server.url, { cache });
    const fetchedFirst = server.requests.length - start;
    assert.equal(fetchedFirst, 1 + first.manifest.files.length);
    assert.equal(cache.entries.size, first.manifest.files.length);
    const fromCache: boolean[] = [];
    const second = await loadBundleFiles(server.url, {
      cache,
      onProgress: (p) => p.fileDone && fromCache.push(p.fromCache),
    });
    assert.deepEqual(server.requests.slice(start + fetchedFirst), [
      "/org/golden/resolve/0123abc/manifest.json",
    ]);
    assert.ok(fromCache.length === first.manifest.files.length && fromCache.every(Boolean));
    for (const [path, bytes] of first.files) assert.deepEqual(second.files.get(path), bytes);
  });

  test("a damaged cache entry is dropped and fetched again", async () => {
    const cache = new MemoryCache();
    await loadBundleFiles(server.url, { cache });
    const entry = goldenManifest.files.find((f: FileEntry) =>
      f.path.endsWith("params_shard_1.bin.zst"),
    );
    cache.entries.get(entry.sha256)![10] ^= 0xff;
    const start = server.requests.length;
    await loadBundleFiles(server.url, { cache });
    assert.deepEqual(
      server.requests.slice(start).map((p) => p.split("/0123abc/")[1]),
      ["manifest.json", entry.path],
    );
    assert.equal(sha256(cache.entries.get(entry.sha256)!), entry.sha256);
  });

  test("a missing file is an HTTP error naming it", async () => {
    const err = await bundleError(
      loadBundleFiles(`${server.url.replace("0123abc", "nope")}manifest.json`),
    );
    assert.equal(err.file, "manifest.json");
    assert.match(err.message, /HTTP 404/);
  });

  test("a pinned manifest sha256 is enforced", async () => {
    await loadBundleFiles(server.url, { manifestSha256: expected.manifest_sha256 });
    const err = await bundleError(loadBundleFiles(server.url, { manifestSha256: "0".repeat(64) }));
    assert.match(err.message, /^manifest\.json: sha256 differs/);
  });
});

describe("tampered bundles are refused, naming the file, and nothing bad is cached", () => {
  async function tampered(edit: (dir: string) => void) {
    const copy = bundleCopy();
    edit(copy.dir);
    const server = await serve(copy.dir);
    const cache = new MemoryCache();
    try {
      const err = await bundleError(
        loadBundleFiles(`${server.url}manifest.json`, { cache, concurrency: 1 }),
      );
      return { err, cache, requests: [...server.requests] };
    } finally {
      await server.close();
      copy.remove();
    }
  }
  const editManifest = (dir: string, f: (m: any) => void) => {
    const m = JSON.parse(readFileSync(join(dir, "manifest.json"), "utf8"));
    f(m);
    writeFileSync(join(dir, "manifest.json"), JSON.stringify(m));
  };
  const assertCacheClean = (cache: MemoryCache) => {
    for (const [sha, bytes] of cache.entries)
      assert.equal(sha256(bytes), sha, "every cached entry verifies");
  };

  test("an unknown weight quantization scheme", async () => {
    const { err, cache, requests } = await tampered((dir) =>
      editManifest(dir, (m) => {
        m.quantization = {
          scheme: "q3f16",
          bits: 3,
          group_size: 32,
          scale_dtype: "float16",
          symmetric: true,
          tensors: {},
        };
      }),
    );
    assert.equal(err.file, "manifest.json");
    assert.match(
      err.message,
      /weights are quantized with scheme "q3f16", which this runtime does not read \(it reads q4f16, q8f16\)/,
    );
    assert.match(err.hint!, /upgrade/);
    assert.equal(requests.length, 1);
    assert.equal(cache.entries.size, 0);
  });

  test("a flipped byte in a shard", async () => {
    const path = "weights/unet/params_shard_1.bin.zst";
    const { err, cache } = await tampered((dir) => {
      const b = readFileSync(join(dir, path));
      b[100] ^= 0x01;
      writeFileSync(join(dir, path), b);
    });
    assert.equal(err.file, path);
    assert.match(err.message, /^weights\/unet\/params_shard_1\.bin\.zst: sha256 mismatch/);
    const entry = goldenManifest.files.find((f: FileEntry) => f.path === path);
    assert.equal(cache.entries.has(entry.sha256), false);
    assertCacheClean(cache);
  });

  test("a flipped hex digit of a file's sha256 in the manifest", async () => {
    const { err, cache } = await tampered((dir) =>
      editManifest(dir, (m) => {
        const f = m.files.find((x: FileEntry) => x.path === "tokenizer/tokenizer.json");
        f.sha256 = (f.sha256[0] === "0" ? "1" : "0") + f.sha256.slice(1);
      }),
    );
    assert.equal(err.file, "tokenizer/tokenizer.json");
    assertCacheClean(cache);
    assert.equal(cache.entries.size < goldenManifest.files.length, true);
  });

  test("a manifest byte flipped into invalid JSON", async () => {
    const { err, cache, requests } = await tampered((dir) => {
      const b = readFileSync(join(dir, "manifest.json"));
      b[0] ^= 0x20;
      writeFileSync(join(dir, "manifest.json"), b);
    });
    assert.equal(err.file, "manifest.json");
    assert.match(err.message, /not valid JSON/);
    assert.equal(requests.length, 1);
    assert.equal(cache.entries.size, 0);
  });

  test("a path with '..'", async () => {
    const { err, cache, requests } = await tampered((dir) =>
      editManifest(dir, (m) => {
        m.files[0].path = "tokenizer/../../secret";
      }),
    );
    assert.match(
      err.message,
      /^manifest\.json: files\[0\]: path "tokenizer\/\.\.\/\.\.\/secret" has an empty, '\.' or '\.\.' segment/,
    );
    assert.equal(requests.length, 1, "nothing but the manifest was fetched");
    assert.equal(cache.entries.size, 0);
  });

  test("an unknown format_version", async () => {
    const { err, cache, requests } = await tampered((dir) =>
      editManifest(dir, (m) => {
        m.format_version = 2;
      }),
    );
    assert.equal(err.file, "manifest.json");
    assert.match(err.message, /unknown format_version 2/);
    assert.match(err.hint!, /upgrade/);
    assert.equal(requests.length, 1);
    assert.equal(cache.entries.size, 0);
  });

  test("a shard whose raw_size the zstd frame contradicts (checked before decompressing)", async () => {
    const path = "weights/unet/params_shard_2.bin.zst";
    const { err } = await tampered((dir) =>
      editManifest(dir, (m) => {
        m.files.find((x: FileEntry) => x.path === path).encoding.raw_size = 1 << 30;
      }),
    );
    assert.equal(err.file, path);
    assert.match(err.message, /zstd frame declares 1152 bytes, manifest says 1073741824/);
  });
});

describe("verify levels", () => {
  const flip = (hex: string) => (hex[0] === "0" ? "1" : "0") + hex.slice(1);
  const wrongRaw = (m: { files: FileEntry[] }) => {
    const f = m.files.find((x) => x.path === SHARD)!;
    f.encoding!.raw_sha256 = flip(f.encoding!.raw_sha256);
  };

  test("decodeShard: the default checks stored bytes and sizes; 'full' also raw_sha256", async () => {
    const entry = { ...golden.files.find((f) => f.path === SHARD)! };
    entry.encoding = { ...entry.encoding!, raw_sha256: flip(entry.encoding!.raw_sha256) };
    const stored = new Uint8Array(readFileSync(join(TESTDATA, "bundle", SHARD)));
    const raw = await decodeShard(stored, entry);
    assert.notEqual(sha(raw), entry.encoding.raw_sha256); // not hashed by default
    await assert.rejects(
      decodeShard(stored, entry, { verify: "full" }),
      /params_shard_1\.bin\.zst: decoded bytes do not match raw_sha256/,
    );
    const { ms } = await decodeVerified(
      stored,
      golden.files.find((f) => f.path === SHARD)!,
      "full",
    );
    assert.ok(ms.rawSha256 > 0 && ms.zstd > 0);
  });

  test("the loader: default loads a bundle whose raw_sha256 is wrong (stored bytes intact), 'full' refuses it naming the file", async () => {
    const h = hub(wrongRaw);
    const b = await loadBundleFiles(BASE, { fetch: h.fetch });
    assert.equal(b.stats!.verify, "stored");
    assert.equal(b.stats!.ms.rawSha256, 0);
    const cache = new MemoryCache();
    const err = await bundleError(
      loadBundleFiles(BASE, { fetch: hub(wrongRaw).fetch, verify: "full", cache }),
    );
    assert.equal(err.file, SHARD);
    assert.match(err.message, /decoded bytes do not match raw_sha256/);
    const entry = golden.files.find((f) => f.path === SHARD)!;
    assert.ok(!cache.entries.has(entry.sha256), "a file that failed 'full' is not cached");
    const full = await loadBundleFiles(BASE, { fetch: hub().fetch, verify: "full" });
    assertGolden(full.files);
    assert.ok(full.stats!.ms.rawSha256 > 0);
  });

  test("tampered stored bytes are refused by either level", async () => {
    for (const verify of ["stored", "full"] as const) {
      const h = hub(undefined, (path, body) =>
        path === SHARD ? ((body[body.length >> 1] ^= 1), body) : body,
      );
      const err = await bundleError(loadBundleFiles(BASE, { fetch: h.fetch, verify }));
      assert.equal(err.file, SHARD);
      assert.match(err.message, /sha256 mismatch/);
    }
  });
});

test("cache writes go one at a time (a quota is enforced file by file), while files load concurrently", async () => {
  let inFlight = 0;
  let most = 0;
  const cache = new MemoryCache();
  const put = cache.put.bind(cache);
  cache.put = async (sha256: string, bytes: Uint8Array) => {
    most = Math.max(most, ++inFlight);
    await new Promise((r) => setTimeout(r, 2));
    await put(sha256, bytes);
    inFlight -= 1;
  };
  const b = await loadBundleFiles(BASE, {
    fetch: hub().fetch,
    cache,
    concurrency: 4,
    ...withWorkers(),
  });
  assertGolden(b.files);
  assert.equal(cache.entries.size, golden.files.length);
  assert.equal(most, 1);
});

describe("failed checks are not retried", () => {
  const cases: [string, Fault, RegExp][] = [
    [
      "a truncated body",
      (_n, body) => new Response(body.slice(0, body.length - 100)),
      new RegExp(`^${SHARD}: size \\d+ != \\d+ in the manifest$`),
    ],
    [
      "another file's bytes of the right length",
      (_n, body) => {
        const other = FILES.get("tokenizer/tokenizer.json")!.slice(0, body.length);
        return new Response(other);
      },
      new RegExp(`^${SHARD}: sha256 mismatch$`),
    ],
    [
      "a body larger than the manifest says",
      (_n, body) => new Response(new Uint8Array(body.length + 1)),
      /larger than the \d+ bytes expected/,
    ],
  ];
  for (const [name, fault, message] of cases) {
    test(name, async () => {
      const hub = fakeHub({ [SHARD]: fault });
      const cache = new MemoryCache();
      const err = await bundleError(
        loadBundleFiles(BASE, { fetch: hub.fetch, cache, retry: FAST }),
      );
      assert.match(err.message, message);
      assert.equal(err.file, SHARD);
      assert.match(err.hint!, /damaged or was tampered with/);
      assert.equal(hub.count(SHARD), 1);
      assert.ok(!cache.entries.has(listedSha(SHARD)));
      await cleanLoadWorks(cache, [SHARD]);
    });
  }
});

describe("storage quota", () => {
  for (const partial of [false, true]) {
    test(`a QuotaExceededError from put does not fail the load${partial ? " (and a partial entry is removed)" : ""}`, async () => {
      const cache = new QuotaCache(new Set([listedSha(SHARD), listedSha(OTHER)]), partial);
      const events: string[] = [];
      const b = await loadBundleFiles(BASE, {
        fetch: fakeHub().fetch,
        cache,
        onProgress: (p) => p.warning && events.push(p.warning),
      });
      assertVerified(b);
      assert.deepEqual(b.warnings.map((w) => w.file).sort(), [SHARD, OTHER]);
      for (const w of b.warnings) {
        assert.match(
          w.message,
          new RegExp(
            `^${w.file}: verified and used but not cached: the browser's storage quota is exceeded \\(QuotaExceededError: Quota exceeded.\\)`,
          ),
        );
        assert.equal((w.cause as DOMException).name, "QuotaExceededError");
      }
      assert.deepEqual(events.sort(), b.warnings.map((w) => w.message).sort());
      assert.ok(!cache.entries.has(listedSha(SHARD)) && !cache.entries.has(listedSha(OTHER)));
      assert.deepEqual(cache.deleted.sort(), [listedSha(SHARD), listedSha(OTHER)].sort());
      assert.equal(cache.entries.size, manifest.files.length - 2);
      await cleanLoadWorks(new MemoryCache(), []);
      // The same cache, with room again: the two files are fetched, the rest come from the cache.
      const hub = fakeHub();
      const again = await loadBundleFiles(BASE, {
        fetch: hub.fetch,
        cache: Object.assign(cache, { full: new Set() }),
      });
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
    assert.match(
      b.warnings[0].message,
      /not cached: the cache refused it \(SecurityError: The operation is insecure\.\)/,
    );
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
      [SHARD]: (_n, body, signal) =>
        new Response(
          halfThen(body, signal, () => setTimeout(() => controller.abort(), 5)),
          { headers: { "content-length": String(body.length) } },
        ),
    });
    const cache = new MemoryCache();
    const err = await aborted(
      loadBundleFiles(BASE, { fetch: hub.fetch, cache, signal: controller.signal, concurrency: 1 }),
    );
    assert.equal(err.file, SHARD);
    assert.match(
      err.message,
      new RegExp(`^${SHARD}: loading aborted \\(.+\\); the file was not cached$`),
    );
    assert.equal(hub.count(SHARD), 1, "an abort is not retried");
    assert.ok(!cache.entries.has(listedSha(SHARD)));
    assert.ok(
      !hub.requests.includes("weights/unet/tensor-cache.json"),
      "no file is started after the abort",
    );
    await cleanLoadWorks(cache, [SHARD]);
  });

  test("with a reason: the message carries it", async () => {
    const controller = new AbortController();
    const hub = fakeHub({
      [SHARD]: (_n, body, signal) =>
        new Response(
          halfThen(body, signal, () => controller.abort(new Error("user pressed Stop"))),
        ),
    });
    const err = await aborted(
      loadBundleFiles(BASE, { fetch: hub.fetch, signal: controller.signal }),
    );
    assert.match(err.message, /loading aborted \(user pressed Stop\)/);
  });

  test("during a retry's backoff: stops at once", async () => {
    const controller = new AbortController();
    const hub = fakeHub({
      [SHARD]: () => (setTimeout(() => controller.abort(), 20), unavailable()),
    });
    const t0 = performance.now();
    const err = await aborted(
      loadBundleFiles(BASE, {
        fetch: hub.fetch,
        signal: controller.signal,
        retry: { delayMs: 10_000 },
      }),
    );
    assert.ok(performance.now() - t0 < 2000);
    assert.equal(err.file, SHARD);
    assert.equal(hub.count(SHARD), 1);
  });

  test("already aborted: nothing is fetched", async () => {
    const hub = fakeHub();
    const err = await aborted(
      loadBundleFiles(BASE, { fetch: hub.fetch, signal: AbortSignal.abort() }),
    );
    assert.equal(err.file, "manifest.json");
    assert.deepEqual(hub.requests, ["manifest.json"]);
  });

  test("after the last byte but before caching: not cached", async () => {
    const controller = new AbortController();
    const hub = fakeHub({
      [SHARD]: (_n, body) =>
        new Response(
          new ReadableStream({
            pull: (c) => (c.enqueue(body.slice()), c.close(), controller.abort()),
          }),
        ),
    });
    const cache = new MemoryCache();
    const err = await aborted(
      loadBundleFiles(BASE, { fetch: hub.fetch, cache, signal: controller.signal, concurrency: 1 }),
    );
    assert.equal(err.file, SHARD);
    assert.ok(!cache.entries.has(listedSha(SHARD)));
  });
});
