"""sdpack's own Relax rewrites, each a module pass named for what it does.

Each pass is a ``PyExprMutator`` over calls plus the module-pass wrapper
:func:`rewrite_functions`; :func:`static_shape` is the shape check they share,
:func:`conv2d_shapes` / :func:`linear_operands` what the GEMM passes match, :class:`Packed` /
:func:`packed_weight` how they find a quantized weight to read packed,
:func:`plain_attention` / :func:`attention_shape` / :func:`attention_scale` what the attention
passes share.
"""

from __future__ import annotations

import dataclasses


def static_shape(ty) -> list[int] | None:
    """The shape of a Relax tensor type as ints, or None when it is unknown or symbolic."""
    import tvm

    values = getattr(getattr(ty, "shape", None), "values", None)
    if values is None or not all(isinstance(v, tvm.tirx.IntImm) for v in values):
        return None
    return [int(v) for v in values]


def rewrite_functions(rewriter, mod):
    """Every Relax function of ``mod`` through ``rewriter`` (a ``PyExprMutator`` made on
    ``mod``); the module its builder holds afterwards."""
    from tvm import relax

    for gvar, func in list(mod.functions.items()):
        if isinstance(func, relax.Function):
            rewriter.builder_.update_func(gvar, rewriter.visit_expr(func))
    return rewriter.builder_.get()


def conv2d_shapes(call, layouts: tuple[str, str, str]):
    """(input, weight, output) shapes of ``call`` if it is a ``relax.nn.conv2d`` with
    ``layouts`` = (data, kernel, out) layouts, one group, no dilation and static shapes; None
    otherwise."""
    import tvm

    if not (isinstance(call.op, tvm.ir.Op) and call.op.name == "relax.nn.conv2d"):
        return None
    attrs = call.attrs
    if (
        (attrs.data_layout, attrs.kernel_layout, attrs.out_layout) != layouts
        or int(attrs.groups) != 1
        or [int(d) for d in attrs.dilation] != [1, 1]
    ):
        return None
    x, w = call.args
    shapes = static_shape(x.ty), static_shape(w.ty), static_shape(call.ty)
    return None if None in shapes else shapes


def linear_operands(call, lookup_binding):
    """``(x, w, m, n, k, out)`` of a ``relax.matmul`` ``call`` that is a torch linear layer,
    ``matmul(x, permute_dims(w))`` with ``w`` ``[n, k]`` and ``x`` ``[..., k]`` (m rows once its
    leading dims are flattened), static shapes, ``out`` the call's ``[..., n]``; None otherwise.
    ``lookup_binding``: the mutator's, to see through the variable that binds the permute."""
    import math

    import tvm
    from tvm import relax

    x, wt = call.args
    w = lookup_binding(wt) if isinstance(wt, relax.Var) else wt
    if not (
        isinstance(w, relax.Call)
        and isinstance(w.op, tvm.ir.Op)
        and w.op.name == "relax.permute_dims"
    ):
        return None
    w = w.args[0]
    x_shape, w_shape, out = static_shape(x.ty), static_shape(w.ty), static_shape(call.ty)
    if x_shape is None or w_shape is None or out is None or len(w_shape) != 2 or len(x_shape) < 2:
        return None
    n, k = w_shape
    if x_shape[-1] != k or out != [*x_shape[:-1], n]:
        return None
    return x, w, math.prod(x_shape[:-1]), n, k, out


@dataclasses.dataclass(frozen=True)
class Packed:
    """A weight stored quantized (formats/README.md, "Quantized weights"): ``bits``-bit codes
    packed into uint32 words along k, one scale per ``group`` consecutive k."""

    bits: int
    group: int

    @property
    def per_word(self) -> int:
        return 32 // self.bits

    @property
    def words_per_vector(self) -> int:  # uint32 words holding the codes of 8 consecutive k
        return 8 // self.per_word

    @property
    def offset(self) -> int:
        return 1 << (self.bits - 1)


def packed_weight(mod, w, lookup_binding, layout: str, scale_dtype: str):
    """``(codes, scales, Packed)`` when the weight ``w`` is the decode of a quantized weight's
    stored tensors (:func:`packer.compile.quantize.decode_source`) in ``layout`` with scales in
    ``scale_dtype``: what a GEMM kernel reads in its place. None otherwise."""
    from ..quantize import decode_source

    source = decode_source(mod, w, lookup_binding)
    if source is None:
        return None
    codes, scales, bits, group, found = source
    if found != layout or str(scales.ty.dtype) != scale_dtype:
        return None
    return codes, scales, Packed(bits, group)


def plain_attention(call) -> bool:
    """Whether ``call`` is ``R.nn.attention(q, k, v)`` with no bias, causal mask or window: the
    form SD1.5's UNet and VAE import as, the only one the attention passes rewrite."""
    import tvm

    return (
        isinstance(call.op, tvm.ir.Op)
        and call.op.name == "relax.nn.attention"
        and len(call.args) == 3
        and call.attrs.causal_mask is None
        and call.attrs.window_size is None
    )


def attention_scale(call, head_dim) -> float | None:
    """The softmax scale of an attention ``call``: its own, else 1/√head_dim; None when
    neither is known (no scale and a symbolic head dim)."""
    import math

    import tvm

    if call.attrs.scale is not None:
        return float(call.attrs.scale)
    if isinstance(head_dim, tvm.tirx.IntImm):
        head_dim = int(head_dim)
    return 1.0 / math.sqrt(head_dim) if isinstance(head_dim, int) else None


def attention_shape(call) -> tuple[int, int, int, int, int, str] | None:
    """(batch, seq_q, seq_kv, heads, head_dim, dtype) of a :func:`plain_attention` call whose
    q, k and v are static rank-4 (B, S, H, D) tensors of one dtype with matching k and v (what a
    fused attention kernel takes); None for anything else."""
    if not plain_attention(call):
        return None
    q, k, v = call.args
    shapes = [static_shape(x.ty) for x in (q, k, v)]
    dtypes = {str(x.ty.dtype) for x in (q, k, v)}
    if any(s is None or len(s) != 4 for s in shapes) or len(dtypes) != 1:
        return None
    (batch, seq_q, heads, dim), (kb, seq_kv, kh, kd), vshape = shapes
    if (kb, kh, kd) != (batch, heads, dim) or vshape != [batch, seq_kv, heads, dim]:
        return None
    return batch, seq_q, seq_kv, heads, dim, dtypes.pop()
