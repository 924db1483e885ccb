"""Packed tiny example bundles shared by the runtime tests (built once per session)."""

from __future__ import annotations

from pathlib import Path

import pytest

from examples.make_example import make_example
from packer.interface.pack import PackArgs, pack


@pytest.fixture(scope="session")
def example(tmp_path_factory) -> dict[str, Path]:
    return make_example(tmp_path_factory.mktemp("example"))


@pytest.fixture(scope="session")
def lib_cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("sdpack-cache")


@pytest.fixture(scope="session")
def packed(example, lib_cache, tmp_path_factory):
    """``packed(layout, dtype)`` → bundle dir, packed once per (layout, dtype)."""
    import os

    os.environ["SDPACK_CACHE"] = str(lib_cache)
    built: dict[tuple[str, str], Path] = {}

    def get(layout: str = "safetensors", dtype: str = "fp32") -> Path:
        if (layout, dtype) not in built:
            out = tmp_path_factory.mktemp("bundles") / f"{layout}-{dtype}"
            pack(
                PackArgs(
                    str(example[layout]),
                    out,
                    ["llvm"],
                    dtype,
                    "1.0.0",
                    "sdpack/tiny-sd15",
                    tokenizer=example["tokenizer"],
                    image_size=64,
                )
            )
            built[(layout, dtype)] = out
        return built[(layout, dtype)]

    return get
