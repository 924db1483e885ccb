"""Session-wide settings for every suite."""

from __future__ import annotations

import os

import pytest


@pytest.fixture(scope="session", autouse=True)
def one_webgpu_runtime_cache(tmp_path_factory):
    """Every test, and every `packer` process a test starts, shares one set of WebGPU runtime
    objects (TVM's wasm runtime built with emscripten: about 90 s on one core), unless
    ``SDPACK_WEBGPU_RUNTIME_CACHE`` already names a directory."""
    if os.environ.get("SDPACK_WEBGPU_RUNTIME_CACHE"):
        yield
        return
    os.environ["SDPACK_WEBGPU_RUNTIME_CACHE"] = str(tmp_path_factory.mktemp("webgpu-runtime"))
    yield
    del os.environ["SDPACK_WEBGPU_RUNTIME_CACHE"]
