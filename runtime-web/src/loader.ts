/**
 * Fetch a bundle by URL: the manifest, then every file it lists, each verified (size, sha256,
 * then decoded and checked against raw_sha256) before it is used or cached; then the
 * components' tensor-cache indexes, checked against the manifest, as typed tensor views.
 *
 *   const bundle = await loadBundleFiles("https://huggingface.co/org/model/resolve/<commit>/manifest.json",
 *                                        { cache: new BrowserCache(), onProgress: (p) => show(p) });
 *   bundle.tensors.unet.get("conv_in.weight").data   // Uint16Array (float16 bits)
 *
 * Faults: HTTP 5xx answers and network errors (also a connection that breaks mid-body) are
 * retried with exponential backoff (`retry`, default 3 retries after 200, 400, 800 ms); 4xx
 * answers and files that fail verification are not. A cache that cannot store a verified file
 * (a full storage quota) does not fail the load: the file is used, a warning is reported, and
 * nothing of it is left in the cache. An aborted `signal` ends the load with a `LoadAbortedError`
 * (name "AbortError") naming the file, and nothing of that file is cached.
 */
import type { ContentCache } from "./cache.js";
import { decodeShard } from "./encoding.js";
import { BundleError, DAMAGED, LoadAbortedError } from "./errors.js";
import { sha256Hex } from "./hash.js";
import { checkPath, type FileEntry, type Manifest, MANIFEST_NAME, MAX_MANIFEST_BYTES, parseManifest } from "./manifest.js";
import { parseTensorCache, shardTensors, type Tensor, type TensorCacheIndex } from "./tensorCache.js";

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
  /**
   * Which listed files to load (default: all), given the verified manifest. Tensor indexes of
   * skipped components are not built.
   */
  include?: (entry: FileEntry, manifest: Manifest) => boolean;
  /** Files fetched at once (default 4). */
  concurrency?: number;
  /** Retrying of HTTP 5xx answers and network errors (default: 3 retries after 200, 400, 800 ms). */
  retry?: RetryOptions;
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
  const here = (globalThis as { location?: { href: string } }).location?.href;
  const u = new URL(String(url), here);
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
 * GET `url` into memory, refusing more than `limit` bytes (the manifest's size for listed files),
 * so a hostile server cannot make the page allocate without bound. HTTP 5xx answers and network
 * errors are retried (`opts.retry`); the bytes of a failed try are taken back from `onChunk`.
 */
async function fetchBytes(
  url: string,
  what: string,
  limit: number,
  opts: LoadOptions,
  onChunk?: (bytes: number) => void,
): Promise<Uint8Array> {
  const retries = Math.max(0, Math.floor(opts.retry?.retries ?? 3));
  for (let attempt = 0; ; attempt++) {
    let got = 0;
    try {
      return await fetchOnce(url, what, limit, opts, (n) => {
        got += n;
        onChunk?.(n);
      });
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

async function fetchOnce(url: string, what: string, limit: number, opts: LoadOptions, onChunk: (bytes: number) => void): Promise<Uint8Array> {
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
  const tooLarge = () => new BundleError(`${what}: larger than the ${limit} bytes expected`, { file: what, hint: DAMAGED });
  const broken = (err: unknown, at: number) =>
    new TransientError(`${what}: the connection broke after ${at} bytes of ${url} (${messageOf(err)})`, { file: what, hint: NETWORK, cause: err });
  const declared = Number(response.headers.get("content-length") ?? NaN);
  if (!response.headers.get("content-encoding") && declared > limit) throw tooLarge();
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

/** Fetch and validate the manifest (and check it against a pinned sha256 when one is given). */
export async function fetchManifest(url: string | URL, opts: LoadOptions = {}): Promise<{ manifest: Manifest; manifestUrl: string; baseUrl: string }> {
  const { manifestUrl, baseUrl } = resolveBundleUrl(url);
  const bytes = await fetchBytes(manifestUrl, MANIFEST_NAME, MAX_MANIFEST_BYTES, opts);
  if (opts.manifestSha256 && (await sha256Hex(bytes)) !== opts.manifestSha256.toLowerCase()) {
    throw new BundleError(`${MANIFEST_NAME}: sha256 differs from the pinned one`, {
      file: MANIFEST_NAME,
      hint: "the revision moved or the manifest was tampered with; check the lock record",
    });
  }
  return { manifest: parseManifest(bytes), manifestUrl, baseUrl };
}

function isQuotaError(err: unknown): boolean {
  const e = err as { name?: string; code?: number } | null;
  return e?.name === "QuotaExceededError" || e?.code === 22;
}

/**
 * One file's verified content: from the cache when it still verifies, else fetched, checked, then
 * cached. A cache that cannot store it (a full quota) gives a warning, not an error.
 */
async function loadFile(
  entry: FileEntry,
  baseUrl: string,
  opts: LoadOptions,
  onChunk: (bytes: number) => void,
): Promise<{ content: Uint8Array; fromCache: boolean; warning?: LoadWarning }> {
  const cached = await opts.cache?.get(entry.sha256);
  if (cached) {
    try {
      const content = await decodeShard(cached, entry);
      onChunk(entry.size);
      return { content, fromCache: true };
    } catch {
      await opts.cache?.delete(entry.sha256); // a damaged cache entry: drop it and fetch again
    }
  }
  const stored = await fetchBytes(fileUrl(baseUrl, entry.path), entry.path, entry.size, opts, onChunk);
  const content = await decodeShard(stored, entry);
  if (opts.signal?.aborted) throw aborted(opts.signal, entry.path);
  if (!opts.cache) return { content, fromCache: false };
  try {
    await opts.cache.put(entry.sha256, stored);
    return { content, fromCache: false };
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
    return { content, fromCache: false, warning: { file: entry.path, message, cause: err } };
  }
}

/** Run `work` over `items`, `width` at a time; after a failure no further item is started. */
async function pool<T>(items: T[], width: number, work: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  let failed = false;
  const worker = async () => {
    while (!failed && next < items.length) {
      try {
        await work(items[next++]);
      } catch (err) {
        failed = true;
        throw err;
      }
    }
  };
  await Promise.all(Array.from({ length: Math.max(1, Math.min(width, items.length)) }, worker));
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
  const index = parseTensorCache(indexBytes, comp.weights);
  const tensors = new Map<string, Tensor>();
  for (const shard of index.records) {
    const path = shardPath(manifest, comp.weights, shard.dataPath);
    const raw = files.get(path);
    if (!raw) throw new BundleError(`${path}: not loaded`, { file: path });
    const entry = manifest.files.find((f) => f.path === path)!;
    const rawSize = entry.encoding ? entry.encoding.raw_size : entry.size;
    if (rawSize !== shard.nbytes) {
      throw new BundleError(`${path}: holds ${rawSize} raw bytes, ${comp.weights} says ${shard.nbytes}`, { file: path, hint: DAMAGED });
    }
    for (const t of shardTensors(raw, shard, path)) tensors.set(t.name, t);
  }
  const names = [...tensors.keys()];
  if (names.length !== comp.params.length || names.some((n, i) => n !== comp.params[i])) {
    throw new BundleError(`${comp.weights}: tensor names/order differ from the manifest's params list`, { file: comp.weights, hint: DAMAGED });
  }
  return { index, tensors };
}

/**
 * Load a bundle: the manifest, every (included) file verified and decoded, and each
 * component's tensors. Nothing unverified is returned or cached; errors are `BundleError`s
 * that name the file.
 */
export async function loadBundleFiles(url: string | URL, opts: LoadOptions = {}): Promise<LoadedBundle> {
  const { manifest, manifestUrl, baseUrl } = await fetchManifest(url, opts);
  const entries = manifest.files.filter((f) => !opts.include || opts.include(f, manifest));
  const totalBytes = entries.reduce((a, f) => a + f.size, 0);
  const files = new Map<string, Uint8Array>();
  const warnings: LoadWarning[] = [];
  let loadedBytes = 0;
  let filesDone = 0;
  const report = (file: string, fileDone: boolean, fromCache: boolean, warning?: string) =>
    opts.onProgress?.({
      file, loadedBytes, totalBytes, filesDone, filesTotal: entries.length, fileDone, fromCache, ...(warning ? { warning } : {}),
    });
  await pool(entries, opts.concurrency ?? 4, async (entry) => {
    if (opts.signal?.aborted) throw aborted(opts.signal, entry.path);
    const { content, fromCache, warning } = await loadFile(entry, baseUrl, opts, (n) => {
      loadedBytes += n;
      report(entry.path, false, false);
    });
    files.set(entry.path, content);
    filesDone += 1;
    if (warning) warnings.push(warning);
    report(entry.path, true, fromCache, warning?.message);
  });
  const indexes: Record<string, TensorCacheIndex> = {};
  const tensors: Record<string, Map<string, Tensor>> = {};
  for (const [name, comp] of Object.entries(manifest.components)) {
    if (!files.has(comp.weights)) continue;
    ({ index: indexes[name], tensors: tensors[name] } = componentTensors(manifest, name, files));
  }
  return { manifest, manifestUrl, baseUrl, files, indexes, tensors, warnings };
}
