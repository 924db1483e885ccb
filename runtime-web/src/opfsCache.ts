/**
 * A `ContentCache` in the Origin Private File System: one file per sha256 in one directory. A
 * file is written through `createWritable()`, whose bytes become the file only on `close()`, so a
 * write that fails (a full quota, a closed tab) leaves no partial content under the name.
 */
import type { ContentCache } from "./cache.js";
import { cacheKey } from "./cache.js";

function isNotFound(err: unknown): boolean {
  const name = (err as { name?: string } | null)?.name;
  return name === "NotFoundError" || name === "TypeMismatchError";
}

export class OpfsCache implements ContentCache {
  private dir?: Promise<FileSystemDirectoryHandle>;
  /** `put` has written (and closed) the file by the time it returns. */
  readonly copiesOnPut = true;
  /** `get` reads each file into a new ArrayBuffer. */
  readonly getsFreshCopies = true;

  constructor(readonly name = "sdpack-content-v1") {}

  /** Whether this environment has the Origin Private File System. */
  static available(): boolean {
    const storage = (globalThis as { navigator?: { storage?: { getDirectory?: unknown } } })
      .navigator?.storage;
    return typeof storage?.getDirectory === "function";
  }

  /** The cache's directory in the origin's file system (created on first use). */
  directory(): Promise<FileSystemDirectoryHandle> {
    this.dir ??= navigator.storage
      .getDirectory()
      .then((root) => root.getDirectoryHandle(this.name, { create: true }));
    return this.dir;
  }

  private async file(sha256: string): Promise<FileSystemFileHandle | undefined> {
    try {
      return await (await this.directory()).getFileHandle(cacheKey(sha256));
    } catch (err) {
      if (isNotFound(err)) return undefined;
      throw err;
    }
  }

  async get(sha256: string): Promise<Uint8Array | undefined> {
    const handle = await this.file(sha256);
    return handle ? new Uint8Array(await (await handle.getFile()).arrayBuffer()) : undefined;
  }

  async put(sha256: string, bytes: Uint8Array): Promise<void> {
    const handle = await (await this.directory()).getFileHandle(cacheKey(sha256), { create: true });
    const writable = await handle.createWritable();
    try {
      await writable.write(bytes as Uint8Array<ArrayBuffer>);
      await writable.close();
    } catch (err) {
      await writable.abort().catch(() => {});
      throw err;
    }
  }

  async delete(sha256: string): Promise<void> {
    try {
      await (await this.directory()).removeEntry(cacheKey(sha256));
    } catch (err) {
      if (!isNotFound(err)) throw err;
    }
  }

  async has(sha256: string): Promise<boolean> {
    return (await this.file(sha256)) !== undefined;
  }
}
