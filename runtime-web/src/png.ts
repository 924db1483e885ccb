/**
 * A PNG encoder for generated images, in the browser and in node: 8-bit RGB (RGBA where some
 * pixel is not opaque), zlib from the platform's `CompressionStream("deflate")`, and text as
 * uncompressed UTF-8 `iTXt` chunks before the image data (empty language tag and translated
 * keyword), so Pillow's `PngImagePlugin` and other readers show them.
 *
 *   const png = await encodePng(image, imageMetadata(image.parameters));
 *   const url = URL.createObjectURL(new Blob([png], { type: "image/png" }));
 */

/** An image as `Pipeline.generate` returns it (8-bit RGBA, rows top to bottom). */
export interface RgbaImage {
  width: number;
  height: number;
  rgba: Uint8Array | Uint8ClampedArray;
}

const SIGNATURE = [137, 80, 78, 71, 13, 10, 26, 10];

let table: Uint32Array | undefined;

/** CRC-32 (ISO 3309, as PNG chunks carry it) of `bytes`. */
export function crc32(bytes: Uint8Array, crc = 0): number {
  if (!table) {
    table = new Uint32Array(256);
    for (let n = 0; n < 256; n++) {
      let c = n;
      for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
      table[n] = c >>> 0;
    }
  }
  let c = ~crc >>> 0;
  for (let i = 0; i < bytes.length; i++) c = table[(c ^ bytes[i]) & 0xff] ^ (c >>> 8);
  return ~c >>> 0;
}

/** One chunk: length, type, data, CRC over type and data. */
function chunk(type: string, data: Uint8Array): Uint8Array {
  const out = new Uint8Array(12 + data.length);
  const view = new DataView(out.buffer);
  view.setUint32(0, data.length);
  for (let i = 0; i < 4; i++) out[4 + i] = type.charCodeAt(i);
  out.set(data, 8);
  view.setUint32(8 + data.length, crc32(out.subarray(4, 8 + data.length)));
  return out;
}

/** A keyword as PNG allows it: 1-79 printable Latin-1 characters, no leading, trailing or double spaces. */
function keywordBytes(keyword: string): Uint8Array {
  const ok = /^[\x20-\x7e\xa1-\xff]{1,79}$/.test(keyword) && !/^ | $| {2}/.test(keyword);
  if (!ok)
    throw new RangeError(
      `PNG text keyword ${JSON.stringify(keyword)}: use 1-79 printable Latin-1 characters without leading, trailing or double spaces`,
    );
  return Uint8Array.from(keyword, (ch) => ch.charCodeAt(0));
}

/** An `iTXt` chunk: keyword, NUL, not compressed (0, 0), empty language tag and translated keyword, UTF-8 text. */
function itxt(keyword: string, text: string): Uint8Array {
  const key = keywordBytes(keyword);
  const value = new TextEncoder().encode(text);
  const data = new Uint8Array(key.length + 5 + value.length);
  data.set(key);
  // key.length: NUL, compression flag 0, method 0, NUL (language tag), NUL (translated keyword)
  data.set(value, key.length + 5);
  return chunk("iTXt", data);
}

async function deflate(bytes: Uint8Array): Promise<Uint8Array> {
  const stream = new Blob([bytes as Uint8Array<ArrayBuffer>])
    .stream()
    .pipeThrough(new CompressionStream("deflate"));
  return new Uint8Array(await new Response(stream).arrayBuffer());
}

/**
 * The image as PNG bytes, with `text` as `iTXt` chunks in the order given (e.g.
 * `imageMetadata(image.parameters)`).
 */
export async function encodePng(
  image: RgbaImage,
  text: Iterable<[string, string]> | Record<string, string> = [],
): Promise<Uint8Array> {
  const { width, height, rgba } = image;
  if (
    !Number.isInteger(width) ||
    !Number.isInteger(height) ||
    width < 1 ||
    height < 1 ||
    rgba.length !== width * height * 4
  ) {
    throw new RangeError(
      `encodePng: ${width}x${height} needs ${width * height * 4} RGBA bytes, got ${rgba.length}`,
    );
  }
  let opaque = true;
  for (let i = 3; i < rgba.length && opaque; i += 4) opaque = rgba[i] === 255;
  const channels = opaque ? 3 : 4;
  // Scanlines, each led by filter type 0 (none).
  const stride = width * channels;
  const raw = new Uint8Array(height * (stride + 1));
  for (let y = 0; y < height; y++) {
    const row = y * (stride + 1) + 1;
    if (!opaque) {
      raw.set(rgba.subarray(y * width * 4, (y + 1) * width * 4), row);
      continue;
    }
    for (let x = 0; x < width; x++) {
      const from = (y * width + x) * 4;
      raw[row + x * 3] = rgba[from];
      raw[row + x * 3 + 1] = rgba[from + 1];
      raw[row + x * 3 + 2] = rgba[from + 2];
    }
  }
  const header = new Uint8Array(13);
  const view = new DataView(header.buffer);
  view.setUint32(0, width);
  view.setUint32(4, height);
  header.set([8, opaque ? 2 : 6, 0, 0, 0], 8); // bit depth 8, RGB or RGBA, deflate, adaptive filtering, no interlace
  const pairs =
    Symbol.iterator in text ? [...(text as Iterable<[string, string]>)] : Object.entries(text);
  const parts = [
    Uint8Array.from(SIGNATURE),
    chunk("IHDR", header),
    ...pairs.map(([key, value]) => itxt(key, value)),
    chunk("IDAT", await deflate(raw)),
    chunk("IEND", new Uint8Array(0)),
  ];
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}
