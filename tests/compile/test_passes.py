"""Pipeline passes checked on their own (the fidelity tests check them inside whole models)."""

from __future__ import annotations

import numpy as np
import pytest

from packer.compile import pipeline
from packer.compile.export import export_component
from packer.compile.passes.conv2d_implicit_gemm import Conv2dImplicitGemm
from packer.compile.passes.gather_before_cast import GatherBeforeCast
from packer.runtime.module import ComponentRunner, bind_params

from .tiny import tiny_clip


def _gather_module():
    from tvm import relax

    bb = relax.BlockBuilder()
    table = relax.Var("table", relax.TensorType((50, 8), "float16"))
    ids = relax.Var("ids", relax.TensorType((5,), "int32"))
    with bb.function("main", [table, ids]):
        with bb.dataflow():
            wide = bb.emit(relax.op.astype(table, "float32"))
            rows = bb.emit(relax.op.take(wide, ids, axis=0))
            out = bb.emit_output(relax.op.multiply(rows, relax.const(2.0, "float32")))
        bb.emit_func_output(out)
    return bb.get()


def _ops(mod, func: str = "main") -> list[tuple[str, tuple]]:
    """(op name, argument shapes) of every call in ``func``, in order."""
    from tvm import relax

    found = []

    def visit(expr):
        if isinstance(expr, relax.Call) and hasattr(expr.op, "name"):
            shapes = tuple(
                tuple(int(v) for v in a.ty.shape.values)
                if isinstance(a.ty, relax.TensorType) and a.ty.shape is not None
                else None
                for a in expr.args
            )
            found.append((expr.op.name, shapes))

    relax.analysis.post_order_visit(mod[func].body, visit)
    return found


def test_gather_before_cast_casts_rows_not_the_table():
    import tvm
    from tvm import relax

    mod = _gather_module()
    rewritten = tvm.transform.Sequential([GatherBeforeCast, relax.transform.DeadCodeElimination()])(
        mod
    )
    ops = _ops(rewritten)
    assert ("relax.astype", ((50, 8),)) not in ops, "the whole table is still cast"
    assert ("relax.astype", ((5, 8),)) in ops

    rng = np.random.default_rng(0)
    table = rng.standard_normal((50, 8)).astype(np.float16)
    ids = np.array([3, 0, 49, 7, 3], dtype=np.int32)
    results = []
    for m in (mod, rewritten):
        exe = relax.build(m, "llvm")
        vm = relax.VirtualMachine(exe, tvm.cpu())
        results.append(vm["main"](tvm.runtime.tensor(table), tvm.runtime.tensor(ids)).numpy())
    assert results[0].dtype == results[1].dtype == np.float32
    assert np.array_equal(results[0], results[1])  # bit-identical


def test_float16_text_encoder_no_longer_casts_its_embedding_tables():
    module = tiny_clip(0)
    mod = pipeline.prepare(export_component("text_encoder", module, (8, 8)).mod, "float16")
    vocab, dim = module.get_input_embeddings().weight.shape
    ops = _ops(mod)
    assert ("relax.astype", ((vocab, dim),)) not in ops
    assert any(name == "relax.take" for name, _ in ops)


def _conv_module(x_shape, w_shape, strides, padding, dtype="float32"):
    from tvm import relax

    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType(x_shape, dtype))
    w = relax.Var("w", relax.TensorType(w_shape, dtype))
    with bb.function("main", [x, w]):
        with bb.dataflow():
            y = bb.emit(relax.op.nn.conv2d(x, w, strides=strides, padding=padding))
            out = bb.emit_output(relax.op.add(y, relax.const(0.5, dtype)))
        bb.emit_func_output(out)
    return bb.get()


def _nhwc(mod):
    """What CUDA's prepare does before the pass: NHWC activations, OHWI weights."""
    from tvm import relax

    return relax.transform.ConvertLayout({"relax.nn.conv2d": ["NHWC", "OHWI"]})(mod)


