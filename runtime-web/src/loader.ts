/**
 * Fetch a bundle by URL: the manifest, then every file it lists, each verified before it is used
 * or cached (size and sha256 of the stored bytes; for encoded shards the zstd frame's declared
 * size and the decoded size, and the decoded bytes' raw_sha256 too with `verify: "full"`); then
 * the components' tensor-cache indexes, checked against the manifest, as typed tensor views.
 *
 *   const bundle = await loadBundleFiles("https://huggingface.co/org/model/resolve/<commit>/manifest.json",
 *                                        { cache: new BrowserCache(), onProgress: (p) => show(p) });
 *   bundle.tensors.unet.get("conv_in.weight").data   // Uint16Array (float16 bits)
 *
 * Streaming: every file goes fetch → checks → zstd → unshuffle → consumer, with `concurrency`
 * files in flight, the checks and decoding in a small pool of module Web Workers (decodePool.ts;
 * the page's thread where there are none), buffers transferred, not copied. `streamBundleFiles`
 * hands each file over and forgets it (what `loadModel` uses to put weights on the GPU shard by
 * shard); `loadBundleFiles` keeps them all.
 *
 * Faults: HTTP 5xx answers and network errors (also a connection that breaks mid-body) are
 * retried with exponential backoff (`retry`, default 3 retries after 200, 400, 800 ms); 4xx
 * answers and files that fail verification are not. A cache that cannot store a verified file
 * (a full storage quota) does not fail the load: the file is used, a warning is reported, and
 * nothing of it is left in the cache. An aborted `signal` ends the load with a `LoadAbortedError`
 * (name "AbortError") naming the file, and nothing of that file is cached.
 */
import type { ContentCache } from "./cache.js";
import { DecodePool, defaultConcurrency, defaultWorkers, type DecodeResult, type WorkerFactory } from "./decodePool.js";
import type { VerifyLevel } from "./encoding.js";
import { BundleError, DAMAGED, LoadAbortedError } from "./errors.js";
import { sha256Hex } from "./hash.js";
import { downloadText, Monotone } from "./progress.js";
import { checkPath, type FileEntry, type Manifest, MANIFEST_NAME, MAX_MANIFEST_BYTES, parseManifest } from "./manifest.js";
import { parseTensorCache, shardTensors, type ShardRecord, type Tensor, type TensorCacheIndex } from "./tensorCache.js";

const now = () => globalThis.performance?.now() ?? Date.now();
const here = () => (globalThis as { location?: { href: string } }).location?.href;

export interface LoadProgress {
  /** The file this event is about. */
  file: string;
  /** Bytes of all included files obtained so far (fetched or from the cache), and their total. */
  loadedBytes: number;
  totalBytes: number;
  filesDone: number;
  filesTotal: number;
  /** True once `file` is verified (and decoded). */
  fileDone: boolean;
  fromCache: boolean;
  /** Set on the `fileDone` event of a file that was loaded but could not be cached (see `LoadWarning`). */
  warning?: string;
  /** On `fileDone` events: where the file was checked and decoded (a decode worker, or the calling thread). */
  decodedBy?: "worker" | "thread";
  /** The load's fraction done, 0..1 (by bytes, the last 2% by files verified and handed over); it never goes back (a retried file's bytes do not count twice). */
  progress: number;
  /** One line for people: files and MiB done, and how many came from the cache. */
  text: string;
}

/** What one load did, for progress displays and benchmarks. Times are summed over files (which overlap). */
export interface LoadStats {
  verify: VerifyLevel;
  /** Decode workers started (0: none available or asked for), and why none could be used, if so. */
  workers: number;
  workerError?: string;
  /** Files checked and decoded in a decode worker, and on the calling thread. */
  decodedInWorkers: number;
  decodedInThread: number;
  /** Files taken from the cache (verified again). */
  fromCache: number;
  /** Bytes verified as stored, and as handed over (decoded). */
  storedBytes: number;
  contentBytes: number;
  /**
   * Milliseconds: `total` wall time of the load; summed per file: `fetch` (request to last byte),
   * `decode` (hand-over to result, queueing in the pool included), its parts `sha256` (stored
   * bytes), `zstd`, `unshuffle`, `rawSha256` (only with verify "full"), `cache` (get and put)
   * and `consume` (the `onFile` consumer, e.g. the GPU upload).
   */
  ms: { total: number; fetch: number; decode: number; sha256: number; zstd: number; unshuffle: number; rawSha256: number; cache: number; consume: number };
}

