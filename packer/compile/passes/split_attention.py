"""Rewrite ``relax.nn.attention`` into the ops it is made of, so dlight schedules each of them."""

from __future__ import annotations

import tvm
from tvm import relax
from tvm.relax.expr_functor import PyExprMutator, mutator

from . import attention_scale, plain_attention, rewrite_functions


@mutator
class _Splitter(PyExprMutator):
    def visit_call_(self, call):
        call = super().visit_call_(call)
        if not plain_attention(call):
            return call
        q, k, v = call.args
        q_ty = q.ty
        if q_ty.ndim != 4 or q_ty.shape is None:
            return call
        dtype = str(q_ty.dtype)
        scale = attention_scale(call, q_ty.shape.values[3])
        if scale is None:
            return call
        op = relax.op
        qh = self.builder_.emit(op.permute_dims(q, [0, 2, 1, 3]))
        qh = self.builder_.emit(op.multiply(qh, relax.const(scale, dtype)))
        kt = self.builder_.emit(op.permute_dims(k, [0, 2, 3, 1]))
        vh = self.builder_.emit(op.permute_dims(v, [0, 2, 1, 3]))
        scores = self.builder_.emit(op.matmul(qh, kt, out_dtype=dtype))
        if dtype == "float32":
            probs = self.builder_.emit(op.nn.softmax(scores, axis=-1))
        else:
            probs = self.builder_.emit_te(_softmax_f32, scores, primfunc_name_hint="softmax")
        out = self.builder_.emit(op.matmul(probs, vh, out_dtype=dtype))
        return op.permute_dims(out, [0, 2, 1, 3])


def _softmax_f32(scores):
    """Softmax over the last axis of a low-precision tensor with float32 exp and sum."""
    from tvm import te, tirx

    *rows, length = scores.shape
    k = te.reduce_axis((0, length), "k")
    row_max = te.compute(rows, lambda *i: te.max(scores[(*i, k)], axis=k), name="row_max")

    def shifted(i, j):
        return tirx.exp((scores[(*i, j)] - row_max[i]).astype("float32"))

    k2 = te.reduce_axis((0, length), "k2")
    row_sum = te.compute(rows, lambda *i: te.sum(shifted(i, k2), axis=k2), name="row_sum")
    return te.compute(
        scores.shape,
        lambda *i: (shifted(i[:-1], i[-1]) / row_sum[i[:-1]]).astype(scores.dtype),
        name="softmax",
    )


@tvm.transform.module_pass(opt_level=0, name="SplitAttention")
def SplitAttention(mod, _ctx):  # noqa: N802  (a pass, named like TVM's)
    """The module pass: every Relax function of ``mod`` rewritten.

    ``LegalizeOps`` turns one ``R.nn.attention(q, k, v)`` into a single PrimFunc (QKᵀ, softmax and
    P·V as blocks of one kernel family) that none of dlight's rules recognises: its Fallback runs the
    QKᵀ product one thread per score (docs/design.md, step 2, has the cost). Spelled out as

        q' = permute_dims(q, [0, 2, 1, 3]) * scale        (B, H, Sq, D)
        kᵀ = permute_dims(k, [0, 2, 3, 1])                (B, H, D, Sk)
        p  = softmax(matmul(q', kᵀ), axis=-1)             (B, H, Sq, Sk)
        o  = permute_dims(matmul(p, v'), [0, 2, 1, 3])     (B, Sq, H, Dv), v' = (B, H, Sk, Dv)

    the two products become batched matmuls (dlight ``Matmul``/``GEMV``) and the softmax a row
    reduction (dlight ``GeneralReduction``). The scale multiplies ``q`` (Sq·D values) rather than
    the scores (Sq·Sk). In a float16 module the scores stay float16 in memory (the largest buffer:
    B·H·Sq·Sk) and the softmax is sdpack's own ``emit_te`` kernel that takes the row max in float16
    and the exps and their sum in float32 (``R.nn.softmax`` would sum 4096 exps in float16, and a
    cast around it would fuse into the matmul and store the scores as float32). The products keep the
    dtype of their inputs like every other matmul of the module.

    Only the plain form is rewritten: no bias, no causal mask, no window (what the SD1.5 UNet and VAE
    import as). Anything else is left to the legalizer.
    """
    return relax.transform.Normalize()(rewrite_functions(_Splitter(mod), mod))
