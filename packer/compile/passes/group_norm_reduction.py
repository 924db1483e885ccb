"""Rewrite ``relax.nn.group_norm`` into reductions with one row per channel."""

from __future__ import annotations

import tvm
from tvm import relax
from tvm.relax.expr_functor import PyExprMutator, mutator

from . import rewrite_functions, static_shape

_OPAQUE = 8
"""``kOpaque``: keeps ``FuseOps`` from fusing the (N, G) statistics with their neighbours."""


@mutator
class _Rewriter(PyExprMutator):
    def __init__(self, mod):
        super().__init__(mod)
        self.group_norm = tvm.ir.Op.get("relax.nn.group_norm")

    def visit_call_(self, call):
        call = super().visit_call_(call)
        if not (isinstance(call.op, tvm.ir.Op) and call.op.same_as(self.group_norm)):
            return call
        attrs = call.attrs
        x, gamma, beta = call.args
        shape = static_shape(x.ty)
        groups = int(attrs.num_groups)
        if shape is None or len(shape) != 4:
            return call
        layout = {(1, (2, 3)): "NCHW", (3, (1, 2)): "NHWC"}.get(
            (int(attrs.channel_axis), tuple(int(a) for a in attrs.axes))
        )
        if layout is None or shape[layout.index("C")] % groups:
            return call

        emit_te = self.builder_.emit_te
        opaque = {"op_pattern": _OPAQUE}
        if layout == "NCHW":
            t1, t2 = (
                emit_te(
                    _channel_sums,
                    x,
                    power=p,
                    layout=layout,
                    primfunc_name_hint=f"group_norm_sum{p}",
                )
                for p in (1, 2)
            )
        else:
            t1, t2 = (
                emit_te(
                    _column_sums,
                    emit_te(
                        _partial_channel_sums, x, power=p, primfunc_name_hint=f"group_norm_part{p}"
                    ),
                    batch=shape[0],
                    primfunc_name_hint=f"group_norm_sum{p}",
                )
                for p in (1, 2)
            )
        mean = emit_te(
            _group_mean,
            x,
            t1,
            groups=groups,
            layout=layout,
            primfunc_name_hint="group_norm_mean",
            primfunc_attrs=opaque,
        )
        rstd = emit_te(
            _group_rstd,
            x,
            t1,
            t2,
            mean,
            groups=groups,
            epsilon=float(attrs.epsilon),
            layout=layout,
            primfunc_name_hint="group_norm_rstd",
            primfunc_attrs=opaque,
        )
        return emit_te(
            _normalize,
            x,
            mean,
            rstd,
            gamma,
            beta,
            groups=groups,
            scale=bool(attrs.scale),
            center=bool(attrs.center),
            layout=layout,
            primfunc_name_hint="group_norm_apply",
        )


def _dims(x, layout):
    """(N, C, H, W) of ``x`` whatever its layout."""
    return tuple(x.shape[layout.index(axis)] for axis in "NCHW")


def _at(x, layout, n, c, h, w):
    """x[n, c, h, w] in NCHW terms."""
    index = {"N": n, "C": c, "H": h, "W": w}
    return x[tuple(index[axis] for axis in layout)]


def _f32(value):
    return value if value.dtype == "float32" else value.astype("float32")


def _channel_sums(x, power, layout):
    """t[n·C + c] = Σ_hw x^power. One flat row axis and x[n, c, h, w] as the only read: dlight's
    GEMV rule claims (and fails on) a reduction with a second, smaller input or a unit batch
    axis, and its Reduction rule fails on a second read of x (e.g. a shift x[n, c, 0, 0])."""
    from tvm import te

    n_, c_, h_, w_ = _dims(x, layout)
    rh = te.reduce_axis((0, h_), "rh")
    rw = te.reduce_axis((0, w_), "rw")

    def term(r):
        n, c = r // c_, r % c_
        d = _f32(_at(x, layout, n, c, rh, rw))
        return d if power == 1 else d * d

    return te.compute(
        (n_ * c_,), lambda r: te.sum(term(r), axis=[rh, rw]), name=f"channel_sum{power}"
    )


PARTIAL_OUTPUTS = 65536
"""NHWC channel sums: at most about this many partial sums (N · row blocks · C) in stage 1."""
MAX_ROW_BLOCKS = 64
"""... and at most this many row blocks: stage 2 adds them up serially, one thread per channel."""