/** Something that went wrong without failing the load (e.g. a verified file the cache could not store). */
export interface LoadWarning {
  file: string;
  message: string;
  cause?: unknown;
}

/** Retrying of HTTP 5xx answers and network errors (never of 4xx answers or failed checks). */
export interface RetryOptions {
  /** Tries after the first one (default 3; 0 turns retrying off). */
  retries?: number;
  /** The wait before the first retry in ms, doubled before each further one (default 200: 200, 400, 800). */
  delayMs?: number;
  /** The longest wait between two tries in ms (default 5000). */
  maxDelayMs?: number;
}

export interface LoadOptions {
  /** The fetch to use (default: globalThis.fetch). */
  fetch?: typeof globalThis.fetch;
  /** Where verified files are kept between loads; none by default. */
  cache?: ContentCache;
  onProgress?: (progress: LoadProgress) => void;
  signal?: AbortSignal;
  /** The manifest's sha256 from a lock record: the manifest is rejected unless it matches. */
  manifestSha256?: string;
  /** The model the manifest must say it is (`model.id`, and `model.version` when given), e.g. from a Hub pin. */
  expectModel?: { id: string; version?: string };
  /**
   * Which listed files to load (default: all), given the verified manifest. Tensor indexes of
   * skipped components are not built.
   */
  include?: (entry: FileEntry, manifest: Manifest) => boolean;
  /** Files fetched at once (default: 4, or the number of decode workers where that is more). */
  concurrency?: number;
  /** Retrying of HTTP 5xx answers and network errors (default: 3 retries after 200, 400, 800 ms). */
  retry?: RetryOptions;
  /**
   * What is checked (formats/README.md "Hashing"): `"stored"` (default) — size and sha256 of the
   * stored bytes, the zstd frame's declared size and the decoded size (decoding is deterministic,
   * so the stored sha256 pins the decoded bytes too); `"full"` — also the sha256 of the decoded
   * bytes against `raw_sha256` (as `packer verify`; costs a second hash over the raw bytes).
   */
  verify?: VerifyLevel;
  /**
   * Decode workers (module Web Workers that check and decode files off the page's thread):
   * default one per core beyond the page's own, 2..4; 0 decodes on the calling thread, as happens
   * anyway where `Worker` does not exist or the worker script cannot be started.
   */
  workers?: number;
  /** The decode worker's script (default: `decodeWorker.js` next to the loader's module). */
  workerUrl?: string | URL;
  /** How to start a decode worker (default: `new Worker(url, { type: "module" })`). */
  createWorker?: WorkerFactory;
}

export interface LoadedBundle {
  manifest: Manifest;
  manifestUrl: string;
  /** The URL that bundle paths are relative to (ends with "/"). */
  baseUrl: string;
  /** Verified content of every loaded file by bundle path; encoded shards come decoded. */
  files: Map<string, Uint8Array>;
  /** Each component's tensor-cache index. */
  indexes: Record<string, TensorCacheIndex>;
  /** Each component's tensors, in the manifest's `params` order. */
  tensors: Record<string, Map<string, Tensor>>;
  /** What went wrong without failing the load (files that could not be cached), in order. */
  warnings: LoadWarning[];
  /** How the load went: workers, bytes, time per step. */
  stats?: LoadStats;
  /** The Hub commit the manifest was read at (its URL's `resolve/<commit>/`, or the server's `X-Repo-Commit`), where known. */
  commit?: string;
}

/** The Hub URL of a bundle's manifest at `revision` (pin a commit for reproducible loads). */
export function hubManifestUrl(repo: string, revision = "main", endpoint = "https://huggingface.co"): string {
  return `${endpoint.replace(/\/+$/, "")}/${repo}/resolve/${encodeURIComponent(revision)}/${MANIFEST_NAME}`;
}

/**
 * The manifest URL and the base URL of the bundle's files. Accepts a manifest URL (any host,
 * e.g. a Hub-style `…/resolve/{rev}/manifest.json`) or the bundle's folder URL.
 */
