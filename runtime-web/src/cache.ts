/**
 * A content-addressed store of verified stored files, keyed by their sha256. The loader puts a
 * file only after it passed every check, and checks it again when it takes it out, so a cache
 * can never feed unverified bytes into a model (a damaged entry is dropped and the file fetched
 * again). Identical shards of different model versions are stored once.
 *
 * Backends: the Cache API (`BrowserCache`, the default), the Origin Private File System
 * (`OpfsCache`) and IndexedDB (`IndexedDbCache`), chosen by name with `openCache`; all three
 * persist per origin, in the page and in workers. `requestPersistentStorage` asks the browser
 * not to evict them under storage pressure.
 */
import { UnsupportedError } from "./errors.js";
import { IndexedDbCache } from "./indexedDbCache.js";
import { OpfsCache } from "./opfsCache.js";

export interface ContentCache {
  /**
   * True when `put` has copied `bytes` by the time it returns (the loader then reuses their buffer
   * for the next file); otherwise the loader leaves the buffer to the cache.
   */
  readonly copiesOnPut?: boolean;
  /** True when every `get` returns a buffer of its own that nothing else holds (the loader may then hand it to a decode worker without a copy). */
  readonly getsFreshCopies?: boolean;
  /** The bytes stored under `sha256`, or undefined. */
  get(sha256: string): Promise<Uint8Array | undefined>;
  /** Store `bytes` under `sha256` (call only after verifying that they hash to it). */
  put(sha256: string, bytes: Uint8Array): Promise<void>;
  /** Forget `sha256` (a cached copy that no longer verifies, or a model being deleted). */
  delete(sha256: string): Promise<void>;
  /** Whether `sha256` is stored, without reading it (optional: `get` answers otherwise). */
  has?(sha256: string): Promise<boolean>;
}

/** A cache by name: `"cache-api"`, `"opfs"`, `"indexeddb"` or `"none"`; or a `ContentCache` of your own. */
export type CacheChoice = "cache-api" | "opfs" | "indexeddb" | "none" | ContentCache;

export const CACHE_CHOICES = ["cache-api", "opfs", "indexeddb", "none"] as const;

const SECURE =
  'serve the page over https or from localhost (a secure context), or pass cache: "none"';

/**
 * The cache a choice names. Undefined (the default) is the Cache API where this environment has
 * it, else none (node, an insecure context); a backend named explicitly must be available, or an
 * `UnsupportedError` says so.
 */
export function openCache(choice?: CacheChoice): ContentCache | undefined {
  if (choice === undefined) return BrowserCache.available() ? new BrowserCache() : undefined;
  if (typeof choice === "object" && choice !== null) return choice;
  switch (choice) {
    case "none":
      return undefined;
    case "cache-api":
      if (!BrowserCache.available())
        throw new UnsupportedError(
          'cache "cache-api": the Cache API is not available here',
          SECURE,
        );
      return new BrowserCache();
    case "opfs":
      if (!OpfsCache.available())
        throw new UnsupportedError(
          'cache "opfs": the Origin Private File System (navigator.storage.getDirectory) is not available here',
          SECURE,
        );
      return new OpfsCache();
    case "indexeddb":
      if (!IndexedDbCache.available())
        throw new UnsupportedError('cache "indexeddb": IndexedDB is not available here', SECURE);
      return new IndexedDbCache();
    default:
      throw new UnsupportedError(
        `cache ${JSON.stringify(choice)}: no such cache`,
        `choose one of ${CACHE_CHOICES.join(", ")}, or pass a ContentCache`,
      );
  }
}

/** Whether `cache` holds `sha256` (its `has`, else a `get`). */
export async function cacheHas(cache: ContentCache, sha256: string): Promise<boolean> {
  return cache.has ? cache.has(sha256) : (await cache.get(sha256)) !== undefined;
}

