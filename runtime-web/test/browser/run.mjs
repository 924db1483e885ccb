// Drive the demo page and an app built from the npm package in headless Chromium (WebGPU on
// SwiftShader) against a Hub-shaped server. Both pages come from one origin, so they share the
// browser profile's content cache.
// Usage: node test/browser/run.mjs CONFIG.json  — prints one JSON result line (the last line).
// tests/web/test_browser.py starts the servers, builds the app, writes CONFIG and checks the result.
import { readFileSync } from "node:fs";

import { chromium } from "playwright-core";

const config = JSON.parse(readFileSync(process.argv[2], "utf8"));
const FLAGS = [
  "--headless=new",
  "--no-sandbox",
  "--enable-unsafe-webgpu",
  "--enable-features=Vulkan",
  "--use-angle=swiftshader",
  "--use-webgpu-adapter=swiftshader",
  "--enable-unsafe-swiftshader",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
  "--no-first-run",
  "--disable-quic",
  "--disable-dev-shm-usage",
];
const hub = config.hubUrl.replace(/\/$/, "");
const repoUrl = (rev) => `${hub}/${config.repo}/resolve/${rev}/manifest.json`;
const result = { console: [] };
const t0 = Date.now();
const mark = (name) => (result[`t_${name}_ms`] = Date.now() - t0);

/** Requests the hub server saw so far (it logs them; /__log is the test server's own route). */
async function hubLog() {
  return (await (await fetch(`${hub}/__log`)).json()).requests;
}

async function openDemo(context, modelUrl) {
  const page = await context.newPage();
  page.on("console", (m) => result.console.push(`${m.type()}: ${m.text()}`.slice(0, 300)));
  page.on("pageerror", (e) => result.console.push(`pageerror: ${e.message}`.slice(0, 300)));
  await page.goto(`${config.demoUrl}?model=${encodeURIComponent(modelUrl)}`);
  await page.waitForFunction(() => globalThis.sdpackDemo !== undefined);
  return page;
}

/** Press Load and wait until the model is ready or the load failed; returns what the page shows. */
async function pressLoad(page) {
  await page.click("#load");
  await page.waitForFunction(
    () =>
      !globalThis.sdpackDemo.busy && (globalThis.sdpackDemo.model || globalThis.sdpackDemo.error),
    null,
    { timeout: config.timeoutMs },
  );
  return page.evaluate(() => {
    const s = globalThis.sdpackDemo;
    return s.model
      ? {
          ok: true,
          version: s.model.manifest.model.version,
          variant: s.model.variant,
          gpu: s.model.gpu.description,
          loadMs: s.loadMs,
          decodedBy: s.decodedBy,
          stats: s.model.bundle.stats,
          progress: s.progress,
        }
      : { ok: false, error: s.error, decodedBy: s.decodedBy };
  });
}

async function generate(page, req) {
  await page.fill("#prompt", req.prompt);
  await page.fill("#negative", req.negativePrompt);
  await page.fill("#seed", String(req.seed));
  await page.fill("#steps", String(req.steps));
  await page.fill("#guidance", String(req.guidance));
  await page.selectOption("#scheduler", req.scheduler);
  await page.click("#generate");
  await page.waitForFunction(
    () =>
      !globalThis.sdpackDemo.busy && (globalThis.sdpackDemo.last || globalThis.sdpackDemo.error),
    null,
    { timeout: config.timeoutMs },
  );
  return page.evaluate(() => {
    const s = globalThis.sdpackDemo;
    if (!s.last) return { ok: false, error: s.error };
    const f = s.last.float;
    const bytes = new Uint8Array(f.buffer, f.byteOffset, f.byteLength);
    let bin = "";
    for (let i = 0; i < bytes.length; i += 0x8000)
      bin += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
    return {
      ok: true,
      width: s.last.width,
      height: s.last.height,
      float_b64: btoa(bin),
      timings: s.last.timings,
    };
  });
}

