/**
 * The messages between the loader and its decode workers (decodePool.ts ↔ decodeWorker.ts), and
 * the worker's side of them — kept apart from both so that tests can drive a worker in-process.
 */
import type { DecodeTimings, VerifyLevel } from "./encoding.js";
import { BundleError } from "./errors.js";
import type { FileEntry } from "./formats.js";

/** What a worker posts once its module has loaded (before that, nothing is sent to it). */
export const WORKER_READY = "sdpack-decode-worker-ready";

/** Decode one stored file: its bytes are `buffer[byteOffset, byteOffset + byteLength)`, transferred. */
export interface DecodeRequest {
  id: number;
  buffer: ArrayBuffer;
  byteOffset: number;
  byteLength: number;
  entry: FileEntry;
  verify: VerifyLevel;
  /** Decoded buffers the page is done with, given back (transferred) for the worker to decode into again. */
  give?: ArrayBuffer[];
  /** The page will give this file's decoded buffer back: size it to fit later shards too. */
  reuse?: boolean;
}

/** A byte range of a transferred buffer. */
export interface BufferRange {
  buffer: ArrayBuffer;
  byteOffset: number;
  byteLength: number;
}

export type DecodeResponse =
  | {
      id: number;
      ok: true;
      /** The stored bytes, given back (the loader caches them). */
      stored: BufferRange;
      /** The verified content (absent: the stored bytes themselves, for files without an encoding). */
      content?: BufferRange;
      ms: DecodeTimings;
    }
  | {
      id: number;
      ok: false;
      error: { name: string; message: string; file?: string; hint?: string };
    };

const range = (a: Uint8Array): BufferRange => ({
  buffer: a.buffer as ArrayBuffer,
  byteOffset: a.byteOffset,
  byteLength: a.byteLength,
});

/** Buffers to decode into again (kept by a worker between requests): at most a few, each used for sizes up to its own. */
export class SpareBuffers {
  private spare: ArrayBuffer[] = [];

  constructor(private readonly keep = 3) {}

  give(buffers: ArrayBuffer[] | undefined): void {
    for (const b of buffers ?? []) if (b.byteLength > 0) this.spare.push(b);
    // keep the largest few: they fit the most shards
    this.spare.sort((a, b) => b.byteLength - a.byteLength).splice(this.keep);
  }

  /** `n` bytes: the smallest spare buffer that holds them, else a new one (with `round`: rounded up to 1 MiB, to fit later shards). */
  take(n: number, round = true): Uint8Array {
    let best = -1;
    this.spare.forEach((b, i) => {
      if (b.byteLength >= n && (best < 0 || b.byteLength < this.spare[best].byteLength)) best = i;
    });
    if (best >= 0) return new Uint8Array(this.spare.splice(best, 1)[0], 0, n);
    return new Uint8Array(new ArrayBuffer(round ? Math.ceil(n / 1048576) * 1048576 : n), 0, n);
  }

  get size(): number {
    return this.spare.length;
  }
}

/** The worker's side: decode `req` with `decode` and say what to post back and what to transfer. */
export async function handleDecodeRequest(
  req: DecodeRequest,
  decode: (
    stored: Uint8Array,
    entry: FileEntry,
    verify: VerifyLevel,
    output: (bytes: number) => Uint8Array,
  ) => Promise<{ content: Uint8Array; ms: DecodeTimings }>,
  spare: SpareBuffers = new SpareBuffers(0),
): Promise<{ response: DecodeResponse; transfer: Transferable[] }> {
  spare.give(req.give);
  try {
    const stored = new Uint8Array(req.buffer, req.byteOffset, req.byteLength);
    const { content, ms } = await decode(stored, req.entry, req.verify, (n) =>
      spare.take(n, req.reuse === true),
    );
    if (content === stored)
      return {
        response: { id: req.id, ok: true, stored: range(stored), ms },
        transfer: [req.buffer],
      };
    const transfer: Transferable[] =
      content.buffer === req.buffer ? [req.buffer] : [req.buffer, content.buffer as ArrayBuffer];
    return {
      response: { id: req.id, ok: true, stored: range(stored), content: range(content), ms },
      transfer,
    };
  } catch (err) {
    const e = err as Partial<BundleError> & { name?: string; message?: string };
    const error = {
      name: e?.name ?? "Error",
      message: e?.message ?? String(err),
      file: e?.file,
      hint: e?.hint,
    };
    return { response: { id: req.id, ok: false, error }, transfer: [] };
  }
}

/** The page's side: the BundleError a failed response stands for. */
export function responseError(
  error: { name: string; message: string; file?: string; hint?: string },
  path: string,
): BundleError {
  if (error.name === "BundleError")
    return new BundleError(error.message, { file: error.file, hint: error.hint });
  return new BundleError(`${path}: decoding failed (${error.name}: ${error.message})`, {
    file: path,
    hint: error.hint,
  });
}
