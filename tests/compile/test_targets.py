"""Target entries and names."""

from __future__ import annotations

import json

import pytest

from packer.compile import TARGETS, get_target, targets
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
        assert (target["max_threads_per_block"], target["max_shared_memory_per_block"],
                target["thread_warp_size"]) == (1024, 49152, 32)


def test_webgpu_choices_differ_by_dtype():
    """float32 WebGPU libraries build NHWC implicit GEMMs on 64×64 tiles; float16 ones NCHW on
    dlight's own tiles; other targets are the same entry for every dtype."""
    from tvm.s_tir import dlight as dl

    webgpu = targets.get_target("webgpu")
    f32, f16 = webgpu.for_dtype("float32"), webgpu.for_dtype("float16")
    assert (f32.conv_layout, f16.conv_layout) == ("NHWC", "NCHW")
    assert f16 is webgpu and f32.key == webgpu.key and f32.target == webgpu.target

    def matmul_config(spec):
        rule = next(r for r in spec.schedule_rules() if isinstance(getattr(r, "rule", r), dl.gpu.Matmul))
        return getattr(rule, "rule", rule)

    tile = targets.WEBGPU_MATMUL_CONFIGS["t64"]
    cfg = matmul_config(f32).get_configs(webgpu.tvm_target())
    assert (cfg.block_size_x * cfg.micro_size_x, cfg.block_size_y * cfg.micro_size_y) == (64, 64)
    assert cfg.micro_size_k == tile["micro_size_k"]
    for key in ("llvm", "cuda-sm90"):
        spec = targets.get_target(key)
        assert spec.for_dtype("float16") is spec and spec.for_dtype("float32") is spec
