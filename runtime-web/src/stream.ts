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
 * Faults: HTTP 5xx answers and network errors are retried (fetch.ts); files that fail
 * verification are not. A cache that cannot store a verified file (a full storage quota) does not
 * fail the load: the file is used, a warning is reported, and nothing of it is left in the cache.
 * An aborted `signal` ends the load with a `LoadAbortedError` (name "AbortError") naming the file,
 * and nothing of that file is cached.
 */
import { DecodePool, defaultConcurrency, defaultWorkers, type DecodeResult } from "./decodePool.js";
import { aborted, type BundleSource, fetchBytes, fileUrl, manifestOf, messageOf } from "./fetch.js";
import type { FileEntry } from "./formats.js";
import { componentTensors } from "./layout.js";
import { downloadText, Monotone } from "./progress.js";
import type { TensorCacheIndex, Tensor } from "./tensorCache.js";
import type {
  FileConsumer,
  LoadedBundle,
  LoadOptions,
  LoadProgress,
  LoadStats,
  LoadWarning,
  StreamedBundle,
} from "./types.js";

const now = () => globalThis.performance?.now() ?? Date.now();
const here = () => (globalThis as { location?: { href: string } }).location?.href;

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
  const fetched = await fetchBytes(
    fileUrl(baseUrl, entry.path),
    entry.path,
    entry.size,
    true,
    opts,
    onChunk,
    alloc,
  );
  stats.ms.fetch += now() - t;
  t = now();
  const r = await decoder.decode(fetched, entry, verify, true, reuse); // `fetched` is handed over (transferred)
  stats.ms.decode += now() - t;
  add(r);
  const { stored, content, by } = r;
  // Decoded into a buffer of its own: the stored bytes' buffer can take the next fetch, unless a cache keeps it.
  const spare =
    content.buffer !== stored.buffer && (!opts.cache || opts.cache.copiesOnPut)
      ? (stored.buffer as ArrayBuffer)
      : undefined;
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
    const why = isQuotaError(err)
      ? "the browser's storage quota is exceeded"
      : "the cache refused it";
    const message =
      `${entry.path}: verified and used but not cached: ${why} (${(err as Error)?.name ?? "Error"}: ${messageOf(err)}); ` +
      "it will be fetched again next time (free storage or clear this site's data to cache it)";
    return {
      content,
      fromCache: false,
      by,
      spare,
      warning: { file: entry.path, message, cause: err },
    };
  } finally {
    stats.ms.cache += now() - t;
  }
}

/**
 * Run `work` over `items`, `width` at a time. After a failure no further item is started and
 * `stop` is called (to abort the ones in flight); returns once every started item has settled,
 * rejecting with the first failure.
 */
async function pool<T>(
  items: T[],
  width: number,
  work: (item: T) => Promise<void>,
  stop: (err: unknown) => void,
): Promise<void> {
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
export async function streamBundleFiles(
  source: BundleSource,
  consumer: FileConsumer,
  opts: LoadOptions = {},
): Promise<StreamedBundle> {
  const t0 = now();
  const { manifest, manifestUrl, baseUrl, commit } = await manifestOf(source, opts);
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
  const decoder = new DecodePool(
    workers,
    opts.workerUrl === undefined ? undefined : new URL(String(opts.workerUrl), here()),
    opts.createWorker,
  );
  const stats: LoadStats = {
    verify: opts.verify ?? "stored",
    workers: 0,
    decodedInWorkers: 0,
    decodedInThread: 0,
    fromCache: 0,
    storedBytes: 0,
    contentBytes: 0,
    ms: {
      total: 0,
      fetch: 0,
      decode: 0,
      sha256: 0,
      zstd: 0,
      unshuffle: 0,
      rawSha256: 0,
      cache: 0,
      consume: 0,
    },
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
  const report = (
    file: string,
    fileDone: boolean,
    fromCache: boolean,
    extra: Partial<LoadProgress> = {},
  ) => {
    if (!opts.onProgress) return;
    const counts = { loadedBytes, totalBytes, filesDone, filesTotal: entries.length };
    // By bytes, the last 2% by files handed over: 1 only once every file is verified and consumed.
    const files = entries.length ? filesDone / entries.length : 1;
    const progress = fraction.next(
      totalBytes ? 0.98 * (loadedBytes / totalBytes) + 0.02 * files : files,
    );
    opts.onProgress({
      file,
      ...counts,
      fileDone,
      fromCache,
      ...extra,
      progress,
      text: downloadText(counts, stats.fromCache),
    });
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
          if (r.by === "worker" && r.content.buffer !== r.spare)
            decoder.recycle(r.content.buffer as ArrayBuffer);
        };
        const t = now();
        await consumer.onFile(
          { entry, content: r.content, fromCache: r.fromCache, release },
          stop.signal,
        );
        stats.ms.consume += now() - t;
        filesDone += 1;
        if (r.warning) warnings.push(r.warning);
        report(entry.path, true, r.fromCache, {
          decodedBy: r.by,
          ...(r.warning ? { warning: r.warning.message } : {}),
        });
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

/**
 * Load a bundle: the manifest, every (included) file verified and decoded, and each
 * component's tensors. Nothing unverified is returned or cached; errors are `BundleError`s
 * that name the file. Keeps every file in memory (`files`): to stream weights to a GPU instead,
 * use `loadModel` (or `streamBundleFiles`).
 */
export async function loadBundleFiles(
  source: BundleSource,
  opts: LoadOptions = {},
): Promise<LoadedBundle> {
  const files = new Map<string, Uint8Array>();
  const { manifest, manifestUrl, baseUrl, commit, warnings, stats } = await streamBundleFiles(
    source,
    { onFile: (f) => void files.set(f.entry.path, f.content) },
    opts,
  );
  const indexes: Record<string, TensorCacheIndex> = {};
  const tensors: Record<string, Map<string, Tensor>> = {};
  for (const [name, comp] of Object.entries(manifest.components)) {
    if (!files.has(comp.weights)) continue;
    ({ index: indexes[name], tensors: tensors[name] } = componentTensors(manifest, name, files));
  }
  return { manifest, manifestUrl, baseUrl, commit, files, indexes, tensors, warnings, stats };
}
