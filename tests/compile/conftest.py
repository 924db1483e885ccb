"""Fixtures for the compile-stage tests (models and helpers live in ``tiny.py``)."""

from __future__ import annotations

import os

import pytest


@pytest.fixture(scope="session")
def shared_cache(tmp_path_factory):
    """One cache for the session: the fidelity builds are reused by the cache-reuse tests."""
    return tmp_path_factory.mktemp("sdpack-cache")


@pytest.fixture(autouse=True)
def _no_home_cache(monkeypatch, tmp_path):
    """Never write to the real ~/.cache/sdpack from tests."""
    monkeypatch.setenv("SDPACK_CACHE", str(tmp_path / "default-cache"))
    monkeypatch.setenv("SDPACK_NO_PROGRESS", "1")


@pytest.fixture
def webgpu_runtime_cache(tmp_path_factory, monkeypatch):
    """``SDPACK_WEBGPU_RUNTIME_CACHE`` for the test: the directory given, else one per session,
    so the wasm runtime objects are built once."""
    cache = os.environ.get("SDPACK_WEBGPU_RUNTIME_CACHE") or str(
        tmp_path_factory.getbasetemp() / "webgpu-runtime"
    )
    monkeypatch.setenv("SDPACK_WEBGPU_RUNTIME_CACHE", cache)
    return cache
