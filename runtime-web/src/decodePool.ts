/**
 * A small pool of decode workers (decodeWorker.ts) for one load, with the page's own thread as
 * the fallback: where `Worker` does not exist (node, some embedded webviews), where the caller asks
 * for none, or where the worker script cannot be started (a bundler that did not emit it, a CSP
 * that forbids it), files are decoded in-thread by the same code. Buffers go to a worker and come
 * back by transfer (no copies); a buffer the loader does not own is copied first.
 */
import {
  responseError,
  WORKER_READY,
  type DecodeRequest,
  type DecodeResponse,
} from "./decodeProtocol.js";
import { decodeVerified, type DecodeTimings, type VerifyLevel } from "./encoding.js";
import { BundleError } from "./errors.js";
import type { FileEntry } from "./formats.js";

/** The part of a `Worker` the pool uses. */
export interface WorkerLike {
  postMessage(message: DecodeRequest, transfer: Transferable[]): void;
  addEventListener(
    type: "message",
    listener: (event: { data: DecodeResponse | typeof WORKER_READY }) => void,
  ): void;
  addEventListener(
    type: "error" | "messageerror",
    listener: (event: { message?: string }) => void,
  ): void;
  terminate(): void;
}

/** Starts one decode worker from the script's URL. */
export type WorkerFactory = (url: URL) => WorkerLike;

export interface DecodeResult {
  /** The stored bytes (given back by the worker: the loader caches these). */
  stored: Uint8Array;
  /** The verified content: decoded and unshuffled for encoded shards, else `stored`. */
  content: Uint8Array;
  ms: DecodeTimings;
  /** Where it was decoded. */
  by: "worker" | "thread";
}

/**
 * The default number of decode workers: one per core beyond the page's own, 2..8. Two even on two
 * cores: one worker serializes sha256 (which WebCrypto runs on the calling thread in a worker) and
 * zstd of every file, and becomes the critical path. Up to 8: on 16 cores, 8 workers with 8 files
 * in flight load the full-size weights close to a bare fetch's time, 4 with 4 noticeably slower
 * (docs/design.md, "Decode workers", has the measurements).
 */
export function defaultWorkers(): number {
  const cores =
    (globalThis as { navigator?: { hardwareConcurrency?: number } }).navigator
      ?.hardwareConcurrency ?? 2;
  return Math.max(2, Math.min(8, cores - 1));
}

/** The default number of files in flight: 4, or one per decode worker where there are more. */
export function defaultConcurrency(workers: number = defaultWorkers()): number {
  return Math.max(4, workers);
}

/** The decode worker's script, next to this module (dist/decodeWorker.js, or the bundle's copy). */
export function defaultWorkerUrl(): URL {
  return new URL("./decodeWorker.js", import.meta.url);
}

interface Pending {
  resolve: (r: DecodeResult) => void;
  reject: (e: unknown) => void;
  path: string;
}

class PoolWorker {
  ready: Promise<boolean>;
  pending = new Map<number, Pending>();
  dead?: string;

  constructor(readonly worker: WorkerLike) {
    let settle!: (ok: boolean) => void;
    this.ready = new Promise((resolve) => (settle = resolve));
    worker.addEventListener("message", (event) => {
      const msg = event.data;
      if (msg === WORKER_READY) return settle(true);
      const p = this.pending.get(msg.id);
      if (!p) return;
      this.pending.delete(msg.id);
      if (!msg.ok) return p.reject(responseError(msg.error, p.path));
      const view = (r: { buffer: ArrayBuffer; byteOffset: number; byteLength: number }) =>
        new Uint8Array(r.buffer, r.byteOffset, r.byteLength);
      const stored = view(msg.stored);
      p.resolve({
        stored,
        content: msg.content ? view(msg.content) : stored,
        ms: msg.ms,
        by: "worker",
      });
    });
    const fail = (event: { message?: string }) => {
      this.dead = event?.message || "the decode worker failed";
      settle(false);
      for (const [, p] of this.pending) {
        p.reject(
          new BundleError(
            `${p.path}: the decode worker failed (${this.dead}); nothing of the file was used`,
            { file: p.path, hint: "load again" },
          ),
        );
      }
      this.pending.clear();
    };
    worker.addEventListener("error", fail);
    worker.addEventListener("messageerror", fail);
  }
}

