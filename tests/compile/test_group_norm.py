"""Pipeline step 3: ``GroupNormReduction`` (packer.compile.passes.group_norm_reduction).

What a group norm becomes on each target (how many kernels, the SiLU after it fused into its
last one, the VAE attention's rank-3 norm included), and the WebGPU kernels' numbers on a real
WebGPU implementation (tvmjs in Deno on wgpu; Mesa lavapipe here and on CI) against a float64
numpy group norm, for channel rows shorter than, equal to and longer than a workgroup, ragged
ones, groups of one to several channels, ranks 3 and 4, with and without the SiLU.
"""

from __future__ import annotations

import numpy as np
import pytest

from packer.compile import pipeline
from packer.compile.export import export_component
from packer.compile.passes.group_norm_reduction import CHUNK, STATS_THREADS, moment_chunks
from packer.compile.targets import get_target

from .deno_webgpu import needs_deno_webgpu, run_in_deno
from .relax_calls import calls as _calls
from .tiny import LATENT_HW, MODULES


def _norm_module(shape, groups, dtype, silu):
    from tvm import relax

    axes = list(range(2, len(shape)))
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType(shape, dtype))
    gamma = relax.Var("gamma", relax.TensorType((shape[1],), dtype))
    beta = relax.Var("beta", relax.TensorType((shape[1],), dtype))
    with bb.function("main", [x, gamma, beta]):
        with bb.dataflow():
            y = bb.emit(relax.op.nn.group_norm(x, gamma, beta, groups, 1, axes, epsilon=1e-5))
            if silu:
                y = bb.emit(relax.op.multiply(y, bb.emit(relax.op.sigmoid(y))))
            out = bb.emit_output(y)
        bb.emit_func_output(out)
    return bb.get()


def _reference(x, gamma, beta, groups, silu):
    x64 = x.astype(np.float64)
    n, c = x.shape[:2]
    grouped = x64.reshape(n, groups, -1)
    mean = grouped.mean(axis=2, keepdims=True)
    var = grouped.var(axis=2, keepdims=True)
    y = ((grouped - mean) / np.sqrt(var + 1e-5)).reshape(x.shape)
    affine = (n, c) + (1,) * (x.ndim - 2)
    y = y * gamma.astype(np.float64).reshape(affine[1:]) + beta.astype(np.float64).reshape(
        affine[1:]
    )
    return y / (1 + np.exp(-y)) if silu else y


def _fused(mod):
    import tvm

    return tvm.transform.Sequential(pipeline.fusion_passes())(mod)


def _kernels(mod) -> list[str]:
    return [name for op, name in _calls(mod, "main") if name is not None]


@pytest.mark.parametrize("target", ["webgpu", "llvm", "cuda"])
def test_each_norm_is_few_kernels_and_takes_the_silu_after_it(target):
    """The tiny UNet and VAE decoder: no group norm is left to the legalizer (the VAE attention's
    is rank 3); on WebGPU each norm is both moments from one read of x (which also gives the
    statistics where a group fits one workgroup's chunk, else a tiny kernel adds the chunks) and
    the normalisation with the SiLU that follows fused in; elsewhere two channel sums, the
    statistics and the normalisation; no SiLU after a norm runs alone."""
    spec = get_target(target)
    for component in ("unet", "vae_decoder"):
        exported = export_component(component, MODULES[component](seed=0), LATENT_HW)
        for dtype in ("float32", "float16"):
            prepared = pipeline.prepare_for(exported.mod, dtype, spec)
            ops = [op for op, _ in _calls(prepared, "main")]
            assert "relax.nn.group_norm" not in ops, (component, dtype)
            kernels = _kernels(_fused(prepared))
            applies = [k for k in kernels if "group_norm_apply" in k]
            norms = len(applies)
            stats = [k for k in kernels if k.startswith("group_norm_stats")]
            sums = [k for k in kernels if k.startswith("group_norm_sum")]
            moments = [k for k in kernels if k.startswith("group_norm_moments")]
            if spec.workgroup_norm:  # one read of x for both moments, stats where chunked
                assert len(moments) == norms and not sums, (component, kernels)
                assert len(stats) <= norms, (component, kernels)
            else:
                assert len(stats) == norms and len(sums) == 2 * norms, (component, kernels)
            # every SiLU of a resnet block follows a norm: none may run as its own kernel
            assert [k for k in applies if "sigmoid" in k], (component, dtype, applies)
            alone = [k for k in kernels if k.startswith("fused_tir_sigmoid")]
            time_embedding = sum(1 for k in kernels if k.startswith("fused_NT_matmul"))
            assert len(alone) <= time_embedding, (component, dtype, alone)
    assert spec.workgroup_norm == (target == "webgpu")


