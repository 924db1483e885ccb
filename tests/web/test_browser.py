"""The web runtime in a real browser: headless Chromium (WebGPU on SwiftShader) runs the demo page
and a small app built from the ``npm pack`` tarball (tests/web/package_app.py) against a directory
hub served Hub-style; their images are compared with ``packer generate``, and the PNGs they save
are read back with Pillow.

One module fixture does the slow part once — the tiny example published as v1.0.0 with the
default variants (webgpu float16 and float32, llvm float32, over float16 weights) and as v1.1.0
quantized (q4f16, the same variants), the
demo and the app built, both servers started, one Playwright run
(runtime-web/test/browser/run.mjs) — and each test checks one promise of its result. The demo
loads the model by commit URL into a fresh profile's cache; the app, from the same origin, loads
it by ``ORG/NAME@VERSION`` in a model worker, every file from that cache (so the one GPU load
more that the package test costs is also the cached-load test).
Skipped (with the reason) only where Chromium, node or the npm packages are missing.
"""

from __future__ import annotations

import base64
import functools
import io
import json
import os
import shutil
import struct
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
REQUEST = {
    "prompt": "a red cube on a table",
    "negativePrompt": "blurry",
    "seed": 1234,
    "steps": 4,
    "guidance": 7.5,
    "scheduler": "dpm++",
}
TAMPERED = "weights/unet/params_shard_0.bin.zst"
RUNTIME_VERSION = json.loads((WEB / "package.json").read_text())["version"]


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
    done = subprocess.run(
        [sys.executable, "-m", "packer", *args], cwd=cwd, capture_output=True, text=True
    )
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
            self._answer(
                200, {"Content-Type": "application/json", "Cache-Control": "no-store"}, len(body)
            )
            self.wfile.write(body)
            return
        log.append(self.path)
        base.do_GET(self)

    server.RequestHandlerClass = type("LoggedHubHandler", (base,), {"do_GET": do_GET})
    return server


