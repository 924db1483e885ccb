"""Spell an NHWC ``relax.nn.conv2d`` as a matrix product over an im2col view (implicit GEMM)."""

from __future__ import annotations

import tvm
from tvm import relax
from tvm.relax.expr_functor import PyExprMutator, mutator

from . import conv2d_shapes, rewrite_functions


def nhwc_conv_shapes(call) -> tuple[list[int], list[int], list[int]] | None:
    """(input, weight, output) shapes of ``call`` if it is a ``relax.nn.conv2d`` this module's
    rewrites apply to (NHWC data, OHWI kernel, NHWC output, one group, no dilation, static
    shapes); None otherwise. :mod:`packer.compile.passes.tensor_core_gemm` asks the same."""
    return conv2d_shapes(call, ("NHWC", "OHWI", "NHWC"))


@mutator
class _Rewriter(PyExprMutator):
    def visit_call_(self, call):
        call = super().visit_call_(call)
        shapes = nhwc_conv_shapes(call)
        if shapes is None:
            return call
        _, w_shape, out = shapes
        x, w = call.args
        attrs = call.attrs
        out_dtype = str(attrs.out_dtype)
        if out_dtype in ("", "void", "None"):  # unset: the input's dtype, as the legalizer does
            out_dtype = str(x.ty.dtype)
        strides, padding = [int(s) for s in attrs.strides], [int(p) for p in attrs.padding]
        _, kh, kw, channels = w_shape
        splits = split_k(out[0] * out[1] * out[2], out[3], kh * kw * channels)
        if splits == 1:
            return self.builder_.call_te(  # not emitted: the caller's binding takes it
                conv2d_nhwc_as_gemm, x, w, strides, padding, out_dtype, primfunc_name_hint="conv2d"
            )
        partial = self.builder_.emit_te(
            conv2d_nhwc_as_gemm,
            x,
            w,
            strides,
            padding,
            out_dtype,
            splits,
            primfunc_name_hint="conv2d_split_k",
        )
        return self.builder_.call_te(
            sum_splits, partial, out, out_dtype, primfunc_name_hint="conv2d_sum_splits"
        )


TILE = 128
"""The output tile of dlight's tensor-core matmul (128 × 128)."""
TARGET_BLOCKS = 160
"""Split the reduction until about this many tiles run at once (an H100 has 132 SMs)."""
K_STEP = 64
"""Each split's share of the reduction is a multiple of this (dlight's k tile)."""
MAX_SPLITS = 16