export function resolveBundleUrl(url: string | URL): { manifestUrl: string; baseUrl: string } {
  const u = new URL(String(url), here());
  if (!u.pathname.endsWith(`/${MANIFEST_NAME}`)) u.pathname = u.pathname.replace(/\/*$/, `/${MANIFEST_NAME}`);
  const manifestUrl = u.href;
  const base = new URL(u.href);
  base.search = "";
  base.hash = "";
  base.pathname = base.pathname.slice(0, base.pathname.length - MANIFEST_NAME.length);
  return { manifestUrl, baseUrl: base.href };
}

function fileUrl(baseUrl: string, path: string): string {
  return new URL(checkPath(path, MANIFEST_NAME), baseUrl).href;
}

/** The wait before retry number `retry` (0-based) in ms: `delayMs` · 2^retry, at most `maxDelayMs`. */
export function retryDelayMs(options: RetryOptions | undefined, retry: number): number {
  return Math.min(options?.maxDelayMs ?? 5000, (options?.delayMs ?? 200) * 2 ** retry);
}

/** A failure worth another try: a network error or an HTTP 5xx answer. */
class TransientError extends BundleError {}

const NETWORK = "check the network connection and that the server is up, then load again (verified files come from the cache)";

function messageOf(err: unknown): string {
  return err instanceof Error || (typeof err === "object" && err !== null && "message" in err) ? String((err as Error).message) : String(err);
}

/** The error for a load stopped by `signal` while `file` was loading (nothing of it is used or cached). */
function aborted(signal: AbortSignal, file?: string): LoadAbortedError {
  const reason = signal.reason === undefined ? "" : ` (${messageOf(signal.reason)})`;
  const what = file ? `${file}: loading aborted${reason}; the file was not cached` : `bundle load aborted${reason}`;
  return new LoadAbortedError(what, { file, cause: signal.reason });
}

/** Wait `ms`, or reject at once when `signal` aborts. */
function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(signal.reason);
    const onAbort = () => {
      clearTimeout(timer);
      reject(signal!.reason);
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener("abort", onAbort);
      resolve();
    }, ms);
    signal?.addEventListener("abort", onAbort, { once: true });
  });
}

/**
 * GET `url` into memory, refusing more than `limit` bytes (the manifest's size for listed files,
 * `exactSize`), so a hostile server cannot make the page allocate without bound. HTTP 5xx answers
 * and network errors are retried (`opts.retry`); the bytes of a failed try are taken back from
 * `onChunk`.
 */
async function fetchBytes(
  url: string,
  what: string,
  limit: number,
  exactSize: boolean,
  opts: LoadOptions,
  onChunk?: (bytes: number) => void,
  alloc?: (bytes: number) => ArrayBuffer,
  onResponse?: (response: Response) => void,
): Promise<Uint8Array> {
  const retries = Math.max(0, Math.floor(opts.retry?.retries ?? 3));
  for (let attempt = 0; ; attempt++) {
    let got = 0;
    try {
      return await fetchOnce(url, what, limit, exactSize, opts, (n) => {
        got += n;
        onChunk?.(n);
      }, alloc, onResponse);
    } catch (err) {
      if (got) onChunk?.(-got);
      if (opts.signal?.aborted) throw aborted(opts.signal, what);
      if (!(err instanceof TransientError)) throw err;
      if (attempt >= retries) {
        if (attempt === 0) throw err;
        throw new BundleError(`${err.message}; gave up after ${attempt + 1} tries`, { file: err.file, hint: err.hint, cause: err.cause ?? err });
      }
      try {
        await sleep(retryDelayMs(opts.retry, attempt), opts.signal);
      } catch {
        throw aborted(opts.signal!, what);
      }
    }
  }
}

