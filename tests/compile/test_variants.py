"""Which variants a pack builds, and when CUDA joins the default (no builds here: milliseconds)."""

from __future__ import annotations

import re
import types

import pytest

from packer.compile import variants
from packer.compile.variants import Variant, plan
from packer.support.schemas import schema

KEY = re.compile(
    schema("manifest.schema.json")["properties"]["targets"]["propertyNames"]["pattern"]
)


@pytest.fixture
def no_gpu(monkeypatch):
    monkeypatch.setattr(variants, "local_cuda_target", lambda: None)


def keys(p) -> list[str]:
    return [v.key for v in p.variants]


def test_default_is_the_web_variants_and_llvm_over_float16_weights(no_gpu):
    p = plan(None, None)
    assert keys(p) == ["webgpu-float16", "webgpu-float32", "llvm-float32"]
    assert p.weights_dtype == "float16"


def test_default_adds_the_local_cuda_gpu(monkeypatch):
    monkeypatch.setattr(variants, "local_cuda_target", lambda: "cuda-sm86")
    p = plan(None, None)
    assert keys(p) == ["webgpu-float16", "webgpu-float32", "llvm-float32", "cudasm86-float16"]
    assert all(KEY.fullmatch(k) for k in keys(p))  # the manifest schema's variant names


def test_targets_narrow_and_dtype_makes_one_dtype_bundle(no_gpu):
    assert (keys(plan(["llvm"], None)), plan(["llvm"], None).weights_dtype) == (
        ["llvm-float32"],
        "float32",
    )
    assert keys(plan(["webgpu"], None)) == ["webgpu-float16", "webgpu-float32"]
    assert (
        keys(plan(["cuda"], None)) == ["cuda-float16"]
        and plan(["cuda"], None).weights_dtype == "float16"
    )
    one = plan(["llvm", "webgpu"], "float32")
    assert keys(one) == ["llvm-float32", "webgpu-float32"] and one.weights_dtype == "float32"
    assert keys(plan(["webgpu"], "float16")) == ["webgpu-float16"]
    assert Variant("cpu", "float32").key == "cpu-float32" and keys(
        plan(["llvm", "llvm"], None)
    ) == ["llvm-float32"]


def _tvm_cuda(monkeypatch, exist: bool, version: str = "9.0"):
    import tvm

    monkeypatch.setattr(
        tvm, "cuda", lambda _=0: types.SimpleNamespace(exist=exist, compute_version=version)
    )


@pytest.mark.parametrize("nvcc, exist, version, expected", [
    (None, True, "9.0", None),             # a GPU without the toolkit
    ("/usr/bin/nvcc", False, "9.0", None),  # nvcc without a GPU (a build box; this VM)
    ("/usr/bin/nvcc", True, "9.0", "cuda"),
    ("/usr/bin/nvcc", True, "8.6", "cuda-sm86"),
    ("/usr/bin/nvcc", True, "7.5", None),   # no sdpack target for sm_75
])  # fmt: skip
def test_local_cuda_target_needs_nvcc_and_a_gpu(monkeypatch, nvcc, exist, version, expected):
    from packer.compile import cuda_stub

    monkeypatch.setattr(cuda_stub, "find_nvcc", lambda: nvcc)
    _tvm_cuda(monkeypatch, exist, version)
    assert variants.local_cuda_target() == expected


def test_opencl_targets_build_float16_and_float32(no_gpu):
    p = plan(["opencl", "opencl-mali"], None)
    assert keys(p) == [
        "opencl-float16",
        "opencl-float32",
        "openclmali-float16",
        "openclmali-float32",
    ]
    assert p.weights_dtype == "float16"
    assert all(KEY.fullmatch(k) for k in keys(p))
