/**
 * Fetch a bundle by URL: the manifest, then every file it lists, each verified (size, sha256,
 * then decoded and checked against raw_sha256) before it is used or cached; then the
 * components' tensor-cache indexes, checked against the manifest, as typed tensor views.
 *
 *   const bundle = await loadBundleFiles("https://huggingface.co/org/model/resolve/<commit>/manifest.json",
 *                                        { cache: new BrowserCache(), onProgress: (p) => show(p) });
 *   bundle.tensors.unet.get("conv_in.weight").data   // Uint16Array (float16 bits)
 */
import type { ContentCache } from "./cache.js";
import { decodeShard } from "./encoding.js";
import { BundleError, DAMAGED } from "./errors.js";
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

/**
 * GET `url` into memory, refusing more than `limit` bytes (the manifest's size for listed files),
 * so a hostile server cannot make the page allocate without bound.
 */
async function fetchBytes(
  url: string,
  what: string,
  limit: number,
  opts: LoadOptions,
  onChunk?: (bytes: number) => void,
): Promise<Uint8Array> {
  const doFetch = opts.fetch ?? globalThis.fetch;
  let response: Response;
  try {
    response = await doFetch(url, { signal: opts.signal });
  } catch (err) {
    if (opts.signal?.aborted) throw err;
    throw new BundleError(`${what}: could not fetch ${url} (${(err as Error).message})`, { file: what, cause: err });
  }
  if (!response.ok) {
    throw new BundleError(`${what}: HTTP ${response.status} ${response.statusText} from ${url}`, {
      file: what,
      hint: response.status === 404 ? "is the URL (and revision) right?" : undefined,
    });
  }
  const tooLarge = () => new BundleError(`${what}: larger than the ${limit} bytes expected`, { file: what, hint: DAMAGED });
  const declared = Number(response.headers.get("content-length") ?? NaN);
  if (!response.headers.get("content-encoding") && declared > limit) throw tooLarge();
  if (!response.body) {
    const all = new Uint8Array(await response.arrayBuffer());
    if (all.length > limit) throw tooLarge();
    onChunk?.(all.length);
    return all;
  }
  const chunks: Uint8Array[] = [];
  let total = 0;
  const reader = response.body.getReader();
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    total += value.length;
    if (total > limit) {
      await reader.cancel();
      throw tooLarge();
    }
    chunks.push(value);
    onChunk?.(value.length);
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

/** One file's verified content: from the cache when it still verifies, else fetched, checked, then cached. */
async function loadFile(
  entry: FileEntry,
  baseUrl: string,
  opts: LoadOptions,
  onChunk: (bytes: number) => void,
): Promise<{ content: Uint8Array; fromCache: boolean }> {
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
  await opts.cache?.put(entry.sha256, stored);
  return { content, fromCache: false };
}

async function pool<T>(items: T[], width: number, work: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  const worker = async () => {
    while (next < items.length) await work(items[next++]);
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
  let loadedBytes = 0;
  let filesDone = 0;
  const report = (file: string, fileDone: boolean, fromCache: boolean) =>
    opts.onProgress?.({ file, loadedBytes, totalBytes, filesDone, filesTotal: entries.length, fileDone, fromCache });
  await pool(entries, opts.concurrency ?? 4, async (entry) => {
    opts.signal?.throwIfAborted();
    const { content, fromCache } = await loadFile(entry, baseUrl, opts, (n) => {
      loadedBytes += n;
      report(entry.path, false, false);
    });
    files.set(entry.path, content);
    filesDone += 1;
    report(entry.path, true, fromCache);
  });
  const indexes: Record<string, TensorCacheIndex> = {};
  const tensors: Record<string, Map<string, Tensor>> = {};
  for (const [name, comp] of Object.entries(manifest.components)) {
    if (!files.has(comp.weights)) continue;
    ({ index: indexes[name], tensors: tensors[name] } = componentTensors(manifest, name, files));
  }
  return { manifest, manifestUrl, baseUrl, files, indexes, tensors };
}