@pytest.mark.parametrize(
    "x_shape,w_shape,strides,padding",
    [
        ((2, 5, 9, 7), (6, 5, 3, 3), 1, 1),  # ResNet conv
        ((1, 4, 9, 8), (3, 4, 3, 3), 2, 1),  # Downsample2D
        ((2, 6, 5, 5), (4, 6, 1, 1), 1, 0),  # conv_shortcut / proj_in
        ((1, 3, 6, 7), (2, 3, 3, 3), (2, 1), (0, 1, 1, 0)),  # asymmetric: every index path
    ],
)
def test_conv2d_implicit_gemm_matches_torch(x_shape, w_shape, strides, padding):
    import torch
    import tvm
    from tvm import relax

    mod = _conv_module(x_shape, w_shape, strides, padding)
    rewritten = Conv2dImplicitGemm(_nhwc(mod))
    assert not any(name == "relax.nn.conv2d" for name, _ in _ops(rewritten))
    rng = np.random.default_rng(1)
    x = rng.standard_normal(x_shape).astype(np.float32)
    w = rng.standard_normal(w_shape).astype(np.float32)
    vm = relax.VirtualMachine(relax.build(rewritten, "llvm"), tvm.cpu())
    got = vm["main"](tvm.runtime.tensor(x), tvm.runtime.tensor(w)).numpy()
    pad = padding if isinstance(padding, tuple) else (padding,) * 4
    xt = torch.nn.functional.pad(torch.from_numpy(x), (pad[1], pad[3], pad[0], pad[2]))
    want = torch.nn.functional.conv2d(xt, torch.from_numpy(w), stride=strides).numpy() + 0.5
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "x_shape,w_shape,strides,padding",
    [
        ((2, 5, 9, 7), (6, 5, 3, 3), 1, 1),
        ((1, 4, 9, 8), (3, 4, 3, 3), 2, 1),
    ],
)
def test_conv2d_split_k_matches_torch(x_shape, w_shape, strides, padding, monkeypatch):
    """Split-k (the 8² and 16² convolutions on CUDA), forced onto tiny shapes: the partial
    products over parts of the reduction add up to the convolution."""
    import torch
    import tvm
    from tvm import relax

    from packer.compile.passes import conv2d_implicit_gemm

    monkeypatch.setattr(conv2d_implicit_gemm, "K_STEP", 1)
    monkeypatch.setattr(conv2d_implicit_gemm, "TARGET_BLOCKS", 10**6)
    k = w_shape[1] * w_shape[2] * w_shape[3]
    assert conv2d_implicit_gemm.split_k(64, 64, k) > 1
    rewritten = Conv2dImplicitGemm(_nhwc(_conv_module(x_shape, w_shape, strides, padding)))
    assert any("split_k" in gv.name_hint for gv in rewritten.functions)
    rng = np.random.default_rng(2)
    x = rng.standard_normal(x_shape).astype(np.float32)
    w = rng.standard_normal(w_shape).astype(np.float32)
    vm = relax.VirtualMachine(relax.build(rewritten, "llvm"), tvm.cpu())
    got = vm["main"](tvm.runtime.tensor(x), tvm.runtime.tensor(w)).numpy()
    want = (
        torch.nn.functional.conv2d(
            torch.from_numpy(x), torch.from_numpy(w), stride=strides, padding=padding
        ).numpy()
        + 0.5
    )
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_split_k_only_where_the_tiles_do_not_fill_the_gpu():
    from packer.compile.passes.conv2d_implicit_gemm import split_k

    assert split_k(2 * 8 * 8, 1280, 9 * 1280) == 15  # UNet 8²: 10 tiles → 150
    assert split_k(2 * 16 * 16, 1280, 9 * 1280) == 4  # 16²: 40 tiles → 160
    assert split_k(2 * 64 * 64, 320, 9 * 320) == 1  # 64²: 192 tiles already
    assert split_k(512 * 512, 128, 9 * 128) == 1  # VAE 512²
    assert split_k(128, 128, 9 * 7) == 1  # no part of k a multiple of 64


def test_conv2d_implicit_gemm_leaves_other_convolutions_alone():
    from tvm import relax

    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((1, 4, 8, 8), "float32"))
    w = relax.Var("w", relax.TensorType((4, 2, 3, 3), "float32"))
    with bb.function("main", [x, w]):
        with bb.dataflow():
            out = bb.emit_output(relax.op.nn.conv2d(x, w, padding=1, groups=2))
        bb.emit_func_output(out)
    nhwc = _nhwc(bb.get())
    assert ("relax.nn.conv2d", ((1, 8, 8, 4), (4, 3, 3, 2))) in _ops(nhwc)
    assert any(name == "relax.nn.conv2d" for name, _ in _ops(Conv2dImplicitGemm(nhwc)))