def _row_blocks(x) -> int:
    """How many blocks of rows an NHWC channel sum is split into: the most that divides H,
    at most ``MAX_ROW_BLOCKS`` and ``PARTIAL_OUTPUTS / (N·C)``."""
    n_, h_, _, c_ = (int(v) for v in x.shape)
    limit = max(1, min(MAX_ROW_BLOCKS, PARTIAL_OUTPUTS // (n_ * c_)))
    return max(d for d in range(1, h_ + 1) if h_ % d == 0 and d <= limit)


def _partial_channel_sums(x, power):
    """NHWC stage 1: p[n·B + b, c] = Σ over the rows of block b and all columns of x^power.

    One sum per channel over H·W reduces along the outer axes of an NHWC tensor: as N·C rows
    (640 for the UNet's 64² × 320 layers, 128 for the VAE's 512² × 128) dlight runs each as one
    thread over H·W values (docs/design.md, step 3). Split into
    B row blocks there are ~64 K partial sums, each over (H/B)·W values read along contiguous
    channels."""
    from tvm import te

    n_, h_, w_, c_ = (int(v) for v in x.shape)
    blocks = _row_blocks(x)
    rows = h_ // blocks
    rr = te.reduce_axis((0, rows), "rr")
    rw = te.reduce_axis((0, w_), "rw")

    def term(i, c):
        d = _f32(x[i // blocks, (i % blocks) * rows + rr, rw, c])
        return d if power == 1 else d * d

    return te.compute(
        (n_ * blocks, c_),
        lambda i, c: te.sum(term(i, c), axis=[rr, rw]),
        name=f"partial_sum{power}",
    )


def _column_sums(partial, batch):
    """NHWC stage 2: t[n·C + c] = Σ_b p[n·B + b, c] (N·B·C values, a few hundred KB)."""
    from tvm import te

    rows, c_ = (int(v) for v in partial.shape)
    blocks = rows // batch
    rb = te.reduce_axis((0, blocks), "rb")
    return te.compute(
        (batch * c_,),
        lambda r: te.sum(partial[(r // c_) * blocks + rb, r % c_], axis=rb),
        name="channel_sum",
    )


def _channel_mean(x, t1, n, c, layout):
    _, c_, h_, w_ = _dims(x, layout)
    return t1[n * c_ + c] / float(int(h_) * int(w_))


def _group_mean(x, t1, groups, layout):
    """Mean of each group's channel means: an explicit sum of C/G terms per (n, g)."""
    from tvm import te

    per_group = int(_dims(x, layout)[1]) // groups

    def value(n, g):
        total = _channel_mean(x, t1, n, g * per_group, layout)
        for j in range(1, per_group):
            total = total + _channel_mean(x, t1, n, g * per_group + j, layout)
        return total / float(per_group)

    return te.compute((x.shape[0], groups), value, name="group_mean")


def _group_rstd(x, t1, t2, mean, groups, epsilon, layout):
    from tvm import te, tirx

    _, c_, h_, w_ = _dims(x, layout)
    c_ = int(c_)
    per_group = c_ // groups
    hw = float(int(h_) * int(w_))

    def channel(n, c, g):
        s1, s2 = t1[n * c_ + c], t2[n * c_ + c]
        d = _channel_mean(x, t1, n, c, layout) - mean[n, g]
        return s2 - s1 * s1 / hw + hw * d * d

    def value(n, g):
        total = channel(n, g * per_group, g)
        for j in range(1, per_group):
            total = total + channel(n, g * per_group + j, g)
        var = tirx.max(total / (hw * per_group), tirx.const(0.0, "float32"))
        return tirx.rsqrt(var + tirx.const(epsilon, "float32"))

    return te.compute((x.shape[0], groups), value, name="group_rstd")


def _normalize(x, mean, rstd, gamma, beta, groups, scale, center, layout):
    from tvm import te

    per_group = _dims(x, layout)[1] // groups

    def value(*index):
        n, c = index[layout.index("N")], index[layout.index("C")]
        g = c // per_group
        y = (_f32(x[index]) - mean[n, g]) * rstd[n, g]
        if scale:
            y = y * _f32(gamma[c])
        if center:
            y = y + _f32(beta[c])
        return y.astype(x.dtype)

    return te.compute(x.shape, value, name="group_norm")


@tvm.transform.module_pass(opt_level=0, name="GroupNormReduction")
def GroupNormReduction(mod, _ctx):  # noqa: N802  (a pass, named like TVM's)
    """The module pass: every Relax function of ``mod`` rewritten.

    ``LegalizeOps`` turns ``R.nn.group_norm`` (plus the SiLU that ``FuseOps`` attaches) into one
    PrimFunc that no dlight rule parallelises beyond the batch: one CTA per batch element, 2 for the
    UNet (docs/design.md, step 3, has the cost). For an NCHW input x with G
    groups of C/G channels it becomes five small PrimFuncs (``emit_te``):

        t1[n·C+c] = Σ_hw x           t2[n·C+c] = Σ_hw x²          N·C rows of H·W   (reductions)
        mean[n, g] = mean over c∈g of mean_c = t1/HW                                 (opaque)
        rstd[n, g] = rsqrt(var + eps), var = (Σ_c M2_c + HW·Σ_c (mean_c − mean)²) / (C/G·HW),
                     M2_c = t2 − t1²/HW  (parallel-variance combination)              (opaque)
        y = (x − mean) · rstd · γ[c] + β[c]                                          (elementwise)

    The two long reductions are plain row reductions that dlight's ``Reduction``/
    ``GeneralReduction`` rules schedule with N·C rows (640 at 320 channels and batch 2, 128-512 for
    the VAE at batch 1) instead of N; ``y`` is one elementwise kernel. The (N, G) statistics are
    explicit sums of C/G terms, one thread per group, marked opaque (``op_pattern`` 8) so that
    ``FuseOps`` neither inlines them into every output element nor makes the full-size ``y`` their
    epilogue. Caveat: M2_c is a one-pass float32 sum of squares, which loses about
    2·log2(|mean_c|/std_c) of float32's 24 bits per channel (a shift by x[n, c, 0, 0] would avoid it
    but dlight's Reduction rule rejects the second read; open). Everything after the load of x is float32 (the float16 variant casts only the
    result), as the legalised op kept its statistics.

    Only SD1.5's layouts are rewritten: rank 4, static shape, C divisible by G, and either NCHW
    (``channel_axis=1``, ``axes=[2, 3]``) or NHWC (``channel_axis=3``, ``axes=[1, 2]``, what
    ``ConvertLayout`` makes of it for CUDA). In NHWC the channel sums reduce over the outer axes,
    so they run in two stages: partial sums per block of rows (:func:`_partial_channel_sums`, ~64 K
    outputs read along contiguous channels), then the sum of the blocks per channel (faster
    than one thread per channel; docs/design.md, step 3). Anything else is left to the
    legalizer.
    """
    return relax.transform.Normalize()(rewrite_functions(_Rewriter(mod), mod))