/** Press the newest gallery entry's save button: the downloaded PNG (base64), its name, and the entry's text. */
async function saveFromGallery(page) {
  const [download] = await Promise.all([
    page.waitForEvent("download"),
    page.click("#gallery figure:first-child .save"),
  ]);
  const png = readFileSync(await download.path()).toString("base64");
  const shown = await page.evaluate(() => ({
    images: globalThis.sdpackDemo.gallery.length,
    text: document.querySelector("#gallery figure dl").textContent,
  }));
  return { png_b64: png, name: download.suggestedFilename(), ...shown };
}

async function openApp(context) {
  const page = await context.newPage();
  page.on("console", (m) => result.console.push(`app ${m.type()}: ${m.text()}`.slice(0, 300)));
  page.on("pageerror", (e) => result.console.push(`app pageerror: ${e.message}`.slice(0, 300)));
  await page.goto(config.appUrl);
  await page.waitForFunction(() => globalThis.app !== undefined);
  return page;
}

const browser = await chromium.launch({
  executablePath: config.chromium,
  args: FLAGS,
  headless: true,
});
try {
  // 1. A fresh profile: load v1.0.0 by its pinned commit URL in the demo, generate, save the PNG from the gallery.
  const context = await browser.newContext();
  let page = await openDemo(context, repoUrl(config.commit));
  mark("page");
  result.load = await pressLoad(page);
  mark("load");
  result.firstLoadRequests = (await hubLog()).length;
  if (result.load.ok) {
    result.image = await generate(page, config.request);
    mark("generate");
    if (result.image.ok) result.saved = await saveFromGallery(page);
  }
  await page.close();

  // 2. Same profile, the app built from the npm package: ORG/NAME@VERSION resolved on the hub and
  //    loaded in a model worker with the default cache (every file from step 1's cache), generated.
  const spec = `${config.repo}@${config.version}`;
  const before = (await hubLog()).length;
  const app = await openApp(context);
  result.app = await app.evaluate(
    (args) =>
      globalThis.app.run(args).catch((e) => ({ ok: false, error: `${e.name}: ${e.message}` })),
    { spec, endpoint: hub, request: config.request },
  );
  result.appRequests = (await hubLog()).slice(before);
  mark("app");

  // 3. Versions and lock records (manifest-level; files come from the cache).
  page = await openDemo(context, repoUrl(`v${config.version}`));
  result.versions = await page.evaluate(
    async ({ tag, main, lock }) => {
      const { fetchManifest, loadBundleFiles, BrowserCache } = globalThis.sdpack;
      const version = async (url) => (await fetchManifest(url)).manifest.model.version;
      const out = { tag: await version(tag), main: await version(main) };
      const b = await loadBundleFiles(globalThis.sdpack.lockManifest(lock).url, {
        manifestSha256: lock.manifest_sha256,
        cache: new BrowserCache(),
      });
      out.lock = b.manifest.model.version;
      try {
        await globalThis.sdpack.loadModel(
          { ...lock, manifest_sha256: "0".repeat(64) },
          { cache: new BrowserCache() },
        );
        out.badLock = "accepted";
      } catch (e) {
        out.badLock = `${e.name}: ${e.message}`;
      }
      try {
        await globalThis.sdpack.loadModel(`${lock.repo}@latest`, { endpoint: lock.endpoint });
        out.badSpec = "accepted";
      } catch (e) {
        out.badSpec = `${e.name}: ${e.message}`;
      }
      return out;
    },
    { tag: repoUrl(`v${config.version}`), main: repoUrl("main"), lock: config.lock },
  );
  mark("versions");
  await page.close();

  // 4. The app removes the model from the cache: nothing of it is left.
  result.forget = await app.evaluate((args) => globalThis.app.forget(args), {
    spec,
    endpoint: hub,
  });
  result.forget.left = await app.evaluate(
    async () => (await (await caches.open("sdpack-content-v1")).keys()).length,
  );
  await app.close();
  await context.close();

  // 4b. A fresh profile, the quantized version (v1.1.0, q4f16) by its tag: load and generate.
  if (config.quantizedVersion) {
    const quantized = await browser.newContext();
    page = await openDemo(quantized, repoUrl(`v${config.quantizedVersion}`));
    result.quantized = { load: await pressLoad(page) };
    if (result.quantized.load.ok) result.quantized.image = await generate(page, config.request);
    mark("quantized");
    await quantized.close();
  }

  // 5. A fresh profile and one tampered shard: refused, named, not cached; a clean retry fetches it again.
  const tampered = await browser.newContext();
  const target = `${hub}/${config.repo}/resolve/${config.commit}/${config.tamperPath}`;
  await tampered.route(target, async (route) => {
    const response = await route.fetch();
    const body = Buffer.from(await response.body());
    body[body.length >> 1] ^= 0x01;
    await route.fulfill({ response, body });
  });
  page = await openDemo(tampered, repoUrl(config.commit));
  result.tampered = await pressLoad(page);
  result.tamperedCache = await page.evaluate(async (path) => {
    const { fetchManifest, BrowserCache } = globalThis.sdpack;
    const { manifest } = await fetchManifest(
      location.search ? new URLSearchParams(location.search).get("model") : "",
    );
    const entry = manifest.files.find((f) => f.path === path);
    return { cached: (await new BrowserCache().get(entry.sha256)) !== undefined };
  }, config.tamperPath);
  await tampered.unroute(target);
  const beforeRetry = (await hubLog()).length;
  result.retry = await page.evaluate(async () => {
    const { loadBundleFiles, BrowserCache } = globalThis.sdpack;
    const b = await loadBundleFiles(new URLSearchParams(location.search).get("model"), {
      cache: new BrowserCache(),
    });
    return { ok: true, files: b.files.size };
  });
  result.retryRequests = (await hubLog()).slice(beforeRetry);
  mark("tamper");
  await tampered.close();

  // 6. verify: "full" in the decode workers: a manifest whose raw_sha256 of one shard is wrong (its
  //    stored bytes and sha256 are right) loads with the default checks and is refused with "full".
  const rawCheck = await browser.newContext();
  const manifestUrl = repoUrl(config.commit);
  await rawCheck.route(manifestUrl, async (route) => {
    const response = await route.fetch();
    const m = JSON.parse(await response.text());
    const f = m.files.find((x) => x.path === config.tamperPath);
    f.encoding.raw_sha256 =
      (f.encoding.raw_sha256[0] === "0" ? "1" : "0") + f.encoding.raw_sha256.slice(1);
    await route.fulfill({ response, body: JSON.stringify(m) });
  });
  page = await openDemo(rawCheck, manifestUrl);
  result.rawCheck = await page.evaluate(
    async ({ url, path }) => {
      const { loadBundleFiles } = globalThis.sdpack;
      const weightsOnly = (f) => f.path.startsWith("weights/");
      const out = {};
      const stored = await loadBundleFiles(url, { include: weightsOnly });
      out.stored = { ok: true, stats: stored.stats };
      try {
        await loadBundleFiles(url, {
          include: weightsOnly,
          verify: "full",
          onProgress: (p) =>
            p.fileDone && (out.fullDecodedBy = [...(out.fullDecodedBy ?? []), p.decodedBy]),
        });
        out.full = { ok: true };
      } catch (e) {
        out.full = { ok: false, name: e.name, message: e.message, file: e.file };
      }
      const component = `${path.split("/").slice(0, 2).join("/")}/`; // the other components' weights all check out
      const clean = await loadBundleFiles(url, {
        include: (f) => weightsOnly(f) && !f.path.startsWith(component),
        verify: "full",
      });
      out.cleanFull = { ok: true, stats: clean.stats };
      return out;
    },
    { url: manifestUrl, path: config.tamperPath },
  );
  mark("raw_check");
  await rawCheck.close();
} catch (err) {
  result.fatal = String(err?.stack ? err.stack : err);
} finally {
  await browser.close();
}
result.t_total_ms = Date.now() - t0;
console.log(JSON.stringify(result));
