"""Every image size and every SD1.5-architecture dims variant builds for every GPU target.

The shape class these tests guard: at ``--image-size 64`` (8×8 latents) the SD1.5 UNet's
mid block runs attention over a 1×1 latent. Where attention is split into two products
(``SplitAttention``: CUDA float32; CUDA float16 for head dims over 160; WebGPU for head dims
over 1024, too wide for ``WorkgroupAttention``), the self-attention's P·V is then a batched
product with a reduction of extent 1 (``[2, 8, 1, 1] @ [2, 8, 1, 160]``), and dlight's GEMV rule
fails ``assert r_loops`` on it instead of declining it. A second class raises
``AttributeError`` in the same rule on CUDA (batched GEMVs ``[B, 1, K] @ [B, K, N]`` with N
not a multiple of 16, e.g. 77). :mod:`packer.compile.schedule_rules`
lets the next rule schedule such kernels; these tests reproduce both classes on single ops and
the first on tiny models whose deepest attention level is 1×1, and check that kernels the
unwrapped rules schedule are scheduled exactly as they schedule them.

What sets the class is the *deepest* UNet level's extent, ``latent / 2**(levels - 1)``: 1 at
64 px for SD1.5 (4 levels), up to 12 at 768 px. The tiny UNets below have 2 levels (the tiny
test model's layout), so latent ``2d`` gives deepest extent ``d``; slow tests build a tiny UNet
with SD1.5's own 4-level layout at the real 8×8, and the full-size UNet.
"""

from __future__ import annotations

import logging

import pytest

from packer.compile import pipeline
from packer.compile.export import export_component
from packer.compile.schedule_rules import Tolerant
from packer.compile.targets import get_target

GPU_TARGETS = ("webgpu", "cuda-sm90")


# --- models -----------------------------------------------------------------------------------


def unet(
    *,
    levels: int = 2,
    channels=(32, 64),
    layers: int = 1,
    heads=8,
    cross: int = 32,
    groups: int = 32,
    linear: bool = False,
):
    """A tiny UNet2DConditionModel in SD1.5's layout: cross-attention in every level but the
    deepest, a cross-attention mid block; ``heads`` is diffusers' ``attention_head_dim``, which
    for SD1.5 configs is the number of heads (an int, or one per level)."""
    import torch
    from diffusers import UNet2DConditionModel

    torch.manual_seed(0)
    return UNet2DConditionModel(
        block_out_channels=channels,
        layers_per_block=layers,
        sample_size=8,
        norm_num_groups=groups,
        cross_attention_dim=cross,
        attention_head_dim=heads,
        use_linear_projection=linear,
        in_channels=4,
        out_channels=4,
        down_block_types=("CrossAttnDownBlock2D",) * (levels - 1) + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * (levels - 1),
    ).eval()


def vae(*, channels=(32, 64), layers: int = 1, groups: int = 32):
    import torch
    from diffusers import AutoencoderKL

    torch.manual_seed(0)
    n = len(channels)
    return AutoencoderKL(
        block_out_channels=channels,
        layers_per_block=layers,
        latent_channels=4,
        norm_num_groups=groups,
        down_block_types=("DownEncoderBlock2D",) * n,
        up_block_types=("UpDecoderBlock2D",) * n,
    ).eval()


def clip(*, hidden: int = 32, heads: int = 4, layers: int = 2, intermediate: int = 37):
    import torch
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(0)
    return CLIPTextModel(
        CLIPTextConfig(
            hidden_size=hidden,
            intermediate_size=intermediate,
            num_hidden_layers=layers,
            num_attention_heads=heads,
            vocab_size=691,
            max_position_embeddings=77,
            bos_token_id=0,
            eos_token_id=2,
            pad_token_id=1,
        )
    ).eval()


def attention(batch: int, seq_q: int, seq_kv: int, heads: int, dim: int):
    """``main(q, k, v) = R.nn.attention(q, k, v)``, (B, S, H, D) as the UNet exports it."""
    from tvm import relax

    bb = relax.BlockBuilder()
    q = relax.Var("q", relax.TensorType((batch, seq_q, heads, dim), "float32"))
    k = relax.Var("k", relax.TensorType((batch, seq_kv, heads, dim), "float32"))
    v = relax.Var("v", relax.TensorType((batch, seq_kv, heads, dim), "float32"))
    with bb.function("main", [q, k, v], attrs={"num_input": 3}):
        with bb.dataflow():
            out = bb.emit_output(relax.op.nn.attention(q, k, v))
        bb.emit_func_output(out)
    return bb.get()


