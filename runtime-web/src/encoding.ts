/**
 * Stored files → verified bytes (formats/README.md "Weight shards", "Hashing"): size and sha256
 * of the stored bytes, then for encoded shards the zstd frame's declared content size (checked
 * before anything is allocated, so a forged frame cannot expand into a bomb), zstd, the decoded
 * size and the byte-plane unshuffle; the sha256 of the raw bytes only with `verify: "full"` (the
 * stored sha256 already pins the input, and decoding is deterministic).
 *
 * This module is what the decode workers run (decodeWorker.ts), so it imports no more than it needs.
 */
import { ZSTDDecoder } from "zstddec";

import { BundleError, DAMAGED } from "./errors.js";
import { sha256Hex } from "./hash.js";
import type { FileEntry } from "./formats.js";

const ZSTD_MAGIC = 0xfd2fb528;

/**
 * How much a loader checks (formats/README.md "Hashing"): `"stored"` (the default) — size and
 * sha256 of the stored bytes, the zstd frame's declared size and the decoded size; `"full"` —
 * also the sha256 of the decoded bytes (`raw_sha256`), as `packer verify` does.
 */
export type VerifyLevel = "stored" | "full";

/** Milliseconds spent in each step of decoding one file. */
export interface DecodeTimings {
  sha256: number;
  zstd: number;
  unshuffle: number;
  rawSha256: number;
}

let decoder: Promise<ZSTDDecoder> | undefined;

function zstd(): Promise<ZSTDDecoder> {
  decoder ??= (async () => {
    const d = new ZSTDDecoder();
    await d.init();
    return d;
  })();
  return decoder;
}

const now = () => globalThis.performance?.now() ?? Date.now();

const LITTLE_ENDIAN = new Uint8Array(new Uint32Array([1]).buffer)[0] === 1;

/**
 * The content size a zstd frame header declares, `undefined` when it declares none. Throws on
 * anything that is not a zstd frame header (`path` names the file).
 */
export function zstdContentSize(frame: Uint8Array, path: string): number | undefined {
  const fail = (why: string) => new BundleError(`${path}: ${why}`, { file: path, hint: DAMAGED });
  if (frame.length < 5) throw fail("too short for a zstd frame");
  const view = new DataView(frame.buffer, frame.byteOffset, frame.byteLength);
  if (view.getUint32(0, true) !== ZSTD_MAGIC) throw fail("not a zstd frame");
  const fhd = frame[4];
  if (fhd & 0x08) throw fail("zstd frame header is corrupt (reserved bit set)");
  const fcsFlag = fhd >>> 6;
  const singleSegment = (fhd >>> 5) & 1;
  const dictIdBytes = [0, 1, 2, 4][fhd & 3];
  const fcsBytes = [singleSegment ? 1 : 0, 2, 4, 8][fcsFlag];
  const at = 5 + (singleSegment ? 0 : 1) + dictIdBytes;
  if (frame.length < at + fcsBytes) throw fail("zstd frame header is truncated");
  switch (fcsBytes) {
    case 0:
      return undefined;
    case 1:
      return frame[at];
    case 2:
      return view.getUint16(at, true) + 256;
    case 4:
      return view.getUint32(at, true);
    default: {
      const size = view.getBigUint64(at, true);
      return size > BigInt(Number.MAX_SAFE_INTEGER) ? Number.MAX_SAFE_INTEGER : Number(size);
    }
  }
}

/**
 * The byte-plane unshuffle exactly as formats/README.md states it, one byte at a time: with
 * n = floor(len / k) * k, output byte i*k + j = plane j byte i; the last len - n bytes as they
 * are. The reference that `unshuffle` is tested against.
 */
export function unshuffleReference(data: Uint8Array, k: number): Uint8Array {
  if (k <= 1) return data.slice();
  const count = Math.floor(data.length / k);
  const n = count * k;
  const out = new Uint8Array(data.length);
  for (let j = 0; j < k; j++) {
    const plane = data.subarray(j * count, (j + 1) * count);
    for (let i = 0, o = j; i < count; i++, o += k) out[o] = plane[i];
  }
  out.set(data.subarray(n), n);
  return out;
}

