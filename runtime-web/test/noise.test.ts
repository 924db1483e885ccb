import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { test } from "node:test";

import { latents, parseSeed, philox4x32_10, standardNormal, uint32Stream } from "../src/noise.js";
import { f32bits, readJson } from "./helpers.js";

const vectors = readJson("noise.json");

test("philox4x32-10 matches the Random123 known answers", () => {
  for (const { counter, key, output } of vectors.philox) {
    assert.deepEqual([...philox4x32_10(counter, key)], output);
  }
});

test("uint32 streams match noise.json exactly for every seed", () => {
  for (const { seed, uint32 } of vectors.streams) {
    assert.deepEqual([...uint32Stream(seed, uint32.length / 4)], uint32, `seed ${seed}`);
    assert.deepEqual([...uint32Stream(BigInt(seed), uint32.length / 4)], uint32);
  }
});

test("normals match noise.json bit for bit (spec allows 1 ulp)", (t) => {
  let exact = 0;
  let total = 0;
  for (const { seed, stream, count, float32_bits } of vectors.normals) {
    const got = standardNormal(seed, count, stream ?? 0);
    got.forEach((v, i) => {
      const ulps = Math.abs(f32bits(v) - (float32_bits[i] | 0));
      assert.ok(ulps <= 1, `seed ${seed} stream ${stream ?? 0} value ${i}: ${ulps} ulp`);
      total += 1;
      if (ulps === 0) exact += 1;
    });
  }
  t.diagnostic(`${exact}/${total} normals bit-exact`);
  assert.equal(exact, total);
});

test("[1, 4, 64, 64] latents hash to noise.json's sha256 for every seed", () => {
  for (const { seed, shape, sha256_float32_le, sum } of vectors.latents) {
    const x = latents(seed, shape);
    const digest = createHash("sha256")
      .update(new Uint8Array(x.buffer, x.byteOffset, x.byteLength))
      .digest("hex");
    assert.equal(digest, sha256_float32_le, `seed ${seed}`);
    assert.ok(Math.abs(x.reduce((a, b) => a + b, 0) - sum) < 1e-6 * x.length);
  }
});

test("seeds: bigint, safe integer or decimal string in [0, 2^64)", () => {
  assert.equal(parseSeed("18446744073709551615"), 2n ** 64n - 1n);
  assert.equal(parseSeed(42), 42n);
  assert.deepEqual([...uint32Stream(42, 1)], [...uint32Stream("42", 1)]);
  for (const bad of ["18446744073709551616", "-1", "1.5", "0x10", 2 ** 60, -3])
    assert.throws(() => parseSeed(bad as never), RangeError);
  assert.throws(() => uint32Stream(0, 1, 2 ** 32), RangeError);
});