class _Quiet(SimpleHTTPRequestHandler):
    """runtime-web's folder, and the packaged app under /pkg/ (one origin: one content cache)."""

    app: Path

    def translate_path(self, path):
        if path.startswith("/pkg/"):
            return str(self.app / path[len("/pkg/") :].split("?", 1)[0])
        return super().translate_path(path)

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
    build = subprocess.run(
        ["npm", "run", "--silent", "build:demo"], cwd=WEB, capture_output=True, text=True
    )
    assert build.returncode == 0, build.stdout[-2000:] + build.stderr[-2000:]
    timings["build_demo"] = time.perf_counter() - start

    from examples.make_example import make_example

    example = make_example(tmp / "example")
    hub = tmp / "hub"
    publish = [
        "publish",
        REPO,
        "--checkpoint",
        str(example["safetensors"]),
        "--tokenizer",
        str(example["tokenizer"]),
        "--image-size",
        "64",
        "--hub",
        str(hub),
    ]  # the default variants: what a user publishes
    _packer(*publish, "--version", "1.0.0")
    timings["publish"] = time.perf_counter() - start
    pin = json.loads(_packer("resolve", f"{REPO}@1.0.0", "--endpoint", str(hub)))
    # the newer version is the same model quantized (q4f16): a user's smaller download
    _packer(*publish, "--version", "1.1.0", "--quantize", "q4f16")
    timings["publish_2"] = time.perf_counter() - start

    def pull_and_generate(version: str, name: str) -> tuple[Path, Path]:
        """``packer pull`` of ``version``, then ``packer generate`` of REQUEST on it: the bundle
        and the PNG."""
        bundle = tmp / f"bundle-{name}"
        _packer("pull", f"{REPO}@{version}", "--endpoint", str(hub), "--out", str(bundle))
        png = tmp / f"native-{name}.png"
        _packer(
            "generate",
            str(bundle),
            "--prompt",
            REQUEST["prompt"],
            "--negative-prompt",
            REQUEST["negativePrompt"],
            "--seed",
            str(REQUEST["seed"]),
            "--steps",
            str(REQUEST["steps"]),
            "--guidance",
            str(REQUEST["guidance"]),
            "--scheduler",
            REQUEST["scheduler"],
            "--out",
            str(png),
        )
        return bundle, png

    bundle, native_png = pull_and_generate("1.0.0", "float16")
    _, quant_png = pull_and_generate("1.1.0", "q4f16")
    timings["native"] = time.perf_counter() - start

    from tests.web.package_app import build_packaged_app

    app = build_packaged_app(tmp / "package")
    timings["package_app"] = time.perf_counter() - start

    hub_server = _hub_server(hub)
    static = ThreadingHTTPServer(
        ("127.0.0.1", 0),
        functools.partial(type("Static", (_Quiet,), {"app": app}), directory=str(WEB)),
    )
    try:
        hub_url = _serve_in_thread(hub_server)
        static_url = _serve_in_thread(static)
        commit = pin["commit"]
        config = {
            "chromium": CHROMIUM,
            "demoUrl": f"{static_url}/demo/index.html",
            "appUrl": f"{static_url}/pkg/index.html",
            "hubUrl": hub_url,
            "repo": REPO,
            "commit": commit,
            "version": "1.0.0",
            "quantizedVersion": "1.1.0",
            "request": REQUEST,
            "tamperPath": TAMPERED,
            "timeoutMs": 150_000,
            "lock": {
                "lock_version": 1,
                "repo": REPO,
                "version": "1.0.0",
                "commit": commit,
                "manifest_sha256": pin["manifest_sha256"],
                "endpoint": hub_url,
            },
        }
        (tmp / "config.json").write_text(json.dumps(config))
        done = subprocess.run(
            ["node", "test/browser/run.mjs", str(tmp / "config.json")],
            cwd=WEB,
            capture_output=True,
            text=True,
            timeout=420,
        )
    finally:
        hub_server.shutdown()
        static.shutdown()
    timings["browser"] = time.perf_counter() - start
    lines = done.stdout.strip().splitlines()
    assert done.returncode == 0 and lines, (
        f"browser run failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    )
    result = json.loads(lines[-1])
    assert "fatal" not in result, result["fatal"] + "\n" + "\n".join(result["console"][-20:])
    result["timings"] = timings

    from PIL import Image

    result["native_uint8"] = np.asarray(Image.open(native_png).convert("RGB"))
    result["native_q4f16_uint8"] = np.asarray(Image.open(quant_png).convert("RGB"))
    for key, image in (
        ("web_float", result.get("image", {})),
        ("app_float", result.get("app", {}).get("image", {})),
        ("quant_float", result.get("quantized", {}).get("image", {})),
    ):
        if "float_b64" in image:
            flat = np.frombuffer(base64.b64decode(image["float_b64"]), dtype="<f4")
            result[key] = flat.reshape(image["height"], image["width"], 3)
    result["commit"] = pin["commit"]
    result["manifest_sha"] = {
        f["path"]: f["sha256"] for f in json.loads((bundle / "manifest.json").read_text())["files"]
    }
    print(
        json.dumps(
            {
                "timings_s": timings,
                "browser_ms": {k: v for k, v in result.items() if k.startswith("t_")},
                "image_timings_ms": result.get("image", {}).get("timings"),
                "app_image_timings_ms": result.get("app", {}).get("image", {}).get("timings"),
            },
            indent=1,
        )
    )
    return result


def test_loads_the_webgpu_fp32_variant(run):
    load = run["load"]
    assert load["ok"], load.get("error")
    assert load["version"] == "1.0.0"
    assert load["variant"] == "webgpu-float32"  # SwiftShader has no shader-f16
    assert "swiftshader" in load["gpu"].lower()


def _needed(run) -> list[str]:
    """The files a webgpu-float32 load takes: all but the other targets' libraries."""
    return [
        p
        for p in run["manifest_sha"]
        if not p.startswith("libs/") or p.startswith("libs/webgpu-float32/")
    ]


def test_files_are_checked_and_decoded_in_the_worker_pool(run):
    load, cached = run["load"], run["app"]  # the app's decode workers run inside its model worker
    needed = _needed(run)
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
    assert (
        clean["verify"] == "full" and clean["ms"]["rawSha256"] > 0 and clean["decodedInThread"] == 0
    )


def test_fetches_only_what_the_variant_needs(run):
    # The first load is the only one in a fresh profile: manifest + every file but the native libs.
    assert run["firstLoadRequests"] == 1 + len(_needed(run))


@pytest.mark.parametrize("source", ["demo", "app"])
def test_image_matches_packer_generate(run, source):
    image = run["image"] if source == "demo" else run["app"]
    assert image["ok"], image.get("error")
    web = run["web_float" if source == "demo" else "app_float"]
    native = run["native_uint8"]
    assert web.shape == native.shape
    web8 = np.round(web * 255).astype(np.uint8)
    db = psnr(web8, native, 255.0)
    print(
        f"PSNR {source} vs packer generate (uint8): {db:.1f} dB; max |diff| {int(np.abs(web8.astype(int) - native).max())}"
    )
    assert db >= 40.0


def test_quantized_version_loads_and_matches_packer_generate(run):
    """v1.1.0 is the model published with --quantize q4f16: the demo loads it by its version tag,
    uploads the packed codes as stored, and its image is `packer generate`'s on the same bundle
    (llvm float32 kernels decoding the same codes); the float16 model's image differs from it by
    the quantization only."""
    q = run["quantized"]
    assert q["load"]["ok"], q["load"].get("error")
    assert q["load"]["version"] == "1.1.0"
    assert q["load"]["variant"] == run["load"]["variant"]  # the same choice as for float16
    assert q["image"]["ok"], q["image"].get("error")
    web8 = np.round(run["quant_float"] * 255).astype(np.uint8)
    native = run["native_q4f16_uint8"]
    db = psnr(web8, native, 255.0)
    vs_float16 = psnr(web8, run["native_uint8"], 255.0)
    print(
        f"PSNR q4f16 demo vs packer generate: {db:.1f} dB; vs the float16 model: {vs_float16:.1f} dB"
    )
    assert db >= 40.0
    assert vs_float16 < db  # the quantized weights were used, not the float16 ones


def test_the_packaged_app_loads_by_version_in_a_worker_from_the_cache(run):
    app = run["app"]
    assert app["ok"], app.get("error")
    assert (app["modelId"], app["variant"], app["commit"]) == (
        f"{REPO}@1.0.0",
        "webgpu-float32",
        run["commit"],
    )
    # The version resolved through the Hub API (once for the load, once for hasModelInCache), then
    # the manifest by commit (which the browser's HTTP cache may answer: commit URLs are immutable);
    # every other file came from the content cache the demo filled.
    manifest = f"/{REPO}/resolve/{run['commit']}/manifest.json"
    assert [r for r in run["appRequests"] if r != manifest] == [
        f"/api/models/{REPO}/revision/v1.0.0"
    ] * 2
    assert app["stats"]["fromCache"] == len(_needed(run))
    assert app["steps"] == [[i, 4] for i in range(1, 5)]  # onStep forwarded from the worker
    assert app["inCache"] is True
    assert (
        isinstance(app["storage"]["persisted"], bool)
        and app["storage"]["usage"] > 0
        and app["storage"]["quota"] > 0
    )


def _monotone_to_one(fractions: list[float]) -> bool:
    return (
        bool(fractions)
        and all(0 <= a <= b <= 1 for a, b in zip(fractions, fractions[1:]))
        and fractions[-1] == 1
    )


def test_load_progress_is_one_fraction_that_never_goes_back(run):
    assert _monotone_to_one(run["load"]["progress"])
    events = run["app"]["progress"]
    assert _monotone_to_one([e["progress"] for e in events])
    assert events[0]["phase"] == "resolve" and events[0]["text"].startswith(
        f"Resolving {REPO}@1.0.0 on http://"
    )
    assert (
        all(e["text"] for e in events)
        and events[-1]["text"] == "Ready: sdpack/tiny 1.0.0 (webgpu-float32)"
    )


def _png_text_chunks(png: bytes) -> list[tuple[bytes, bytes]]:
    """(type, data) of every chunk, read directly from the bytes."""
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    chunks, at = [], 8
    while at < len(png):
        (n,) = struct.unpack(">I", png[at : at + 4])
        chunks.append((png[at + 4 : at + 8], png[at + 8 : at + 8 + n]))
        at += 12 + n
    return chunks


@pytest.mark.parametrize("source", ["demo", "app"])
def test_saved_png_carries_the_parameters_and_the_pixels(run, source):
    from PIL import Image

    png = base64.b64decode(run["saved"]["png_b64"] if source == "demo" else run["app"]["png_b64"])
    image = Image.open(io.BytesIO(png))
    parameters = (
        "a red cube on a table\nNegative prompt: blurry\nSteps: 4, Sampler: dpm++, CFG scale: 7.5, Seed: 1234, "
        "Size: 64x64, Model: sdpack/tiny@1.0.0"
    )
    assert image.text == {
        "prompt": REQUEST["prompt"],
        "negative_prompt": REQUEST["negativePrompt"],
        "seed": "1234",
        "steps": "4",
        "guidance": "7.5",
        "scheduler": "dpm++",
        "model": f"{REPO}@1.0.0",
        "commit": run["commit"],
        "width": "64",
        "height": "64",
        "variant": "webgpu-float32",
        "Software": f"sdpack runtime-web {RUNTIME_VERSION}",
        "parameters": parameters,
    }
    types = [t for t, _ in _png_text_chunks(png)]
    assert (
        types[:14] == [b"IHDR"] + [b"iTXt"] * 13 and types[14] == b"IDAT"
    )  # every text chunk before the first IDAT
    web = run["web_float" if source == "demo" else "app_float"]
    assert np.array_equal(np.asarray(image.convert("RGB")), np.round(web * 255).astype(np.uint8))
    if source == "demo":
        saved = run["saved"]
        assert saved["images"] == 1 and saved["name"] == "sdpack-1234-1.png"
        assert (
            "seed1234" in saved["text"] and "variantwebgpu-float32" in saved["text"]
        )  # the gallery shows the parameters


def test_deleting_the_model_leaves_nothing_of_it_in_the_cache(run):
    forget = run["forget"]
    # Cached by then: every file of v1.0.0 (the lock record's loadBundleFiles took the native libraries too).
    assert forget["deleted"] == {"deleted": len(set(run["manifest_sha"].values())), "kept": 0}
    assert forget["inCache"] is False and forget["left"] == 0


def test_pinned_version_stays_after_a_new_one_is_published(run):
    v = run["versions"]
    assert v["tag"] == "1.0.0" and v["main"] == "1.1.0"
    assert v["lock"] == "1.0.0"
    assert "manifest.json" in v["badLock"] and "sha256" in v["badLock"]
    assert v["badSpec"].startswith(
        f'BundleError: model "{REPO}@latest": "latest" is neither a version'
    )


def test_tampered_shard_is_refused_named_and_not_cached(run):
    t = run["tampered"]
    assert not t["ok"]
    assert TAMPERED in t["error"] and "sha256 mismatch" in t["error"]
    assert (
        t["decodedBy"]["thread"] == 0 and t["decodedBy"]["worker"] > 0
    )  # the worker path refused it
    assert run["tamperedCache"]["cached"] is False
    # A clean retry must fetch that shard again (it was never cached).
    assert any(r.endswith(TAMPERED) for r in run["retryRequests"])
