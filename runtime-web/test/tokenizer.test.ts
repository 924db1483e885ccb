import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";

import { PromptTokenizer } from "../src/tokenizer.js";
import { readJson, TESTDATA } from "./helpers.js";

const vectors = readJson("tokenizer_cases.json");
const tokenizer = new PromptTokenizer(readFileSync(join(TESTDATA, vectors.tokenizer)), {
  maxLength: vectors.max_length,
  padTokenId: vectors.pad_token_id,
});

test("raw ids equal Python tokenizers' encode().ids", () => {
  for (const c of vectors.cases)
    assert.deepEqual(tokenizer.encodeIds(c.text), c.ids, JSON.stringify(c.text));
});

test("77 padded/truncated int32 ids equal generate.py's token_ids", () => {
  for (const c of vectors.cases) {
    const ids = tokenizer.encode(c.text);
    assert.ok(ids instanceof Int32Array && ids.length === 77);
    assert.deepEqual([...ids], c.input_ids, JSON.stringify(c.text));
  }
  assert.ok(
    vectors.cases.some((c: { ids: number[] }) => c.ids.length > 77),
    "vectors include a truncated prompt",
  );
});