def test_moments_kernel_is_scheduled_and_shared_by_equal_shapes():
    from tvm import tirx

    spec = get_target("webgpu")
    exported = export_component("unet", MODULES["unet"](seed=0), LATENT_HW)
    prepared = pipeline.prepare_for(exported.mod, "float16", spec)
    funcs = {gv.name_hint: f for gv, f in prepared.functions.items()}
    moments = [name for name in funcs if name.startswith("group_norm_moments")]
    calls = [name for name in _kernels(prepared) if name.startswith("group_norm_moments")]
    assert moments and len(calls) > len(moments)  # one kernel per distinct shape
    for name in moments:
        assert isinstance(funcs[name], tirx.PrimFunc) and funcs[name].attrs["tirx.is_scheduled"]


NORMS = [
    # (shape, groups, silu): groups shorter than a workgroup, as long, of one chunk exactly, of
    # two and of ten chunks with a ragged last one; one channel per group or several; rank 3
    # (the VAE attention's)
    ((2, 64, 8, 8), 32, True),
    ((1, 96, 17, 15), 32, False),
    ((2, 32, 16, 16), 32, True),
    ((2, 64, 32, 64), 32, True),
    ((1, 40, 33, 41), 8, True),
    ((1, 32, 96, 100), 8, False),
    ((1, 64, 300), 32, False),
]


@pytest.mark.slow
@needs_deno_webgpu
@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_kernels_match_numpy_on_webgpu(dtype, tmp_path):
    from packer.compile.webgpu import export_wasm

    web = get_target("webgpu")
    rng = np.random.default_rng(0)
    tolerance = 2e-5 if dtype == "float32" else 4e-3
    lengths = [shape[1] // groups * int(np.prod(shape[2:])) for shape, groups, _ in NORMS]
    assert [n for n in lengths if n < STATS_THREADS] and STATS_THREADS in lengths
    assert [n for n in lengths if n > STATS_THREADS and n % STATS_THREADS]
    assert CHUNK in lengths and [n for n in lengths if n > 2 * CHUNK and n % CHUNK]
    assert moment_chunks((1, 32, 96, 100), 8) == 10
    for i, (shape, groups, silu) in enumerate(NORMS):
        mod = pipeline.prepare_for(_norm_module(shape, groups, dtype, silu), dtype, web)
        kernels = _kernels(_fused(mod))
        assert len([k for k in kernels if k.startswith("group_norm_moments")]) == 1, kernels
        stats = [k for k in kernels if k.startswith("group_norm_stats")]
        assert len(stats) == (moment_chunks(shape + (1,) * (4 - len(shape)), groups) > 1)
        wasm = tmp_path / f"norm{i}.wasm"
        export_wasm(pipeline.build(mod, web), wasm)
        # an offset and per-channel scales, as activations have: the one-pass variance's case
        x = (
            rng.standard_normal(shape)
            * rng.uniform(0.5, 3.0, (1, shape[1]) + (1,) * (len(shape) - 2))
            + 0.7
        ).astype(dtype)
        gamma = rng.uniform(0.5, 1.5, shape[1]).astype(dtype)
        beta = rng.standard_normal(shape[1]).astype(dtype)
        got = run_in_deno(wasm, [x, gamma, beta], tmp_path)
        expected = _reference(x, gamma, beta, groups, silu)
        assert got.shape == expected.shape
        err = float(np.abs(got - expected).max())
        assert err <= tolerance * max(1.0, float(np.abs(expected).max())), (shape, groups, err)
