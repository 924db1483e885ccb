"""One tiny example model per test session, in all three layouts, plus helpers to damage it."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from examples.make_example import make_example
from packer.ingest import ingest


@pytest.fixture(scope="session")
def example(tmp_path_factory) -> dict[str, Path]:
    return make_example(tmp_path_factory.mktemp("example"), seed=0)


@pytest.fixture(scope="session")
def ingested(example) -> dict:
    tok = example["tokenizer"]
    return {
        "diffusers": ingest(example["diffusers"]),
        "safetensors": ingest(example["safetensors"], tokenizer=tok),
        "ckpt": ingest(str(example["ckpt"]), tokenizer=tok),
    }


@pytest.fixture()
def ldm(example) -> dict[str, torch.Tensor]:
    """A fresh copy of the example's LDM state dict, for tests to damage."""
    return load_file(str(example["safetensors"]))


@pytest.fixture()
def write_ldm(tmp_path):
    def write(tensors: dict[str, torch.Tensor], name: str = "bad.safetensors") -> Path:
        path = tmp_path / name
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(path))
        return path

    return write


def forge_safetensors(path: Path, header: dict, data: bytes, *, length: int | None = None) -> Path:
    """A safetensors file with exactly this header and data (the header length may lie)."""
    text = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(text) if length is None else length) + text + data)
    return path
