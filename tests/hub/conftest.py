"""Fixtures for the hub tests: the test Hub server, an isolated client environment, bundles.

The client reads its environment at import time (cache paths, HF_HUB_DISABLE_XET), so besides
setting the variables we patch the values it already read. Its retry backoff sleeps up to 23 s
per failing call; tests make those sleeps instant (the retries themselves still happen).
"""

from __future__ import annotations

import types
from pathlib import Path

import numpy as np
import pytest

from packer.bundle import BundleWriter
from tests.hub_server.fixtures import ALICE_TOKEN, BOB_TOKEN, hub_server  # noqa: F401 - fixtures

__all__ = ["ALICE_TOKEN", "BOB_TOKEN", "make_bundle"]


@pytest.fixture
def hf_env(monkeypatch, tmp_path):
    """A client with no token, no cache and no endpoint of its own; Xet off, offline mode off."""
    import time

    from huggingface_hub import constants
    from huggingface_hub.utils import _http

    home = tmp_path / "hf-home"
    home.mkdir()
    for var in (
        "HF_HUB_OFFLINE",
        "HF_TOKEN",
        "HUGGING_FACE_HUB_TOKEN",
        "HF_ENDPOINT",
        "TRANSFORMERS_OFFLINE",
    ):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HF_HUB_DISABLE_XET", "1")
    monkeypatch.setenv("HF_HOME", str(home))
    monkeypatch.setenv("SDPACK_NO_PROGRESS", "1")
    patched = {
        "HF_HUB_DISABLE_XET": True,
        "HF_HUB_OFFLINE": False,
        "HF_HOME": str(home),
        "HF_HUB_CACHE": str(home / "hub"),
        "HF_ASSETS_CACHE": str(home / "assets"),
        "HF_XET_CACHE": str(home / "xet"),
        "HF_TOKEN_PATH": str(home / "token"),
        "HF_STORED_TOKENS_PATH": str(home / "stored_tokens"),
    }
    for name, value in patched.items():
        monkeypatch.setattr(constants, name, value)
    monkeypatch.setattr(_http, "time", types.SimpleNamespace(sleep=lambda s: None, time=time.time))
    return home


def params(seed: int, changed: int | None = None, count: int = 12) -> list[tuple[str, np.ndarray]]:
    """``count`` small float16 tensors; ``changed`` replaces one tensor (so exactly one shard differs)."""
    rng = np.random.default_rng(seed)
    out = [
        (f"block{i}.weight", rng.standard_normal((24, 24)).astype("float16")) for i in range(count)
    ]
    if changed is not None:
        name, old = out[changed]
        out[changed] = (name, (old + 1).astype("float16"))
    return out


def make_bundle(
    out: Path,
    repo: str = "sdpack/tiny-sd",
    version: str = "1.0.0",
    changed: int | None = None,
    count: int = 12,
) -> Path:
    """A small valid bundle with several LFS-sized .zst shards and a few regular files."""
    with BundleWriter(out, shard_bytes=4096) as w:
        index, names = w.add_weights("unet", params(0, changed, count))
        w.add_bytes("tokenizer/vocab.json", b'{"a": 0, "b": 1}\n')
        w.add_bytes("tokenizer/merges.txt", b"#version: 0.2\na b\n")
        w.commit(
            {
                "model": {
                    "id": repo,
                    "version": version,
                    "license": "creativeml-openrail-m",
                    "base_model": "stable-diffusion-v1-5/stable-diffusion-v1-5",
                },
                "source": {
                    "name": "synthetic.safetensors",
                    "format": "synthetic",
                    "sha256": "0" * 64,
                },
                "architecture": {
                    "family": "sd1",
                    "signature": "1" * 64,
                    "prediction_type": "epsilon",
                    "configs": {},
                    "latent": {
                        "channels": 4,
                        "height": 8,
                        "width": 8,
                        "scaling_factor": 0.18215,
                        "vae_scale": 8,
                    },
                },
                "dtype": "float16",
                "components": {"unet": {"weights": index, "params": names, "inputs": []}},
                "targets": {},
                "tokenizer": {
                    "files": ["tokenizer/vocab.json", "tokenizer/merges.txt"],
                    "max_length": 77,
                },
                "scheduler": {"default": "dpm++", "steps": 20, "guidance": 7.5, "config": {}},
                "noise": {"generator": "philox4x32-10/box-muller", "version": 1},
                "generator": {
                    "sdpack": "0.1.0",
                    "apache_tvm": "0.27.0.post1",
                    "tvm_ffi": "0.1.14.post1",
                    "pipeline_version": "1",
                },
            }
        )
    return out


@pytest.fixture
def bundles(tmp_path):
    """v1.0.0 and v1.1.0 of sdpack/tiny-sd; v1.1.0 changes one tensor (one shard)."""
    return types.SimpleNamespace(
        v1=make_bundle(tmp_path / "b-1.0.0"),
        v2=make_bundle(tmp_path / "b-1.1.0", version="1.1.0", changed=5),
    )
