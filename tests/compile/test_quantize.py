"""Quantized builds: packed params decoded inside the consuming kernels, numerically the numpy
reference quantization (packer.bundle.quantize) run through torch, never a decoded weight in memory."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from packer.bundle import quantize as qz
from packer.compile import compile_component, get_target, pipeline
from packer.compile.export import export_component
from packer.compile.quantize import DECODE_PREFIX, FUSED_PREFIX, decode_weights

from .tiny import LATENT_HW, MODULES, example_inputs, signature_configs, torch_reference

pytestmark = pytest.mark.slow
TOLERANCE = {"float32": 1e-4, "float16": 3e-2}


def _stored(module, cc, scheme) -> dict[str, np.ndarray]:
    """What a bundle stores for ``module``: float16 weights, the quantized ones packed."""
    state = {k: v.numpy().astype(np.float16) for k, v in module.state_dict().items()}
    return dict(qz.quantize_params(state.items(), set(cc.quantized), scheme))


def _dequantized_module(component, cc, stored, scheme):
    """The torch module with every weight replaced by what the bundle's bytes decode to."""
    module = MODULES[component](seed=0)
    with torch.no_grad():
        for key, value in module.state_dict().items():
            if key in cc.quantized:
                packed, scales = (stored[n] for n in qz.stored_names(key))
                value.copy_(torch.from_numpy(qz.dequantize(packed, scales, value.shape, scheme)))
            elif value.is_floating_point():
                value.copy_(torch.from_numpy(stored[key].astype(np.float32)))
    return module


@pytest.mark.parametrize(
    "component, dtype, scheme",
    [
        ("text_encoder", "float16", "q4f16"),
        (
            "unet",
            "float32",
            "q8f16",
        ),  # the tiny text encoder's 32-wide layers are shorter than a q8 group
    ],
)
def test_matches_the_numpy_reference_quantization(component, dtype, scheme, shared_cache):
    from packer.runtime.module import ComponentRunner

    scheme = qz.SCHEMES[scheme]
    module = MODULES[component](seed=0)
    cc = compile_component(
        component,
        module,
        configs=signature_configs(component, module),
        latent_hw=LATENT_HW,
        target="llvm",
        dtype=dtype,
        cache_dir=shared_cache,
        quantize=scheme,
    )
    assert cc.quantized and all(n.endswith(".weight") for n in cc.quantized)
    assert not any("embedding" in n and component == "text_encoder" for n in cc.quantized)
    stored = _stored(module, cc, scheme)
    params = [
        stored[n] if stored[n].dtype == np.uint32 else stored[n].astype(dtype) for n in cc.params
    ]
    inputs = example_inputs(component)
    got = ComponentRunner(cc.lib_path, params)(
        *[x.astype(s["dtype"]) for x, s in zip(inputs, cc.inputs)]
    )
    expected = torch_reference(
        component, _dequantized_module(component, cc, stored, scheme), inputs
    )
    scale = max(1.0, float(np.abs(expected).max()))
    diff = float(np.abs(got.astype(np.float32) - expected).max())
    print(
        f"{component} {dtype} {scheme.name}: max abs diff {diff:.3g} vs the reference (output max {scale:.3g})"
    )
    assert diff <= TOLERANCE[dtype] * scale


@pytest.fixture(scope="module")
def exported_unet():
    return export_component("unet", MODULES["unet"](seed=0), LATENT_HW)


@pytest.mark.parametrize("target", ["llvm", "webgpu", "cuda-sm90"])
def test_no_decoded_weight_is_materialised(exported_unet, target):
    """After lowering up to the memory plan: no decode runs on its own (every one sits inside
    the kernel that consumes the weight) and no kernel keeps a global buffer of a weight's shape."""
    from tvm import relax, tirx

    spec = get_target(target)
    scheme = qz.SCHEMES["q4f16"]
    taken = {}

    def decode(mod):
        mod, taken["params"], taken["quantized"] = decode_weights(
            mod, "unet", exported_unet.params, scheme
        )
        return mod

    mod = pipeline.prepare_for(exported_unet.mod, "float16", spec, decode)
    params, quantized = taken["params"], taken["quantized"]
    assert len(params) == len(exported_unet.params) + len(quantized)
    shapes = {}
    main = exported_unet.mod["main"]
    for var, name in zip(main.params[int(main.attrs["num_input"]) :], exported_unet.params):
        if name in quantized:
            shapes[name] = tuple(int(d) for d in var.ty.shape)
    weight_shapes = set(shapes.values())

    lowered = pipeline.plan(mod, spec)
    names = [gv.name_hint for gv in lowered.functions]
    assert not [n for n in names if n.startswith(DECODE_PREFIX)]  # none left standalone

    called = []

    def visit(expr):
        if isinstance(expr, relax.Call) and isinstance(expr.op, relax.GlobalVar):
            called.append(expr.op.name_hint)
        elif (
            isinstance(expr, relax.Call)
            and len(expr.args) > 0
            and isinstance(expr.args[0], relax.GlobalVar)
        ):
            called.append(expr.args[0].name_hint)

    relax.analysis.post_order_visit(lowered["main"].body, visit)
    assert not [n for n in called if n.startswith(DECODE_PREFIX)]
    # one kernel per weight: a decode fused into its consumer, or a GEMM that reads the packed
    # codes itself (the tensor-core GEMM on CUDA float16, the workgroup GEMM on WebGPU)
    packed_gemms = [n for n in called if n.startswith(("tensor_core_gemm_q", "workgroup_gemm_q"))]
    assert len([n for n in called if n.startswith(FUSED_PREFIX)]) + len(packed_gemms) == len(
        quantized
    )
    assert {n.rsplit("_q", 1)[0] for n in packed_gemms} == {
        "cuda-sm90": {"tensor_core_gemm"},
        "webgpu": {"workgroup_gemm"},
        "llvm": set(),
    }[target]
    for gv, func in lowered.functions.items():
        if isinstance(func, tirx.PrimFunc) and gv.name_hint.startswith(FUSED_PREFIX):
            allocated = {tuple(int(d) for d in b.shape) for b in pipeline._global_allocs(func.body)}
            assert not allocated & weight_shapes, (
                f"{gv.name_hint} holds a decoded weight in global memory"
            )
            assert not [
                b.name for b in pipeline._global_allocs(func.body) if b.name.startswith("decode")
            ]
            if (
                spec.schedule_rules()
            ):  # GPU: dlight's Matmul rule (shared-memory tiles), not its Fallback
                assert 'scope="shared"' in func.script(), (
                    f"{gv.name_hint} fell back to dlight's Fallback rule"
                )
