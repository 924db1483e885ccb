"""Loader overhead in Chromium: the runtime's weight path against a bare fetch of the same bytes.

    python bench/web_loader.py --bundle /tmp/sdpack-bench/bundle-a [--repeats 3]
        [--concurrency 4,1] [--modes peer,runtime,loader,split] [--as-float32] [--json out.json]

Serves the bundle on 127.0.0.1 (threaded, sendfile, CORS, ``Cache-Control: no-store`` so every
run crosses the network), opens bench/web/page.js in headless Chromium with WebGPU on SwiftShader
(the flags of runtime-web/test/browser/run.mjs) and, in one browser session, for each concurrency
and repetition runs:

* ``peer``    — ``fetch`` + ``arrayBuffer()`` of every ``.zst`` shard of every component;
* ``runtime`` — the same fetch, then runtime-web's ``decodeShard`` (sha256 of the stored bytes,
  zstd, unshuffle, sha256 of the raw bytes), ``shardTensors``, a GPUBuffer + ``writeBuffer`` per
  tensor and ``queue.onSubmittedWorkDone()`` per shard; one shard per worker in memory at a time;
* ``loader``  — ``loadBundleFiles`` (weights only, no upload): the product's download phase as
  ``loadModel`` runs it, which keeps every decoded shard in memory;
* ``split``   — diagnostic (concurrency 1 only): decodeShard's four steps timed one by one.

Peak RSS of Chromium's processes (renderer, GPU process, all) is sampled during each run.

The page is bundled by esbuild from a fresh ``tsc`` build of runtime-web/src (into a temporary
directory; runtime-web/dist is left alone), so the code measured is the product's. Prints the
median of each, MB/s of raw (decoded) weight bytes, the ratio runtime/peer (goal ≤ 1.1) and the
runtime's breakdown (fetch, sha256, zstd+unshuffle, upload), split exactly at concurrency 1.
The Cache API is cleared before every run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WEB = ROOT / "runtime-web"
HERE = ROOT / "bench" / "web"


def build_page(out: Path) -> None:
    """tsc runtime-web/src → out/rt, esbuild bench/web/page.js (+ it) → out/page/bench.js."""
    bin_ = WEB / "node_modules" / ".bin"
    if not (bin_ / "esbuild").exists():
        sys.exit("runtime-web/node_modules is missing: cd runtime-web && npm ci")
    if not (WEB / "src" / "generated" / "manifestSchema.ts").exists():
        subprocess.run(["npm", "run", "--silent", "generate"], cwd=WEB, check=True)
    subprocess.run([str(bin_ / "tsc"), "-p", "tsconfig.json", "--outDir", str(out / "rt")], cwd=WEB, check=True)
    page = out / "page"
    page.mkdir(parents=True)
    env = {**os.environ, "NODE_PATH": str(WEB / "node_modules")}
    subprocess.run([str(bin_ / "esbuild"), str(HERE / "page.js"), "--bundle", "--format=esm", "--platform=browser",
                    "--target=es2022", f"--alias:sdpack-rt={out / 'rt'}", f"--outfile={page / 'bench.js'}",
                    "--log-level=warning"], cwd=WEB, env=env, check=True)
    (page / "index.html").write_text('<!doctype html><meta charset="utf-8"><title>sdpack loader bench</title>'
                                     '<script type="module" src="bench.js"></script>\n')


def make_server(bundle: Path, page: Path) -> ThreadingHTTPServer:
    counts = {"bundle": 0}
    lock = threading.Lock()

    class Handler(SimpleHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def translate_path(self, path):
            path = path.split("?", 1)[0]
            for prefix, root in (("/bundle/", bundle), ("/page/", page)):
                if path.startswith(prefix):
                    self.directory = str(root)
                    return super().translate_path("/" + path[len(prefix):])
            return str(page / "__none__")

        def end_headers(self):
            self.send_header("Access-Control-Allow-Origin", "*")
            self.send_header("Cache-Control", "no-store")
            super().end_headers()

        def do_GET(self):  # noqa: N802 - http.server's naming
            if self.path == "/__count":
                body = json.dumps(counts).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
                return
            if self.path.startswith("/bundle/"):
                with lock:
                    counts["bundle"] += 1
            super().do_GET()

        def copyfile(self, source, outputfile):
            self.connection.sendfile(source)  # kernel copy: the server is never the bottleneck

        def log_message(self, format, *args):  # noqa: A002
            pass

    return ThreadingHTTPServer(("127.0.0.1", 0), Handler)


class RssSampler(threading.Thread):
    """RSS of Chromium's processes by type (renderer, gpu-process, utility=network, browser), every 0.1 s."""

    def __init__(self, root_pid: int):
        super().__init__(daemon=True)
        self.root_pid, self.samples, self.stop = root_pid, [], threading.Event()

    def run(self):
        import psutil

        while not self.stop.is_set():
            totals: dict[str, int] = {}
            try:
                for p in psutil.Process(self.root_pid).children(recursive=True):
                    try:
                        cmd = p.cmdline()
                        if not cmd or "chrom" not in cmd[0]:
                            continue
                        kind = next((a.split("=", 1)[1] for a in cmd if a.startswith("--type=")), "browser")
                        totals[kind] = totals.get(kind, 0) + p.memory_info().rss
                    except psutil.Error:
                        pass
            except psutil.Error:
                return
            self.samples.append((time.time() * 1000, totals))
            time.sleep(0.1)

    def peaks(self, start_ms: float, end_ms: float) -> dict[str, float]:
        """Peak RSS (GB) per process type, and of their sum, within [start, end]."""
        out: dict[str, float] = {}
        for t, totals in self.samples:
            if start_ms <= t <= end_ms:
                for k, v in [*totals.items(), ("all", sum(totals.values()))]:
                    out[k] = max(out.get(k, 0.0), v / 1e9)
        return out


