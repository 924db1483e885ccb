// Drive bench/web/page.js in headless Chromium (WebGPU on SwiftShader, the flags of
// runtime-web/test/browser/run.mjs). Usage: node bench/web/run.mjs CONFIG.json — prints one JSON
// line. bench/web_loader.py starts the server, builds the page and writes CONFIG.
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";

const config = JSON.parse(readFileSync(process.argv[2], "utf8"));
const { chromium } = createRequire(config.runtimeWeb + "/package.json")("playwright-core");
const FLAGS = [
  "--headless=new", "--no-sandbox", "--enable-unsafe-webgpu", "--enable-features=Vulkan", "--use-angle=swiftshader",
  "--use-webgpu-adapter=swiftshader", "--enable-unsafe-swiftshader", "--disable-background-networking",
  "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic", "--disable-dev-shm-usage",
];

const result = { runs: [], console: [] };
const requests = async () => (await (await fetch(`${config.server}/__count`)).json()).bundle;
const browser = await chromium.launch({ executablePath: config.chromium, args: FLAGS, headless: true });
try {
  const page = await (await browser.newContext()).newPage();
  page.on("console", (m) => result.console.push(`${m.type()}: ${m.text()}`.slice(0, 300)));
  page.on("pageerror", (e) => result.console.push(`pageerror: ${e.message}`.slice(0, 300)));
  page.setDefaultTimeout(config.timeoutMs);
  await page.goto(`${config.server}/page/index.html`);
  await page.waitForFunction(() => globalThis.benchReady === true);
  result.info = await page.evaluate((url) => globalThis.bench.init(url), "/bundle/");
  for (const concurrency of config.concurrency) {
    // Unrecorded warm-up passes first: the first run of a fresh browser is slower for every mode.
    for (let rep = -(config.warmup ?? 0); rep < config.repeats; rep++) {
      for (const mode of config.modes) {
        if (mode === "split" && concurrency !== 1) continue;
        const before = await requests();
        const startMs = Date.now();
        // "runtime+full+w2" → bench.runtime(concurrency, asFloat32, "runtime+full+w2")
        const r = await page.evaluate(({ mode, concurrency, f32 }) => globalThis.bench[mode.split("+")[0]](concurrency, f32, mode), { mode, concurrency, f32: config.asFloat32 });
        r.requests = (await requests()) - before;
        Object.assign(r, { mode, concurrency, rep, startMs, endMs: Date.now() });
        if (rep >= 0) result.runs.push(r);
        process.stderr.write(`${mode} c${concurrency} ${rep < 0 ? "warm-up" : `#${rep}`}: ${(r.wallMs / 1000).toFixed(2)} s, ${r.requests} requests\n`);
      }
    }
  }
} catch (err) {
  result.fatal = String(err && err.stack ? err.stack : err);
} finally {
  await browser.close();
}
console.log(JSON.stringify(result));