export class DecodePool {
  private workers?: PoolWorker[];
  private nextId = 1;
  /** Decoded buffers the loader's consumer is done with, to give back to a worker with its next file. */
  private giveBack: ArrayBuffer[] = [];
  /** Files decoded in workers and on the calling thread; why workers were not used, if they were not. */
  readonly stats = {
    workers: 0,
    inWorkers: 0,
    inThread: 0,
    workerError: undefined as string | undefined,
  };

  /**
   * `size` workers at most (0: decode on the calling thread); `factory` starts one (default:
   * a module `Worker` where the environment has one).
   */
  constructor(
    private readonly size: number,
    private readonly url: URL | undefined,
    private readonly factory?: WorkerFactory,
  ) {}

  /** Start the workers now (they load while the first files download); `decode` does it otherwise. */
  start(): PoolWorker[] {
    if (this.workers) return this.workers;
    this.workers = [];
    const WorkerCtor = (
      globalThis as {
        Worker?: new (url: URL, opts: { type: "module"; name?: string }) => WorkerLike;
      }
    ).Worker;
    const factory =
      this.factory ??
      (WorkerCtor
        ? (url: URL) => new WorkerCtor(url, { type: "module", name: "sdpack-decode" })
        : undefined);
    if (!factory || this.size <= 0) return this.workers;
    try {
      const url = this.url ?? defaultWorkerUrl();
      for (let i = 0; i < this.size; i++) this.workers.push(new PoolWorker(factory(url)));
    } catch (err) {
      this.stats.workerError = `could not start a decode worker: ${(err as Error)?.message ?? err}`;
      this.close();
      this.workers = [];
    }
    this.stats.workers = this.workers.length;
    return this.workers;
  }

  /**
   * Verify and decode one stored file. `owned`: the loader owns `stored`'s buffer, so it may be
   * transferred to a worker (it is detached here until the result gives it back); otherwise it
   * is copied first (e.g. a cache's own copy).
   */
  async decode(
    stored: Uint8Array,
    entry: FileEntry,
    verify: VerifyLevel,
    owned: boolean,
    reuse = false,
  ): Promise<DecodeResult> {
    const worker = await this.pick();
    if (!worker) {
      this.stats.inThread += 1;
      const { content, ms } = await decodeVerified(stored, entry, verify);
      return { stored, content, ms, by: "thread" };
    }
    const bytes = owned ? stored : stored.slice();
    const id = this.nextId++;
    const result = new Promise<DecodeResult>((resolve, reject) =>
      worker.pending.set(id, { resolve, reject, path: entry.path }),
    );
    const { path, size, sha256, encoding } = entry;
    const request: DecodeRequest = {
      id,
      buffer: bytes.buffer as ArrayBuffer,
      byteOffset: bytes.byteOffset,
      byteLength: bytes.byteLength,
      entry: { path, size, sha256, ...(encoding ? { encoding: { ...encoding } } : {}) },
      verify,
      reuse,
      give: this.giveBack.splice(0),
    };
    try {
      worker.worker.postMessage(request, [request.buffer, ...request.give!]);
    } catch (err) {
      worker.pending.delete(id);
      throw new BundleError(
        `${entry.path}: could not send it to the decode worker (${(err as Error)?.message ?? err})`,
        { file: entry.path, cause: err },
      );
    }
    this.stats.inWorkers += 1;
    return result;
  }

  /** The ready worker with the fewest files in hand; undefined: decode in-thread. */
  private async pick(): Promise<PoolWorker | undefined> {
    const all = this.start();
    if (!all.length) return undefined;
    const ready = await Promise.all(all.map((w) => w.ready));
    const live = all.filter((w, i) => ready[i] && !w.dead);
    if (!live.length) {
      this.stats.workerError ??= all.find((w) => w.dead)?.dead ?? "no decode worker started";
      return undefined;
    }
    return live.reduce((a, b) => (b.pending.size < a.pending.size ? b : a));
  }

  /**
   * A decoded buffer (from a worker) the caller is done with: it goes back to a worker with the
   * next file, to be decoded into again (fresh memory costs page faults, then garbage collection).
   */
  recycle(buffer: ArrayBuffer): void {
    if (
      this.workers?.length &&
      this.giveBack.length < 4 &&
      buffer.byteLength > 0 &&
      !this.giveBack.includes(buffer)
    )
      this.giveBack.push(buffer);
  }

  /** Stop the workers (their pending files fail). */
  close(): void {
    for (const w of this.workers ?? []) {
      w.worker.terminate();
      for (const [, p] of w.pending)
        p.reject(
          new BundleError(`${p.path}: the load ended before the file was decoded`, {
            file: p.path,
          }),
        );
      w.pending.clear();
    }
  }
}
