import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { test } from "node:test";
import { fileURLToPath } from "node:url";

import {
  COMMIT_PATTERN,
  COMPONENTS,
  DTYPE_SIZES,
  FORMAT,
  FORMAT_VERSION,
  LOCK_VERSION,
  MANIFEST_NAME,
  REPO_ID_PATTERN,
  SCHEDULER_NAMES,
  SEMVER_PATTERN,
  TEXT_MAX_LENGTH,
} from "../src/formats.js";
import { lock, manifest } from "../src/generated/validators.js";
import { readJson } from "./helpers.js";

const repoFile = (path: string) => fileURLToPath(new URL(`../../../${path}`, import.meta.url));
const repoJson = (path: string) => JSON.parse(readFileSync(repoFile(path), "utf8"));

test("the format constants are formats/constants.json's and the schemas' values", () => {
  const constants = repoJson("formats/constants.json");
  const schema = repoJson("formats/manifest.schema.json");
  const lockSchema = repoJson("manifests/lock.schema.json");
  assert.deepEqual([...COMPONENTS], constants.components.names);
  assert.deepEqual({ ...DTYPE_SIZES }, constants.tensor_dtypes.sizes);
  assert.equal(TEXT_MAX_LENGTH, constants.text_max_length.value);
  assert.equal(MANIFEST_NAME, constants.manifest_name);
  assert.equal(FORMAT, schema.properties.format.const);
  assert.equal(FORMAT_VERSION, schema.properties.format_version.const);
  assert.equal(LOCK_VERSION, lockSchema.properties.lock_version.const);
  assert.deepEqual([...SCHEDULER_NAMES], schema.properties.scheduler.properties.default.enum);
  assert.equal(REPO_ID_PATTERN, schema.$defs.repo_id.pattern);
  assert.equal(REPO_ID_PATTERN, lockSchema.properties.repo.pattern);
  assert.equal(SEMVER_PATTERN, lockSchema.properties.version.pattern);
  assert.equal(COMMIT_PATTERN, lockSchema.properties.commit.pattern);
  // The golden bundle says the same.
  const golden = readJson("bundle/manifest.json");
  assert.equal(golden.tokenizer.max_length, TEXT_MAX_LENGTH);
  for (const name of Object.keys(golden.components))
    assert.ok((COMPONENTS as readonly string[]).includes(name), name);
});

test("the generated validators are plain code: no eval or new Function (strict CSP pages), no imports", () => {
  const source = readFileSync(
    fileURLToPath(new URL("../src/generated/validators.js", import.meta.url)),
    "utf8",
  );
  assert.doesNotMatch(source, /new Function|\beval\s*\(|Function\s*\(/);
  assert.doesNotMatch(source, /\brequire\s*\(|^\s*import\b/m);
  const generated = readFileSync(repoFile("runtime-web/src/generated/validators.ts"), "utf8");
  assert.doesNotMatch(generated, /new Function|\beval\s*\(/);
});

test("the generated validators check what the schemas say", () => {
  const golden = readJson("bundle/manifest.json");
  assert.equal(manifest(golden), true);
  assert.equal(manifest({ ...golden, dtype: "bfloat16" }), false);
  assert.equal(
    (manifest as unknown as { errors: { instancePath: string }[] }).errors[0].instancePath,
    "/dtype",
  );
  const record = {
    lock_version: 1,
    repo: "org/name",
    version: "1.0.0",
    commit: "a".repeat(40),
    manifest_sha256: "b".repeat(64),
    endpoint: "https://huggingface.co",
  };
  assert.equal(lock(record), true);
  assert.equal(lock({ ...record, repo: "org/na--me" }), false); // the schema's `not` rule
  assert.equal(lock({ ...record, extra: 1 }), false);
});

test("evaluating the validators needs no eval: they load under a CSP-like ban on new Function", async () => {
  const original = globalThis.Function;
  const banned = new Proxy(original, {
    construct() {
      throw new EvalError("Function constructor is disallowed");
    },
    apply() {
      throw new EvalError("Function constructor is disallowed");
    },
  });
  globalThis.Function = banned;
  try {
    const fresh = await import(`../src/generated/validators.js?csp=${Date.now()}`);
    assert.equal(fresh.manifest(readJson("bundle/manifest.json")), true);
  } finally {
    globalThis.Function = original;
  }
});