def split_k(m: int, n: int, k: int) -> int:
    """Into how many parts to split the reduction of an (m × k)·(k × n) product.

    SD1.5's 8² convolutions are 128 × 1280 outputs with k = 11520 (or 23040): ten 128 × 128
    tiles for 132 SMs, each looping over all of k, which leaves most of an H100 idle
    (docs/design.md, step 1b). Split into S parts of k, the same product is S times as many tiles
    (partial sums, a batched matmul), added up by a small reduction that also takes the
    epilogue. S is the largest in 2..16 with (tiles · S) ≤ TARGET_BLOCKS whose share of k is a
    multiple of K_STEP; 1 (no split) when the tiles already fill the GPU."""
    tiles = -(-m // TILE) * -(-n // TILE)
    best = 1
    for parts in range(2, MAX_SPLITS + 1):
        if tiles * parts > TARGET_BLOCKS:
            break
        if k % (parts * K_STEP) == 0:
            best = parts
    return best


def sum_splits(partial, out_shape, out_dtype: str):
    """y[n, i, j, o] = Σ_s partial[s, (n·OH + i)·OW + j, o], summed in float32."""
    from tvm import te

    splits = int(partial.shape[0])
    _, oh, ow, _ = out_shape

    def value(n, i, j, o):  # an explicit sum: one thread per output, not a reduction kernel
        m = (n * oh + i) * ow + j
        total = partial[0, m, o].astype("float32")
        for s in range(1, splits):
            total = total + partial[s, m, o].astype("float32")
        return total.astype(out_dtype)

    return te.compute(tuple(out_shape), value, name="conv2d_nhwc")


def conv2d_nhwc_as_gemm(x, w, strides, padding, out_dtype: str, splits: int = 1):
    """The TE of the rewrite (module docstring); ``padding`` is (top, left, bottom, right).

    With ``splits`` > 1, the partial products ``[splits, N·OH·OW, O]`` over equal parts of the
    reduction (:func:`split_k`), for :func:`sum_splits`."""
    from tvm import te, topi

    batch, height, width, channels = (int(v) for v in x.shape)
    out_channels, kh, kw, _ = (int(v) for v in w.shape)
    sh, sw = strides
    top, left, bottom, right = padding
    oh = (height + top + bottom - kh) // sh + 1
    ow = (width + left + right - kw) // sw + 1
    if any(padding):
        x = topi.nn.pad(x, [0, top, left, 0], [0, bottom, right, 0], name="pad")

    def gather(m, k):
        tap = k // channels
        return x[
            m // (oh * ow), (m // ow) % oh * sh + tap // kw, (m % ow) * sw + tap % kw, k % channels
        ]

    def flatten(o, k):
        tap = k // channels
        return w[o, tap // kw, tap % kw, k % channels]

    reduction = kh * kw * channels
    col = te.compute((batch * oh * ow, reduction), gather, name="im2col")
    weight = te.compute((out_channels, reduction), flatten, name="weight_2d")
    if splits > 1:
        part = reduction // splits
        kk = te.reduce_axis((0, part), "k")
        return te.compute(
            (splits, batch * oh * ow, out_channels),
            lambda p, m, o: te.sum(
                col[m, p * part + kk].astype(out_dtype)
                * weight[o, p * part + kk].astype(out_dtype),
                axis=kk,
            ),
            name="conv2d_gemm_split",
        )
    k = te.reduce_axis((0, reduction), "k")
    gemm = te.compute(
        (batch * oh * ow, out_channels),
        lambda m, o: te.sum(col[m, k].astype(out_dtype) * weight[o, k].astype(out_dtype), axis=k),
        name="conv2d_gemm",
    )
    return te.compute(
        (batch, oh, ow, out_channels),
        lambda n, i, j, o: gemm[(n * oh + i) * ow + j, o],
        name="conv2d_nhwc",
    )


@tvm.transform.module_pass(opt_level=0, name="Conv2dImplicitGemm")
def Conv2dImplicitGemm(mod, _ctx):  # noqa: N802  (a pass, named like TVM's)
    """The module pass: every Relax function of ``mod`` rewritten.

    For CUDA the pipeline converts every convolution to NHWC activations and OHWI weights
    (``ConvertLayout``, :func:`packer.compile.pipeline.prepare`) and this pass then writes each one
    as

        col[m, k]  = pad(x)[m // (OH·OW), (m / OW % OH)·sh + (k // C) // S, (m % OW)·sw + (k // C) % S, k % C]
        W'[o, k]   = W[o, (k // C) // S, (k // C) % S, k % C]                     (a view of W)
        out[m, o]  = Σ_k col[m, k] · W'[o, k]          m < N·OH·OW, k < R·S·C  (an NT matmul)
        y[n, i, j, o] = out[(n·OH + i)·OW + j, o]

    Both operands are contiguous along k (channels innermost), the layout dlight's tensor-core
    Matmul rule loads well; ``col`` and ``W'`` are pure index maps that dlight inlines into the
    loads of its shared-memory tiles, so nothing R·S times larger than the input is materialised.
    dlight runs SD1.5's 3×3 convolutions faster this way than as TOPI's NCHW convolution (what
    NCHW targets keep); the same product read from an OIHW weight, or an NCHW im2col matmul, is
    not faster: the loads along k are strided in both (docs/design.md, step 1b).

    dlight's tile is 128 × 128 outputs, so an 8² layer (128 × 1280 outputs) would run as 10 tiles
    on 132 SMs. Where the tiles do not fill the GPU (:func:`split_k`), the reduction is split into S
    equal parts: the partial products ``[S, N·OH·OW, O]`` are a batched matmul (S times the tiles) and
    :func:`sum_splits` adds them up in float32, one thread per output, as an elementwise kernel that
    ``FuseOps`` fuses with the bias/residual epilogue.

    The sum runs in the conv's ``out_dtype`` over the same terms as TOPI's. Only NHWC data, OHWI
    kernel, NHWC output, one group, no dilation and static shapes are rewritten; anything else is
    left to the legalizer.
    """
    return relax.transform.Normalize()(rewrite_functions(_Rewriter(mod), mod))
