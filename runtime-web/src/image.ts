/** The VAE's output as an image, converted as diffusers converts it (so 8-bit values match). */

/**
 * diffusers' image conversion: x / 2 + 0.5 clamped to [0, 1] (float32 HWC), and
 * round(x * 255) into RGBA. `chw` is the VAE output [3, height, width].
 */
export function toImage(
  chw: Float32Array,
  height: number,
  width: number,
): { rgba: Uint8ClampedArray; float: Float32Array } {
  const plane = height * width;
  const float = new Float32Array(plane * 3);
  const rgba = new Uint8ClampedArray(plane * 4);
  for (let p = 0; p < plane; p++) {
    for (let c = 0; c < 3; c++) {
      const v = Math.min(1, Math.max(0, Math.fround(Math.fround(chw[c * plane + p] / 2) + 0.5)));
      float[p * 3 + c] = v;
      rgba[p * 4 + c] = roundHalfEven(Math.fround(v * 255)); // numpy's round(), on float32 as numpy computes it
    }
    rgba[p * 4 + 3] = 255;
  }
  return { rgba, float };
}

/** numpy's round() of a non-negative number: halves go to the even neighbour. */
function roundHalfEven(y: number): number {
  const r = Math.round(y);
  return r - y === 0.5 && r % 2 !== 0 ? r - 1 : r;
}
