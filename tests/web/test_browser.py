"""The web runtime in a real browser: headless Chromium (WebGPU on SwiftShader) runs the demo page
against a directory hub served Hub-style, and its image is compared with ``packer generate``.

One module fixture does the slow part once — the tiny example published as v1.0.0 and v1.1.0
with the default variants (webgpu float16 and float32, llvm float32, over float16 weights), the
demo built, both servers started, one Playwright run (runtime-web/test/browser/run.mjs) — and
each test checks one promise of its result.
Skipped (with the reason) only where Chromium, node or the npm packages are missing.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
WEB = ROOT / "runtime-web"
CHROMIUM = os.environ.get("SDPACK_CHROMIUM", "/usr/bin/chromium")
REPO = "sdpack/tiny"
REQUEST = {"prompt": "a red cube on a table", "negativePrompt": "blurry", "seed": 1234, "steps": 4,
           "guidance": 7.5, "scheduler": "dpm++"}
TAMPERED = "weights/unet/params_shard_0.bin.zst"


def _missing() -> str | None:
    if not Path(CHROMIUM).is_file():
        return f"{CHROMIUM} not found (apt-get install chromium, or set SDPACK_CHROMIUM)"
    if shutil.which("node") is None or shutil.which("npm") is None:
        return "node/npm not found"
    if not (WEB / "node_modules" / "playwright-core").is_dir():
        return "runtime-web/node_modules lacks playwright-core (cd runtime-web && npm ci)"
    return None


pytestmark = pytest.mark.skipif(_missing() is not None, reason=_missing() or "")


def _packer(*args: str, cwd: Path = ROOT) -> str:
    done = subprocess.run([sys.executable, "-m", "packer", *args], cwd=cwd, capture_output=True, text=True)
    assert done.returncode == 0, f"packer {' '.join(args)} failed:\n{done.stderr[-3000:]}"
    return done.stdout


def _serve_in_thread(server: ThreadingHTTPServer) -> str:
    threading.Thread(target=server.serve_forever, daemon=True).start()
    host, port = server.server_address[:2]
    return f"http://{host}:{port}"


def _hub_server(hub: Path):
    """``packer serve``'s server, plus a request log at /__log (what the browser really fetched)."""
    from packer.hub.serve import make_server

    server = make_server(hub, port=0)
    log: list[str] = []
    base = server.RequestHandlerClass

    def do_GET(self):  # noqa: N802 - http.server's naming
        if self.path == "/__log":
            body = json.dumps({"requests": list(log)}).encode()
            self._answer(200, {"Content-Type": "application/json", "Cache-Control": "no-store"}, len(body))
            self.wfile.write(body)
            return
        log.append(self.path)
        base.do_GET(self)

    server.RequestHandlerClass = type("LoggedHubHandler", (base,), {"do_GET": do_GET})
    return server


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, format, *args):  # noqa: A002
        pass


def psnr(a: np.ndarray, b: np.ndarray, peak: float) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(peak**2 / mse)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    timings: dict[str, float] = {}
    start = time.perf_counter()
    tmp = tmp_path_factory.mktemp("web")
    build = subprocess.run(["npm", "run", "--silent", "build:demo"], cwd=WEB, capture_output=True, text=True)
    assert build.returncode == 0, build.stdout[-2000:] + build.stderr[-2000:]
    timings["build_demo"] = time.perf_counter() - start

    from examples.make_example import make_example

    example = make_example(tmp / "example")
    hub = tmp / "hub"
    publish = ["publish", REPO, "--checkpoint", str(example["safetensors"]), "--tokenizer", str(example["tokenizer"]),
               "--image-size", "64", "--to", str(hub)]  # the default variants: what a user publishes
    _packer(*publish, "--version", "1.0.0")
    timings["publish"] = time.perf_counter() - start
    pin = json.loads(_packer("resolve", f"{REPO}@1.0.0", "--endpoint", str(hub)))
    _packer(*publish, "--version", "1.1.0")
    timings["publish_2"] = time.perf_counter() - start

    bundle = tmp / "bundle"
    _packer("pull", f"{REPO}@1.0.0", "--endpoint", str(hub), "--out", str(bundle))
    native_png = tmp / "native.png"
    _packer("generate", str(bundle), "--prompt", REQUEST["prompt"], "--negative-prompt", REQUEST["negativePrompt"],
            "--seed", str(REQUEST["seed"]), "--steps", str(REQUEST["steps"]), "--guidance", str(REQUEST["guidance"]),
            "--scheduler", REQUEST["scheduler"], "--out", str(native_png))
    timings["native"] = time.perf_counter() - start

    hub_server = _hub_server(hub)
    static = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=str(WEB)))
    try:
        hub_url = _serve_in_thread(hub_server)
        demo_url = _serve_in_thread(static) + "/demo/index.html"
        commit = pin["commit"]
        config = {
            "chromium": CHROMIUM, "demoUrl": demo_url, "hubUrl": hub_url, "repo": REPO, "commit": commit,
            "version": "1.0.0", "request": REQUEST, "tamperPath": TAMPERED, "timeoutMs": 150_000,
            "lock": {"lock_version": 1, "repo": REPO, "version": "1.0.0", "commit": commit,
                     "manifest_sha256": pin["manifest_sha256"], "endpoint": hub_url},
        }
        (tmp / "config.json").write_text(json.dumps(config))
        done = subprocess.run(["node", "test/browser/run.mjs", str(tmp / "config.json")], cwd=WEB,
                              capture_output=True, text=True, timeout=240)
    finally:
        hub_server.shutdown()
        static.shutdown()
    timings["browser"] = time.perf_counter() - start
    lines = done.stdout.strip().splitlines()
    assert done.returncode == 0 and lines, f"browser run failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    result = json.loads(lines[-1])
    assert "fatal" not in result, result["fatal"] + "\n" + "\n".join(result["console"][-20:])
    result["timings"] = timings

    from PIL import Image

    result["native_uint8"] = np.asarray(Image.open(native_png).convert("RGB"))
    if result.get("image", {}).get("ok"):
        img = result["image"]
        flat = np.frombuffer(base64.b64decode(img["float_b64"]), dtype="<f4")
        result["web_float"] = flat.reshape(img["height"], img["width"], 3)
    result["manifest_sha"] = {f["path"]: f["sha256"] for f in json.loads((bundle / "manifest.json").read_text())["files"]}
    print(json.dumps({"timings_s": timings, "browser_ms": {k: v for k, v in result.items() if k.startswith("t_")},
                      "image_timings_ms": result.get("image", {}).get("timings")}, indent=1))
    return result