async function fetchOnce(
  url: string,
  what: string,
  limit: number,
  exactSize: boolean,
  opts: LoadOptions,
  onChunk: (bytes: number) => void,
  alloc: (bytes: number) => ArrayBuffer = (n) => new ArrayBuffer(n),
  onResponse?: (response: Response) => void,
): Promise<Uint8Array> {
  const doFetch = opts.fetch ?? globalThis.fetch;
  let response: Response;
  try {
    response = await doFetch(url, { signal: opts.signal });
  } catch (err) {
    throw new TransientError(`${what}: could not fetch ${url} (${messageOf(err)})`, { file: what, hint: NETWORK, cause: err });
  }
  if (!response.ok) {
    response.body?.cancel().catch(() => {});
    const transient = response.status >= 500;
    throw new (transient ? TransientError : BundleError)(`${what}: HTTP ${response.status} ${response.statusText} from ${url}`, {
      file: what,
      hint: response.status === 404 ? "is the URL (and revision) right?" : transient ? "the server failed; try again later" : undefined,
    });
  }
  onResponse?.(response);
  const tooLarge = () => new BundleError(`${what}: larger than the ${limit} bytes expected`, { file: what, hint: DAMAGED });
  const broken = (err: unknown, at: number) =>
    new TransientError(`${what}: the connection broke after ${at} bytes of ${url} (${messageOf(err)})`, { file: what, hint: NETWORK, cause: err });
  const encoded = Boolean(response.headers.get("content-encoding"));
  const declared = Number(response.headers.get("content-length") ?? NaN);
  if (!encoded && declared > limit) throw tooLarge();
  if (!response.body) {
    let all: Uint8Array;
    try {
      all = new Uint8Array(await response.arrayBuffer());
    } catch (err) {
      throw broken(err, 0);
    }
    if (all.length > limit) throw tooLarge();
    onChunk(all.length);
    return all;
  }
  // Where the size is known up front (a listed file's manifest size; a Content-Length), read
  // straight into one buffer of that size (BYOB): one copy of every byte fewer than collecting
  // chunks and joining them. Streams that are not byte streams are read chunk by chunk.
  const expected = exactSize ? limit : !encoded && Number.isSafeInteger(declared) ? declared : undefined;
  let byob: ReadableStreamBYOBReader | undefined;
  if (expected !== undefined) {
    try {
      byob = response.body.getReader({ mode: "byob" });
    } catch {
      byob = undefined;
    }
  }
  if (byob) {
    let end = Math.min(expected!, limit) + 1; // the extra byte tells a longer body
    let buffer = alloc(end); // at least `end` bytes (may be a larger one, reused)
    let total = 0;
    for (;;) {
      let step: ReadableStreamReadResult<Uint8Array<ArrayBuffer>>;
      try {
        step = await byob.read(new Uint8Array(buffer, total, end - total));
      } catch (err) {
        throw broken(err, total);
      }
      if (!step.value) throw broken(new Error("the stream gave no buffer back"), total);
      buffer = step.value.buffer;
      if (step.done) break;
      total += step.value.byteLength;
      if (total > limit) {
        await byob.cancel().catch(() => {});
        throw tooLarge();
      }
      onChunk(step.value.byteLength);
      if (total === end) {
        // longer than its Content-Length said (and still within the limit): grow
        end = Math.min(limit + 1, end * 2);
        const grown = new Uint8Array(end);
        grown.set(new Uint8Array(buffer, 0, total));
        buffer = grown.buffer;
      }
    }
    return new Uint8Array(buffer, 0, total);
  }
  const chunks: Uint8Array[] = [];
  let total = 0;
  const reader = response.body.getReader();
  for (;;) {
    let step: ReadableStreamReadResult<Uint8Array>;
    try {
      step = await reader.read();
    } catch (err) {
      throw broken(err, total);
    }
    const { done, value } = step;
    if (done) break;
    total += value.length;
    if (total > limit) {
      await reader.cancel().catch(() => {});
      throw tooLarge();
    }
    chunks.push(value);
    onChunk(value.length);
  }
  if (chunks.length === 1) return chunks[0];
  const out = new Uint8Array(total);
  let at = 0;
  for (const c of chunks) {
    out.set(c, at);
    at += c.length;
  }
  return out;
}

/**
 * Fetch and validate the manifest: checked against a pinned sha256 and the expected model when
 * given. `commit` is the Hub commit it was read at, from its URL or the `X-Repo-Commit` header.
 */
export async function fetchManifest(
  url: string | URL,
  opts: LoadOptions = {},
): Promise<{ manifest: Manifest; manifestUrl: string; baseUrl: string; commit?: string }> {
  const { manifestUrl, baseUrl } = resolveBundleUrl(url);
  let commit = /\/resolve\/([0-9a-f]{40})\//.exec(manifestUrl)?.[1];
  const onResponse = (r: Response) => {
    const header = r.headers.get("x-repo-commit");
    if (!commit && header && /^[0-9a-f]{40}$/.test(header)) commit = header;
  };
  const bytes = await fetchBytes(manifestUrl, MANIFEST_NAME, MAX_MANIFEST_BYTES, false, opts, undefined, undefined, onResponse);
  if (opts.manifestSha256 && (await sha256Hex(bytes)) !== opts.manifestSha256.toLowerCase()) {
    throw new BundleError(`${MANIFEST_NAME}: sha256 differs from the pinned one`, {
      file: MANIFEST_NAME,
      hint: "the revision moved or the manifest was tampered with; check the lock record",
    });
  }
  const manifest = parseManifest(bytes);
  const want = opts.expectModel;
  if (want && (manifest.model.id !== want.id || (want.version !== undefined && manifest.model.version !== want.version))) {
    throw new BundleError(
      `${MANIFEST_NAME}: is ${manifest.model.id} ${manifest.model.version}, not ${want.id}${want.version === undefined ? "" : ` ${want.version}`}`,
      { file: MANIFEST_NAME, hint: "the repository does not hold what its tag says; check the version and the repository" },
    );
  }
  return { manifest, manifestUrl, baseUrl, commit };
}

