import assert from "node:assert/strict";
import { describe, test } from "node:test";

import { shardTensors } from "../src/tensorCache.js";
import { readJson } from "./helpers.js";

interface QuantCase {
  shape: number[];
  packed_uint32: number[];
  codes: number[];
}
type QuantVectors = Record<string, { bits: number; group_size: number; cases: QuantCase[] }>;

const vectors = readJson<QuantVectors>("quant.json");

describe("quantized weights (formats/testdata/quant.json)", () => {
  for (const [scheme, { bits, cases }] of Object.entries(vectors)) {
    test(`${scheme}: packed codes arrive as a uint32 view of the shard, little-endian, lowest bits first`, () => {
      const perWord = 32 / bits;
      for (const c of cases) {
        const words = Uint32Array.from(c.packed_uint32);
        const raw = new Uint8Array(16 + words.byteLength);
        new DataView(raw.buffer).setUint32(0, 7, true); // another record before it
        for (let i = 0; i < words.length; i++)
          new DataView(raw.buffer).setUint32(16 + 4 * i, words[i], true);
        const shape = [c.shape[0], words.length / c.shape[0]];
        const [, tensor] = shardTensors(
          raw,
          {
            dataPath: "params_shard_0.bin",
            format: "raw-shard",
            nbytes: raw.byteLength,
            records: [
              { name: "x", shape: [1], dtype: "uint32", format: "raw", nbytes: 4, byteOffset: 0 },
              {
                name: "w.packed",
                shape,
                dtype: "uint32",
                format: "raw",
                nbytes: words.byteLength,
                byteOffset: 16,
              },
            ],
          },
          "test",
        );
        assert.ok(tensor.data instanceof Uint32Array);
        assert.deepEqual(Array.from(tensor.data), c.packed_uint32);
        const codes = Array.from(
          { length: words.length * perWord },
          (_, k) =>
            ((tensor.data[Math.floor(k / perWord)] as number) >>> (bits * (k % perWord))) &
            ((1 << bits) - 1),
        );
        assert.deepEqual(codes, c.codes);
      }
    });
  }
});
