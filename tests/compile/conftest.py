"""Fixtures for the compile-stage tests (models and helpers live in ``tiny.py``)."""

from __future__ import annotations

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