function isQuotaError(err: unknown): boolean {
  const e = err as { name?: string; code?: number } | null;
  return e?.name === "QuotaExceededError" || e?.code === 22;
}

/** Where a loaded file came from and how its bytes were checked and decoded. */
interface FileResult {
  content: Uint8Array;
  fromCache: boolean;
  by: "worker" | "thread";
  warning?: LoadWarning;
  /** The stored bytes' buffer, free for the next fetch once the file is decoded and cached (undefined: not ours to reuse). */
  spare?: ArrayBuffer;
}

/** Fetch buffers to read the next files into (the stored bytes of files that were decoded into buffers of their own). */
class FetchBuffers {
  private spare: ArrayBuffer[] = [];

  constructor(private readonly keep: number) {}

  put(buffer: ArrayBuffer | undefined): void {
    if (!buffer || buffer.byteLength === 0 || this.spare.includes(buffer)) return;
    this.spare.push(buffer);
    this.spare.sort((a, b) => b.byteLength - a.byteLength).splice(this.keep);
  }

  /** At least `n` bytes: the smallest spare buffer that fits, else a new one (rounded up to 1 MiB when `round`). */
  take(n: number, round: boolean): ArrayBuffer {
    let best = -1;
    this.spare.forEach((b, i) => {
      if (b.byteLength >= n && (best < 0 || b.byteLength < this.spare[best].byteLength)) best = i;
    });
    if (best >= 0) return this.spare.splice(best, 1)[0];
    return new ArrayBuffer(round ? Math.ceil(n / 1048576) * 1048576 : n);
  }
}

/**
 * One file's verified content: from the cache when it still verifies, else fetched, checked
 * and decoded (in a decode worker when there is one), then cached. A cache that cannot store it
 * (a full quota) gives a warning, not an error.
 */
async function loadFile(
  entry: FileEntry,
  baseUrl: string,
  opts: LoadOptions,
  decoder: DecodePool,
  stats: LoadStats,
  onChunk: (bytes: number) => void,
  buffers?: FetchBuffers,
  reuse = false,
  oneAtATime: <T>(work: () => Promise<T>) => Promise<T> = (work) => work(),
): Promise<FileResult> {
  const verify = opts.verify ?? "stored";
  const add = (r: DecodeResult) => {
    stats.ms.sha256 += r.ms.sha256;
    stats.ms.zstd += r.ms.zstd;
    stats.ms.unshuffle += r.ms.unshuffle;
    stats.ms.rawSha256 += r.ms.rawSha256;
    stats.storedBytes += r.stored.byteLength;
    stats.contentBytes += r.content.byteLength;
    if (r.by === "worker") stats.decodedInWorkers += 1;
    else stats.decodedInThread += 1;
  };
  let t = now();
  const cached = await opts.cache?.get(entry.sha256);
  stats.ms.cache += now() - t;
  if (cached) {
    t = now();
    try {
      const r = await decoder.decode(cached, entry, verify, opts.cache?.getsFreshCopies === true);
      stats.ms.decode += now() - t;
      add(r);
      onChunk(entry.size);
      stats.fromCache += 1;
      return { content: r.content, fromCache: true, by: r.by };
    } catch {
      stats.ms.decode += now() - t;
      await opts.cache?.delete(entry.sha256); // a damaged cache entry: drop it and fetch again
    }
  }
  t = now();
  const alloc = buffers && ((n: number) => buffers.take(n, Boolean(entry.encoding)));
  const fetched = await fetchBytes(fileUrl(baseUrl, entry.path), entry.path, entry.size, true, opts, onChunk, alloc);
  stats.ms.fetch += now() - t;
  t = now();
  const r = await decoder.decode(fetched, entry, verify, true, reuse); // `fetched` is handed over (transferred)
  stats.ms.decode += now() - t;
  add(r);
  const { stored, content, by } = r;
  // Decoded into a buffer of its own: the stored bytes' buffer can take the next fetch, unless a cache keeps it.
  const spare = content.buffer !== stored.buffer && (!opts.cache || opts.cache.copiesOnPut) ? (stored.buffer as ArrayBuffer) : undefined;
  if (opts.signal?.aborted) throw aborted(opts.signal, entry.path);
  if (!opts.cache) return { content, fromCache: false, by, spare };
  t = now();
  try {
    await oneAtATime(() => opts.cache!.put(entry.sha256, stored));
    return { content, fromCache: false, by, spare };
  } catch (err) {
    try {
      await opts.cache.delete(entry.sha256); // leave nothing partial behind
    } catch {
      // the cache is unusable; nothing was stored through it
    }
    const why = isQuotaError(err) ? "the browser's storage quota is exceeded" : "the cache refused it";
    const message =
      `${entry.path}: verified and used but not cached: ${why} (${(err as Error)?.name ?? "Error"}: ${messageOf(err)}); ` +
      "it will be fetched again next time (free storage or clear this site's data to cache it)";
    return { content, fromCache: false, by, spare, warning: { file: entry.path, message, cause: err } };
  } finally {
    stats.ms.cache += now() - t;
  }
}

