"""Pipeline step 1e: ``WorkgroupGemm`` (packer.compile.passes.workgroup_gemm).

What it rewrites, the tiles it picks, and its numbers on a real WebGPU implementation (tvmjs in
Deno on wgpu; Mesa lavapipe here and on CI) against numpy for convolutions (3×3 and 1×1,
strides 1 and 2, ragged tiles, channels and reductions that are not multiples of a tile) and
linear layers (leading batch dims, ragged rows), in both dtypes.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from packer.compile import pipeline
from packer.compile.passes.workgroup_gemm import (
    BK,
    MAX_SPLITS,
    MIN_ROWS,
    MIN_SPLIT_STEPS,
    MIN_WORKGROUPS,
    SPLIT_WORKGROUPS,
    THREADS,
    TILES,
    WorkgroupGemm,
    plan,
    split_steps,
    workgroup_words,
)
from packer.compile.targets import get_target

from .deno_webgpu import needs_deno_webgpu, run_in_deno
from .relax_calls import calls as _calls


def _conv_module(x_shape, w_shape, stride=1, padding=1, dtype="float32", bias=True):
    from tvm import relax

    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType(x_shape, dtype))
    w = relax.Var("w", relax.TensorType(w_shape, dtype))
    b = relax.Var("b", relax.TensorType((1, w_shape[0], 1, 1), dtype))
    with bb.function("main", [x, w, b]):
        with bb.dataflow():
            y = bb.emit(relax.op.nn.conv2d(x, w, strides=stride, padding=padding))
            out = bb.emit_output(relax.op.add(y, b) if bias else y)
        bb.emit_func_output(out)
    return bb.get()


def _linear_module(x_shape, w_shape, dtype="float32"):
    from tvm import relax

    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType(x_shape, dtype))
    w = relax.Var("w", relax.TensorType(w_shape, dtype))
    with bb.function("main", [x, w]):
        with bb.dataflow():
            wt = bb.emit(relax.op.permute_dims(w))
            out = bb.emit_output(relax.op.matmul(x, wt))
        bb.emit_func_output(out)
    return bb.get()


def test_tiles_fill_the_workgroup_memory_and_the_adapter():
    for bm, bn in TILES:
        assert bm % THREADS == 0 and bn % THREADS == 0
        assert workgroup_words(bm, bn) * 4 <= 32 * 1024
        assert (bm * BK) % (THREADS * THREADS) == 0 and (bn * BK) % (THREADS * THREADS) == 0
    assert plan(8192, 320, 320) == (128, 128, 1)  # the UNet's 64² linears: 64 × 3 workgroups
    assert plan(154, 768, 768) == (*TILES[-1], 1)  # the text encoder at batch 2: as many as can be
    # long reductions over few output tiles (the UNet's 32², 16² and 8² convolutions) are split
    assert plan(512, 1280, 11520)[2] > 1 and plan(128, 1280, 11520)[2] > 1
    shapes = [(8192, 320, 320), (8192, 320, 2880), (2048, 640, 5760), (512, 1280, 11520)]
    shapes += [(128, 1280, 11520), (262144, 128, 1152), (154, 768, 768), (64, 96, 1560)]
    for m, n, k in shapes:
        bm, bn, splits = plan(m, n, k)
        workgroups = -(-m // bm) * -(-n // bn)
        assert 1 <= splits <= MAX_SPLITS
        if splits > 1:  # every share is non-empty and long enough to pay for its partial sums
            steps = split_steps(k, splits)
            assert steps >= MIN_SPLIT_STEPS and (splits - 1) * steps < -(-k // BK)
        if (bm, bn) != TILES[-1]:  # a smaller tile is taken only where this one gives too few
            assert workgroups * splits >= min(MIN_WORKGROUPS, SPLIT_WORKGROUPS)
        assert plan(m, n, k, max_splits=1)[2] == 1


def test_rewrites_convolutions_and_linears_with_parameter_weights_only():
    from tvm import relax, tirx

    for dtype in ("float32", "float16"):
        conv = WorkgroupGemm(_conv_module((2, 8, 16, 16), (12, 8, 3, 3), dtype=dtype))
        names = [name for name, _ in _calls(conv, "main")]
        assert "relax.nn.conv2d" not in names and "relax.call_tir" in names, names
        gvar = next(g for g in conv.functions if g.name_hint.startswith("workgroup_gemm"))
        assert conv[gvar].attrs["tirx.is_scheduled"]
        assert isinstance(conv[gvar], tirx.PrimFunc)
        linear = WorkgroupGemm(_linear_module((2, 77, 64), (96, 64), dtype))
        names = [name for name, _ in _calls(linear, "main")]
        assert "relax.matmul" not in names and "relax.call_tir" in names, names
    # too few rows (the time embedding's 2-row products): left to dlight's GEMV
    small = WorkgroupGemm(_linear_module((2, 64), (96, 64)))
    assert "relax.matmul" in [name for name, _ in _calls(small, "main")]
    assert MIN_ROWS > 2
    # a weight computed in the graph (a quantized weight's decode) is not read as stored
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((64, 64), "float32"))
    w = relax.Var("w", relax.TensorType((96, 64), "float16"))
    with bb.function("main", [x, w]):
        with bb.dataflow():
            wf = bb.emit(relax.op.astype(w, "float32"))
            out = bb.emit_output(relax.op.matmul(x, bb.emit(relax.op.permute_dims(wf))))
        bb.emit_func_output(out)
    decoded = WorkgroupGemm(bb.get())
    assert "relax.matmul" in [name for name, _ in _calls(decoded, "main")]


def test_long_reductions_are_split_and_their_shares_added_in_float32():
    import tvm
    from tvm import relax

    from packer.compile.passes.workgroup_gemm import planned_by

    for dtype in ("float32", "float16"):
        mod = WorkgroupGemm(_conv_module((1, 160, 6, 6), (20, 160, 3, 3), dtype=dtype))
        kernels = {gv.name_hint: mod[gv] for gv in mod.functions if gv.name_hint != "main"}
        assert set(kernels) == {"workgroup_gemm", "workgroup_gemm_sum"}, set(kernels)
        _, _, splits = plan(36, 20, 160 * 9)
        assert splits == 2
        outputs = {}  # kernel -> the tensor its call_tir returns
        for block in mod["main"].body.blocks:
            for binding in block.bindings:
                call = binding.value
                if isinstance(call, relax.Call) and call.op.name == "relax.call_tir":
                    ty = binding.var.ty
                    outputs[call.args[0].name_hint] = ([int(d) for d in ty.shape], ty.dtype)
        assert outputs["workgroup_gemm"] == ([splits, 20 * 6 * 6], "float32")
        assert outputs["workgroup_gemm_sum"] == ([1, 20, 6, 6], dtype)
        # the shares' sum fuses with the bias add after it: no dispatch more than unsplit
        with pipeline._lowering(get_target("webgpu"), None):
            fused = tvm.transform.Sequential(pipeline.fusion_passes())(mod)
        called = [name for name, _ in _calls(fused, "main")]
        names = [gv.name_hint for gv in fused.functions]
        assert any("workgroup_gemm_sum" in n and "add" in n for n in names), names
        assert called.count("relax.call_tir") == 2, called
        # not split: one kernel writing the output itself
        with planned_by(lambda m, n, k: plan(m, n, k, 1)):
            whole = WorkgroupGemm(_conv_module((1, 160, 6, 6), (20, 160, 3, 3), dtype=dtype))
        assert [gv.name_hint for gv in whole.functions if gv.name_hint != "main"] == [
            "workgroup_gemm"
        ]


def test_on_for_webgpu_and_only_where_the_target_asks():
    web = get_target("webgpu")
    assert web.workgroup_gemm
    assert not any(get_target(t).workgroup_gemm for t in ("llvm", "cuda", "opencl", "opencl-mali"))
    mod = _conv_module((1, 8, 16, 16), (16, 8, 3, 3))
    tiled = pipeline.prepare_for(mod, "float32", web)
    assert "relax.nn.conv2d" not in [name for name, _ in _calls(tiled, "main")]
    plain = pipeline.prepare_for(mod, "float32", dataclasses.replace(web, workgroup_gemm=False))
    assert "relax.nn.conv2d" in [name for name, _ in _calls(plain, "main")]


def _conv_reference(x, w, b, stride, padding):
    x, w = x.astype(np.float64), w.astype(np.float64)
    n, c, h, wd = x.shape
    o, _, kh, kw = w.shape
    xp = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    oh = (h + 2 * padding - kh) // stride + 1
    ow = (wd + 2 * padding - kw) // stride + 1
    out = np.zeros((n, o, oh, ow))
    for r in range(kh):
        for s in range(kw):
            patch = xp[:, :, r : r + stride * oh : stride, s : s + stride * ow : stride]
            out += np.einsum("nchw,oc->nohw", patch, w[:, :, r, s])
    return out + b.astype(np.float64)


CONVS = {
    # (x shape, w shape, stride, padding): what the tiny UNet below does not cover
    "float32": [
        ((1, 5, 33, 17), (40, 5, 3, 3), 2, 1),  # stride 2, odd sizes, a partial k tile
        ((1, 24, 20, 20), (130, 24, 1, 1), 1, 0),  # 1×1, outputs past one 128 tile
        ((1, 136, 8, 8), (24, 136, 3, 3), 1, 1),  # k = 1224 split in two shares of 39 and 38 steps
    ],
    "float16": [
        ((2, 8, 16, 16), (12, 8, 3, 3), 1, 1),  # ragged: 12 outputs, k = 72
        ((1, 160, 12, 12), (20, 160, 3, 3), 2, 1),  # strided, k = 1440 split in two
    ],
}
LINEARS = {
    "float32": [((300, 40), (130, 40)), ((64, 1560), (96, 1560))],  # 1560: three shares, ragged
    "float16": [((2, 77, 64), (96, 64)), ((2, 40, 2048), (70, 2048))],
}


@pytest.mark.slow
@needs_deno_webgpu
@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_kernel_matches_numpy_on_webgpu(dtype, tmp_path):
    from packer.compile.webgpu import export_wasm

    web = get_target("webgpu")
    rng = np.random.default_rng(0)
    tolerance = 1e-5 if dtype == "float32" else 2e-3
    for i, (x_shape, w_shape, stride, padding) in enumerate(CONVS[dtype]):
        mod = pipeline.prepare_for(_conv_module(x_shape, w_shape, stride, padding), dtype, web)
        assert "relax.nn.conv2d" not in [name for name, _ in _calls(mod, "main")]
        wasm = tmp_path / f"conv{i}.wasm"
        export_wasm(pipeline.build(mod, web), wasm)
        x = rng.standard_normal(x_shape).astype(dtype)
        w = (rng.standard_normal(w_shape) / np.sqrt(np.prod(w_shape[1:]))).astype(dtype)
        b = rng.standard_normal((1, w_shape[0], 1, 1)).astype(dtype)
        got = run_in_deno(wasm, [x, w, b], tmp_path)
        expected = _conv_reference(x, w, b, stride, padding)
        assert got.shape == expected.shape
        err = np.abs(got - expected).max()
        assert err <= tolerance * np.abs(expected).max(), (x_shape, w_shape, stride, err)
    for i, (x_shape, w_shape) in enumerate(LINEARS[dtype]):
        mod = pipeline.prepare_for(_linear_module(x_shape, w_shape), dtype, web)
        assert "relax.matmul" not in [name for name, _ in _calls(mod, "main")]
        wasm = tmp_path / f"linear{i}.wasm"
        export_wasm(pipeline.build(mod, web), wasm)
        x = rng.standard_normal(x_shape).astype(dtype)
        w = (rng.standard_normal(w_shape) / np.sqrt(w_shape[1])).astype(dtype)
        got = run_in_deno(wasm, [x, w], tmp_path)
        expected = x.astype(np.float64) @ w.astype(np.float64).T
        err = np.abs(got - expected).max()
        assert err <= tolerance * np.abs(expected).max(), (x_shape, w_shape, err)


@pytest.mark.slow
@needs_deno_webgpu
def test_tiny_unet_matches_torch_on_webgpu(tmp_path):
    """The tiny UNet (4-channel conv_in, 3×3 convolutions, strided downsampling, 1×1 shortcuts,
    attention projections; the time embedding's 2-row linears left to dlight) built with the
    tiled GEMM computes what torch does, within test_fidelity's float32 tolerance."""
    from packer.compile.export import export_component
    from packer.compile.webgpu import export_wasm

    from .test_fidelity import TOLERANCE
    from .tiny import LATENT_HW, MODULES, example_inputs, torch_reference

    web = get_target("webgpu")
    component = "unet"
    module = MODULES[component](seed=0)
    exported = export_component(component, module, LATENT_HW)
    mod = pipeline.prepare_for(exported.mod, "float32", web)
    kernels = [gv.name_hint for gv in mod.functions if gv.name_hint.startswith("workgroup_gemm")]
    assert kernels, "no convolution or linear was rewritten"
    wasm = tmp_path / f"{component}.wasm"
    export_wasm(pipeline.build(mod, web), wasm)
    inputs = example_inputs(component)
    state = module.state_dict()
    params = [state[key].numpy().astype(np.float32) for key in exported.params]
    got = run_in_deno(wasm, inputs + params, tmp_path, len(inputs))
    expected = torch_reference(component, module, inputs)
    assert got.shape == expected.shape
    scale = max(1.0, float(np.abs(expected).max()))
    assert float(np.abs(got - expected).max()) <= TOLERANCE["float32"] * scale


PACKED = {
    # (x shape, w shape, stride, padding) of a convolution, then a linear's (x shape, w shape):
    # reductions of whole groups of 64 (both schemes'), ragged rows and outputs
    "convs": [((1, 64, 11, 13), (40, 64, 3, 3), 1, 1), ((2, 64, 9, 9), (20, 64, 1, 1), 2, 0)],
    "linears": [((2, 45, 128), (70, 128)), ((2, 40, 2048), (70, 2048))],  # the second split
}


@pytest.mark.slow
@needs_deno_webgpu
@pytest.mark.parametrize("scheme_name", ["q4f16", "q8f16"])
@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_packed_kernel_matches_numpy_on_webgpu(dtype, scheme_name, tmp_path):
    """Quantized weights read packed by the kernel (codes and scales as the bundle stores them,
    decoded as each weight tile is loaded) give the product with the numpy reference's decoded
    weights, convolutions in the format's (y·kw + x)·I + i reduction order included."""
    from packer.bundle import quantize as qz
    from packer.compile.webgpu import export_wasm

    web = get_target("webgpu")
    scheme = qz.SCHEMES[scheme_name]
    rng = np.random.default_rng(1)
    tolerance = 1e-5 if dtype == "float32" else 2e-3
    cases = [("conv", *c) for c in PACKED["convs"]] + [
        ("linear", x, w, None, None) for x, w in PACKED["linears"]
    ]
    for i, (kind, x_shape, w_shape, stride, padding) in enumerate(cases):
        conv = kind == "conv"
        module = (
            _conv_module(x_shape, w_shape, stride, padding)
            if conv
            else _linear_module(x_shape, w_shape)
        )
        module["main"] = module["main"].with_attr("num_input", 1)
        names = ["layer.weight", "layer.bias"] if conv else ["layer.weight"]

        def decode(mod, names=names):
            from packer.compile.quantize import decode_weights

            mod, _, quantized = decode_weights(mod, "unet", names, scheme)
            assert quantized == ["layer.weight"]
            return mod

        mod = pipeline.prepare_for(module, dtype, web, decode)
        kernels = [
            gv.name_hint for gv in mod.functions if gv.name_hint.startswith("workgroup_gemm")
        ]
        assert kernels[0] == f"workgroup_gemm_q{scheme.bits}", kernels
        assert kernels[1:] in ([], ["workgroup_gemm_sum"]), kernels  # split reductions
        wasm = tmp_path / f"{kind}{i}.wasm"
        export_wasm(pipeline.build(mod, web), wasm)
        x = rng.standard_normal(x_shape).astype(dtype)
        w = rng.standard_normal(w_shape).astype(np.float16)
        packed, scales = qz.quantize(w, scheme)
        decoded = qz.dequantize(packed, scales, w_shape, scheme, dtype)
        b = rng.standard_normal((1, w_shape[0], 1, 1)).astype(dtype)
        args = [x, packed, scales.astype(dtype)] + ([b] if conv else [])
        got = run_in_deno(wasm, args, tmp_path, 1)
        if conv:
            expected = _conv_reference(x, decoded, b, stride, padding)
        else:
            expected = x.astype(np.float64) @ decoded.astype(np.float64).T
        assert got.shape == expected.shape
        err = np.abs(got - expected).max()
        assert err <= tolerance * np.abs(expected).max(), (kind, x_shape, w_shape, err)