def batched_gemv(batch: int, k: int, n: int):
    """``main(x, w) = x @ permute_dims(w)``: ``[batch, 1, k] @ [batch, n, k]ᵀ``."""
    from tvm import relax

    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((batch, 1, k), "float32"))
    w = relax.Var("w", relax.TensorType((batch, n, k), "float32"))
    with bb.function("main", [x, w], attrs={"num_input": 2}):
        with bb.dataflow():
            wt = bb.emit(relax.op.permute_dims(w, [0, 2, 1]))
            out = bb.emit_output(relax.op.matmul(x, wt))
        bb.emit_func_output(out)
    return bb.get()


# SD1.5 at 8×8 latents, mid block (1×1, 1280 channels, 8 heads of 160): self-attention.
SELF_1x1 = (2, 1, 1, 8, 160)
# The same with one head of 1280: too wide for WebGPU's WorkgroupAttention, so split there too.
SELF_1x1_ONE_HEAD = (2, 1, 1, 1, 1280)
# A one-head cross-attention over the 77 prompt tokens at a 1×1 level.
CROSS_1x1_ONE_HEAD = (2, 1, 77, 1, 64)


# --- helpers ----------------------------------------------------------------------------------

_EXPORTS: dict = {}


def exported(component: str, name: str, make, hw):
    """``export_component`` once per (component, variant, latent size) for the whole session."""
    key = (component, name, tuple(hw))
    if key not in _EXPORTS:
        _EXPORTS[key] = export_component(component, make(), tuple(hw))
    return _EXPORTS[key]


def prepared(mod, target: str, dtype: str):
    """``mod`` through steps 1–6 as ``target`` runs them (its attention and layout choices)."""
    spec = get_target(target)
    return spec, pipeline.prepare_for(mod, dtype, spec)


def scheduled(mod, spec, rules=None):
    """The fused module after dlight (pipeline steps 7 and 9) with ``rules`` (the target's)."""
    import tvm
    from tvm.s_tir import dlight as dl

    with spec.tvm_target():
        fused = tvm.transform.Sequential(pipeline.fusion_passes())(mod)
        rules = spec.schedule_rules() if rules is None else rules
        return dl.ApplyDefaultSchedule(*rules)(fused)


def unscheduled(mod) -> list[str]:
    from tvm import tirx

    return [
        gv.name_hint
        for gv, f in mod.functions_items()
        if isinstance(f, tirx.PrimFunc) and not f.attrs.get("tirx.is_scheduled", False)
    ]


def build(mod, target: str, dtype: str):
    """Prepare and build (``relax.build``, no wasm link) for ``target``; the executable."""
    spec, mod = prepared(mod, target, dtype)
    return pipeline.build(mod, spec)


def raw_dlight_rules():
    """dlight's GPU rules unwrapped (without :class:`packer.compile.schedule_rules.Tolerant`)."""
    from tvm.s_tir import dlight as dl

    return [
        dl.gpu.Matmul(),
        dl.gpu.GEMV(),
        dl.gpu.Reduction(),
        dl.gpu.GeneralReduction(),
        dl.gpu.Fallback(),
    ]


def primfuncs(mod) -> list:
    from tvm import tirx

    return [f for _, f in mod.functions_items() if isinstance(f, tirx.PrimFunc)]


# --- the class on single attention ops ---------------------------------------------------------


@pytest.mark.parametrize(
    ("target", "make"),
    [
        ("webgpu", lambda: attention(*SELF_1x1_ONE_HEAD)),
        ("cuda-sm90", lambda: attention(*SELF_1x1)),
        ("cuda-sm90", lambda: batched_gemv(2, 64, 77)),
    ],
    ids=["self-1x1-one-head-webgpu", "self-1x1-cuda", "gemv-2x1x64x77-cuda"],
)
def test_dlight_gemv_raises_on_the_class(target, make):
    """The witness: untouched dlight raises on these kernels (if a TVM upgrade makes this fail,
    dlight learnt to decline them and the Tolerant wrapper is merely harmless)."""
    from tvm.s_tir import dlight as dl

    spec, mod = prepared(make(), target, "float32")
    with spec.tvm_target() as tvm_target:
        import tvm

        fused = tvm.transform.Sequential(pipeline.fusion_passes())(mod)
        raised = []
        for func in primfuncs(fused):
            try:
                dl.gpu.GEMV().apply(func, tvm_target, False)
            except (AssertionError, AttributeError) as exc:
                raised.append(type(exc).__name__)
    assert raised, "dlight's GEMV no longer raises on this attention"
    with pytest.raises(Exception):  # noqa: B017
        scheduled(mod, spec, raw_dlight_rules())


