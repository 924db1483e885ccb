/** image.ts: the VAE output as an image, converted as diffusers converts it. */
import assert from "node:assert/strict";
import { describe, test } from "node:test";

import { toImage } from "../src/image.js";

describe("images", () => {
  test("toImage: x / 2 + 0.5 clamped, round(x * 255), HWC float and RGBA", () => {
    const chw = new Float32Array([-2, 0, 1, 0.5, /* G */ 0.002, -0.002, 3, -1, /* B */ 0, 0, 0, 0]);
    const { rgba, float } = toImage(chw, 2, 2);
    assert.deepEqual([...float.subarray(0, 3)], [0, Math.fround(0.501), 0.5]);
    assert.deepEqual([...rgba.subarray(0, 8)], [0, 128, 128, 255, 128, 127, 128, 255]);
    assert.deepEqual([...rgba.subarray(8, 16)], [255, 255, 128, 255, 191, 0, 128, 255]);
    // v * 255 landing exactly on .5 rounds to even, as numpy does: 126.5 → 126, 131.5 → 132, 127.5 → 128.
    const halves = toImage(
      new Float32Array([-0.00784313678741455, 0.0313725471496582, 0]),
      1,
      1,
    ).rgba;
    assert.deepEqual([...halves], [126, 132, 128, 255]);
  });
});
