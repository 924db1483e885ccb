"""Running a webgpu library's ``main`` on a real WebGPU implementation from a test: tvmjs (from
``runtime-web/``'s npm packages) in Deno's wgpu (``tests/compile/webgpu_harness/``), which CI's
Mesa lavapipe backs. Building a wasm library also needs emcc (Debian's emscripten); its runtime
objects are built once per session (tests/conftest.py), or kept in ``SDPACK_WEBGPU_RUNTIME_CACHE``."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
TVMJS = ROOT / "runtime-web" / "node_modules" / "@mlc-ai" / "web-runtime" / "lib" / "index.js"
HARNESS = Path(__file__).parent / "webgpu_harness"
DENO = HARNESS / "node_modules" / "@deno" / "linux-x64-glibc" / "deno"

needs_deno_webgpu = pytest.mark.skipif(
    shutil.which("emcc") is None or not (TVMJS.is_file() and DENO.is_file()),
    reason="needs emcc, `npm ci` in runtime-web/ and tests/compile/webgpu_harness/",
)
"""For tests that build a wasm library and run it in Deno."""


def run_in_deno(
    wasm: Path, arrays: list[np.ndarray], work: Path, n_inputs: int | None = None
) -> np.ndarray:
    """Run ``main(*arrays)`` of ``wasm`` through tvmjs in Deno; the output as float32.

    With ``n_inputs``, the arrays after the first ``n_inputs`` are the library's params: they go
    through ``main_transform_params`` first where the library has it (as runtime-web does)."""
    blob, tensors = bytearray(), []
    for arr in arrays:
        arr = np.ascontiguousarray(arr)
        tensors.append(
            {
                "shape": list(arr.shape),
                "dtype": str(arr.dtype),
                "offset": len(blob),
                "nbytes": arr.nbytes,
            }
        )
        blob += arr.tobytes()
    (work / "args.bin").write_bytes(bytes(blob))
    (work / "request.json").write_text(
        json.dumps({"blob": str(work / "args.bin"), "tensors": tensors, "n_inputs": n_inputs})
    )
    proc = subprocess.run(
        [
            str(DENO),
            "run",
            "--quiet",
            "--unstable-webgpu",
            "--allow-read",
            "--allow-write",
            "--allow-env",
            str(HARNESS / "run.js"),
            str(TVMJS),
            str(wasm),
            str(work / "request.json"),
            str(work / "out.bin"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "DENO_NO_UPDATE_CHECK": "1", "NO_COLOR": "1"},
    )
    assert proc.returncode == 0, f"deno failed: {proc.stderr[-2000:]}"
    info = json.loads(proc.stdout.strip().splitlines()[-1])
    out = np.frombuffer((work / "out.bin").read_bytes(), dtype=info["dtype"])
    return out.reshape(info["shape"]).astype(np.float32)