/**
 * Run `work` over `items`, `width` at a time. After a failure no further item is started and
 * `stop` is called (to abort the ones in flight); returns once every started item has settled,
 * rejecting with the first failure.
 */
async function pool<T>(items: T[], width: number, work: (item: T) => Promise<void>, stop: (err: unknown) => void): Promise<void> {
  let next = 0;
  let failure: { err: unknown } | undefined;
  const worker = async () => {
    while (!failure && next < items.length) {
      try {
        await work(items[next++]);
      } catch (err) {
        if (!failure) {
          failure = { err };
          stop(err);
        }
      }
    }
  };
  await Promise.all(Array.from({ length: Math.max(1, Math.min(width, items.length)) }, worker));
  if (failure) throw failure.err;
}

/** A verified file as `streamBundleFiles` hands it to its consumer. */
export interface LoadedFile {
  entry: FileEntry;
  /** Verified content; encoded shards come decoded (zstd, unshuffled). */
  content: Uint8Array;
  fromCache: boolean;
  /**
   * Done with `content` for good (call at most once, and touch it no more): its buffer is decoded
   * into again for a later file (a consumer that sets `releases` does this for every file it drops).
   */
  release(): void;
}

/** What `streamBundleFiles` hands the files to. */
export interface FileConsumer {
  /** The consumer releases (`LoadedFile.release`) the files it does not keep: decode buffers are sized for reuse. */
  releases?: boolean;
  /** Files to start before all others (e.g. the tensor indexes before the shards). */
  first?(entry: FileEntry, manifest: Manifest): boolean;
  /** Called once, with the verified manifest and the files to load in the order they are started. */
  start?(manifest: Manifest, entries: FileEntry[]): void;
  /**
   * Each verified file, as soon as it is ready (`concurrency` at most at once). The next file of
   * this slot is fetched once this returns, so a consumer that uploads and drops keeps memory
   * bounded. `signal` aborts when the load fails or is aborted.
   */
  onFile(file: LoadedFile, signal: AbortSignal): void | Promise<void>;
}

/** What `streamBundleFiles` returns once every file went through `onFile`. */
export interface StreamedBundle {
  manifest: Manifest;
  manifestUrl: string;
  baseUrl: string;
  /** The Hub commit the manifest was read at, where known (see `fetchManifest`). */
  commit?: string;
  warnings: LoadWarning[];
  stats: LoadStats;
}

/**
 * The streaming loader under `loadBundleFiles` and `loadModel`: the manifest, then every
 * (included) file fetched (or taken from the cache), verified, decoded and handed to `onFile`
 * one at a time per slot, `concurrency` slots at once — so the fetch of one file, the checks and
 * zstd of another (in a decode worker) and `onFile` of a third overlap, and nothing is held
 * after `onFile` returns unless it keeps it. Files for which `first` is true are started before
 * the others (manifest order otherwise). A failing file stops the load: nothing more is started,
 * the files in flight are aborted (so is the `signal` given to `onFile`), and once every file in
 * flight has settled the first error is thrown.
 */
