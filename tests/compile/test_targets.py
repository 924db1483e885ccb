"""Target entries and names."""

from __future__ import annotations

import json

import pytest

from packer.compile import TARGETS, get_target
from packer.errors import UsageError


def test_aliases_and_keys():
    assert get_target("cuda").key == "cuda-sm90"
    assert get_target("cpu").key == "llvm"
    assert {"llvm", "cuda-sm80", "cuda-sm86", "cuda-sm89", "cuda-sm90"} <= set(TARGETS)
    assert TARGETS["cuda"] is TARGETS["cuda-sm90"]  # aliases are accepted wherever keys are


def test_unknown_target_is_a_usage_error():
    with pytest.raises(UsageError, match="unknown target 'vulkan'") as info:
        get_target("vulkan")
    assert "cuda-sm86" in info.value.hint


@pytest.mark.parametrize("key", sorted(TARGETS))
def test_target_json_is_plain_and_resolved(key):
    spec = TARGETS[key]
    target = spec.target_json()
    assert json.loads(json.dumps(target)) == target
    assert target["kind"] == spec.target["kind"]
    if target["kind"] == "cuda":
        assert target["arch"] == "sm_" + spec.key.removeprefix("cuda-sm")
        assert spec.requirements == {"arch": target["arch"]}
        assert target["host"]["kind"] == "llvm"
        assert (
            target["max_threads_per_block"],
            target["max_shared_memory_per_block"],
            target["thread_warp_size"],
        ) == (1024, 49152, 32)


def test_opencl_targets_name_their_host_and_limits():
    desktop, mali = get_target("opencl").target_json(), get_target("opencl-mali").target_json()
    assert desktop["kind"] == mali["kind"] == "opencl"
    assert mali["host"]["mtriple"] == "aarch64-linux-gnu"
    assert (mali["max_num_threads"], mali["max_shared_memory_per_block"]) == (256, 32768)
    assert "mali" in mali["keys"]
    for key in ("opencl", "opencl-mali"):  # float16 kernels compute in OpenCL's half
        assert get_target(key).requirements_for("float16")["features"] == ["cl_khr_fp16"]
        assert get_target(key).requirements_for("float32")["features"] == []
    assert get_target("opencl-mali").requirements_for("float32")["arch"] == "aarch64"


def test_opencl_mali_without_cross_linker_says_what_to_install(monkeypatch):
    import platform
    import shutil

    from packer.errors import CompileError

    monkeypatch.setattr(shutil, "which", lambda name: None)
    monkeypatch.setattr(platform, "machine", lambda: "x86_64")
    with pytest.raises(CompileError, match="aarch64-linux-gnu-g\\+\\+") as info:
        get_target("opencl-mali").toolchain()
    assert "g++-aarch64-linux-gnu" in info.value.hint


def test_opencl_libraries_are_cached_apart_from_each_other_and_llvm():
    from packer.compile import architecture_signature

    signatures = {
        architecture_signature(
            {"hidden_size": 32},
            component="text_encoder",
            latent_hw=(8, 8),
            dtype="float32",
            target_json=get_target(key).target_json(),
        )
        for key in ("llvm", "opencl", "opencl-mali")
    }
    assert len(signatures) == 3