@pytest.mark.parametrize("target", GPU_TARGETS)
@pytest.mark.parametrize("dtype", ["float32", "float16"])
@pytest.mark.parametrize(
    "case",
    [SELF_1x1, CROSS_1x1_ONE_HEAD, (2, 1, 2, 8, 40), (2, 3, 3, 1, 512), SELF_1x1_ONE_HEAD],
    ids=["self-1x1", "cross-1x1-one-head", "self-1x2", "self-3x3-one-head", "self-1x1-one-head"],
)
def test_attention_at_tiny_sequences_builds(case, dtype, target):
    spec, mod = prepared(attention(*case), target, dtype)
    assert not unscheduled(scheduled(mod, spec))
    assert build(attention(*case), target, dtype) is not None


@pytest.mark.parametrize("target", GPU_TARGETS)
@pytest.mark.parametrize("n", [77, 40, 100])
def test_batched_gemv_of_odd_width_builds(n, target):
    spec, mod = prepared(batched_gemv(2, 64, n), target, "float32")
    assert not unscheduled(scheduled(mod, spec))
    assert build(batched_gemv(2, 64, n), target, "float32") is not None


# --- the rule wrapper ---------------------------------------------------------------------------


class _Raises:
    def apply(self, func, target, tunable):
        raise AssertionError("cannot")

    def is_target_available(self, target):
        return True


class _Declines(_Raises):
    def apply(self, func, target, tunable):
        return None


def test_tolerant_turns_a_raise_into_not_applicable(caplog):
    func = primfuncs(_fused_self_1x1())[0]
    with caplog.at_level(logging.DEBUG, logger="packer.compile.schedule_rules"):
        assert Tolerant(_Raises()).apply(func, None, False) is None
    assert "_Raises cannot schedule" in caplog.text and "AssertionError" in caplog.text
    assert Tolerant(_Declines()).apply(func, None, False) is None


def test_gpu_rules_wrap_all_but_fallback():
    from tvm.s_tir import dlight as dl

    for key in GPU_TARGETS:
        rules = get_target(key).schedule_rules()
        assert all(isinstance(rule, Tolerant) for rule in rules[:-1])
        assert type(rules[-1]) is dl.gpu.Fallback  # its errors must surface, nothing follows it
        assert [type(r.rule) for r in rules[:-1]] == [type(r) for r in raw_dlight_rules()[:-1]]


def _fused_self_1x1():
    import tvm

    spec, mod = prepared(attention(*SELF_1x1), "webgpu", "float32")
    with spec.tvm_target():
        return tvm.transform.Sequential(pipeline.fusion_passes())(mod)


@pytest.mark.parametrize(
    ("target", "dtype"),
    [
        ("webgpu", "float32"),
        ("webgpu", "float16"),
        ("cuda-sm90", "float32"),
        ("cuda-sm90", "float16"),
    ],
)
def test_kernels_that_built_before_keep_their_schedules(target, dtype):
    """Where no rule raises, the wrapped rules schedule every kernel exactly as dlight's own
    (the CUDA tensor-core kernels and the shipped tuning records keep matching)."""
    import tvm

    modules = [
        exported("vae_decoder", "base", vae, (8, 8)).mod,
        attention(2, 64, 77, 8, 40),
        attention(2, 16, 16, 8, 80),
    ]
    for mod in modules:
        spec, mod = prepared(mod, target, dtype)
        new = scheduled(mod, spec)
        old = scheduled(mod, spec, raw_dlight_rules())
        assert not unscheduled(new)
        tvm.ir.assert_structural_equal(new, old)


# --- tiny models for webgpu, sizes and dims -------------------------------------------------------

UNETS = {
    "base": dict(),
    "one-head": dict(heads=1),
    # one head of 1056 at the deepest level: wider than WorkgroupAttention (WebGPU) and
    # FusedAttention (CUDA float16) take, so attention is split on every GPU target
    "wide-head": dict(channels=(32, 1056), heads=1),
    "dims": dict(channels=(16, 48), groups=16, layers=2, cross=24, heads=(2, 4)),
    "linear-proj": dict(linear=True, heads=2),
}


