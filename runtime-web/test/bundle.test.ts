import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";

import {
  decodeShard,
  loadBundleFiles,
  MemoryCache,
  parseManifest,
  PromptTokenizer,
  resolveBundleUrl,
  hubManifestUrl,
  unshuffle,
  zstdContentSize,
  type FileEntry,
} from "../src/index.js";
import { bundleCopy, bundleError, readJson, serve, TESTDATA, type FileServer } from "./helpers.js";

const expected = readJson("expected.json");
const sha256 = (b: Uint8Array) => createHash("sha256").update(b).digest("hex");
const manifestText = readFileSync(join(TESTDATA, "bundle", "manifest.json"), "utf8");
const goldenManifest = JSON.parse(manifestText);

describe("golden bundle over HTTP", () => {
  let server: FileServer;
  before(async () => {
    server = await serve(join(TESTDATA, "bundle"), "/org/golden/resolve/0123abc/");
  });
  after(() => server.close());

  test("every file and tensor matches expected.json", async () => {
    const events: number[] = [];
    const b = await loadBundleFiles(`${server.url}manifest.json`, { onProgress: (p) => events.push(p.loadedBytes) });
    assert.equal(sha256(new TextEncoder().encode(manifestText)), expected.manifest_sha256);
    for (const [path, sha] of Object.entries(expected.files)) {
      const entry = b.manifest.files.find((f) => f.path === path)!;
      assert.equal(entry.sha256, sha);
      assert.equal(sha256(b.files.get(path)!), entry.encoding ? entry.encoding.raw_sha256 : sha, path);
    }
    let count = 0;
    for (const [component, tensors] of Object.entries(b.tensors)) {
      assert.deepEqual([...tensors.keys()], b.manifest.components[component].params);
      for (const [name, tensor] of tensors) {
        const want = expected.tensors[`${component}/${name}`];
        assert.equal(tensor.dtype, want.dtype);
        assert.deepEqual(tensor.shape, want.shape);
        assert.equal(sha256(tensor.bytes), want.sha256, `${component}/${name}`);
        assert.equal(tensor.data.length, want.shape.reduce((a: number, d: number) => a * d, 1));
        count += 1;
      }
    }
    assert.equal(count, Object.keys(expected.tensors).length);
    const total = b.manifest.files.reduce((a, f) => a + f.size, 0);
    assert.equal(events.at(-1), total);
    const tok = PromptTokenizer.fromBundle(b.manifest, b.files);
    assert.deepEqual([...tok.encode("")].slice(0, 3), [689, 690, 690]);
  });

  test("a second load is served from the cache: only the manifest is fetched", async () => {
    const cache = new MemoryCache();
    const start = server.requests.length;
    const first = await loadBundleFiles(server.url, { cache });
    const fetchedFirst = server.requests.length - start;
    assert.equal(fetchedFirst, 1 + first.manifest.files.length);
    assert.equal(cache.entries.size, first.manifest.files.length);
    const fromCache: boolean[] = [];
    const second = await loadBundleFiles(server.url, { cache, onProgress: (p) => p.fileDone && fromCache.push(p.fromCache) });
    assert.deepEqual(server.requests.slice(start + fetchedFirst), ["/org/golden/resolve/0123abc/manifest.json"]);
    assert.ok(fromCache.length === first.manifest.files.length && fromCache.every(Boolean));
    for (const [path, bytes] of first.files) assert.deepEqual(second.files.get(path), bytes);
  });

  test("a damaged cache entry is dropped and fetched again", async () => {
    const cache = new MemoryCache();
    await loadBundleFiles(server.url, { cache });
    const entry = goldenManifest.files.find((f: FileEntry) => f.path.endsWith("params_shard_1.bin.zst"));
    cache.entries.get(entry.sha256)![10] ^= 0xff;
    const start = server.requests.length;
    await loadBundleFiles(server.url, { cache });
    assert.deepEqual(server.requests.slice(start).map((p) => p.split("/0123abc/")[1]), ["manifest.json", entry.path]);
    assert.equal(sha256(cache.entries.get(entry.sha256)!), entry.sha256);
  });

  test("a missing file is an HTTP error naming it", async () => {
    const err = await bundleError(loadBundleFiles(`${server.url.replace("0123abc", "nope")}manifest.json`));
    assert.equal(err.file, "manifest.json");
    assert.match(err.message, /HTTP 404/);
  });

  test("a pinned manifest sha256 is enforced", async () => {
    await loadBundleFiles(server.url, { manifestSha256: expected.manifest_sha256 });
    const err = await bundleError(loadBundleFiles(server.url, { manifestSha256: "0".repeat(64) }));
    assert.match(err.message, /^manifest\.json: sha256 differs/);
  });
});

