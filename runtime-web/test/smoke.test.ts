import assert from "node:assert/strict";
import { test } from "node:test";

test("tvmjs (@mlc-ai/web-runtime) imports and exposes instantiate", async () => {
  const tvmjs = await import("@mlc-ai/web-runtime");
  assert.equal(typeof tvmjs.instantiate, "function");
  assert.equal(typeof tvmjs.detectGPUDevice, "function");
  assert.equal(typeof tvmjs.createPolyfillWASI, "function");
});
