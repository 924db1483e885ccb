"""Pipeline step 1c: ``TensorCoreGemm`` (packer.compile.passes.tensor_core_gemm).

The kernel runs only on an NVIDIA GPU (cp.async, ldmatrix, mma.sync): here it is checked for
what it rewrites, for its tile plans and for what nvcc and ptxas make of it. Its numbers are
checked on the lent GPU by ``bench/gpu/gemmlab.py`` against torch in float32 on every SD1.5
convolution and linear shape (plus strided, ragged and split ones) and end to end by
bench/gpu/native.py's UNet and image fidelity.
"""

from __future__ import annotations

import re
import subprocess

import pytest

from packer.compile import cuda_stub, pipeline
from packer.compile.passes.tensor_core_gemm import (
    SHARED_BYTES,
    TILES,
    Conv,
    TensorCoreGemm,
    gemm_kernel,
    plan,
)
from packer.compile.targets import get_target

from .relax_calls import calls as _calls


def _module(dtype="float16"):
    """conv3 (3×3, 320 channels), conv_in (3×3, 4 channels), down (stride 2), linear
    (2×77×768 → 320), gemv (2×320 → 1280), short (2×4096×320 → 320), long (2×4096×1280 →
    320): NHWC/OHWI convolutions and torch-style linears."""
    from tvm import relax

    bb = relax.BlockBuilder()

    def conv(name, c, hw, o, k, s):
        x = relax.Var("x", relax.TensorType((2, hw, hw, c), dtype))
        w = relax.Var("w", relax.TensorType((o, k, k, c), dtype))
        with bb.function(name, [x, w]):
            with bb.dataflow():
                out = bb.emit_output(
                    relax.op.nn.conv2d(
                        x,
                        w,
                        [s, s],
                        [k // 2] * 4,
                        data_layout="NHWC",
                        kernel_layout="OHWI",
                        out_dtype=dtype,
                    )
                )
            bb.emit_func_output(out)

    def linear(name, x_shape, n):
        x = relax.Var("x", relax.TensorType(x_shape, dtype))
        w = relax.Var("w", relax.TensorType((n, x_shape[-1]), dtype))
        with bb.function(name, [x, w]):
            with bb.dataflow():
                out = bb.emit_output(relax.op.matmul(x, relax.op.permute_dims(w)))
            bb.emit_func_output(out)

    conv("conv3", 320, 64, 320, 3, 1)
    conv("conv_in", 4, 64, 320, 3, 1)
    conv("down", 320, 64, 320, 3, 2)
    linear("linear", (2, 77, 768), 320)
    linear("gemv", (2, 320), 1280)
    linear("short", (2, 4096, 320), 320)
    linear("long", (2, 4096, 1280), 320)
    return bb.get()


def test_plan_picks_tiles_that_divide_the_output_and_splits_small_products():
    p = plan(2 * 64 * 64, 320, 9 * 320, channels=320)  # UNet 64² conv: 320 = 5 × 64
    assert (p.tiles.bn, p.splits) == (64, 1)
    p = plan(2 * 64 * 64, 1280, 320)
    assert (p.tiles.bm, p.tiles.bn, p.splits) == (128, 128, 1)
    small = plan(2 * 8 * 8, 1280, 9 * 1280, channels=1280)  # 10 tiles: split along k
    k_tiles = small.k // small.tiles.bk
    assert small.splits > 1 and k_tiles % small.splits == 0
    assert 10 * small.splits <= 264 and k_tiles // small.splits >= 2 * small.tiles.stages
    assert plan(8192, 320, 9 * 32 * 3, channels=96).tiles.bk == 32  # k = 864: not 64-aligned
    assert plan(154, 320, 768).splits > 1  # cross-attention K/V: 2 × 5 tiles
    for tiles in TILES:
        assert tiles.shared_bytes() <= SHARED_BYTES
    assert plan(8192, 320, 36, channels=4) is None  # conv_in: k not a multiple of 32
    assert plan(8192, 4, 2880, channels=320) is None  # conv_out: 4 outputs
    assert plan(2, 1280, 320) is None  # the time embedding: a GEMV
    assert plan(8192, 320, 9 * 36, channels=36) is None  # 36 channels: a vector spans 2 taps


def test_rewrites_float16_convolutions_and_linears_that_fit():
    from tvm import tirx

    mod = TensorCoreGemm(_module())
    for name in ("conv3", "down", "linear", "long"):
        calls = [target for op, target in _calls(mod, name) if op == "relax.call_tir"]
        assert calls and calls[0].startswith("tensor_core_gemm"), _calls(mod, name)
        kernel = mod[calls[0]]
        assert isinstance(kernel, tirx.PrimFunc) and kernel.attrs["tirx.is_scheduled"]
    # split along k: float32 partial sums added up by an elementwise kernel
    assert [t.rstrip("0123456789") for _, t in _calls(mod, "linear") if t] == [
        "tensor_core_gemm",
        "gemm_sum_splits",
    ]
    assert ("relax.nn.conv2d", None) in _calls(mod, "conv_in")
    assert ("relax.matmul", None) in _calls(mod, "gemv")
    assert ("relax.matmul", None) in _calls(mod, "short")  # k < LINEAR_MIN_K, not split
    fp32 = TensorCoreGemm(_module("float32"))
    assert all(op != "relax.call_tir" for f in ("conv3", "linear") for op, _ in _calls(fp32, f))


def test_only_cuda_float16_libraries_get_the_gemm_kernel():
    """Through ``prepare`` from an NCHW import: the CUDA float16 variant's convolutions are
    kernels, the float32 variant's and the WebGPU ones are not; the lifted weight transform
    (OHWI permute + flattening reshape) runs once, outside ``main``."""
    from tvm import relax

    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((2, 320, 32, 32), "float32"))
    w = relax.Var("w", relax.TensorType((320, 320, 3, 3), "float32"))
    with bb.function("main", [x, w]):
        with bb.dataflow():
            out = bb.emit_output(relax.op.nn.conv2d(x, w, padding=[1, 1, 1, 1]))
        bb.emit_func_output(out)
    mod = bb.get()
    mod["main"] = mod["main"].with_attr("num_input", 1)
    cuda, web = get_target("cuda-sm90"), get_target("webgpu")
    for dtype, kernel in (("float16", True), ("float32", False)):
        prepared = pipeline.prepare(mod, dtype, cuda.conv_layout, cuda.mma_kernels)
        targets = [t for _, t in _calls(prepared, "main") if t]
        assert any(t.startswith("tensor_core_gemm") for t in targets) == kernel, targets
        if kernel:
            lifted = [op for op, _ in _calls(prepared, "main_transform_params")]
            assert "relax.permute_dims" in lifted and "relax.reshape" in lifted
    prepared = pipeline.prepare(mod, "float16", web.conv_layout, web.mma_kernels)
    assert ("relax.nn.conv2d", None) in _calls(prepared, "main")


