"""Loader overhead in Chromium: the runtime's streaming weight path against a bare fetch of the same bytes.

    python -m bench.web.loader --bundle /tmp/sdpack-bench/bundle-a [--repeats 3] [--warmup 1]
        [--concurrency 0] [--modes peer,runtime,split] [--rate MBps] [--as-float32] [--json out.json]
        [--adapter swiftshader|hardware] [--chromium PATH] [--page DIR | --build-page DIR]

Serves the bundle on 127.0.0.1 (threaded, sendfile, CORS, ``Cache-Control: no-store`` so every
run crosses the network; ``--rate`` paces it like a link of that many MB/s), starts headless
Chromium on bench/web/page.js with WebGPU on SwiftShader (the flags of
runtime-web/test/browser/run.mjs) or, with ``--adapter hardware``, on the machine's GPU through
Vulkan, and the page drives itself (``?auto``: no automation driver, so a machine without node can
run it given a page built elsewhere with ``--build-page``; bench/web/device.sh does that on the lent
GPU machine). In one browser session, for each concurrency and repetition it runs
(bench/web/page.js says exactly what each does):

* ``peer``    — ``fetch`` + ``arrayBuffer()`` of every weight file (tensor indexes and shards);
* ``runtime`` — runtime-web's ``streamWeights``, the weight path of ``loadModel`` (BYOB fetch,
  decode workers: stored sha256, zstd, decoded size, unshuffle; each tensor into a GPUBuffer with
  ``writeBuffer`` as tvmjs does; one shard per slot in memory). ``runtime+full`` checks raw_sha256
  too, ``runtime+wN`` uses N decode workers (``w0``: the page's thread);
* ``loader``  — ``loadBundleFiles`` (weights only, no upload), which keeps every decoded file;
* ``split``   — diagnostic (concurrency 1 only): the decode steps timed one by one on the page's thread.

Each concurrency starts with ``--warmup`` unrecorded passes over the modes (a fresh browser's
first run is slower for every mode). Peak RSS of Chromium's processes (renderer, GPU process, all) and the CPU time they (and the
whole machine) used are sampled during each run; the load average before the runs is printed.

The page is bundled by esbuild from a fresh ``tsc`` build of runtime-web/src (into a temporary
directory, or ``--build-page DIR``; runtime-web/dist is left alone), with runtime-web's decode
worker built next to it, so the code measured is the product's. Prints the median of each, MB/s
of raw (decoded) weight bytes, the ratio runtime/peer (goal ≤ 1.1), the runtime's own per-step
times (LoadStats: summed over files, which overlap unless concurrency is 1) and CPU seconds per
GB. The Cache API is cleared before every run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
WEB = ROOT / "runtime-web"
HERE = ROOT / "bench" / "web"


def build_page(
    out: Path,
    script: Path = HERE / "page.js",
    name: str = "bench.js",
    title: str = "sdpack loader bench",
) -> Path:
    """tsc runtime-web/src → out/rt, esbuild ``script`` (+ it) → out/page/``name`` and the decode
    worker beside it; returns out/page. gen_bench.py builds its page through this too."""
    out = out.resolve()
    bin_ = WEB / "node_modules" / ".bin"
    if not (bin_ / "esbuild").exists():
        sys.exit("runtime-web/node_modules is missing: cd runtime-web && npm ci")
    if not (WEB / "src" / "generated" / "validators.ts").exists():
        subprocess.run(["npm", "run", "--silent", "generate"], cwd=WEB, check=True)
    subprocess.run(
        [str(bin_ / "tsc"), "-p", "tsconfig.json", "--outDir", str(out / "rt")], cwd=WEB, check=True
    )
    page = out / "page"
    page.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "NODE_PATH": str(WEB / "node_modules")}
    common = [
        "--bundle",
        "--format=esm",
        "--platform=browser",
        "--target=es2022",
        "--log-level=warning",
    ]
    subprocess.run(
        [
            str(bin_ / "esbuild"),
            str(script),
            *common,
            f"--alias:sdpack-rt={out / 'rt'}",
            f"--outfile={page / name}",
            # tvmjs (reached through pipeline.js) has node-only branches
            *[f"--external:{m}" for m in ("fs", "path", "perf_hooks", "ws", "crypto")],
        ],
        cwd=WEB,
        env=env,
        check=True,
    )
    # The loader starts its decode workers from ./decodeWorker.js next to the page's script.
    subprocess.run(
        [
            str(bin_ / "esbuild"),
            str(out / "rt" / "decodeWorker.js"),
            *common,
            f"--outfile={page / 'decodeWorker.js'}",
        ],
        cwd=WEB,
        env=env,
        check=True,
    )
    (page / "index.html").write_text(
        f'<!doctype html><meta charset="utf-8"><title>{title}</title>'
        f'<script type="module" src="{name}"></script>\n'
    )
    return page


class RateLimit:
    """One budget of `mbps` MB/s shared by every connection (a token bucket with 0.1 s of burst):
    the bundle as a link of that speed delivers it."""

    def __init__(self, mbps: float):
        self.rate = mbps * 1e6
        self.lock = threading.Lock()
        self.next_free = time.monotonic()

    def take(self, nbytes: int) -> None:
        with self.lock:
            now = time.monotonic()
            start = max(self.next_free, now - 0.1)
            self.next_free = start + nbytes / self.rate
            wait = self.next_free - now
        if wait > 0:
            time.sleep(wait)


class Session:
    """What the self-driving page (bench/web/page.js ``?auto``) reads and reports: its config, a
    line per run, then its result. ``wait`` gives up when no word came for ``quiet_s`` seconds."""

    def __init__(self, config: dict):
        self.config = config
        self.result: dict | None = None
        self.heard = threading.Condition()
        self.last = time.monotonic()

    def progress(self, line: str) -> None:
        print(line, file=sys.stderr, flush=True)
        with self.heard:
            self.last = time.monotonic()

    def finish(self, result: dict) -> None:
        with self.heard:
            self.result = result
            self.heard.notify_all()

    def wait(self, quiet_s: float, alive) -> dict:
        with self.heard:
            while self.result is None:
                if time.monotonic() - self.last > quiet_s:
                    raise TimeoutError(f"no word from the page for {quiet_s:.0f} s")
                if not alive():
                    raise RuntimeError("Chromium exited before the page reported")
                self.heard.wait(1.0)
            return self.result


def make_server(
    bundle: Path, page: Path, rate: RateLimit | None = None, session: Session | None = None
) -> ThreadingHTTPServer:
    counts = {"bundle": 0}
    lock = threading.Lock()

    class Handler(SimpleHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def translate_path(self, path):
            path = path.split("?", 1)[0]
            for prefix, root in (("/bundle/", bundle), ("/page/", page)):
                if path.startswith(prefix):
                    self.directory = str(root)
                    return super().translate_path("/" + path[len(prefix) :])
            return str(page / "__none__")

        def end_headers(self):
            self.send_header("Access-Control-Allow-Origin", "*")
            self.send_header("Cache-Control", "no-store")
            super().end_headers()

        def _json(self, doc) -> None:
            body = json.dumps(doc).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self):  # noqa: N802 - http.server's naming
            if self.path == "/__count":
                return self._json(counts)
            if self.path == "/__config" and session is not None:
                return self._json(session.config)
            if self.path.startswith("/bundle/"):
                with lock:
                    counts["bundle"] += 1
            super().do_GET()

        def do_POST(self):  # noqa: N802
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            if session is None or self.path not in ("/__progress", "/__result"):
                self.send_error(404)
                return
            if self.path == "/__progress":
                session.progress(body.decode(errors="replace"))
            else:
                session.finish(json.loads(body))
            self._json({})

        def copyfile(self, source, outputfile):
            if rate is None or not self.path.startswith("/bundle/"):
                self.connection.sendfile(source)  # kernel copy: the server is never the bottleneck
                return
            offset, chunk = 0, 1 << 20
            while True:  # paced: --rate MB/s over all connections
                rate.take(chunk)
                sent = self.connection.sendfile(source, offset, chunk)
                if not sent:
                    break
                offset += sent

        def log_message(self, format, *args):  # noqa: A002
            pass

    class Server(ThreadingHTTPServer):
        def handle_error(self, request, client_address):
            if not isinstance(
                sys.exc_info()[1], ConnectionError
            ):  # the browser going away mid-request
                super().handle_error(request, client_address)

    return Server(("127.0.0.1", 0), Handler)


# The flags of runtime-web/test/browser/run.mjs: WebGPU on SwiftShader (what this VM and CI have).
COMMON_FLAGS = [
    "--headless=new",
    "--no-sandbox",
    "--enable-unsafe-webgpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
    "--disable-dev-shm-usage",
    "--enable-unsafe-swiftshader",
]
ADAPTER_FLAGS = {
    "swiftshader": [
        "--enable-features=Vulkan",
        "--use-angle=swiftshader",
        "--use-webgpu-adapter=swiftshader",
    ],
    # the machine's own GPU through Vulkan (Dawn picks it); GL stays on SwiftShader, which nothing here draws with
    "hardware": [
        "--enable-features=Vulkan",
        "--use-vulkan=native",
        "--ignore-gpu-blocklist",
        "--use-angle=swiftshader",
    ],
}


def run_browser(
    chromium: str,
    flags: list[str],
    url: str,
    session: Session,
    quiet_s: float,
    log: Path | None = None,
) -> tuple[dict, RssSampler]:
    """Start Chromium on the self-driving page and wait for its result: (result, the run's samples)."""
    with tempfile.TemporaryDirectory(prefix="sdpack-web-bench-profile-") as profile:
        proc = subprocess.Popen(
            [chromium, *flags, f"--user-data-dir={profile}", url],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            errors="replace",
            start_new_session=True,
        )
        err_tail: list[str] = []

        def read_stderr():
            with open(log or os.devnull, "w") as out:
                for line in proc.stderr:
                    err_tail.append(line)
                    out.write(line)

        threading.Thread(target=read_stderr, daemon=True).start()
        sampler = RssSampler(proc.pid)
        sampler.start()
        try:
            result = session.wait(quiet_s, alive=lambda: proc.poll() is None)
        except (TimeoutError, RuntimeError) as exc:
            result = {
                "runs": [],
                "fatal": f"{exc}; Chromium's stderr ends:\n{''.join(err_tail[-30:]).strip()}",
            }
        finally:
            sampler.stop.set()
            try:
                os.killpg(proc.pid, signal.SIGTERM)
                proc.wait(10)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                os.killpg(proc.pid, signal.SIGKILL)
    return result, sampler


def _machine_cpu() -> tuple[float, float]:
    """(busy, total) seconds of all CPUs since boot, from /proc/stat."""
    fields = [float(x) for x in open("/proc/stat").readline().split()[1:]]
    tick = os.sysconf("SC_CLK_TCK")
    idle = fields[3] + fields[4]
    total = sum(fields[:8])
    return (total - idle) / tick, total / tick


class RssSampler(threading.Thread):
    """Every 0.1 s: RSS and CPU time of Chromium's processes by type (renderer, gpu-process,
    utility=network, browser), this process's CPU time (the HTTP server) and the machine's."""

    def __init__(self, root_pid: int):
        super().__init__(daemon=True)
        self.root_pid, self.samples, self.stop = root_pid, [], threading.Event()
        self.cpu_seen: dict[
            int, tuple[str, float]
        ] = {}  # pid -> (kind, last cpu seconds), survives exits

    def run(self):
        import psutil

        me = psutil.Process()
        while not self.stop.is_set():
            totals: dict[str, int] = {}
            try:
                root = psutil.Process(self.root_pid)
                for p in [root, *root.children(recursive=True)]:
                    try:
                        with p.oneshot():
                            cmd = p.cmdline()
                            if not cmd or "chrom" not in cmd[0]:
                                continue
                            kind = next(
                                (a.split("=", 1)[1] for a in cmd if a.startswith("--type=")),
                                "browser",
                            )
                            totals[kind] = totals.get(kind, 0) + p.memory_info().rss
                            t = p.cpu_times()
                            self.cpu_seen[p.pid] = (kind, t.user + t.system)
                    except psutil.Error:
                        pass
            except psutil.Error:
                return
            cpu: dict[str, float] = {}
            for kind, secs in self.cpu_seen.values():
                cpu[kind] = cpu.get(kind, 0.0) + secs
            t = me.cpu_times()
            cpu["server"] = t.user + t.system
            cpu["machine"], _ = _machine_cpu()
            self.samples.append((time.time() * 1000, totals, cpu))
            time.sleep(0.1)

    def _within(self, start_ms: float, end_ms: float):
        return [s for s in self.samples if start_ms <= s[0] <= end_ms]

    def peaks(self, start_ms: float, end_ms: float) -> dict[str, float]:
        """Peak RSS (GB) per process type, and of their sum, within [start, end]."""
        out: dict[str, float] = {}
        for _t, totals, _cpu in self._within(start_ms, end_ms):
            for k, v in [*totals.items(), ("all", sum(totals.values()))]:
                out[k] = max(out.get(k, 0.0), v / 1e9)
        return out

    def cpu(self, start_ms: float, end_ms: float) -> dict[str, float]:
        """CPU seconds used within [start, end] (first to last sample): per Chromium process type,
        all Chromium, the HTTP server (this process) and the whole machine."""
        within = self._within(start_ms, end_ms)
        if len(within) < 2:
            return {}
        (t0, _, a), (t1, _, b) = within[0], within[-1]
        out = {k: b.get(k, 0.0) - a.get(k, 0.0) for k in b}
        out["chromium"] = sum(v for k, v in out.items() if k not in ("server", "machine"))
        # what else ran meanwhile (other users' jobs; also the node driver): numbers with much of it are suspect
        out["other"] = max(0.0, out["machine"] - out["chromium"] - out.get("server", 0.0))
        out["sampled_s"] = (t1 - t0) / 1000
        return out


def med(runs: list[dict], key) -> float:
    return statistics.median(key(r) for r in runs)


def report(result: dict, args) -> dict:
    info = result["info"]
    raw_mb, stored_mb = info["rawBytes"] / 1e6, info["storedBytes"] / 1e6
    print(
        f"# {platform.node()} {os.cpu_count()} cores (navigator.hardwareConcurrency {info.get('hardwareConcurrency')}); "
        f"load average before: {result.get('loadavg')}; Chromium headless, WebGPU adapter {info['adapter']} "
        f"(features: {', '.join(info['features']) or 'none'})"
    )
    print(
        f"# served {f'at most {args.rate:g} MB/s' if args.rate else 'unpaced (loopback)'}; "
        f"{info['files']} weight files ({info['shards']} shards, {info['tensors']} tensors): {stored_mb:.1f} MB stored, "
        f"{raw_mb:.1f} MB raw; median of {args.repeats} after {args.warmup} warm-up pass(es); MB/s = raw MB / wall"
    )
    print(
        f"# limits: adapter {info['adapterLimits']}, device {info['deviceLimits']}; "
        f"concurrency 0 = the runtime's default, here {info.get('defaultConcurrency')}"
    )
    summary: dict = {
        "info": info,
        "loadavg": result.get("loadavg"),
        "rate_MBps": args.rate or None,
        "rows": [],
    }
    print(
        f"\n{'mode':16} {'conc':>4} {'wall s':>7} {'raw MB/s':>9} {'min..max s':>13} {'req':>4}  "
        f"{'CPU s: chromium / machine / other':>34}  peak RSS GB: renderer / gpu / all chromium"
    )
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
            rss = {
                k: max(r.get("rss", {}).get(k, 0) for r in runs)
                for k in ("renderer", "gpu-process", "all")
            }
            cpu = {
                k: med(runs, lambda r, k=k: r.get("cpu", {}).get(k, 0.0))
                for k in (
                    "chromium",
                    "machine",
                    "server",
                    "renderer",
                    "gpu-process",
                    "utility",
                    "other",
                )
            }
            print(
                f"{mode:16} {conc:4} {wall:7.2f} {raw_mb / wall:9.0f} {lo:6.2f}..{hi:6.2f} {'/'.join(map(str, reqs)):>4}  "
                f"{cpu['chromium']:12.1f} / {cpu['machine']:6.1f} / {cpu['other']:5.1f}      "
                f"{rss['renderer']:5.2f} / {rss['gpu-process']:5.2f} / {rss['all']:5.2f}"
            )
            row = {
                "mode": mode,
                "concurrency": conc,
                "wall_s": wall,
                "raw_MBps": raw_mb / wall,
                "min_s": lo,
                "max_s": hi,
                "peak_rss_GB": rss,
                "cpu_s": cpu,
            }
            if mode == "split":
                row["split_s"] = {
                    k: med(runs, lambda r, k=k: r["ms"][k]) / 1000 for k in runs[0]["ms"]
                }
            if "stats" in runs[0] and mode != "split":
                row["stats_s"] = {
                    k: med(runs, lambda r, k=k: r["stats"]["ms"][k]) / 1000
                    for k in runs[0]["stats"]["ms"]
                }
                st = runs[0]["stats"]
                row["workers"], row["decoded_in_workers"], row["decoded_in_thread"] = (
                    st["workers"],
                    st["decodedInWorkers"],
                    st["decodedInThread"],
                )
                if st.get("workerError"):
                    row["worker_error"] = st["workerError"]
            if "uploadedBytes" in runs[0]:
                row["uploaded_MB"] = runs[0]["uploadedBytes"] / 1e6
            summary["rows"].append(row)
        for mode in walls:
            if mode.startswith("runtime") and "peer" in walls:
                ratio = walls[mode] / walls["peer"]
                summary.setdefault("ratio", {}).setdefault(str(conc), {})[mode] = ratio
                print(
                    f"ratio {mode}/peer at concurrency {conc}: {ratio:.2f}  (goal ≤ 1.1: {'met' if ratio <= 1.1 else 'NOT met'})"
                )
    for row in summary["rows"]:
        if "stats_s" in row:
            b = row["stats_s"]
            overlap = "exact" if row["concurrency"] == 1 else "summed over overlapping files"
            print(
                f"{row['mode']} c{row['concurrency']} LoadStats ({overlap}), s: "
                + ", ".join(f"{k} {v:.2f}" for k, v in b.items())
                + f"; workers {row['workers']}, decoded in workers {row['decoded_in_workers']}, in thread {row['decoded_in_thread']}"
                + (f", worker error: {row['worker_error']}" if "worker_error" in row else "")
                + (f"; uploaded {row['uploaded_MB']:.0f} MB" if "uploaded_MB" in row else "")
            )
    for row in summary["rows"]:
        c = row["cpu_s"]
        if c.get("chromium"):
            print(
                f"{row['mode']} c{row['concurrency']} CPU s per GB raw: chromium {c['chromium'] / raw_mb * 1e3:.2f} "
                f"(renderer {c['renderer'] / raw_mb * 1e3:.2f}, gpu {c['gpu-process'] / raw_mb * 1e3:.2f}, "
                f"network {c['utility'] / raw_mb * 1e3:.2f}), server {c['server'] / raw_mb * 1e3:.2f}, "
                f"machine {c['machine'] / raw_mb * 1e3:.2f} ({os.cpu_count()} cores give "
                f"{os.cpu_count() * row['wall_s'] / raw_mb * 1e3:.2f} in the wall time)"
            )
    for row in summary["rows"]:
        if "split_s" in row:
            b = row["split_s"]
            rates = {
                "shaStored": info["shardStoredBytes"] / 1e6,
                "zstd": raw_mb,
                "unshuffleRef": raw_mb,
                "unshuffle": raw_mb,
                "shaRaw": raw_mb,
            }
            print(
                "decode steps one by one (split, page's thread), s (MB/s): "
                + ", ".join(f"{k} {v:.2f} ({rates[k] / v:.0f})" for k, v in b.items())
            )
    return summary


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bundle", type=Path, required=True)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument(
        "--warmup",
        type=int,
        default=1,
        help="unrecorded passes over the modes first (per concurrency)",
    )
    ap.add_argument(
        "--concurrency",
        default="0",
        help="comma list of files in flight; 0 (the default): the "
        "runtime's own default (4, or one per decode worker: 4 on 2 cores, 8 on 16)",
    )
    ap.add_argument(
        "--modes",
        default="peer,runtime,split",
        help="comma list of peer, runtime[+full][+wN], loader, split",
    )
    ap.add_argument(
        "--as-float32",
        action="store_true",
        help="upload fp16 weights widened to fp32 (webgpu-float32 variant)",
    )
    ap.add_argument(
        "--rate",
        type=float,
        default=0,
        help="serve the bundle at most this fast, MB/s over all "
        "connections (a link of that speed; default: loopback, unpaced)",
    )
    ap.add_argument("--chromium", default=os.environ.get("SDPACK_CHROMIUM", "/usr/bin/chromium"))
    ap.add_argument(
        "--adapter",
        choices=sorted(ADAPTER_FLAGS),
        default="swiftshader",
        help="WebGPU on SwiftShader (default) or on the machine's GPU through Vulkan",
    )
    ap.add_argument(
        "--flag", action="append", default=[], help="one more Chromium flag (repeatable)"
    )
    ap.add_argument(
        "--page", type=Path, help="a page built earlier with --build-page (then node is not needed)"
    )
    ap.add_argument(
        "--build-page", type=Path, metavar="DIR", help="only build the page into DIR, then exit"
    )
    ap.add_argument(
        "--timeout", type=int, default=600, help="seconds the page may go without finishing a run"
    )
    ap.add_argument("--json", type=Path, help="write the raw runs and the summary here")
    ap.add_argument("--log", type=Path, help="write Chromium's stderr here")
    args = ap.parse_args()
    args.concurrency = [int(c) for c in args.concurrency.split(",")]
    args.modes = args.modes.split(",")
    if args.build_page:
        build_page(args.build_page)
        return
    if not (args.bundle / "manifest.json").is_file():
        sys.exit(f"{args.bundle} has no manifest.json")
    if not Path(args.chromium).is_file() or (args.page is None and shutil.which("node") is None):
        sys.exit("needs Chromium (--chromium) and, unless --page is given, node")
    for f in (args.bundle / "weights").rglob("*"):  # page cache warm: both modes read from memory
        if f.is_file():
            with open(f, "rb") as fh:
                while fh.read(1 << 24):
                    pass
    loadavg = " ".join(f"{x:.2f}" for x in os.getloadavg())
    with tempfile.TemporaryDirectory(prefix="sdpack-web-bench-") as tmp:
        page = build_page(Path(tmp)) if args.page is None else args.page / "page"
        if not (page / "index.html").is_file():
            sys.exit(f"{args.page} has no page: build one with --build-page {args.page}")
        config = {
            "repeats": args.repeats,
            "warmup": args.warmup,
            "concurrency": args.concurrency,
            "modes": args.modes,
            "asFloat32": args.as_float32,
        }
        session = Session(config)
        server = make_server(
            args.bundle.resolve(),
            page.resolve(),
            RateLimit(args.rate) if args.rate else None,
            session,
        )
        threading.Thread(target=server.serve_forever, daemon=True).start()
        try:
            flags = [*COMMON_FLAGS, *ADAPTER_FLAGS[args.adapter], *args.flag]
            url = f"http://127.0.0.1:{server.server_address[1]}/page/index.html?auto"
            result, sampler = run_browser(
                args.chromium, flags, url, session, args.timeout, args.log
            )
        finally:
            server.shutdown()
    result["loadavg"] = loadavg
    for r in result["runs"]:
        r["rss"] = sampler.peaks(r["startMs"], r["endMs"])
        r["cpu"] = sampler.cpu(r["startMs"], r["endMs"])
    if "fatal" in result:
        sys.exit(result["fatal"] + "\n" + "\n".join(result.get("console", [])[-20:]))
    summary = report(result, args)
    if args.json:
        args.json.write_text(json.dumps({"summary": summary, **result}, indent=1))


if __name__ == "__main__":
    main()
