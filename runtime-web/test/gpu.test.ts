import assert from "node:assert/strict";
import test from "node:test";

import { UnsupportedError } from "../src/errors.js";
import { detectDevice } from "../src/gpu.js";

const device = { device: {}, adapterInfo: { vendor: "nvidia" } };
const noSleep = async () => {};

test("detectDevice asks again when the first request finds no adapter", async () => {
  const asked: (string | undefined)[] = [];
  const lib = {
    detectGPUDevice: async (p?: string) => {
      asked.push(p);
      if (asked.length === 1) throw new Error("Unable to find a compatible GPU");
      return device;
    },
  };
  assert.equal(await detectDevice(lib as never, noSleep), device);
  assert.deepEqual(asked, ["high-performance", "high-performance"]);
});

test("detectDevice falls back to the low-power preference, then gives up with the last reason", async () => {
  const asked: (string | undefined)[] = [];
  const lib = {
    detectGPUDevice: async (p?: string) => {
      asked.push(p);
      return p === "low-power" ? device : undefined;
    },
  };
  assert.equal(await detectDevice(lib as never, noSleep), device);
  assert.deepEqual(asked, ["high-performance", "high-performance", "low-power"]);

  const never = {
    detectGPUDevice: async () => {
      throw new Error("no GPU here");
    },
  };
  await assert.rejects(
    detectDevice(never as never, noSleep),
    (e: unknown) =>
      e instanceof UnsupportedError && /after 3 requests: no GPU here/.test((e as Error).message),
  );
});
