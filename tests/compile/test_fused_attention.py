"""Pipeline step 2a: ``FusedAttention`` (packer.compile.passes.fused_attention).

The kernel runs only on an NVIDIA GPU (mma.sync, ldmatrix): here it is checked for what it
rewrites and for what nvcc makes of it. Its numbers are checked on the lent H100 by
``bench/gpu/attnlab.py`` against float32 SDPA on every SD1.5 attention shape plus ragged ones
(relative L2 2.6-2.8e-4, the same as torch's float16 SDPA: docs/design.md, step 2a)
and end to end by bench/gpu/native.py's UNet and image fidelity.
"""

from __future__ import annotations

import re

import pytest

from packer.compile import cuda_stub, pipeline
from packer.compile.passes.fused_attention import (
    SHARED_BYTES,
    FusedAttention,
    attention_kernel,
    shared_bytes,
    tile_config,
)
from packer.compile.targets import get_target

from .relax_calls import calls as _calls


def _attention_module(shapes, dtype="float16", names=None, **attrs):
    """One function (``f0``, ``f1``, … or ``names``) with ``R.nn.attention`` per
    (batch, seq_q, seq_kv, heads, head_dim)."""
    from tvm import relax

    bb = relax.BlockBuilder()
    for i, (b, sq, sk, h, d) in enumerate(shapes):
        q = relax.Var("q", relax.TensorType((b, sq, h, d), dtype))
        k = relax.Var("k", relax.TensorType((b, sk, h, d), dtype))
        v = relax.Var("v", relax.TensorType((b, sk, h, d), dtype))
        with bb.function(names[i] if names else f"f{i}", [q, k, v]):
            with bb.dataflow():
                out = bb.emit_output(relax.op.nn.attention(q, k, v, **attrs))
            bb.emit_func_output(out)
    return bb.get()


def test_tile_config_fits_the_shared_memory_of_every_sd15_head_dim():
    for dim in (40, 80, 160, 24, 8):
        warps, kv_tile = tile_config(dim)
        assert shared_bytes(dim, warps, kv_tile) <= SHARED_BYTES
    assert tile_config(40) == tile_config(80) == (8, 64) and tile_config(160) == (4, 32)
    assert tile_config(512) is None  # the VAE's single 512-wide head keeps the split form


def test_fused_attention_rewrites_plain_float16_attention_only():
    from tvm import tirx

    shapes = [
        (2, 4096, 4096, 8, 40),
        (2, 4096, 77, 8, 40),
        (2, 256, 256, 8, 160),
        (1, 4096, 4096, 1, 512),
        (1, 100, 77, 3, 36),
    ]
    mod = FusedAttention(_attention_module(shapes))
    for i in range(3):
        calls = _calls(mod, f"f{i}")
        assert calls == [("relax.call_tir", "fused_attention" + ("" if i == 0 else str(i)))], calls
        kernel = mod[calls[0][1]]
        assert isinstance(kernel, tirx.PrimFunc) and kernel.attrs["tirx.is_scheduled"]
    assert _calls(mod, "f3") == [("relax.nn.attention", None)]  # D = 512: no tiles fit
    assert _calls(mod, "f4") == [("relax.nn.attention", None)]  # D not a multiple of 8

    for other in (
        FusedAttention(_attention_module(shapes[:1], "float32")),
        FusedAttention(_attention_module(shapes[:1], causal_mask="TopLeft")),
    ):
        assert _calls(other, "f0") == [("relax.nn.attention", None)]

    # one kernel per distinct shape, shared by every call of it
    twice = FusedAttention(_attention_module([shapes[0], shapes[0]]))
    assert _calls(twice, "f0") == _calls(twice, "f1")


def test_only_cuda_float16_libraries_get_the_fused_kernel():
    cuda, web, cpu = (get_target(t) for t in ("cuda-sm90", "webgpu", "llvm"))
    assert cuda.mma_kernels and not web.mma_kernels and not cpu.mma_kernels
    mod = _attention_module([(2, 1024, 1024, 8, 80)], "float32", names=["main"])
    for dtype, fused in (("float16", True), ("float32", False)):
        prepared = pipeline.prepare(mod, dtype, cuda.conv_layout, cuda.mma_kernels)
        names = [name for name, _ in _calls(prepared, "main")]
        assert ("relax.call_tir" in names and "relax.matmul" not in names) == fused, names
    prepared = pipeline.prepare(mod, "float16", web.conv_layout, web.mma_kernels)
    assert "relax.matmul" in [name for name, _ in _calls(prepared, "main")]  # split form


@pytest.mark.skipif(cuda_stub.find_nvcc() is None, reason="nvcc not found")
@pytest.mark.parametrize(
    "shape",
    [(2, 4096, 4096, 8, 40), (2, 1024, 77, 8, 80), (2, 64, 64, 8, 160), (1, 130, 200, 2, 24)],
)
def test_fused_attention_compiles_to_tensor_core_code(shape, tmp_path, monkeypatch):
    """nvcc accepts the kernel for sm_90; its shared memory is what tile_config planned, it
    keeps no score in global or shared memory (mma.sync accumulators, ldmatrix operands), and
    key masking is compiled in only where the last key tile is partial."""
    import tvm

    for key, value in cuda_stub.build_env(tmp_path).items():
        monkeypatch.setenv(key, value)
    b, sq, sk, h, d = shape
    warps, kv_tile = tile_config(d)
    kernel = attention_kernel(b, sq, sk, h, d, d**-0.5, warps, kv_tile)
    target = get_target("cuda-sm90").tvm_target()
    with target:
        lib = tvm.compile(
            tvm.IRModule({"main": kernel.with_attr("global_symbol", "main")}), target=target
        )
    source = lib.mod.imports[0].inspect_source()
    assert "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32" in source
    assert "ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16" in source
    assert f"__launch_bounds__({32 * warps})" in source
    shared = sum(
        int(n) * (2 if t == "half" else 4)
        for t, n in re.findall(r"__shared__ alignas\(\d+\) (\w+) \w+\[(\d+)\];", source)
    )
    assert shared <= shared_bytes(d, warps, kv_tile) <= SHARED_BYTES
    kernel_body = source[source.index("__global__") :]
    assert "float* __restrict__" not in kernel_body  # no float32 global scratch
    assert ("-0x1.93e5939a08ceap+99f" in kernel_body.split("for (int kt")[1]) == (
        sk % kv_tile != 0
    )  # the masked "−∞" appears inside the key loop only when needed


def test_tuning_skips_the_hand_scheduled_kernel():
    """packer.compile.tuning.tasks extracts what dlight would schedule, not the fused kernel."""
    import tvm
    from tvm import relax

    from packer.compile.tuning.tasks import tunable_tasks

    bb = relax.BlockBuilder()
    q = relax.Var("q", relax.TensorType((2, 1024, 8, 80), "float16"))
    with bb.function("main", [q]):
        with bb.dataflow():
            out = bb.emit_output(relax.op.add(relax.op.nn.attention(q, q, q), q))
        bb.emit_func_output(out)
    spec = get_target("cuda-sm90")
    with spec.tvm_target():
        fused = tvm.transform.Sequential(pipeline.fusion_passes())(FusedAttention(bb.get()))
    assert "fused_attention" in [gv.name_hint for gv in fused.functions]
    assert [task.task_name for task in tunable_tasks(fused, spec.tvm_target())] == ["add"]