def med(runs: list[dict], key) -> float:
    return statistics.median(key(r) for r in runs)


def report(result: dict, args) -> dict:
    info = result["info"]
    raw_mb, stored_mb = info["rawBytes"] / 1e6, info["storedBytes"] / 1e6
    print(f"# {platform.node()} {os.cpu_count()} cores; Chromium headless, WebGPU adapter {info['adapter']} "
          f"(features: {', '.join(info['features']) or 'none'})")
    print(f"# {info['shards']} shards, {info['tensors']} tensors: {stored_mb:.1f} MB stored (.zst), {raw_mb:.1f} MB raw; "
          f"median of {args.repeats}; MB/s = raw MB / wall")
    print(f"# limits: adapter {info['adapterLimits']}, default device {info['deviceLimits']}")
    summary: dict = {"info": info, "rows": []}
    print(f"\n{'mode':8} {'conc':>4} {'wall s':>7} {'raw MB/s':>9} {'min..max s':>13} {'requests':>8}  "
          "peak RSS GB: renderer / gpu / all chromium")
    for conc in args.concurrency:
        walls = {}
        for mode in args.modes:
            runs = [r for r in result["runs"] if r["mode"] == mode and r["concurrency"] == conc]
            if not runs:
                continue
            wall = med(runs, lambda r: r["wallMs"]) / 1000
            walls[mode] = wall
            lo, hi = min(r["wallMs"] for r in runs) / 1000, max(r["wallMs"] for r in runs) / 1000
            reqs = sorted({r["requests"] for r in runs})
            rss = {k: max(r.get("rss", {}).get(k, 0) for r in runs) for k in ("renderer", "gpu-process", "all")}
            print(f"{mode:8} {conc:4} {wall:7.2f} {raw_mb / wall:9.0f} {lo:6.2f}..{hi:6.2f} {'/'.join(map(str, reqs)):>8}  "
                  f"{rss['renderer']:5.2f} / {rss['gpu-process']:5.2f} / {rss['all']:5.2f}")
            row = {"mode": mode, "concurrency": conc, "wall_s": wall, "raw_MBps": raw_mb / wall, "min_s": lo,
                   "max_s": hi, "peak_rss_GB": rss}
            if mode == "split":
                row["split_s"] = {k: med(runs, lambda r, k=k: r["ms"][k]) / 1000 for k in runs[0]["ms"]}
            if mode == "runtime":
                row["breakdown_s"] = {
                    "fetch": med(runs, lambda r: r["ms"]["fetch"]) / 1000,
                    "sha256": med(runs, lambda r: r["sha"]["ms"]) / 1000,
                    "zstd+unshuffle": med(runs, lambda r: r["decodeMs"]) / 1000,
                    "tensor views": med(runs, lambda r: r["ms"]["tensors"]) / 1000,
                    "upload": med(runs, lambda r: r["ms"]["upload"]) / 1000,
                }
                row["sha256_MB"] = runs[0]["sha"]["bytes"] / 1e6
                row["uploaded_MB"] = runs[0]["uploadedBytes"] / 1e6
            summary["rows"].append(row)
        if "peer" in walls and "runtime" in walls:
            ratio = walls["runtime"] / walls["peer"]
            summary.setdefault("ratio", {})[conc] = ratio
            print(f"ratio runtime/peer at concurrency {conc}: {ratio:.2f}  (goal ≤ 1.1: {'met' if ratio <= 1.1 else 'NOT met'})")
    for row in summary["rows"]:
        if "breakdown_s" in row:
            b = row["breakdown_s"]
            overlap = "exact" if row["concurrency"] == 1 else "summed over overlapping workers"
            parts = ", ".join(f"{k} {v:.2f}" for k, v in b.items())
            print(f"runtime breakdown, concurrency {row['concurrency']} ({overlap}), s: {parts}; "
                  f"sha256 over {row['sha256_MB']:.0f} MB, uploaded {row['uploaded_MB']:.0f} MB")
    for row in summary["rows"]:
        if "split_s" in row:
            b = row["split_s"]
            rates = {"shaStored": stored_mb, "zstd": raw_mb, "unshuffle": raw_mb, "shaRaw": raw_mb}
            print("decodeShard's steps one by one (split, concurrency 1), s (MB/s): "
                  + ", ".join(f"{k} {v:.2f} ({rates[k] / v:.0f})" for k, v in b.items()))
    return summary


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bundle", type=Path, required=True)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--concurrency", default="4,1", help="comma list; 4 is loadBundleFiles' default")
    ap.add_argument("--modes", default="peer,runtime,loader,split")
    ap.add_argument("--as-float32", action="store_true", help="upload fp16 weights widened to fp32 (webgpu-float32 variant)")
    ap.add_argument("--chromium", default=os.environ.get("SDPACK_CHROMIUM", "/usr/bin/chromium"))
    ap.add_argument("--timeout", type=int, default=600, help="seconds per browser step")
    ap.add_argument("--json", type=Path, help="write the raw runs and the summary here")
    args = ap.parse_args()
    args.concurrency = [int(c) for c in args.concurrency.split(",")]
    args.modes = args.modes.split(",")
    if not (args.bundle / "manifest.json").is_file():
        sys.exit(f"{args.bundle} has no manifest.json")
    if shutil.which("node") is None or not Path(args.chromium).is_file():
        sys.exit("needs node and Chromium (--chromium)")
    for f in (args.bundle / "weights").rglob("*"):  # page cache warm: both modes read from memory
        if f.is_file():
            with open(f, "rb") as fh:
                while fh.read(1 << 24):
                    pass
    with tempfile.TemporaryDirectory(prefix="sdpack-web-bench-") as tmp:
        tmp = Path(tmp)
        build_page(tmp)
        server = make_server(args.bundle.resolve(), tmp / "page")
        threading.Thread(target=server.serve_forever, daemon=True).start()
        try:
            config = {"server": f"http://127.0.0.1:{server.server_address[1]}", "chromium": args.chromium,
                      "runtimeWeb": str(WEB), "repeats": args.repeats, "concurrency": args.concurrency,
                      "modes": args.modes, "asFloat32": args.as_float32, "timeoutMs": args.timeout * 1000}
            (tmp / "config.json").write_text(json.dumps(config))
            proc = subprocess.Popen(["node", str(HERE / "run.mjs"), str(tmp / "config.json")], cwd=ROOT,
                                    stdout=subprocess.PIPE, text=True)
            sampler = RssSampler(proc.pid)
            sampler.start()
            stdout, _ = proc.communicate()
            sampler.stop.set()
        finally:
            server.shutdown()
    lines = stdout.strip().splitlines()
    if proc.returncode or not lines:
        sys.exit(f"browser run failed ({proc.returncode}):\n{stdout[-3000:]}")
    result = json.loads(lines[-1])
    for r in result["runs"]:
        r["rss"] = sampler.peaks(r["startMs"], r["endMs"])
    if "fatal" in result:
        sys.exit(result["fatal"] + "\n" + "\n".join(result["console"][-20:]))
    summary = report(result, args)
    if args.json:
        args.json.write_text(json.dumps({"summary": summary, **result}, indent=1))


if __name__ == "__main__":
    main()