export async function streamBundleFiles(url: string | URL, consumer: FileConsumer, opts: LoadOptions = {}): Promise<StreamedBundle> {
  const t0 = now();
  const { manifest, manifestUrl, baseUrl, commit } = await fetchManifest(url, opts);
  let entries = manifest.files.filter((f) => !opts.include || opts.include(f, manifest));
  const first = consumer.first;
  if (first) {
    const early = new Set(entries.filter((f) => first(f, manifest)));
    entries = [...early, ...entries.filter((f) => !early.has(f))];
  }
  consumer.start?.(manifest, entries);
  const totalBytes = entries.reduce((a, f) => a + f.size, 0);
  const warnings: LoadWarning[] = [];
  const workers = opts.workers ?? defaultWorkers();
  const concurrency = opts.concurrency ?? defaultConcurrency(workers);
  const decoder = new DecodePool(workers, opts.workerUrl === undefined ? undefined : new URL(String(opts.workerUrl), here()), opts.createWorker);
  const stats: LoadStats = {
    verify: opts.verify ?? "stored",
    workers: 0,
    decodedInWorkers: 0,
    decodedInThread: 0,
    fromCache: 0,
    storedBytes: 0,
    contentBytes: 0,
    ms: { total: 0, fetch: 0, decode: 0, sha256: 0, zstd: 0, unshuffle: 0, rawSha256: 0, cache: 0, consume: 0 },
  };
  const buffers = new FetchBuffers(Math.max(2, concurrency));
  // Cache writes one at a time: each sees the storage the previous ones took (a quota is then
  // enforced file by file, not overshot by writes racing each other); the files themselves still
  // download and decode concurrently.
  let writes: Promise<unknown> = Promise.resolve();
  const oneAtATime = <T>(work: () => Promise<T>): Promise<T> => {
    const run = writes.then(work, work);
    writes = run.catch(() => {});
    return run;
  };
  // One signal for everything in flight: the caller's abort, or the first failure.
  const stop = new AbortController();
  const onAbort = () => stop.abort(opts.signal!.reason);
  opts.signal?.addEventListener("abort", onAbort, { once: true });
  if (opts.signal?.aborted) onAbort();
  const inner: LoadOptions = { ...opts, signal: stop.signal };
  let loadedBytes = 0;
  let filesDone = 0;
  const fraction = new Monotone();
  const report = (file: string, fileDone: boolean, fromCache: boolean, extra: Partial<LoadProgress> = {}) => {
    if (!opts.onProgress) return;
    const counts = { loadedBytes, totalBytes, filesDone, filesTotal: entries.length };
    // By bytes, the last 2% by files handed over: 1 only once every file is verified and consumed.
    const files = entries.length ? filesDone / entries.length : 1;
    const progress = fraction.next(totalBytes ? 0.98 * (loadedBytes / totalBytes) + 0.02 * files : files);
    opts.onProgress({ file, ...counts, fileDone, fromCache, ...extra, progress, text: downloadText(counts, stats.fromCache) });
  };
  try {
    if (entries.length) decoder.start(); // the workers load while the first files download
    await pool(
      entries,
      concurrency,
      async (entry) => {
        if (stop.signal.aborted) throw aborted(stop.signal, entry.path);
        const r = await loadFile(
          entry,
          baseUrl,
          inner,
          decoder,
          stats,
          (n) => {
            loadedBytes += n;
            report(entry.path, false, false);
          },
          buffers,
          consumer.releases === true,
          oneAtATime,
        );
        buffers.put(r.spare);
        let released = false;
        const release = () => {
          if (released) return;
          released = true;
          if (r.by === "worker" && r.content.buffer !== r.spare) decoder.recycle(r.content.buffer as ArrayBuffer);
        };
        const t = now();
        await consumer.onFile({ entry, content: r.content, fromCache: r.fromCache, release }, stop.signal);
        stats.ms.consume += now() - t;
        filesDone += 1;
        if (r.warning) warnings.push(r.warning);
        report(entry.path, true, r.fromCache, { decodedBy: r.by, ...(r.warning ? { warning: r.warning.message } : {}) });
      },
      (err) => stop.abort(err),
    );
  } finally {
    opts.signal?.removeEventListener("abort", onAbort);
    decoder.close();
    stats.workers = decoder.stats.workers;
    if (decoder.stats.workerError) stats.workerError = decoder.stats.workerError;
    stats.ms.total = now() - t0;
  }
  return { manifest, manifestUrl, baseUrl, commit, warnings, stats };
}

