"""The web loader under faults in a real browser: headless Chromium loads the tiny example
bundle with runtime-web's ``loadBundleFiles`` and the Cache API, through a fault-injecting HTTP
server. For every fault: a clear error that names the file (or a load that recovers), no Cache
API entry for the bad file, and a later normal load whose files all verify. Then each cache
backend (Cache API, OPFS, IndexedDB) with one entry damaged in place: refetched, never used.

One module fixture packs the tiny example once (weights-only loads: the libraries are not
fetched), starts the server, and runs runtime-web/test/browser/faults.mjs once; each test checks
one scenario of its result. Skipped (with the reason) only where Chromium, node or the npm
packages are missing.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
WEB = ROOT / "runtime-web"
CHROMIUM = os.environ.get("SDPACK_CHROMIUM", "/usr/bin/chromium")
TARGET = "weights/unet/params_shard_1.bin.zst"  # the file the faults hit
OTHER = (
    "weights/vae_decoder/params_shard_0.bin.zst"  # larger: its first bytes are the "wrong content"
)
QUOTA = 2_000_000  # bytes of storage the quota scenario allows the origin (the weights are ~7 MB)


def _missing() -> str | None:
    if not Path(CHROMIUM).is_file():
        return f"{CHROMIUM} not found (apt-get install chromium, or set SDPACK_CHROMIUM)"
    if shutil.which("node") is None or shutil.which("npm") is None:
        return "node/npm not found"
    for package in ("playwright-core", "esbuild"):
        if not (WEB / "node_modules" / package).is_dir():
            return f"runtime-web/node_modules lacks {package} (cd runtime-web && npm ci)"
    return None


pytestmark = pytest.mark.skipif(_missing() is not None, reason=_missing() or "")


class FaultServer(ThreadingHTTPServer):
    """127.0.0.1, an ephemeral port, CORS, ``no-store``. Routes: ``/page/…`` (the test page),
    ``/bundle/…`` (the bundle, through the faults), ``POST /__faults`` (replace the faults and
    clear the log), ``GET /__log`` (the bundle requests since).

    A fault is ``{"kind": K, "times": N}`` for one bundle path (``times`` absent: every request):
    ``short`` (half the body, honest Content-Length), ``cut`` (full Content-Length, half the body,
    connection closed), ``404``, ``503``, ``wrong`` (the first bytes of ``other``, the right
    length), ``stall`` (half the body, then nothing until the faults change).
    """

    daemon_threads = True

    def __init__(self, bundle: Path, page: Path):
        super().__init__(("127.0.0.1", 0), _FaultHandler)
        self.bundle, self.page = bundle.resolve(), page.resolve()
        self.lock = threading.Lock()
        self.faults: dict[str, dict] = {}
        self.log: list[dict] = []
        self.release = threading.Event()

    def set_faults(self, faults: dict[str, dict]) -> None:
        with self.lock:
            self.release.set()  # stalled answers may end now
            self.release = threading.Event()
            self.faults, self.log = faults, []

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}"


class _FaultHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: FaultServer

    def log_message(self, format, *args):  # noqa: A002
        pass

    def _head(
        self, status: int, length: int, content_type: str = "application/octet-stream"
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(length))
        self.send_header("Cache-Control", "no-store")
        self.send_header("Access-Control-Allow-Origin", "*")
        self.end_headers()

    def _send(
        self, status: int, body: bytes, content_type: str = "application/octet-stream"
    ) -> None:
        self._head(status, len(body), content_type)
        self.wfile.write(body)

    def do_OPTIONS(self):  # noqa: N802 - http.server's naming
        self.send_response(204)
        self.send_header("Access-Control-Allow-Origin", "*")
        self.send_header("Access-Control-Allow-Methods", "GET, POST")
        self.send_header("Access-Control-Allow-Headers", "content-type")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_POST(self):  # noqa: N802
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        if self.path != "/__faults":
            return self._send(404, b"")
        self.server.set_faults(json.loads(body or b"{}"))
        self._send(200, b"{}", "application/json")

    def do_GET(self):  # noqa: N802
        path = urllib.parse.unquote(self.path.split("?", 1)[0])
        if path == "/__log":
            with self.server.lock:
                body = json.dumps({"requests": list(self.server.log)}).encode()
            return self._send(200, body, "application/json")
        for prefix, root in (("/page/", self.server.page), ("/bundle/", self.server.bundle)):
            if path.startswith(prefix):
                rel = path[len(prefix) :]
                file = (root / rel).resolve()
                if not file.is_relative_to(root) or not file.is_file():
                    return self._send(404, b"not found", "text/plain")
                if prefix == "/page/":
                    kind = {".js": "text/javascript", ".html": "text/html"}.get(
                        file.suffix, "application/octet-stream"
                    )
                    return self._send(200, file.read_bytes(), kind)
                return self._bundle_file(rel, file.read_bytes())
        self._send(404, b"not found", "text/plain")

    def _bundle_file(self, rel: str, body: bytes) -> None:
        srv = self.server
        with srv.lock:
            srv.log.append({"path": rel, "t": time.monotonic()})
            n = sum(1 for r in srv.log if r["path"] == rel)
            fault = srv.faults.get(rel)
            release = srv.release
        if fault and fault.get("times") is not None and n > fault["times"]:
            fault = None
        kind = fault["kind"] if fault else None
        half = body[: len(body) // 2]
        if kind is None:
            self._send(200, body)
        elif kind in ("404", "503"):
            self._send(int(kind), b"fault injected by the test", "text/plain")
        elif kind == "short":
            self._send(200, half)
        elif kind == "wrong":
            other = (srv.bundle / fault["other"]).read_bytes()[: len(body)]
            assert len(other) == len(body)
            self._send(200, other)
        elif kind in ("cut", "stall"):
            self._head(200, len(body))
            self.wfile.write(half)
            self.wfile.flush()
            if kind == "stall":
                release.wait(60)
            self.close_connection = True
        else:
            raise ValueError(f"unknown fault {kind!r}")


def _packer(*args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "packer", *args], cwd=ROOT, capture_output=True, text=True
    )
    assert done.returncode == 0, f"packer {' '.join(args)} failed:\n{done.stderr[-3000:]}"
    return done.stdout


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    start = time.perf_counter()
    tmp = tmp_path_factory.mktemp("web-faults")
    if not (WEB / "src" / "generated" / "validators.ts").exists():
        subprocess.run(["npm", "run", "--silent", "generate"], cwd=WEB, check=True)

    from examples.make_example import make_example

    example = make_example(tmp / "example")
    bundle = tmp / "bundle"
    _packer(
        "pack",
        str(example["safetensors"]),
        "--tokenizer",
        str(example["tokenizer"]),
        "--image-size",
        "64",
        "--shard-mb",
        "1",
        "--targets",
        "llvm",
        "--dtype",
        "fp32",
        "--out",
        str(bundle),
    )
    pack_s = time.perf_counter() - start
    manifest = json.loads((bundle / "manifest.json").read_text())

    server = FaultServer(bundle, tmp / "page")
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        config = {
            "chromium": CHROMIUM,
            "server": server.url,
            "pageDir": str(tmp / "page"),
            "target": TARGET,
            "other": OTHER,
            "quotaBytes": QUOTA,
            "timeoutMs": 60_000,
        }
        (tmp / "config.json").write_text(json.dumps(config))
        done = subprocess.run(
            ["node", "test/browser/faults.mjs", str(tmp / "config.json")],
            cwd=WEB,
            capture_output=True,
            text=True,
            timeout=180,
        )
    finally:
        server.set_faults({})
        server.shutdown()
    lines = done.stdout.strip().splitlines()
    assert done.returncode == 0 and lines, (
        f"browser run failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    )
    result = json.loads(lines[-1])
    assert "fatal" not in result, result["fatal"] + "\n" + "\n".join(result["console"][-20:])
    result["entries"] = {
        f["path"]: f for f in manifest["files"] if not f["path"].startswith("libs/")
    }
    (tmp / "result.json").write_text(json.dumps(result))
    print(
        json.dumps(
            {
                "pack_s": round(pack_s, 1),
                "browser_ms": result["t_total_ms"],
                "scenario_ms": {k: v["ms"] for k, v in result["scenarios"].items()},
                "backend_ms": {k: v.get("ms") for k, v in result.get("backends", {}).items()},
            }
        )
    )
    return result


def _scenario(run, name: str) -> dict:
    s = run["scenarios"][name]
    assert "fatal" not in s, s["fatal"] + "\n" + "\n".join(run["console"][-20:])
    return s


def _requests(log: list[dict], path: str) -> list[float]:
    return [r["t"] for r in log if r["path"] == path]


def _check_clean_load(run, s: dict, refetched: bool) -> None:
    """The later normal load: succeeds, every file verifies, the cache holds every file."""
    clean, entries = s["clean"], run["entries"]
    assert clean["ok"], clean.get("error")
    assert clean["warnings"] == []
    assert set(clean["files"]) == set(entries)
    for path, digest in clean["files"].items():
        entry = entries[path]
        assert digest == (
            entry["encoding"]["raw_sha256"] if entry.get("encoding") else entry["sha256"]
        ), path
    assert set(clean["cached"]) == {e["sha256"] for e in entries.values()}
    assert len(_requests(s["cleanRequests"], TARGET)) == (1 if refetched else 0)
    # Every file was checked and decoded in the loader's decode worker, none on the page's thread.
    assert clean["decodedBy"] == {"worker": len(entries), "thread": 0}


def _check_failed(run, s: dict, message: str, requests: int) -> dict:
    """The faulty load failed with `message` (a regex) about TARGET, which is not cached."""
    faulty = s["faulty"]
    assert not faulty["ok"], "the faulty load succeeded"
    error = faulty["error"]
    assert error["file"] == TARGET
    assert re.fullmatch(message, error["message"]), error["message"]
    assert run["entries"][TARGET]["sha256"] not in faulty["cached"]
    assert len(_requests(s["faultyRequests"], TARGET)) == requests
    assert faulty["decodedBy"]["thread"] == 0
    _check_clean_load(run, s, refetched=True)
    return error


TARGET_RE = TARGET.replace(".", r"\.")


def test_truncated_body_is_refused_named_and_not_retried(run):
    error = _check_failed(
        run,
        _scenario(run, "truncated"),
        rf"{TARGET_RE}: size \d+ != \d+ in the manifest",
        requests=1,
    )
    assert "damaged" in error["hint"]


def test_connection_cut_mid_body_is_retried(run):
    s = _scenario(run, "connection_cut_once")
    assert s["faulty"]["ok"], s["faulty"].get("error")
    assert len(_requests(s["faultyRequests"], TARGET)) == 2
    assert run["entries"][TARGET]["sha256"] in s["faulty"]["cached"]
    _check_clean_load(run, s, refetched=False)


def test_connection_cut_every_time_gives_up_naming_the_file(run):
    broke = rf"{TARGET_RE}: the connection broke after \d+ bytes of http://.*/{TARGET_RE} \(.+\); gave up after 4 tries"
    error = _check_failed(run, _scenario(run, "connection_cut_always"), broke, requests=4)
    assert "network" in error["hint"]


def test_404_is_named_and_not_retried(run):
    error = _check_failed(
        run,
        _scenario(run, "not_found"),
        rf"{TARGET_RE}: HTTP 404 Not Found from http://.*/{TARGET_RE}",
        requests=1,
    )
    assert "URL" in error["hint"]


def test_503_twice_then_success_after_backoff(run):
    s = _scenario(run, "unavailable_twice")
    assert s["faulty"]["ok"], s["faulty"].get("error")
    times = _requests(s["faultyRequests"], TARGET)
    assert len(times) == 3
    gaps = [b - a for a, b in zip(times, times[1:])]
    assert gaps[0] >= 0.19 and gaps[1] >= 0.39, gaps  # the default backoff: 200 ms, then 400 ms
    assert run["entries"][TARGET]["sha256"] in s["faulty"]["cached"]
    _check_clean_load(run, s, refetched=False)


def test_wrong_content_of_the_right_length_is_refused(run):
    s = _scenario(run, "wrong_content")
    error = _check_failed(run, s, rf"{TARGET_RE}: sha256 mismatch", requests=1)
    assert "tampered" in error["hint"]
    assert error["name"] == "BundleError"  # rebuilt from the worker's answer, file and hint kept


def test_abort_mid_file(run):
    error = _check_failed(
        run,
        _scenario(run, "aborted"),
        rf"{TARGET_RE}: loading aborted \(.+\); the file was not cached",
        requests=1,
    )
    assert error["name"] == "AbortError"


def test_quota_exceeded_still_loads_and_caches_nothing_partial(run):
    s = _scenario(run, "quota")
    # (navigator.storage.estimate() does not show the override; the QuotaExceededErrors below do.)
    faulty, entries = s["faulty"], run["entries"]
    assert faulty["ok"], faulty.get("error")
    # The verified bytes were used: every file is there and verifies.
    for path, digest in faulty["files"].items():
        entry = entries[path]
        assert digest == (
            entry["encoding"]["raw_sha256"] if entry.get("encoding") else entry["sha256"]
        ), path
    assert set(faulty["files"]) == set(entries)
    # Some files did not fit: one warning each (also through onProgress), a real QuotaExceededError.
    warned = {w["file"] for w in faulty["warnings"]}
    assert warned, "nothing exceeded the quota"
    assert sorted(faulty["progressWarnings"]) == sorted(w["message"] for w in faulty["warnings"])
    for w in faulty["warnings"]:
        assert w["cause"] == "QuotaExceededError"
        assert w["message"].startswith(
            f"{w['file']}: verified and used but not cached: the browser's storage quota is exceeded"
        )
    # The cache holds exactly the files that were cached, none of the others (nothing partial).
    cached = set(faulty["cached"])
    assert cached == {entries[p]["sha256"] for p in set(entries) - warned}
    assert sum(entries[p]["size"] for p in set(entries) - warned) <= QUOTA
    # With the normal quota again: the rest is fetched, the cached ones are not.
    clean = s["clean"]
    assert clean["ok"], clean.get("error")
    assert {r["path"] for r in s["cleanRequests"]} == {"manifest.json", *warned}
    assert set(clean["cached"]) == {e["sha256"] for e in entries.values()}


@pytest.mark.parametrize("backend", ["cache-api", "opfs", "indexeddb"])
def test_each_cache_backend_refetches_a_damaged_entry_and_deletes_a_model(run, backend):
    r = run["backends"][backend]
    assert "fatal" not in r, r.get("fatal", "") + "\n" + "\n".join(run["console"][-20:])
    entries = run["entries"]
    assert (
        r["entries"] == len(entries)
        and r["cachedAfterFirst"] == len(entries)
        and r["fromCacheFirst"] == 0
    )
    # The damaged entry was not used: that one file was fetched again, every other came from the cache ...
    assert r["requests"].count(TARGET) == 2 and r["second"]["fromCache"] == len(entries) - 1
    assert sorted(r["requests"]) == sorted(
        ["manifest.json", *entries, "manifest.json", TARGET, "manifest.json"]
    )
    for path, digest in r["second"]["files"].items():
        entry = entries[path]
        assert digest == (
            entry["encoding"]["raw_sha256"] if entry.get("encoding") else entry["sha256"]
        ), path
    # ... and stored whole again in its place.
    assert r["repairedSha"] == entries[TARGET]["sha256"]
    # deleteModelFromCache (reading the manifest once more) removed every file of the bundle.
    assert r["deleted"] == {"deleted": len(entries), "kept": 0} and r["cachedAfterDelete"] == 0