_CASES = {  # name: (m, n, k, conv)
    "conv64": (2 * 64 * 64, 320, 9 * 320, Conv(2, 64, 64, 320, 3, 3, (1, 1), (1, 1), (64, 64))),
    "down": (2 * 32 * 32, 320, 9 * 320, Conv(2, 64, 64, 320, 3, 3, (2, 2), (1, 1), (32, 32))),
    "conv8": (2 * 8 * 8, 1280, 9 * 1280, Conv(2, 8, 8, 1280, 3, 3, (1, 1), (1, 1), (8, 8))),
    "linear": (154, 320, 768, None),
    "wide": (8192, 1280, 320, None),
}


@pytest.mark.skipif(cuda_stub.find_nvcc() is None, reason="nvcc not found")
@pytest.mark.parametrize("case", sorted(_CASES))
def test_gemm_kernel_compiles_to_tensor_core_code_without_spills(case, tmp_path, monkeypatch):
    """nvcc accepts the kernel for sm_90: cp.async copies, ldmatrix, mma.sync, the ring in
    dynamic shared memory, paired stores, no float32 global scratch unless split, one barrier
    per k-tile, and ptxas keeps every accumulator and fragment in registers (no spills)."""
    import tvm

    for key, value in cuda_stub.build_env(tmp_path).items():
        monkeypatch.setenv(key, value)
    m, n, k, conv = _CASES[case]
    p = plan(m, n, k, conv.channels if conv else None)
    target = get_target("cuda-sm90").tvm_target()
    with target:
        lib = tvm.compile(
            tvm.IRModule({"main": gemm_kernel(p, conv).with_attr("global_symbol", "main")}),
            target=target,
        )
    source = lib.mod.imports[0].inspect_source()
    assert "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32" in source
    assert "ldmatrix.sync.aligned.m8n8.x4.shared.b16" in source
    assert "cp.async.cg.shared.global" in source
    assert f"__launch_bounds__({32 * p.tiles.warps})" in source
    # the ring is one dynamic shared buffer (its size is a launch parameter), nothing static
    assert "extern __shared__" in source and not re.search(r"^\s*__shared__", source, re.M)
    assert p.tiles.shared_bytes() <= SHARED_BYTES
    body = source[source.index("__global__") :]
    assert ("float* __restrict__" in body) == (p.splits > 1)
    assert "*(float2*)(o_ptr" in body if p.splits > 1 else "((uint*)o_ptr)[" in body
    loop = body[body.index("for (int kt") :]
    assert loop.count("__syncthreads()") == 1  # the ring's own barrier, no planner-added one
    cu = tmp_path / "kernel.cu"
    cu.write_text(source)
    ptxas = subprocess.run(
        [
            cuda_stub.find_nvcc(),
            "-arch=sm_90",
            "-cubin",
            "-Xptxas",
            "-v",
            "-o",
            str(tmp_path / "kernel.cubin"),
            str(cu),
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stderr
    assert "0 bytes spill stores, 0 bytes spill loads" in ptxas, ptxas
    assert "0 bytes stack frame" in ptxas, ptxas