/** The bundle path of a tensor-cache shard, as listed in the manifest (`D.zst`, or `D` unencoded). */
function shardPath(manifest: Manifest, indexPath: string, dataPath: string): string {
  const dir = indexPath.includes("/") ? indexPath.slice(0, indexPath.lastIndexOf("/") + 1) : "";
  const rel = checkPath(dir + dataPath, indexPath);
  for (const candidate of [`${rel}.zst`, rel]) {
    if (manifest.files.some((f) => f.path === candidate)) return candidate;
  }
  throw new BundleError(`${indexPath}: shard ${dataPath} is not listed in the manifest`, { file: indexPath, hint: DAMAGED });
}

/** Where a component's tensors are: its index and, per shard file, the shard record; all checked against the manifest. */
export interface ComponentLayout {
  index: TensorCacheIndex;
  /** Bundle path of each shard file → its record in the index (index order). */
  shards: Map<string, ShardRecord>;
}

/**
 * A component's tensor index, checked against the manifest before any shard is used: every shard
 * listed (as `D.zst` or `D`) with the raw size the index gives it, and the tensors' names, in
 * order, equal to the component's `params`.
 */
export function componentLayout(manifest: Manifest, component: string, indexBytes: Uint8Array): ComponentLayout {
  const comp = manifest.components[component];
  if (!comp) throw new BundleError(`bundle has no component ${JSON.stringify(component)}`);
  const index = parseTensorCache(indexBytes, comp.weights);
  const shards = new Map<string, ShardRecord>();
  const names: string[] = [];
  for (const shard of index.records) {
    const path = shardPath(manifest, comp.weights, shard.dataPath);
    const entry = manifest.files.find((f) => f.path === path)!;
    const rawSize = entry.encoding ? entry.encoding.raw_size : entry.size;
    if (rawSize !== shard.nbytes) {
      throw new BundleError(`${path}: holds ${rawSize} raw bytes, ${comp.weights} says ${shard.nbytes}`, { file: path, hint: DAMAGED });
    }
    if (shards.has(path)) throw new BundleError(`${comp.weights}: shard ${shard.dataPath} is listed twice`, { file: comp.weights, hint: DAMAGED });
    shards.set(path, shard);
    for (const rec of shard.records) names.push(rec.name);
  }
  if (names.length !== comp.params.length || names.some((n, i) => n !== comp.params[i])) {
    throw new BundleError(`${comp.weights}: tensor names/order differ from the manifest's params list`, { file: comp.weights, hint: DAMAGED });
  }
  return { index, shards };
}

/** A component's tensors from loaded files, checked against the manifest (sizes, names, order). */
export function componentTensors(
  manifest: Manifest,
  component: string,
  files: Map<string, Uint8Array>,
): { index: TensorCacheIndex; tensors: Map<string, Tensor> } {
  const comp = manifest.components[component];
  if (!comp) throw new BundleError(`bundle has no component ${JSON.stringify(component)}`);
  const indexBytes = files.get(comp.weights);
  if (!indexBytes) throw new BundleError(`${comp.weights}: not loaded`, { file: comp.weights });
  const { index, shards } = componentLayout(manifest, component, indexBytes);
  const tensors = new Map<string, Tensor>();
  for (const [path, shard] of shards) {
    const raw = files.get(path);
    if (!raw) throw new BundleError(`${path}: not loaded`, { file: path });
    for (const t of shardTensors(raw, shard, path)) tensors.set(t.name, t);
  }
  return { index, tensors };
}

/**
 * Load a bundle: the manifest, every (included) file verified and decoded, and each
 * component's tensors. Nothing unverified is returned or cached; errors are `BundleError`s
 * that name the file. Keeps every file in memory (`files`): to stream weights to a GPU instead,
 * use `loadModel` (or `streamBundleFiles`).
 */
export async function loadBundleFiles(url: string | URL, opts: LoadOptions = {}): Promise<LoadedBundle> {
  const files = new Map<string, Uint8Array>();
  const { manifest, manifestUrl, baseUrl, commit, warnings, stats } = await streamBundleFiles(url, { onFile: (f) => void files.set(f.entry.path, f.content) }, opts);
  const indexes: Record<string, TensorCacheIndex> = {};
  const tensors: Record<string, Map<string, Tensor>> = {};
  for (const [name, comp] of Object.entries(manifest.components)) {
    if (!files.has(comp.weights)) continue;
    ({ index: indexes[name], tensors: tensors[name] } = componentTensors(manifest, name, files));
  }
  return { manifest, manifestUrl, baseUrl, commit, files, indexes, tensors, warnings, stats };
}