describe("tampered bundles are refused, naming the file, and nothing bad is cached", () => {
  async function tampered(edit: (dir: string) => void) {
    const copy = bundleCopy();
    edit(copy.dir);
    const server = await serve(copy.dir);
    const cache = new MemoryCache();
    try {
      const err = await bundleError(loadBundleFiles(`${server.url}manifest.json`, { cache, concurrency: 1 }));
      return { err, cache, requests: [...server.requests] };
    } finally {
      await server.close();
      copy.remove();
    }
  }
  const editManifest = (dir: string, f: (m: any) => void) => {
    const m = JSON.parse(readFileSync(join(dir, "manifest.json"), "utf8"));
    f(m);
    writeFileSync(join(dir, "manifest.json"), JSON.stringify(m));
  };
  const assertCacheClean = (cache: MemoryCache) => {
    for (const [sha, bytes] of cache.entries) assert.equal(sha256(bytes), sha, "every cached entry verifies");
  };

  test("a flipped byte in a shard", async () => {
    const path = "weights/unet/params_shard_1.bin.zst";
    const { err, cache } = await tampered((dir) => {
      const b = readFileSync(join(dir, path));
      b[100] ^= 0x01;
      writeFileSync(join(dir, path), b);
    });
    assert.equal(err.file, path);
    assert.match(err.message, /^weights\/unet\/params_shard_1\.bin\.zst: sha256 mismatch/);
    const entry = goldenManifest.files.find((f: FileEntry) => f.path === path);
    assert.equal(cache.entries.has(entry.sha256), false);
    assertCacheClean(cache);
  });

  test("a flipped hex digit of a file's sha256 in the manifest", async () => {
    const { err, cache } = await tampered((dir) =>
      editManifest(dir, (m) => {
        const f = m.files.find((x: FileEntry) => x.path === "tokenizer/tokenizer.json");
        f.sha256 = (f.sha256[0] === "0" ? "1" : "0") + f.sha256.slice(1);
      }),
    );
    assert.equal(err.file, "tokenizer/tokenizer.json");
    assertCacheClean(cache);
    assert.equal(cache.entries.size < goldenManifest.files.length, true);
  });

  test("a manifest byte flipped into invalid JSON", async () => {
    const { err, cache, requests } = await tampered((dir) => {
      const b = readFileSync(join(dir, "manifest.json"));
      b[0] ^= 0x20;
      writeFileSync(join(dir, "manifest.json"), b);
    });
    assert.equal(err.file, "manifest.json");
    assert.match(err.message, /not valid JSON/);
    assert.equal(requests.length, 1);
    assert.equal(cache.entries.size, 0);
  });

  test("a path with '..'", async () => {
    const { err, cache, requests } = await tampered((dir) =>
      editManifest(dir, (m) => {
        m.files[0].path = "tokenizer/../../secret";
      }),
    );
    assert.match(err.message, /^manifest\.json: files\[0\]: path "tokenizer\/\.\.\/\.\.\/secret" has an empty, '\.' or '\.\.' segment/);
    assert.equal(requests.length, 1, "nothing but the manifest was fetched");
    assert.equal(cache.entries.size, 0);
  });

  test("an unknown format_version", async () => {
    const { err, cache, requests } = await tampered((dir) =>
      editManifest(dir, (m) => {
        m.format_version = 2;
      }),
    );
    assert.equal(err.file, "manifest.json");
    assert.match(err.message, /unknown format_version 2/);
    assert.match(err.hint!, /upgrade/);
    assert.equal(requests.length, 1);
    assert.equal(cache.entries.size, 0);
  });

  test("an unknown weight quantization scheme", async () => {
    const { err, cache, requests } = await tampered((dir) =>
      editManifest(dir, (m) => {
        m.quantization = { scheme: "q3f16", bits: 3, group_size: 32, scale_dtype: "float16", symmetric: true, tensors: {} };
      }),
    );
    assert.equal(err.file, "manifest.json");
    assert.match(err.message, /weights are quantized with scheme "q3f16", which this runtime does not read \(it reads q4f16, q8f16\)/);
    assert.match(err.hint!, /upgrade/);
    assert.equal(requests.length, 1);
    assert.equal(cache.entries.size, 0);
  });

  test("a shard whose raw_size the zstd frame contradicts (checked before decompressing)", async () => {
    const path = "weights/unet/params_shard_2.bin.zst";
    const { err } = await tampered((dir) =>
      editManifest(dir, (m) => {
        m.files.find((x: FileEntry) => x.path === path).encoding.raw_size = 1 << 30;
      }),
    );
    assert.equal(err.file, path);
    assert.match(err.message, /zstd frame declares 1152 bytes, manifest says 1073741824/);
  });
});

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
    assert.throws(parse((m) => delete m.noise), /manifest\.json: schema violation at \(root\): must have required property 'noise'/);
    assert.throws(parse((m) => (m.tokenizer.files = ["tokenizer/missing.json"])), /tokenizer\/missing\.json is referenced but not listed/);
    assert.throws(parse((m) => (m.files[0].path = "/etc/passwd")), /is absolute/);
    assert.throws(parse((m) => (m.files[0].path = "a\\b")), /backslash/);
    assert.throws(parse((m) => m.files.push({ ...m.files[0] })), /listed twice/);
    assert.throws(parse((m) => (m.components.unet.weights = "weights/../x.json")), /'\.\.'/);
    assert.throws(parse((m) => (m.format = "other")), /not an sdpack bundle manifest/);
  });
});

