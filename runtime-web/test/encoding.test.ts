/** encoding.ts: zstd frames, the byte-plane unshuffle (fast paths against the spec's byte loop) and decodeShard. */
import assert from "node:assert/strict";
import { createHash, randomBytes } from "node:crypto";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, test } from "node:test";

import {
  decodeShard,
  unshuffle,
  unshuffleInto,
  unshuffleReference,
  zstdContentSize,
} from "../src/encoding.js";
import type { FileEntry } from "../src/formats.js";

import { TESTDATA } from "./helpers.js";

const sha256 = (b: Uint8Array) => createHash("sha256").update(b).digest("hex");
const manifestText = readFileSync(join(TESTDATA, "bundle", "manifest.json"), "utf8");
const goldenManifest = JSON.parse(manifestText);
const sha = (b: Uint8Array) => createHash("sha256").update(b).digest("hex");
const _golden = JSON.parse(manifestText) as { files: FileEntry[] };

describe("encoding", () => {
  const entryOf = (path: string): FileEntry =>
    goldenManifest.files.find((f: FileEntry) => f.path === path);
  const stored = (path: string) => new Uint8Array(readFileSync(join(TESTDATA, "bundle", path)));

  test("decodeShard decodes every golden shard to its raw_sha256", async () => {
    for (const entry of goldenManifest.files.filter((f: FileEntry) => f.encoding)) {
      const raw = await decodeShard(stored(entry.path), entry);
      assert.equal(sha256(raw), entry.encoding!.raw_sha256);
    }
  });

  test("the zstd header's content size is read before decompressing", () => {
    const path = "weights/unet/params_shard_1.bin.zst";
    assert.equal(zstdContentSize(stored(path), path), entryOf(path).encoding!.raw_size);
    assert.throws(() => zstdContentSize(new Uint8Array(8), "x.zst"), /x\.zst: not a zstd frame/);
  });

  test("unshuffle inverts the byte-plane shuffle, trailing bytes kept", () => {
    // elements [1,2,3] [4,5,6] shuffled with k=3 → planes 1 4 | 2 5 | 3 6, then a trailing 7
    assert.deepEqual(
      [...unshuffle(Uint8Array.from([1, 4, 2, 5, 3, 6, 7]), 3)],
      [1, 2, 3, 4, 5, 6, 7],
    );
    assert.deepEqual([...unshuffle(Uint8Array.from([9]), 2)], [9]);
  });

  test("decodeShard names the file on a size mismatch", async () => {
    const path = "weights/unet/params_shard_3.bin.zst";
    await assert.rejects(
      decodeShard(stored(path).subarray(1), entryOf(path)),
      /params_shard_3\.bin\.zst: size 24 != 25/,
    );
  });
});

describe("unshuffle", () => {
  test("the word-wise unshuffle equals the spec's byte loop: every k, length and alignment", () => {
    const data = new Uint8Array(randomBytes(4096 + 64));
    for (const k of [1, 2, 3, 4, 8]) {
      for (let len = 0; len <= 80; len++) {
        for (const offset of [0, 1, 2, 4]) {
          const src = data.subarray(offset, offset + len);
          const want = unshuffleReference(src, k);
          assert.deepEqual(unshuffle(src, k), want, `k=${k} len=${len} offset=${offset}`);
          const dst = new Uint8Array(len + offset).subarray(offset);
          assert.deepEqual(
            unshuffleInto(src, k, dst),
            want,
            `into: k=${k} len=${len} offset=${offset}`,
          );
        }
      }
    }
  });

  test("large buffers, word path and fallbacks (planes not 4-byte aligned) alike", () => {
    for (const k of [2, 4]) {
      for (const len of [1 << 20, (1 << 20) + 8, (1 << 20) + 3, (1 << 20) + 2 * k, 1000002]) {
        const src = new Uint8Array(randomBytes(len));
        assert.equal(sha(unshuffle(src, k)), sha(unshuffleReference(src, k)), `k=${k} len=${len}`);
      }
    }
  });

  test("a known answer, and a destination of the wrong size is refused", () => {
    // float16 1.0 (0x3c00) and 2.0 (0x4000), shuffled: low bytes 00 00, then high bytes 3c 40
    assert.deepEqual(
      [...unshuffle(Uint8Array.from([0, 0, 0, 0, 0x3c, 0x40, 0x3c, 0x40]), 2)],
      [0, 0x3c, 0, 0x40, 0, 0x3c, 0, 0x40],
    );
    assert.throws(() => unshuffleInto(new Uint8Array(8), 2, new Uint8Array(7)), RangeError);
  });
});
