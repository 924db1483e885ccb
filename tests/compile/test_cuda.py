"""CUDA libraries built without a GPU embed sm_XX machine code (fatbin), not CUDA source."""

from __future__ import annotations

import shutil

import pytest

from packer.compile import compile_component, cuda_stub

from .tiny import LATENT_HW, signature_configs, tiny_clip

FATBIN_MAGIC = b"\x50\xed\x55\xba"  # 0xBA55ED50, little endian

pytestmark = [
    pytest.mark.skipif(
        cuda_stub.find_nvcc() is None,
        reason="nvcc not found (looked in /usr/local/cuda*/bin and on PATH)",
    ),
    pytest.mark.skipif(
        shutil.which("gcc") is None and shutil.which("cc") is None,
        reason="no C compiler for the CUDA driver stub",
    ),
]


def test_cuda_build_embeds_a_fatbin(tmp_path):
    module = tiny_clip(0)
    compiled = compile_component(
        "text_encoder",
        module,
        configs=signature_configs("text_encoder", module),
        latent_hw=LATENT_HW,
        target="cuda-sm90",
        dtype="float32",
        cache_dir=tmp_path,
    )
    data = compiled.lib_path.read_bytes()
    # TVM labels the embedded device module's format; "cu" would mean source compiled at load.
    assert b"\x04\x00\x00\x00\x00\x00\x00\x00cuda" in data
    assert b"\x05\x00\x00\x00\x00\x00\x00\x00cubin" in data
    assert FATBIN_MAGIC in data
    assert b"__global__" not in data and b'extern "C"' not in data
    assert compiled.target == "cuda-sm90" and compiled.target_json["arch"] == "sm_90"
    assert compiled.target_json["max_threads_per_block"] == 1024
    assert (tmp_path / "cuda_stub").is_dir()  # the stub lives in the cache, not in the library
    assert b"sdpack build-time driver stub" not in data