/** Byte-wise unshuffle of elements [from, count) of `src` (count elements per plane) into `dst`. */
function unshuffleBytes(
  src: Uint8Array,
  k: number,
  count: number,
  from: number,
  dst: Uint8Array,
): void {
  for (let j = 0; j < k; j++) {
    for (let i = from, s = j * count + from, o = from * k + j; i < count; i++, s++, o += k)
      dst[o] = src[s];
  }
}

/**
 * Undo the byte-plane shuffle of `k`-byte elements from `src` into `dst` (same length, not
 * overlapping). k = 2 and 4 run on 32-bit words (4 elements of each plane per step: ~4-8× the
 * byte loop) where the planes are 4-byte aligned, little-endian hosts only; everything else,
 * and the elements a word loop leaves over, go byte by byte.
 */
export function unshuffleInto(src: Uint8Array, k: number, dst: Uint8Array): Uint8Array {
  if (dst.length !== src.length)
    throw new RangeError(`unshuffleInto: ${src.length} bytes into ${dst.length}`);
  if (k <= 1) {
    dst.set(src);
    return dst;
  }
  const count = Math.floor(src.length / k);
  const n = count * k;
  let done = 0; // elements (per plane) the word loop handled
  const words = count >>> 2; // 4 elements of each plane per step
  const aligned =
    LITTLE_ENDIAN &&
    words > 0 &&
    (k === 2 || k === 4) &&
    src.byteOffset % 4 === 0 &&
    dst.byteOffset % 4 === 0 &&
    count % 4 === 0;
  if (aligned && k === 2) {
    const a = new Uint32Array(src.buffer, src.byteOffset, words);
    const b = new Uint32Array(src.buffer, src.byteOffset + count, words);
    const out = new Uint32Array(dst.buffer, dst.byteOffset, words * 2);
    for (let i = 0, o = 0; i < words; i++, o += 2) {
      const x = a[i];
      const y = b[i];
      out[o] = (x & 0xff) | ((y & 0xff) << 8) | ((x & 0xff00) << 8) | ((y & 0xff00) << 16);
      out[o + 1] =
        ((x >>> 16) & 0xff) | ((y >>> 8) & 0xff00) | ((x >>> 8) & 0xff0000) | (y & 0xff000000);
    }
    done = words * 4;
  } else if (aligned && k === 4) {
    const a = new Uint32Array(src.buffer, src.byteOffset, words);
    const b = new Uint32Array(src.buffer, src.byteOffset + count, words);
    const c = new Uint32Array(src.buffer, src.byteOffset + 2 * count, words);
    const d = new Uint32Array(src.buffer, src.byteOffset + 3 * count, words);
    const out = new Uint32Array(dst.buffer, dst.byteOffset, words * 4);
    for (let i = 0, o = 0; i < words; i++, o += 4) {
      const w = a[i];
      const x = b[i];
      const y = c[i];
      const z = d[i];
      // a 4×4 byte transpose: output word e holds byte e of each plane's word
      out[o] = (w & 0xff) | ((x & 0xff) << 8) | ((y & 0xff) << 16) | ((z & 0xff) << 24);
      out[o + 1] = ((w >>> 8) & 0xff) | (x & 0xff00) | ((y & 0xff00) << 8) | ((z & 0xff00) << 16);
      out[o + 2] =
        ((w >>> 16) & 0xff) | ((x >>> 8) & 0xff00) | (y & 0xff0000) | ((z & 0xff0000) << 8);
      out[o + 3] = (w >>> 24) | ((x >>> 16) & 0xff00) | ((y >>> 8) & 0xff0000) | (z & 0xff000000);
    }
    done = words * 4;
  }
  if (done < count) unshuffleBytes(src, k, count, done, dst);
  if (n < src.length) dst.set(src.subarray(n), n);
  return dst;
}

/**
 * Undo the byte-plane shuffle of `k`-byte elements: with n = floor(len / k) * k, the first n
 * bytes are k planes of n / k bytes (plane j = byte j of every element); the rest stay as they are.
 * Returns a new array (`data` itself when k <= 1).
 */