def _ids(value):
    return "x".join(map(str, value)) if isinstance(value, tuple) else str(value)


@pytest.mark.parametrize(
    ("target", "variant", "hw", "dtype"),
    [
        # deepest level 1×1, as SD1.5 at 64 px, with split attention: the class
        ("cuda-sm90", "base", (2, 2), "float32"),
        ("webgpu", "wide-head", (2, 2), "float32"),
        pytest.param("cuda-sm90", "wide-head", (2, 2), "float16", marks=pytest.mark.slow),
        # WebGPU's fused attention at 1×1, other dims and sizes
        pytest.param("webgpu", "base", (2, 2), "float32", marks=pytest.mark.slow),
        pytest.param("webgpu", "one-head", (2, 2), "float16", marks=pytest.mark.slow),
        pytest.param("webgpu", "dims", (2, 2), "float32", marks=pytest.mark.slow),
        pytest.param("webgpu", "linear-proj", (2, 2), "float16", marks=pytest.mark.slow),
        pytest.param("webgpu", "base", (2, 4), "float32", marks=pytest.mark.slow),  # 1×2
        pytest.param("webgpu", "base", (6, 6), "float32", marks=pytest.mark.slow),  # as 192 px
        pytest.param("webgpu", "base", (24, 24), "float32", marks=pytest.mark.slow),  # as 768 px
    ],
    ids=_ids,
)
def test_tiny_unet_builds(target, variant, hw, dtype):
    exp = exported("unet", variant, lambda: unet(**UNETS[variant]), hw)
    assert build(exp.mod, target, dtype) is not None


@pytest.mark.slow
@pytest.mark.parametrize("target", ["cuda-sm90"])  # webgpu: its full-size UNet at 8×8 below
def test_tiny_unet_in_sd15_layout_builds_at_64px(target):
    """Four levels like SD1.5, so 8×8 latents (64 px) put the mid block at 1×1."""
    exp = exported(
        "unet", "sd15-layout", lambda: unet(levels=4, channels=(32, 32, 64, 64), groups=16), (8, 8)
    )
    assert build(exp.mod, target, "float32") is not None


@pytest.mark.parametrize(
    ("variant", "make", "hw"),
    [
        ("base", lambda: vae(), (2, 2)),
        ("dims", lambda: vae(channels=(16, 48), layers=2, groups=16), (8, 8)),
        pytest.param("base", lambda: vae(), (2, 4), marks=pytest.mark.slow),
        pytest.param("base", lambda: vae(), (24, 24), marks=pytest.mark.slow),
    ],
    ids=["base-2x2", "dims-8x8", "base-2x4", "base-24x24"],
)
def test_tiny_vae_decoder_builds_for_webgpu(variant, make, hw):
    exp = exported("vae_decoder", variant, make, hw)
    assert build(exp.mod, "webgpu", "float32") is not None


@pytest.mark.parametrize(
    "dims",
    [dict(hidden=48, heads=1, layers=1), dict(hidden=48, heads=3, layers=1, intermediate=100)],
    ids=["one-head", "three-heads"],
)
def test_tiny_text_encoder_dims_build_for_webgpu(dims):
    exp = exported("text_encoder", str(sorted(dims.items())), lambda: clip(**dims), (8, 8))
    assert build(exp.mod, "webgpu", "float32") is not None


# --- the full-size UNet ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def full_size_unet_8x8():
    """The real SD1.5 UNet config (seeded random weights) exported at 8×8 latents."""
    import torch
    from diffusers import UNet2DConditionModel

    from bench.sd15 import UNET

    torch.manual_seed(0)
    return export_component("unet", UNet2DConditionModel(**UNET).eval(), (8, 8))


@pytest.mark.slow
@pytest.mark.parametrize("target", GPU_TARGETS)
def test_full_size_unet_builds_at_64px(full_size_unet_8x8, target):
    """The reproduction: the SD1.5 UNet at 8×8 latents, float32, through ``relax.build`` in
    this process (WebGPU: before the wasm link; CUDA: without the driver stub). WebGPU runs
    these attentions through WorkgroupAttention; CUDA float32 splits them, so it builds only
    because :mod:`packer.compile.schedule_rules` passes the unit-reduction P·V on to Fallback."""
    assert build(full_size_unet_8x8.mod, target, "float32") is not None
