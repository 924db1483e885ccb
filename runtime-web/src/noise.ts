/**
 * The bundle spec's seeded noise (formats/README.md "Seeded noise", generator
 * `philox4x32-10/box-muller` version 1): Philox4x32-10 in counter mode keyed by a 64-bit seed,
 * Box–Muller in float64, rounded to float32. The same seed gives the same latents as
 * packer/runtime/noise.py, so a browser image matches the native one.
 */

export const GENERATOR = "philox4x32-10/box-muller";
export const VERSION = 1;

/** A seed in [0, 2^64): a bigint, a safe integer, or its decimal string. */
export type Seed = bigint | number | string;

const M0 = 0xd2511f53;
const M1 = 0xcd9e8d57;
const W0 = 0x9e3779b9;
const W1 = 0xbb67ae85;
const TWO_32 = 4294967296;
const MAX_SEED = (1n << 64n) - 1n;

/** The seed as a bigint, checked to lie in [0, 2^64). */
export function parseSeed(seed: Seed): bigint {
  let value: bigint;
  if (typeof seed === "bigint") value = seed;
  else if (typeof seed === "number") {
    if (!Number.isSafeInteger(seed))
      throw new RangeError(`seed ${seed} is not a safe integer: pass a bigint or a decimal string`);
    value = BigInt(seed);
  } else {
    if (!/^[0-9]+$/.test(seed.trim()))
      throw new RangeError(`seed ${JSON.stringify(seed)} is not a decimal integer`);
    value = BigInt(seed.trim());
  }
  if (value < 0n || value > MAX_SEED)
    throw new RangeError(`seed must be in [0, 2^64), got ${value}`);
  return value;
}

/** The high 32 bits of the 64-bit product of two uint32 (the low half is Math.imul). */
function mulhi(a: number, b: number): number {
  const al = a & 0xffff;
  const ah = a >>> 16;
  const bl = b & 0xffff;
  const bh = b >>> 16;
  const lo = al * bl;
  const mid1 = al * bh;
  const mid2 = ah * bl;
  const carry = ((lo >>> 16) + (mid1 & 0xffff) + (mid2 & 0xffff)) >>> 16;
  return (ah * bh + (mid1 >>> 16) + (mid2 >>> 16) + carry) >>> 0;
}

/** Philox4x32-10 of one counter (four uint32) under a key (two uint32), into `out` at `at`. */
export function philox4x32_10(
  counter: ArrayLike<number>,
  key: ArrayLike<number>,
  out: Uint32Array = new Uint32Array(4),
  at = 0,
): Uint32Array {
  let c0 = counter[0] >>> 0;
  let c1 = counter[1] >>> 0;
  let c2 = counter[2] >>> 0;
  let c3 = counter[3] >>> 0;
  let k0 = key[0] >>> 0;
  let k1 = key[1] >>> 0;
  for (let round = 0; round < 10; round++) {
    if (round) {
      k0 = (k0 + W0) >>> 0;
      k1 = (k1 + W1) >>> 0;
    }
    const hi0 = mulhi(M0, c0);
    const lo0 = Math.imul(M0, c0) >>> 0;
    const hi1 = mulhi(M1, c2);
    const lo1 = Math.imul(M1, c2) >>> 0;
    c0 = (hi1 ^ c1 ^ k0) >>> 0;
    c1 = lo1;
    c2 = (hi0 ^ c3 ^ k1) >>> 0;
    c3 = lo0;
  }
  out[at] = c0;
  out[at + 1] = c1;
  out[at + 2] = c2;
  out[at + 3] = c3;
  return out;
}

function checkStream(stream: number): number {
  if (!Number.isInteger(stream) || stream < 0 || stream >= TWO_32)
    throw new RangeError("stream must be in [0, 2^32)");
  return stream;
}

/**
 * `blocks` Philox outputs (4 uint32 each, flat) for counters 0, 1, ... under `seed`. `stream`
 * (counter word 2) is 0 for the initial latents and i + 1 for an ancestral sampler's step i.
 */
export function uint32Stream(seed: Seed, blocks: number, stream = 0): Uint32Array {
  const s = parseSeed(seed);
  const key = [Number(s & 0xffffffffn), Number(s >> 32n)];
  checkStream(stream);
  const out = new Uint32Array(blocks * 4);
  const counter = [0, 0, stream, 0];
  for (let b = 0; b < blocks; b++) {
    counter[0] = b % TWO_32;
    counter[1] = Math.floor(b / TWO_32);
    philox4x32_10(counter, key, out, b * 4);
  }
  return out;
}

/** `count` standard normals (float32) for `seed`: the spec's sequence, in order. */
export function standardNormal(seed: Seed, count: number, stream = 0): Float32Array {
  const bits = uint32Stream(seed, Math.ceil(count / 4), stream);
  const out = new Float32Array(count);
  for (let i = 0; i < count; i += 2) {
    // Pair i/2 is (bits[i], bits[i + 1]); the operation order matches noise.py's numpy code.
    const u1 = (bits[i] + 1.0) / TWO_32;
    const u2 = bits[i + 1] / TWO_32;
    const radius = Math.sqrt(-2.0 * Math.log(u1));
    const theta = 2.0 * Math.PI * u2;
    out[i] = radius * Math.cos(theta);
    if (i + 1 < count) out[i + 1] = radius * Math.sin(theta);
  }
  return out;
}

/**
 * Latent-shaped noise (C order, flat) for `seed`: stream 0 is the initial latents (before the
 * scheduler's init sigma), stream i + 1 the noise an ancestral sampler adds at step i.
 */
export function latents(seed: Seed, shape: readonly number[], stream = 0): Float32Array {
  return standardNormal(
    seed,
    shape.reduce((a, b) => a * b, 1),
    stream,
  );
}
