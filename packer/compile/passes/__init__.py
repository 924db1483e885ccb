"""sdpack's own Relax rewrites, each a module pass named for what it does.

Each pass is a ``PyExprMutator`` over calls plus the module-pass wrapper
:func:`rewrite_functions`; :func:`static_shape` is the shape check they share,
:func:`plain_attention` / :func:`attention_shape` / :func:`attention_scale` what the attention
passes share.
"""

from __future__ import annotations


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
