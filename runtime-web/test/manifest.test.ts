/** manifest.ts: the schema check and the rules the schema cannot say. */
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, test } from "node:test";
import { parseManifest } from "../src/manifest.js";

import { TESTDATA } from "./helpers.js";

const manifestText = readFileSync(join(TESTDATA, "bundle", "manifest.json"), "utf8");

describe("manifest rules", () => {
  const parse = (edit: (m: any) => void) => {
    const m = JSON.parse(manifestText);
    edit(m);
    return () => parseManifest(JSON.stringify(m));
  };

  test("the golden manifest parses from bytes and text", () => {
    assert.equal(parseManifest(new TextEncoder().encode(manifestText)).model.id, "sdpack/golden");
  });

  test("schema violations, unlisted references and bad paths are refused", () => {
    assert.throws(
      parse((m) => delete m.noise),
      /manifest\.json: schema violation at \(root\): must have required property 'noise'/,
    );
    assert.throws(
      parse((m) => (m.tokenizer.files = ["tokenizer/missing.json"])),
      /tokenizer\/missing\.json is referenced but not listed/,
    );
    assert.throws(
      parse((m) => (m.files[0].path = "/etc/passwd")),
      /is absolute/,
    );
    assert.throws(
      parse((m) => (m.files[0].path = "a\\b")),
      /backslash/,
    );
    assert.throws(
      parse((m) => m.files.push({ ...m.files[0] })),
      /listed twice/,
    );
    assert.throws(
      parse((m) => (m.components.unet.weights = "weights/../x.json")),
      /'\.\.'/,
    );
    assert.throws(
      parse((m) => (m.format = "other")),
      /not an sdpack bundle manifest/,
    );
  });
});