def test_cuda_convolutions_run_on_tensor_cores_without_an_im2col_buffer():
    """CUDA's prepare: the convolution reads NHWC activations, dlight's tensor-core Matmul rule
    schedules it (wmma) with the im2col gather inlined into its tile loads (no R·S-times
    buffer), and the bias add stays fused."""
    import tvm
    from tvm import tirx

    from packer.compile.targets import get_target

    spec = get_target("cuda-sm90")
    assert spec.conv_layout == "NHWC"
    mod = pipeline.prepare(
        _conv_module((2, 64, 64, 64), (256, 64, 3, 3), 1, 1, "float16"), "float16", spec.conv_layout
    )
    passes = pipeline.lower_passes(spec)
    upto = [p.info.name for p in passes].index("RewriteDataflowReshape")
    with spec.tvm_target():
        scheduled = tvm.transform.Sequential(passes[:upto])(mod)
    kernels = {
        gv.name_hint: f for gv, f in scheduled.functions.items() if isinstance(f, tirx.PrimFunc)
    }
    conv = [f for name, f in kernels.items() if "conv2d" in name]
    assert len(conv) == 1 and "add" in [n for n in kernels if "conv2d" in n][0], kernels.keys()
    script = conv[0].script()
    assert "wmma.matrix_b" in script
    assert "T.Buffer((T.int64(2), T.int64(64), T.int64(64), T.int64(64))" in script  # NHWC x
    assert pipeline._global_allocs(conv[0].body) == []

    # an 8² layer: split-k partial products on tensor cores, then one elementwise sum that
    # takes the epilogue
    mod = pipeline.prepare(
        _conv_module((2, 1280, 8, 8), (1280, 1280, 3, 3), 1, 1, "float16"),
        "float16",
        spec.conv_layout,
    )
    with spec.tvm_target():
        scheduled = tvm.transform.Sequential(passes[:upto])(mod)
    kernels = {
        gv.name_hint: f.script()
        for gv, f in scheduled.functions.items()
        if isinstance(f, tirx.PrimFunc)
    }
    assert "wmma.matrix_b" in kernels["conv2d_split_k"]
    assert 'T.thread_binding(T.int64(15), thread="blockIdx.z")' in kernels["conv2d_split_k"]
    assert any(name.startswith("fused_conv2d_sum_splits_add") for name in kernels), kernels.keys()


@pytest.mark.parametrize("dtype", ["float32", "float16"])
@pytest.mark.parametrize("component", ["unet", "vae_decoder"])
def test_nhwc_convolutions_match_torch(component, dtype, tmp_path):
    """Step 1b (CUDA's conv layout) through a whole model, run on llvm: ConvertLayout keeps
    the NCHW calling convention, NHWC group norms and the implicit-GEMM convolutions compute
    what torch does (same tolerances as test_fidelity)."""
    import tvm
    from tvm import relax

    from packer.compile.targets import get_target

    from .test_fidelity import TOLERANCE
    from .tiny import LATENT_HW, MODULES, example_inputs, torch_reference

    module = MODULES[component](seed=0)
    exported = export_component(component, module, LATENT_HW)
    mod = pipeline.prepare(exported.mod, dtype, "NHWC")
    ops = _ops(mod)
    assert not any(name == "relax.nn.conv2d" for name, _ in ops), "a conv was not rewritten"
    assert not any(
        name == "relax.nn.group_norm" and len(shapes[0]) == 4  # (the VAE attention's
        for name, shapes in ops
    ), "NHWC group norm left over"  # is rank 3: legalized)
    inputs = example_inputs(component)
    expected = torch_reference(component, module, inputs)
    state = module.state_dict()
    dev = tvm.cpu()
    args = [
        tvm.runtime.tensor(x if x.dtype != np.float32 or name == "timestep" else x.astype(dtype))
        for x, name in zip(inputs, exported.input_names)
    ]
    params = [tvm.runtime.tensor(state[key].numpy().astype(dtype)) for key in exported.params]
    executable = pipeline.build(mod, get_target("llvm"))
    vm = relax.VirtualMachine(executable, dev)
    lifted = bind_params(vm, params)
    # step 6b: the weight permutes run once, in main_transform_params, not in every call
    assert len(lifted) == len(mod["main"].params) - len(inputs)
    assert "relax.permute_dims" in [n for n, _ in _ops(mod, "main_transform_params")]
    weights = set(mod["main"].params[len(inputs) :])
    permuted = []

    def visit(expr):
        if isinstance(expr, relax.Call) and getattr(expr.op, "name", "") == "relax.permute_dims":
            permuted.extend(a for a in expr.args if a in weights)

    relax.analysis.post_order_visit(mod["main"].body, visit)
    assert not permuted, "a weight is still permuted in main"
    got = vm["main"](*args, *lifted).numpy().astype(np.float32)
    assert got.shape == expected.shape
    # the native runner (packer generate) binds the same way
    executable.export_library(str(tmp_path / "lib.so"))
    runner = ComponentRunner(tmp_path / "lib.so", [p.numpy() for p in params])
    assert np.array_equal(runner(*[a.numpy() for a in args]).astype(np.float32), got)
    scale = max(1.0, float(np.abs(expected).max()))
    assert float(np.abs(got - expected).max()) <= TOLERANCE[dtype] * scale