export function unshuffle(data: Uint8Array, k: number): Uint8Array {
  if (k <= 1) return data;
  return unshuffleInto(data, k, new Uint8Array(data.length));
}

/** Throw unless `stored` has the size and sha256 the manifest lists for it. */
export async function verifyStored(stored: Uint8Array, entry: FileEntry): Promise<void> {
  if (stored.length !== entry.size) {
    throw new BundleError(`${entry.path}: size ${stored.length} != ${entry.size} in the manifest`, {
      file: entry.path,
      hint: DAMAGED,
    });
  }
  if ((await sha256Hex(stored)) !== entry.sha256) {
    throw new BundleError(`${entry.path}: sha256 mismatch`, { file: entry.path, hint: DAMAGED });
  }
}

/**
 * A file's verified content, and the time each step took: `stored` checked against its manifest
 * entry and, when the entry has an `encoding`, decoded (zstd, decoded size, unshuffle) and — with
 * `verify: "full"` — checked against `raw_sha256`. What `decodeShard` and the decode workers run;
 * `output(n)` gives the unshuffle's n-byte destination (the workers reuse buffers the page gave back).
 */
export async function decodeVerified(
  stored: Uint8Array,
  entry: FileEntry,
  verify: VerifyLevel = "stored",
  output: (bytes: number) => Uint8Array = (n) => new Uint8Array(n),
): Promise<{ content: Uint8Array; ms: DecodeTimings }> {
  const ms: DecodeTimings = { sha256: 0, zstd: 0, unshuffle: 0, rawSha256: 0 };
  let t = now();
  await verifyStored(stored, entry);
  ms.sha256 = now() - t;
  const enc = entry.encoding;
  if (!enc) return { content: stored, ms };
  const path = entry.path;
  if (enc.compression !== "zstd")
    throw new BundleError(`${path}: unknown compression ${JSON.stringify(enc.compression)}`, {
      file: path,
    });
  const declared = zstdContentSize(stored, path);
  if (declared !== enc.raw_size) {
    const what = declared === undefined ? "no content size" : `${declared} bytes`;
    throw new BundleError(
      `${path}: zstd frame declares ${what}, manifest says ${enc.raw_size}; corrupt or forged`,
      {
        file: path,
        hint: DAMAGED,
      },
    );
  }
  t = now();
  let payload: Uint8Array;
  try {
    payload = (await zstd()).decode(stored, enc.raw_size);
  } catch (err) {
    throw new BundleError(
      `${path}: zstd data is truncated or corrupt (${(err as Error).message})`,
      { file: path, hint: DAMAGED, cause: err },
    );
  }
  ms.zstd = now() - t;
  if (payload.length !== enc.raw_size) {
    // zstddec reports decoder errors as a wrong (or empty) output length.
    throw new BundleError(
      `${path}: zstd data is truncated or corrupt (decoded ${payload.length} of ${enc.raw_size} bytes)`,
      {
        file: path,
        hint: DAMAGED,
      },
    );
  }
  t = now();
  const raw =
    enc.shuffle && enc.shuffle > 1
      ? unshuffleInto(payload, enc.shuffle, output(payload.length))
      : payload;
  ms.unshuffle = now() - t;
  if (verify === "full") {
    t = now();
    const digest = await sha256Hex(raw);
    ms.rawSha256 = now() - t;
    if (digest !== enc.raw_sha256) {
      throw new BundleError(`${path}: decoded bytes do not match raw_sha256`, {
        file: path,
        hint: DAMAGED,
      });
    }
  }
  return { content: raw, ms };
}

/**
 * A file's verified content: `stored` checked against its manifest entry, and when the entry
 * has an `encoding`, decoded and checked against `raw_size` (and `raw_sha256` with
 * `{ verify: "full" }`).
 */
export async function decodeShard(
  stored: Uint8Array,
  entry: FileEntry,
  opts: { verify?: VerifyLevel } = {},
): Promise<Uint8Array> {
  return (await decodeVerified(stored, entry, opts.verify)).content;
}
