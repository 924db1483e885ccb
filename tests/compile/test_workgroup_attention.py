"""Pipeline step 2b: ``WorkgroupAttention`` (packer.compile.passes.workgroup_attention).

What it rewrites, the workgroup memory its tiles plan, and its numbers on a real WebGPU
implementation (tvmjs in Deno on wgpu; Mesa lavapipe here and on CI) against a float64 numpy
attention, for SD1.5's head dims and ragged shapes (partial query and key tiles, head dims that
are not multiples of 16, one key).
"""

from __future__ import annotations

import numpy as np
import pytest

from packer.compile import pipeline
from packer.compile.passes.workgroup_attention import (
    ACCUMULATORS,
    THREADS,
    WORKGROUP_BYTES,
    WorkgroupAttention,
    tile_config,
    workgroup_words,
)
from packer.compile.targets import get_target

from .deno_webgpu import needs_deno_webgpu, run_in_deno
from .relax_calls import calls as _calls
from .test_fused_attention import _attention_module


@pytest.mark.parametrize("seq_q", [1, 64, 256, 1024, 4096, 9216])
@pytest.mark.parametrize("dim", [8, 24, 40, 64, 80, 96, 128, 160, 320, 512])
def test_tiles_fit_the_workgroup_memory_and_registers(seq_q, dim):
    rows, v_chunk = tile_config(seq_q, dim)
    assert workgroup_words(dim, rows, v_chunk) * 4 <= WORKGROUP_BYTES
    assert rows * -(-dim // THREADS) <= ACCUMULATORS


def test_tile_config_gives_up_where_nothing_fits():
    assert tile_config(4096, 4096) is None


def test_rewrites_plain_attention_of_both_dtypes_only():
    from tvm import tirx

    shapes = [
        (2, 4096, 4096, 8, 40),
        (2, 4096, 77, 8, 40),
        (2, 256, 256, 8, 160),
        (1, 4096, 4096, 1, 512),
        (1, 100, 77, 3, 36),
    ]
    for dtype in ("float32", "float16"):
        mod = WorkgroupAttention(_attention_module(shapes, dtype))
        for i in range(len(shapes)):
            calls = _calls(mod, f"f{i}")
            assert calls == [("relax.call_tir", "workgroup_attention" + (str(i) if i else ""))], (
                calls
            )
            kernel = mod[calls[0][1]]
            assert isinstance(kernel, tirx.PrimFunc) and kernel.attrs["tirx.is_scheduled"]
    masked = WorkgroupAttention(_attention_module(shapes[:1], causal_mask="TopLeft"))
    assert _calls(masked, "f0") == [("relax.nn.attention", None)]
    wide = WorkgroupAttention(_attention_module([(1, 64, 64, 1, 4096)], "float32"))
    assert _calls(wide, "f0") == [("relax.nn.attention", None)]  # no tile fits: split form
    twice = WorkgroupAttention(_attention_module([shapes[0], shapes[0]]))
    assert _calls(twice, "f0") == _calls(twice, "f1")  # one kernel per shape


def test_webgpu_libraries_keep_no_score_matrix():
    """Through the target's own prepare: no matmul or softmax is left of the attention, and
    the largest buffer of the 64² self-attention is its output (10 MiB), not the 2·8·4096²
    scores (512 MiB in float16, 1 GiB in float32)."""
    web = get_target("webgpu")
    assert web.workgroup_attention and not get_target("llvm").workgroup_attention
    mod = _attention_module([(2, 4096, 4096, 8, 40)], "float32", names=["main"])
    for dtype in ("float32", "float16"):
        prepared = pipeline.prepare_for(mod, dtype, web)
        names = [name for name, _ in _calls(prepared, "main")]
        assert "relax.call_tir" in names and "relax.matmul" not in names, names
        stats: dict = {}
        pipeline.build(prepared, web, stats=stats)
        # the output (float32 at most: the float16 module casts its result through float32)
        assert stats["max_buffer_bytes"] <= 2 * 4096 * 8 * 40 * 4
    cpu = pipeline.prepare_for(mod, "float32", get_target("llvm"))
    assert "relax.matmul" in [name for name, _ in _calls(cpu, "main")]  # llvm: split form


def _reference(q, k, v):
    q, k, v = (x.astype(np.float64) for x in (q, k, v))
    scores = np.einsum("bqhd,bkhd->bhqk", q, k) / np.sqrt(q.shape[-1])
    scores -= scores.max(-1, keepdims=True)
    probs = np.exp(scores)
    probs /= probs.sum(-1, keepdims=True)
    return np.einsum("bhqk,bkhd->bqhd", probs, v)


@pytest.mark.slow
@needs_deno_webgpu
@pytest.mark.parametrize(
    "dtype,shapes",
    [
        (
            "float32",
            [
                (2, 256, 77, 2, 40),
                (1, 300, 130, 3, 80),
                (1, 9, 5, 2, 160),
                (1, 33, 1, 1, 24),
                (1, 70, 64, 1, 512),
            ],
        ),
        ("float16", [(2, 130, 77, 2, 40), (1, 64, 100, 2, 160)]),
    ],
)
def test_kernel_matches_numpy_on_webgpu(dtype, shapes, tmp_path):
    from packer.compile.webgpu import export_wasm

    web = get_target("webgpu")
    rng = np.random.default_rng(0)
    for i, (b, sq, sk, h, d) in enumerate(shapes):
        mod = WorkgroupAttention(_attention_module([(b, sq, sk, h, d)], dtype, names=["main"]))
        assert _calls(mod, "main")[0][0] == "relax.call_tir"
        wasm = tmp_path / f"attention{i}.wasm"
        export_wasm(pipeline.build(mod, web), wasm)
        arrays = [rng.standard_normal((b, s, h, d)).astype(dtype) for s in (sq, sk, sk)]
        got = run_in_deno(wasm, arrays, tmp_path)
        expected = _reference(*arrays)
        tolerance = 1e-5 if dtype == "float32" else 2e-3
        assert np.abs(got - expected).max() <= tolerance * np.abs(expected).max(), (b, sq, sk, h, d)