def test_loads_the_webgpu_fp32_variant(run):
    load = run["load"]
    assert load["ok"], load.get("error")
    assert load["version"] == "1.0.0"
    assert load["variant"] == "webgpu-float32"  # SwiftShader has no shader-f16
    assert "swiftshader" in load["gpu"].lower()


def test_files_are_checked_and_decoded_in_the_worker_pool(run):
    load, cached = run["load"], run["cachedLoad"]
    needed = [p for p in run["manifest_sha"] if not p.startswith("libs/") or p.startswith("libs/webgpu-float32/")]
    assert load["decodedBy"] == {"worker": len(needed), "thread": 0}
    assert cached["decodedBy"] == {"worker": len(needed), "thread": 0}
    stats = load["stats"]
    assert stats["workers"] >= 1 and "workerError" not in stats
    assert stats["verify"] == "stored" and stats["ms"]["rawSha256"] == 0
    assert stats["decodedInWorkers"] == len(needed) and stats["decodedInThread"] == 0


def test_verify_full_checks_raw_sha256_in_the_workers(run):
    r = run["rawCheck"]
    # A wrong raw_sha256 (stored bytes intact) passes the default checks: they do not hash raw bytes ...
    assert r["stored"]["ok"] and r["stored"]["stats"]["ms"]["rawSha256"] == 0
    assert r["stored"]["stats"]["decodedInThread"] == 0
    # ... and verify "full" refuses it, naming the file.
    full = r["full"]
    assert not full["ok"] and full["file"] == TAMPERED
    assert full["message"] == f"{TAMPERED}: decoded bytes do not match raw_sha256"
    assert "thread" not in r.get("fullDecodedBy", [])
    clean = r["cleanFull"]["stats"]
    assert clean["verify"] == "full" and clean["ms"]["rawSha256"] > 0 and clean["decodedInThread"] == 0


def test_fetches_only_what_the_variant_needs(run):
    # The first load is the only one in a fresh profile: manifest + every file but the native libs.
    needed = [p for p in run["manifest_sha"] if not p.startswith("libs/") or p.startswith("libs/webgpu-float32/")]
    assert run["firstLoadRequests"] == 1 + len(needed)


def test_image_matches_packer_generate(run):
    image = run["image"]
    assert image["ok"], image.get("error")
    web = run["web_float"]
    native = run["native_uint8"]
    assert web.shape == native.shape
    web8 = np.round(web * 255).astype(np.uint8)
    db = psnr(web8, native, 255.0)
    print(f"PSNR web vs packer generate (uint8): {db:.1f} dB; max |diff| {int(np.abs(web8.astype(int) - native).max())}")
    assert db >= 40.0


def test_second_load_comes_from_the_cache(run):
    assert run["cachedLoad"]["ok"], run["cachedLoad"].get("error")
    assert run["cachedLoad"]["version"] == "1.0.0"
    # Only the manifest crossed the network (tag URLs are no-cache, so the HTTP cache cannot hide a miss).
    assert run["cachedLoadRequests"] == [f"/{REPO}/resolve/v1.0.0/manifest.json"]


def test_pinned_version_stays_after_a_new_one_is_published(run):
    v = run["versions"]
    assert v["tag"] == "1.0.0" and v["main"] == "1.1.0"
    assert v["lock"] == "1.0.0"
    assert "manifest.json" in v["badLock"] and "sha256" in v["badLock"]


def test_tampered_shard_is_refused_named_and_not_cached(run):
    t = run["tampered"]
    assert not t["ok"]
    assert TAMPERED in t["error"] and "sha256 mismatch" in t["error"]
    assert t["decodedBy"]["thread"] == 0 and t["decodedBy"]["worker"] > 0  # the worker path refused it
    assert run["tamperedCache"]["cached"] is False
    # A clean retry must fetch that shard again (it was never cached).
    assert any(r.endswith(TAMPERED) for r in run["retryRequests"])
