/**
 * Stored files → verified bytes (formats/README.md "Weight shards", "Hashing"): size and sha256
 * of the stored bytes, then for encoded shards the zstd frame's declared content size (checked
 * before anything is allocated, so a forged frame cannot expand into a bomb), zstd, the
 * byte-plane unshuffle and the sha256 of the raw bytes.
 */
import { ZSTDDecoder } from "zstddec";

import { BundleError, DAMAGED } from "./errors.js";
import { sha256Hex } from "./hash.js";
import type { FileEntry } from "./manifest.js";

const ZSTD_MAGIC = 0xfd2fb528;

let decoder: Promise<ZSTDDecoder> | undefined;

function zstd(): Promise<ZSTDDecoder> {
  decoder ??= (async () => {
    const d = new ZSTDDecoder();
    await d.init();
    return d;
  })();
  return decoder;
}

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
 * Undo the byte-plane shuffle of `k`-byte elements: with n = floor(len / k) * k, the first n
 * bytes are k planes of n / k bytes (plane j = byte j of every element); the rest stay as they are.
 */
export function unshuffle(data: Uint8Array, k: number): Uint8Array {
  if (k <= 1) return data;
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

/** Throw unless `stored` has the size and sha256 the manifest lists for it. */
export async function verifyStored(stored: Uint8Array, entry: FileEntry): Promise<void> {
  if (stored.length !== entry.size) {
    throw new BundleError(`${entry.path}: size ${stored.length} != ${entry.size} in the manifest`, { file: entry.path, hint: DAMAGED });
  }
  if ((await sha256Hex(stored)) !== entry.sha256) {
    throw new BundleError(`${entry.path}: sha256 mismatch`, { file: entry.path, hint: DAMAGED });
  }
}

/**
 * A file's verified content: `stored` checked against its manifest entry, and when the entry
 * has an `encoding`, decoded and checked against `raw_size` / `raw_sha256`.
 */
export async function decodeShard(stored: Uint8Array, entry: FileEntry): Promise<Uint8Array> {
  await verifyStored(stored, entry);
  const enc = entry.encoding;
  if (!enc) return stored;
  const path = entry.path;
  if (enc.compression !== "zstd") throw new BundleError(`${path}: unknown compression ${JSON.stringify(enc.compression)}`, { file: path });
  const declared = zstdContentSize(stored, path);
  if (declared !== enc.raw_size) {
    const what = declared === undefined ? "no content size" : `${declared} bytes`;
    throw new BundleError(`${path}: zstd frame declares ${what}, manifest says ${enc.raw_size}; corrupt or forged`, {
      file: path,
      hint: DAMAGED,
    });
  }
  let payload: Uint8Array;
  try {
    payload = (await zstd()).decode(stored, enc.raw_size);
  } catch (err) {
    throw new BundleError(`${path}: zstd data is truncated or corrupt (${(err as Error).message})`, { file: path, hint: DAMAGED, cause: err });
  }
  if (payload.length !== enc.raw_size) {
    // zstddec reports decoder errors as a wrong (or empty) output length.
    throw new BundleError(`${path}: zstd data is truncated or corrupt (decoded ${payload.length} of ${enc.raw_size} bytes)`, {
      file: path,
      hint: DAMAGED,
    });
  }
  const raw = enc.shuffle ? unshuffle(payload, enc.shuffle) : payload;
  if ((await sha256Hex(raw)) !== enc.raw_sha256) {
    throw new BundleError(`${path}: decoded bytes do not match raw_sha256`, { file: path, hint: DAMAGED });
  }
  return raw;
}
