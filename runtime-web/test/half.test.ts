/** half.ts: float16 conversions. */
import assert from "node:assert/strict";
import { describe, test } from "node:test";

import { floatToHalf, halfToFloat } from "../src/half.js";

describe("float16", () => {
  test("float16 conversions round to nearest even and cover subnormals, infinities and NaN", () => {
    const cases: [number, number][] = [
      [0, 0x0000],
      [-0, 0x8000],
      [1, 0x3c00],
      [-2, 0xc000],
      [65504, 0x7bff],
      [65520, 0x7c00],
      [1e9, 0x7c00],
      [2 ** -24, 0x0001],
      [2 ** -25, 0x0000],
      [1.5 * 2 ** -25, 0x0001],
      [2 ** -14, 0x0400],
      [1 + 2 ** -11, 0x3c00],
      [1 + 3 * 2 ** -11, 0x3c02],
      [Infinity, 0x7c00],
      [-Infinity, 0xfc00],
      [0.1, 0x2e66],
    ];
    for (const [value, bits] of cases)
      assert.equal(floatToHalf(value), bits, `floatToHalf(${value})`);
    assert.ok(Number.isNaN(halfToFloat(floatToHalf(NaN))));
    for (let h = 0; h < 0x7c00; h += 7) assert.equal(floatToHalf(halfToFloat(h)), h); // round trip of every 7th finite half
    assert.equal(halfToFloat(0x3555), Math.fround(0.333251953125));
  });
});
