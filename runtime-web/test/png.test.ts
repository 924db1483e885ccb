/** encodePng and the image metadata: chunk layout, CRCs, pixels (inflated by node's zlib), and the spec's text. */
import assert from "node:assert/strict";
import { inflateSync } from "node:zlib";
import { describe, test } from "node:test";

import {
  type GenerationParameters,
  imageMetadata,
  numberText,
  parametersText,
} from "../src/imageMetadata.js";
import { crc32, encodePng } from "../src/png.js";

interface Chunk {
  type: string;
  data: Buffer;
}

/** The chunks of a PNG, each CRC checked (an independent reading of the format). */
function chunks(png: Uint8Array): Chunk[] {
  const b = Buffer.from(png);
  assert.deepEqual([...b.subarray(0, 8)], [137, 80, 78, 71, 13, 10, 26, 10]);
  const out: Chunk[] = [];
  for (let at = 8; at < b.length; ) {
    const n = b.readUInt32BE(at);
    const type = b.subarray(at + 4, at + 8).toString("latin1");
    const data = b.subarray(at + 8, at + 8 + n);
    assert.equal(b.readUInt32BE(at + 8 + n), crc32(b.subarray(at + 4, at + 8 + n)), `${type} CRC`);
    out.push({ type, data });
    at += 12 + n;
  }
  return out;
}

const PARAMS: GenerationParameters = {
  prompt: "a café at dusk, 東京",
  negativePrompt: "blurry",
  seed: "18446744073709551615",
  steps: 20,
  guidance: 7.5,
  scheduler: "euler-a",
  model: "sdpack/tiny-sd@1.0.0",
  commit: "a".repeat(40),
  width: 3,
  height: 2,
  variant: "webgpu-float16",
  software: "sdpack runtime-web 0.1.0",
};

describe("encodePng", () => {
  test("CRC-32 is ISO 3309's", () => {
    assert.equal(crc32(new TextEncoder().encode("123456789")), 0xcbf43926);
    assert.equal(crc32(new TextEncoder().encode("IEND")), 0xae426082);
  });

  test("IHDR, iTXt chunks in order before IDAT, RGB pixels that inflate back, IEND", async () => {
    const rgba = new Uint8Array(3 * 2 * 4).map((_, i) => (i % 4 === 3 ? 255 : i * 7));
    const png = await encodePng({ width: 3, height: 2, rgba }, imageMetadata(PARAMS));
    const all = chunks(png);
    assert.deepEqual(
      all.map((c) => c.type),
      ["IHDR", ...Array(13).fill("iTXt"), "IDAT", "IEND"],
    );
    const ihdr = all[0].data;
    assert.deepEqual(
      [ihdr.readUInt32BE(0), ihdr.readUInt32BE(4), ...ihdr.subarray(8)],
      [3, 2, 8, 2, 0, 0, 0],
    );
    const text = all
      .filter((c) => c.type === "iTXt")
      .map((c) => {
        const nul = c.data.indexOf(0);
        assert.deepEqual([...c.data.subarray(nul, nul + 5)], [0, 0, 0, 0, 0]); // uncompressed, empty language and translated keyword
        return [
          c.data.subarray(0, nul).toString("latin1"),
          c.data.subarray(nul + 5).toString("utf8"),
        ];
      });
    assert.deepEqual(text, imageMetadata(PARAMS));
    const raw = inflateSync(all.find((c) => c.type === "IDAT")!.data);
    const rows = [0, 1].map((y) => raw.subarray(y * 10, (y + 1) * 10));
    for (const [y, row] of rows.entries()) {
      assert.equal(row[0], 0); // filter: none
      for (let x = 0; x < 3; x++)
        assert.deepEqual(
          [...row.subarray(1 + x * 3, 4 + x * 3)],
          [...rgba.subarray((y * 3 + x) * 4, (y * 3 + x) * 4 + 3)],
        );
    }
  });

  test("RGBA where a pixel is not opaque; bad sizes and keywords are refused", async () => {
    const rgba = new Uint8Array([1, 2, 3, 4]);
    const all = chunks(await encodePng({ width: 1, height: 1, rgba }, { Title: "x" }));
    assert.equal(all[0].data[9], 6);
    assert.deepEqual([...inflateSync(all.find((c) => c.type === "IDAT")!.data)], [0, 1, 2, 3, 4]);
    await assert.rejects(encodePng({ width: 2, height: 1, rgba }), /2x1 needs 8 RGBA bytes, got 4/);
    await assert.rejects(
      encodePng({ width: 1, height: 1, rgba }, [[" lead", "x"]]),
      /PNG text keyword/,
    );
    await assert.rejects(
      encodePng({ width: 1, height: 1, rgba }, [["k".repeat(80), "x"]]),
      /PNG text keyword/,
    );
  });
});

describe("image metadata", () => {
  test("guidance as ECMAScript's Number#toString writes it, as the spec says", () => {
    const cases: [number, string][] = [
      [7.5, "7.5"],
      [7, "7"],
      [0.1, "0.1"],
      [1e-7, "1e-7"],
      [1e21, "1e+21"],
      [123456789.25, "123456789.25"],
    ];
    for (const [x, s] of cases) assert.equal(numberText(x), s, String(x));
    assert.equal(
      imageMetadata({ ...PARAMS, guidance: 7 }).find(([k]) => k === "guidance")![1],
      "7",
    );
    assert.match(parametersText({ ...PARAMS, guidance: 7 }), /CFG scale: 7, /);
  });

  test("keys in the spec's order, commit only when known, and the A1111 parameters line", () => {
    assert.deepEqual(
      imageMetadata(PARAMS).map(([k]) => k),
      [
        "prompt",
        "negative_prompt",
        "seed",
        "steps",
        "guidance",
        "scheduler",
        "model",
        "commit",
        "width",
        "height",
        "variant",
        "Software",
        "parameters",
      ],
    );
    const { commit: _, ...noCommit } = PARAMS;
    assert.ok(!imageMetadata(noCommit).some(([k]) => k === "commit"));
    assert.equal(
      parametersText(PARAMS),
      "a café at dusk, 東京\nNegative prompt: blurry\nSteps: 20, Sampler: euler-a, CFG scale: 7.5, Seed: 18446744073709551615, Size: 3x2, Model: sdpack/tiny-sd@1.0.0",
    );
  });
});
