/**
 * A content-addressed store of verified stored files, keyed by their sha256. The loader puts a
 * file only after it passed every check, and checks it again when it takes it out, so a cache
 * can never feed unverified bytes into a model. Identical shards of different model versions
 * are stored once.
 */

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
  /** Forget `sha256` (a cached copy that no longer verifies). */
  delete(sha256: string): Promise<void>;
}

const SHA256 = /^[0-9a-f]{64}$/;

function key(sha256: string): string {
  if (!SHA256.test(sha256)) throw new Error(`not a sha256: ${JSON.stringify(sha256)}`);
  return sha256;
}

/** An in-memory cache (tests, and a session-only cache where the Cache API is missing). */
export class MemoryCache implements ContentCache {
  readonly entries = new Map<string, Uint8Array>();
  readonly copiesOnPut = true;

  async get(sha256: string): Promise<Uint8Array | undefined> {
    return this.entries.get(key(sha256));
  }

  async put(sha256: string, bytes: Uint8Array): Promise<void> {
    this.entries.set(key(sha256), bytes.slice());
  }

  async delete(sha256: string): Promise<void> {
    this.entries.delete(key(sha256));
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
    if (!this.storage) throw new Error("the Cache API is not available here (it needs a secure context)");
    this.cache ??= this.storage.open(this.name);
    return this.cache;
  }

  private url(sha256: string): string {
    return `https://sdpack.invalid/sha256/${key(sha256)}`;
  }

  async get(sha256: string): Promise<Uint8Array | undefined> {
    const response = await (await this.open()).match(this.url(sha256));
    return response ? new Uint8Array(await response.arrayBuffer()) : undefined;
  }

  async put(sha256: string, bytes: Uint8Array): Promise<void> {
    const body = new Blob([bytes as Uint8Array<ArrayBuffer>]);
    const headers = { "content-type": "application/octet-stream", "content-length": String(bytes.byteLength) };
    await (await this.open()).put(this.url(sha256), new Response(body, { headers }));
  }

  async delete(sha256: string): Promise<void> {
    await (await this.open()).delete(this.url(sha256));
  }
}