describe("encoding", () => {
  const entryOf = (path: string): FileEntry => goldenManifest.files.find((f: FileEntry) => f.path === path);
  const stored = (path: string) => new Uint8Array(readFileSync(join(TESTDATA, "bundle", path)));

  test("decodeShard decodes every golden shard to its raw_sha256", async () => {
    for (const entry of goldenManifest.files.filter((f: FileEntry) => f.encoding)) {
      const raw = await decodeShard(stored(entry.path), entry);
      assert.equal(sha256(raw), entry.encoding!.raw_sha256);
    }
  });

  test("the zstd header's content size is read before decompressing", () => {
    const path = "weights/unet/params_shard_1.bin.zst";
    assert.equal(zstdContentSize(stored(path), path), entryOf(path).encoding!.raw_size);
    assert.throws(() => zstdContentSize(new Uint8Array(8), "x.zst"), /x\.zst: not a zstd frame/);
  });

  test("unshuffle inverts the byte-plane shuffle, trailing bytes kept", () => {
    // elements [1,2,3] [4,5,6] shuffled with k=3 → planes 1 4 | 2 5 | 3 6, then a trailing 7
    assert.deepEqual([...unshuffle(Uint8Array.from([1, 4, 2, 5, 3, 6, 7]), 3)], [1, 2, 3, 4, 5, 6, 7]);
    assert.deepEqual([...unshuffle(Uint8Array.from([9]), 2)], [9]);
  });

  test("decodeShard names the file on a size mismatch", async () => {
    const path = "weights/unet/params_shard_3.bin.zst";
    await assert.rejects(decodeShard(stored(path).subarray(1), entryOf(path)), /params_shard_3\.bin\.zst: size 24 != 25/);
  });
});

test("bundle URLs: manifest, Hub resolve, folder", () => {
  assert.deepEqual(resolveBundleUrl("https://h.test/org/m/resolve/abc/manifest.json"), {
    manifestUrl: "https://h.test/org/m/resolve/abc/manifest.json",
    baseUrl: "https://h.test/org/m/resolve/abc/",
  });
  assert.equal(resolveBundleUrl("https://h.test/b/v1").manifestUrl, "https://h.test/b/v1/manifest.json");
  assert.equal(resolveBundleUrl("https://h.test/b/v1/").baseUrl, "https://h.test/b/v1/");
  assert.equal(hubManifestUrl("org/m", "refs/pr/1"), "https://huggingface.co/org/m/resolve/refs%2Fpr%2F1/manifest.json");
});
