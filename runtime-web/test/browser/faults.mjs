// Loader faults in headless Chromium: a fault-injecting server in front of a bundle,
// runtime-web's loadBundleFiles in the page with the Cache API (BrowserCache), weights-only.
// Usage: node test/browser/faults.mjs CONFIG.json — prints one JSON result line (the last line).
// tests/web/test_faults.py builds the bundle, starts the server (routes /page/, /bundle/,
// POST /__faults, GET /__log), writes CONFIG and checks the result.
//
// For each scenario, in a fresh browser context: set the server's faults, load the bundle once
// (the faulty load), list what the Cache API holds, then clear the faults and load again (the
// clean load), hashing every returned file in the page. Files are checked and decoded in the
// loader's decode worker (built next to the page), and each load counts where (progress events). Quota: Chromium's own quota, made small
// with the DevTools protocol (Storage.overrideQuotaForOrigin), so `put` fails for real.
//
// Then each cache backend (Cache API, OPFS, IndexedDB), in a fresh context: a load fills it, one
// entry is damaged in place, the next load refetches exactly that file and stores it whole again,
// and deleteModelFromCache empties it.
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";

import { build } from "esbuild";
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
const server = config.server.replace(/\/$/, "");
const result = { scenarios: {}, console: [] };
const t0 = Date.now();

// The page: the product's loader and cache, bundled straight from runtime-web/src.
const PAGE_SOURCE = `
import { loadBundleFiles } from "../../src/stream.js";
import { BrowserCache, openCache } from "../../src/cache.js";
import { deleteModelFromCache } from "../../src/modelCache.js";

const CACHE_NAME = "sdpack-content-v1";
const hex = async (bytes) => [...new Uint8Array(await crypto.subtle.digest("SHA-256", bytes))].map((b) => b.toString(16).padStart(2, "0")).join("");

/** The sha256 keys the content cache holds (BrowserCache stores https://sdpack.invalid/sha256/<sha256>). */
async function cachedKeys() {
  if (!(await caches.has(CACHE_NAME))) return [];
  return (await (await caches.open(CACHE_NAME)).keys()).map((r) => r.url.split("/").pop()).sort();
}

/** One weights-only load; abortOn: abort once the first bytes of that file arrived. */
async function load({ url, retry, abortOn, concurrency }) {
  const controller = new AbortController();
  const progressWarnings = [];
  const decodedBy = { worker: 0, thread: 0 };
  const t = performance.now();
  const out = {};
  try {
    const b = await loadBundleFiles(url, {
      cache: new BrowserCache(),
      retry,
      concurrency,
      signal: controller.signal,
      include: (entry) => !entry.path.startsWith("libs/"),
      onProgress: (p) => {
        if (p.warning) progressWarnings.push(p.warning);
        if (p.fileDone) decodedBy[p.decodedBy] += 1;
        if (abortOn && p.file === abortOn && !p.fileDone && !controller.signal.aborted) controller.abort();
      },
    });
    const files = {};
    for (const [path, bytes] of b.files) files[path] = await hex(bytes);
    Object.assign(out, { ok: true, files, warnings: b.warnings.map((w) => ({ file: w.file, message: w.message, cause: w.cause?.name })), progressWarnings });
  } catch (e) {
    Object.assign(out, { ok: false, error: { name: e.name, message: e.message, file: e.file, hint: e.hint, isBundleError: e.constructor?.name } });
  }
  out.decodedBy = decodedBy;
  out.ms = Math.round(performance.now() - t);
  out.cached = await cachedKeys();
  return out;
}

/** One backend: fill it, damage one entry in place, load again (that file is refetched), delete the model. */
async function backend({ url, name, damage }) {
  const cache = openCache(name);
  const opts = { cache, include: (entry) => !entry.path.startsWith("libs/") };
  const first = await loadBundleFiles(url, opts);
  const entries = first.manifest.files.filter(opts.include);
  const has = async () => (await Promise.all(entries.map((e) => cache.has(e.sha256)))).filter(Boolean).length;
  const out = { name, entries: entries.length, cachedAfterFirst: await has(), fromCacheFirst: first.stats.fromCache };
  const entry = entries.find((e) => e.path === damage);
  const bytes = await cache.get(entry.sha256);
  bytes[bytes.length >> 1] ^= 0xff;
  await cache.put(entry.sha256, bytes);
  const again = await loadBundleFiles(url, opts);
  const files = {};
  for (const [path, content] of again.files) files[path] = await hex(content);
  out.second = { fromCache: again.stats.fromCache, files };
  out.repairedSha = await hex(await cache.get(entry.sha256));
  out.deleted = await deleteModelFromCache(url, { cache });
  out.cachedAfterDelete = await has();
  return out;
}

globalThis.faults = { load, cachedKeys, backend };
globalThis.faultsReady = true;
`;

