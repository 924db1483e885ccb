/**
 * A `ContentCache` in IndexedDB: one database with one object store, a Blob per sha256 (browsers
 * keep large Blobs as files, outside the database's own pages). Each `put` is one transaction:
 * the entry is stored whole or not at all.
 */
import type { ContentCache } from "./cache.js";
import { cacheKey } from "./cache.js";

const STORE = "files";

/** A request's result as a promise. */
function done<T>(request: IDBRequest<T>): Promise<T> {
  return new Promise((resolve, reject) => {
    request.onsuccess = () => resolve(request.result);
    request.onerror = () => reject(request.error);
  });
}

/** A transaction's end as a promise (its error, e.g. a QuotaExceededError, when it aborts). */
function committed(tx: IDBTransaction): Promise<void> {
  return new Promise((resolve, reject) => {
    tx.oncomplete = () => resolve();
    tx.onabort = tx.onerror = () =>
      reject(tx.error ?? new DOMException("the transaction was aborted", "AbortError"));
  });
}

export class IndexedDbCache implements ContentCache {
  private db?: Promise<IDBDatabase>;
  /** `put` copies the bytes into a Blob before its first await. */
  readonly copiesOnPut = true;
  /** `get` reads each entry into a new ArrayBuffer. */
  readonly getsFreshCopies = true;

  constructor(readonly name = "sdpack-content-v1") {}

  /** Whether this environment has IndexedDB. */
  static available(): boolean {
    return typeof globalThis.indexedDB !== "undefined";
  }

  /** The database (created, with its one store, on first use). */
  database(): Promise<IDBDatabase> {
    this.db ??= new Promise((resolve, reject) => {
      const request = indexedDB.open(this.name, 1);
      request.onupgradeneeded = () => request.result.createObjectStore(STORE);
      request.onsuccess = () => resolve(request.result);
      request.onerror = () => reject(request.error);
      request.onblocked = () =>
        reject(
          new DOMException(`IndexedDB ${this.name} is blocked by another tab`, "InvalidStateError"),
        );
    });
    return this.db;
  }

  /**
   * `request` on the store in a transaction of its own, made in the same task as the transaction
   * (an IndexedDB transaction ends once its task has no request pending); resolves when a
   * read-only request succeeds, or a write has committed.
   */
  private async run<T>(
    mode: IDBTransactionMode,
    request: (store: IDBObjectStore) => IDBRequest<T>,
  ): Promise<T> {
    const tx = (await this.database()).transaction(STORE, mode);
    const result = done(request(tx.objectStore(STORE)));
    if (mode === "readwrite") {
      result.catch(() => {}); // the transaction's abort carries the same error
      await committed(tx);
    }
    return result;
  }

  async get(sha256: string): Promise<Uint8Array | undefined> {
    const value = (await this.run("readonly", (store) => store.get(cacheKey(sha256)))) as
      | Blob
      | undefined;
    return value ? new Uint8Array(await value.arrayBuffer()) : undefined;
  }

  async put(sha256: string, bytes: Uint8Array): Promise<void> {
    const blob = new Blob([bytes as Uint8Array<ArrayBuffer>]);
    await this.run("readwrite", (store) => store.put(blob, cacheKey(sha256)));
  }

  async delete(sha256: string): Promise<void> {
    await this.run("readwrite", (store) => store.delete(cacheKey(sha256)));
  }

  async has(sha256: string): Promise<boolean> {
    return (await this.run("readonly", (store) => store.count(cacheKey(sha256)))) > 0;
  }
}