/** What `requestPersistentStorage` found: whether the origin's storage is persistent now, and its usage and quota in bytes. */
export interface StorageState {
  persisted: boolean;
  usage?: number;
  quota?: number;
}

/**
 * Ask the browser to keep this origin's storage (the cached models) under storage pressure:
 * `navigator.storage.persist()`, which browsers may grant silently, ask the user about, or deny.
 * Returns whether storage is persistent now, with `navigator.storage.estimate()`'s usage and
 * quota; `persisted: false` where the Storage API is missing.
 */
export async function requestPersistentStorage(): Promise<StorageState> {
  const storage = (globalThis as { navigator?: { storage?: StorageManager } }).navigator?.storage;
  if (!storage) return { persisted: false };
  let persisted = false;
  if (storage.persisted) persisted = await storage.persisted();
  if (!persisted && storage.persist) persisted = await storage.persist();
  const estimate = storage.estimate ? await storage.estimate() : {};
  return { persisted, usage: estimate.usage, quota: estimate.quota };
}

const SHA256 = /^[0-9a-f]{64}$/;

/** `sha256` checked to be 64 lowercase hex digits (a cache key is never a path or URL fragment). */
export function cacheKey(sha256: string): string {
  if (!SHA256.test(sha256)) throw new Error(`not a sha256: ${JSON.stringify(sha256)}`);
  return sha256;
}

/** An in-memory cache (tests, and a session-only cache where the Cache API is missing). */
export class MemoryCache implements ContentCache {
  readonly entries = new Map<string, Uint8Array>();
  readonly copiesOnPut = true;

  async get(sha256: string): Promise<Uint8Array | undefined> {
    return this.entries.get(cacheKey(sha256));
  }

  async put(sha256: string, bytes: Uint8Array): Promise<void> {
    this.entries.set(cacheKey(sha256), bytes.slice());
  }

  async delete(sha256: string): Promise<void> {
    this.entries.delete(cacheKey(sha256));
  }

  async has(sha256: string): Promise<boolean> {
    return this.entries.has(cacheKey(sha256));
  }
}

/**
 * The browser's Cache API (persistent, per origin). Entries live under a synthetic URL per
 * sha256, so they are shared by every bundle and every host the bundle was fetched from.
 */
export class BrowserCache implements ContentCache {
  private cache?: Promise<Cache>;
  /** `put` copies the bytes into a Blob before its first await. */
  readonly copiesOnPut = true;
  /** `get` reads each entry into a new ArrayBuffer. */
  readonly getsFreshCopies = true;

  constructor(
    readonly name = "sdpack-content-v1",
    private readonly storage: CacheStorage | undefined = globalThis.caches,
  ) {}

  /** Whether this environment has the Cache API at all. */
  static available(): boolean {
    return typeof globalThis.caches !== "undefined";
  }

  private open(): Promise<Cache> {
    if (!this.storage)
      throw new Error("the Cache API is not available here (it needs a secure context)");
    this.cache ??= this.storage.open(this.name);
    return this.cache;
  }

  private url(sha256: string): string {
    return `https://sdpack.invalid/sha256/${cacheKey(sha256)}`;
  }

  async get(sha256: string): Promise<Uint8Array | undefined> {
    const response = await (await this.open()).match(this.url(sha256));
    return response ? new Uint8Array(await response.arrayBuffer()) : undefined;
  }

  async put(sha256: string, bytes: Uint8Array): Promise<void> {
    const body = new Blob([bytes as Uint8Array<ArrayBuffer>]);
    const headers = {
      "content-type": "application/octet-stream",
      "content-length": String(bytes.byteLength),
    };
    await (await this.open()).put(this.url(sha256), new Response(body, { headers }));
  }

  async delete(sha256: string): Promise<void> {
    await (await this.open()).delete(this.url(sha256));
  }

  async has(sha256: string): Promise<boolean> {
    return (await (await this.open()).match(this.url(sha256))) !== undefined;
  }
}