async function buildPage() {
  const here = fileURLToPath(new URL(".", import.meta.url));
  const out = await build({
    stdin: { contents: PAGE_SOURCE, resolveDir: here, loader: "js", sourcefile: "faults-page.js" },
    bundle: true,
    format: "esm",
    platform: "browser",
    target: "es2022",
    write: false,
    logLevel: "warning",
    external: ["fs", "path", "perf_hooks", "ws", "crypto"], // tvmjs's node branches (modelCache reaches gpu.ts)
  });
  // The decode worker, where the loader looks for it: next to the page's script.
  const worker = await build({
    entryPoints: [join(here, "../../src/decodeWorker.ts")],
    bundle: true,
    format: "esm",
    platform: "browser",
    target: "es2022",
    write: false,
    logLevel: "warning",
  });
  mkdirSync(config.pageDir, { recursive: true });
  writeFileSync(join(config.pageDir, "faults.js"), out.outputFiles[0].text);
  writeFileSync(join(config.pageDir, "decodeWorker.js"), worker.outputFiles[0].text);
  writeFileSync(
    join(config.pageDir, "index.html"),
    '<!doctype html><meta charset="utf-8"><title>sdpack faults</title><script type="module" src="faults.js"></script>\n',
  );
}

async function setFaults(faults) {
  const r = await fetch(`${server}/__faults`, {
    method: "POST",
    body: JSON.stringify(faults),
    headers: { "content-type": "application/json" },
  });
  if (!r.ok) throw new Error(`setting faults: HTTP ${r.status}`);
}

const serverLog = async () => (await (await fetch(`${server}/__log`)).json()).requests;

const target = config.target;
const url = `${server}/bundle/manifest.json`;
const FAST = { delayMs: 50 };
// name → the server's faults, the loader's retry options, what the page does.
const SCENARIOS = {
  truncated: { faults: { [target]: { kind: "short" } }, retry: FAST },
  connection_cut_once: { faults: { [target]: { kind: "cut", times: 1 } }, retry: FAST },
  connection_cut_always: { faults: { [target]: { kind: "cut" } }, retry: FAST },
  not_found: { faults: { [target]: { kind: "404" } }, retry: FAST },
  unavailable_twice: { faults: { [target]: { kind: "503", times: 2 } } }, // the default backoff: 200, 400 ms
  wrong_content: { faults: { [target]: { kind: "wrong", other: config.other } }, retry: FAST },
  // One file at a time, so the stalled file is the only one in flight when the abort lands.
  aborted: {
    faults: { [target]: { kind: "stall" } },
    retry: FAST,
    abortOn: target,
    concurrency: 1,
  },
  quota: { faults: {}, quotaBytes: config.quotaBytes },
};

/** A fresh page of `context` on the faults page, its console (and errors) logged under `name`. */
async function openFaultsPage(context, name) {
  const page = await context.newPage();
  page.setDefaultTimeout(config.timeoutMs);
  page.on("console", (m) => result.console.push(`${name} ${m.type()}: ${m.text()}`.slice(0, 300)));
  page.on("pageerror", (e) => result.console.push(`${name} pageerror: ${e.message}`.slice(0, 300)));
  await page.goto(`${server}/page/index.html`);
  await page.waitForFunction(() => globalThis.faultsReady === true);
  return page;
}

const browser = await chromium.launch({
  executablePath: config.chromium,
  args: FLAGS,
  headless: true,
});
try {
  await buildPage();
  result.t_build_ms = Date.now() - t0;
  for (const [name, s] of Object.entries(SCENARIOS)) {
    if (config.only && !config.only.includes(name)) continue;
    const r = (result.scenarios[name] = {});
    const start = Date.now();
    const context = await browser.newContext();
    try {
      const page = await openFaultsPage(context, name);
      let cdp;
      if (s.quotaBytes) {
        cdp = await context.newCDPSession(page);
        await cdp.send("Storage.overrideQuotaForOrigin", {
          origin: server,
          quotaSize: s.quotaBytes,
        });
        r.quota = await page.evaluate(() => navigator.storage.estimate());
      }
      await setFaults(s.faults);
      r.faulty = await page.evaluate((args) => globalThis.faults.load(args), {
        url,
        retry: s.retry,
        abortOn: s.abortOn,
        concurrency: s.concurrency,
      });
      r.faultyRequests = await serverLog();
      if (cdp) await cdp.send("Storage.overrideQuotaForOrigin", { origin: server }); // back to the normal quota
      await setFaults({});
      r.clean = await page.evaluate((args) => globalThis.faults.load(args), { url });
      r.cleanRequests = await serverLog();
    } catch (err) {
      r.fatal = String(err?.stack ? err.stack : err);
    } finally {
      await context.close();
      r.ms = Date.now() - start;
    }
  }
  await setFaults({});
  result.backends = {};
  for (const name of config.only ? [] : ["cache-api", "opfs", "indexeddb"]) {
    const start = Date.now();
    const context = await browser.newContext();
    try {
      const page = await openFaultsPage(context, name);
      const before = (await serverLog()).length;
      result.backends[name] = await page.evaluate((args) => globalThis.faults.backend(args), {
        url,
        name,
        damage: target,
      });
      result.backends[name].requests = (await serverLog()).slice(before).map((r) => r.path);
    } catch (err) {
      result.backends[name] = { fatal: String(err?.stack ? err.stack : err) };
    } finally {
      await context.close();
      result.backends[name].ms = Date.now() - start;
    }
  }
} catch (err) {
  result.fatal = String(err?.stack ? err.stack : err);
} finally {
  await browser.close();
  await setFaults({}).catch(() => {});
}
result.t_total_ms = Date.now() - t0;
console.log(JSON.stringify(result));
