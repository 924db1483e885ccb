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
    def __init__(self, mod, workgroup_stats: bool):
        super().__init__(mod)
        self.group_norm = tvm.ir.Op.get("relax.nn.group_norm")
        self.workgroup_stats = workgroup_stats
        self.kernels: dict[tuple, relax.GlobalVar] = {}

    def visit_call_(self, call):
        call = super().visit_call_(call)
        if not (isinstance(call.op, tvm.ir.Op) and call.op.same_as(self.group_norm)):
            return call
        attrs = call.attrs
        x, gamma, beta = call.args
        shape = static_shape(x.ty)
        groups = int(attrs.num_groups)
        if shape is None:
            return call
        axes = (int(attrs.channel_axis), tuple(int(a) for a in attrs.axes))
        if len(shape) == 3 and axes == (1, (2,)):
            # (N, C, L), the VAE attention's norm: NCHW with W = 1, viewed so and back
            if shape[1] % groups:
                return call
            x4 = self.builder_.emit(relax.op.reshape(x, [*shape, 1]))
            y = self.builder_.emit(self._rewrite(x4, [*shape, 1], gamma, beta, attrs, "NCHW"))
            return relax.op.reshape(y, shape)
        if len(shape) != 4:
            return call
        layout = {(1, (2, 3)): "NCHW", (3, (1, 2)): "NHWC"}.get(axes)
        if layout is None or shape[layout.index("C")] % groups:
            return call
        return self._rewrite(x, shape, gamma, beta, attrs, layout)

    def _rewrite(self, x, shape, gamma, beta, attrs, layout):
        """The statistics emitted, the normalised output returned as a call (:meth:`_apply`)."""
        emit_te = self.builder_.emit_te
        groups = int(attrs.num_groups)
        if layout == "NCHW" and self.workgroup_stats:
            key = (tuple(shape), str(x.ty.dtype), groups, float(attrs.epsilon))
            gvar = self.kernels.get(key)
            if gvar is None:
                gvar = self.builder_.add_func(group_moments_kernel(*key), "group_norm_moments")
                self.kernels[key] = gvar
            chunks = moment_chunks(shape, groups)
            if chunks == 1:  # the kernel writes the statistics
                out = relax.TensorType([2, shape[0], groups], "float32")
                stats = self.builder_.emit(relax.call_tir(gvar, [x], out))
            else:
                out = relax.TensorType([2, shape[0] * groups, chunks], "float32")
                stats = emit_te(
                    _stats_from_chunks,
                    self.builder_.emit(relax.call_tir(gvar, [x], out)),
                    shape=shape,
                    groups=groups,
                    epsilon=float(attrs.epsilon),
                    primfunc_name_hint="group_norm_stats",
                    primfunc_attrs={"op_pattern": _OPAQUE},
                )
            return self._apply(x, stats, gamma, beta, attrs, layout)
        if layout == "NCHW":
            sums = [
                emit_te(
                    _channel_sums,
                    x,
                    power=p,
                    layout=layout,
                    primfunc_name_hint=f"group_norm_sum{p}",
                )
                for p in (1, 2)
            ]
        else:
            sums = [
                emit_te(
                    _column_sums,
                    emit_te(
                        _partial_channel_sums, x, power=p, primfunc_name_hint=f"group_norm_part{p}"
                    ),
                    batch=shape[0],
                    primfunc_name_hint=f"group_norm_sum{p}",
                )
                for p in (1, 2)
            ]
        stats = emit_te(
            _group_stats,
            x,
            *sums,
            groups=groups,
            epsilon=float(attrs.epsilon),
            layout=layout,
            primfunc_name_hint="group_norm_stats",
            primfunc_attrs={"op_pattern": _OPAQUE},
        )
        return self._apply(x, stats, gamma, beta, attrs, layout)

    def _apply(self, x, stats, gamma, beta, attrs, layout):
        """The normalisation as a call, not emitted: the caller's binding takes it, so FuseOps
        fuses the SiLU that follows into it (an alias binding in between keeps them apart)."""
        return self.builder_.call_te(
            _normalize,
            x,
            stats,
            gamma,
            beta,
            groups=int(attrs.num_groups),
            scale=bool(attrs.scale),
            center=bool(attrs.center),
            layout=layout,
            primfunc_name_hint="group_norm_apply",
        )


STATS_THREADS = 256
"""Invocations of a workgroup of :func:`group_moments_kernel` (WebGPU's default limit)."""
CHUNK = 4096
"""Elements of a group one workgroup of :func:`group_moments_kernel` adds up (16 per
invocation): about what each workgroup of dlight's row sums took per channel at 64², so that a
large group (the VAE's, 2 M elements at 512²) is spread over as many workgroups as its row sums
had, not one."""


def moment_chunks(shape, groups: int) -> int:
    """Workgroups per group of an NCHW ``shape`` in :func:`group_moments_kernel`."""
    n_, c_, h_, w_ = (int(v) for v in shape)
    return -(-(c_ // groups * h_ * w_) // CHUNK)


def group_moments_kernel(shape, dtype: str, groups: int, epsilon: float):
    """The PrimFunc ``x -> out`` for an NCHW ``x`` of ``shape`` with ``groups`` groups, both
    moments of each group from one read of x, in float32.

    A group of an NCHW tensor is one contiguous run of C/G·H·W elements; it is cut into
    :func:`moment_chunks` chunks of :data:`CHUNK`, one workgroup each: each invocation adds every
    ``STATS_THREADS``-th element and its square (neighbouring invocations read neighbouring
    elements), a tree in workgroup memory adds the invocations' sums. Where a group is one chunk
    the first invocation writes the statistics, ``out[0, n, g]`` the mean and ``out[1, n, g]``
    the rstd, ``rsqrt(max(Σx²/len − mean², 0) + eps)``; otherwise it writes the chunk's sums
    ``out[0 or 1, n·G + g, chunk]`` for :func:`_stats_from_chunks`. Either way the moments take
    one dispatch where dlight's row sums took two (one per moment, each reading x)."""
    from tvm.script import tirx as T

    n_, c_, h_, w_ = (int(v) for v in shape)
    hw = h_ * w_
    length = c_ // groups * hw
    chunks = moment_chunks(shape, groups)
    chunk = min(CHUNK, length)
    threads = STATS_THREADS
    steps = -(-chunk // threads)
    levels = threads.bit_length() - 1
    zero = T.float32(0)
    count = T.float32(length)
    out_shape = (2, n_, groups) if chunks == 1 else (2, n_ * groups, chunks)

    @T.prim_func(private=True, s_tir=True)
    def group_norm_moments(x_handle: T.handle, o_handle: T.handle):
        T.func_attr({"tirx.noalias": True, "tirx.is_scheduled": True})
        x = T.match_buffer(x_handle, (n_, c_, h_, w_), dtype)
        out = T.match_buffer(o_handle, out_shape, "float32")
        with T.sblock("root"):  # RewriteDataflowReshape reads a one-input kernel's block
            for b in T.thread_binding(n_ * groups * chunks, thread="blockIdx.x"):
                for tx in T.thread_binding(threads, thread="threadIdx.x"):
                    sm = T.alloc_buffer((2 * threads,), "float32", scope="shared")
                    acc = T.alloc_buffer((3,), "float32", scope="local")
                    acc[0] = zero
                    acc[1] = zero
                    for step in T.serial(steps):
                        i = T.meta_var(b % chunks * chunk + step * threads + tx)  # in the group
                        f = T.meta_var(b // chunks * length + i)  # in x, flat
                        if step * threads + tx < chunk and i < length:
                            acc[2] = T.Cast(
                                "float32", x[f // (c_ * hw), f // hw % c_, f // w_ % h_, f % w_]
                            )
                            acc[0] = acc[0] + acc[2]
                            acc[1] = acc[1] + acc[2] * acc[2]
                    sm[tx] = acc[0]
                    sm[threads + tx] = acc[1]
                    # a tree over the invocations' sums: each level's reads before its writes
                    for level in T.unroll(levels):
                        half = T.meta_var(T.shift_right(threads // 2, level))
                        T.tvm_storage_sync("shared")
                        if tx < half:
                            acc[0] = sm[tx] + sm[tx + half]
                            acc[1] = sm[threads + tx] + sm[threads + tx + half]
                        T.tvm_storage_sync("shared")
                        if tx < half:
                            sm[tx] = acc[0]
                            sm[threads + tx] = acc[1]
                    if tx == 0:  # the last level's sums, still in its registers
                        if chunks == 1:
                            acc[0] = acc[0] / count
                            acc[1] = T.max(acc[1] / count - acc[0] * acc[0], zero)
                            out[0, b // groups, b % groups] = acc[0]
                            out[1, b // groups, b % groups] = T.rsqrt(acc[1] + T.float32(epsilon))
                        else:
                            out[0, b // chunks, b % chunks] = acc[0]
                            out[1, b // chunks, b % chunks] = acc[1]

    return group_norm_moments


def _stats_from_chunks(sums, shape, groups, epsilon):
    """stats[0, n, g] = mean, stats[1, n, g] = rstd of group g of sample n from its chunks' sums
    (``sums`` ``[2, N·G, chunks]`` from :func:`group_moments_kernel`)."""
    from tvm import te, tirx

    n_, c_, h_, w_ = (int(v) for v in shape)
    count = float(c_ // groups * h_ * w_)
    chunks = int(sums.shape[2])

    def total(k, ng):
        value = sums[k, ng, 0]
        for j in range(1, chunks):
            value = value + sums[k, ng, j]
        return value

    def value(k, n, g):
        mean = total(0, n * groups + g) / count
        var = tirx.max(total(1, n * groups + g) / count - mean * mean, tirx.const(0.0, "float32"))
        return tirx.if_then_else(k == 0, mean, tirx.rsqrt(var + tirx.const(epsilon, "float32")))

    return te.compute((2, n_, groups), value, name="group_stats")


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


def _group_stats(x, t1, t2, groups, epsilon, layout):
    """stats[0, n, g] = mean and stats[1, n, g] = rstd of group g of sample n, from the channel
    sums ``t1`` (of x) and ``t2`` (of x²), ``[N·C]`` each, as explicit sums of C/G terms::

        mean = mean over c∈g of mean_c = t1/HW
        rstd = rsqrt(var + eps), var = (Σ_c M2_c + HW·Σ_c (mean_c − mean)²) / (C/G·HW),
               M2_c = t2 − t1²/HW  (parallel-variance combination)"""
    from tvm import te, tirx

    _, c_, h_, w_ = _dims(x, layout)
    c_ = int(c_)
    per_group = c_ // groups
    hw = float(int(h_) * int(w_))

    def mean(n, g):
        total = t1[n * c_ + g * per_group] / hw
        for j in range(1, per_group):
            total = total + t1[n * c_ + g * per_group + j] / hw
        return total / float(per_group)

    def rstd(n, g, m):
        def channel(c):
            a, b = t1[n * c_ + c], t2[n * c_ + c]
            d = a / hw - m
            return b - a * a / hw + hw * d * d

        total = channel(g * per_group)
        for j in range(1, per_group):
            total = total + channel(g * per_group + j)
        var = tirx.max(total / (hw * per_group), tirx.const(0.0, "float32"))
        return tirx.rsqrt(var + tirx.const(epsilon, "float32"))

    def value(k, n, g):
        m = mean(n, g)
        return tirx.if_then_else(k == 0, m, rstd(n, g, m))

    return te.compute((2, x.shape[layout.index("N")], groups), value, name="group_stats")


def _normalize(x, stats, gamma, beta, groups, scale, center, layout):
    from tvm import te

    per_group = _dims(x, layout)[1] // groups

    def value(*index):
        n, c = index[layout.index("N")], index[layout.index("C")]
        g = c // per_group
        y = (_f32(x[index]) - stats[0, n, g]) * stats[1, n, g]
        if scale:
            y = y * _f32(gamma[c])
        if center:
            y = y + _f32(beta[c])
        return y.astype(x.dtype)

    return te.compute(x.shape, value, name="group_norm")


def group_norm_reduction(workgroup_stats: bool = False):
    """The module pass: every Relax function of ``mod`` rewritten.

    ``LegalizeOps`` turns ``R.nn.group_norm`` into one PrimFunc that no dlight rule parallelises
    beyond the batch: one CTA per batch element, 2 for the UNet (docs/design.md, step 3, has the
    cost). For an NCHW input x with G groups of C/G channels it becomes:

        t1[n·C+c] = Σ_hw x,  t2[n·C+c] = Σ_hw x²     N·C rows of H·W                 (reductions)
        stats[0, n, g] = mean, stats[1, n, g] = rstd of each group (:func:`_group_stats`) (opaque)
        y = (x − mean) · rstd · γ[c] + β[c]                                          (injective)

    The two moments are plain row reductions that dlight's ``Reduction``/``GeneralReduction``
    rules schedule with N·C rows (640 at 320 channels and batch 2, 128-512 for the VAE at batch 1)
    instead of N, one kernel per moment. The (N, G) statistics are explicit sums of C/G terms,
    one thread per group, marked opaque (``op_pattern`` 8) so that ``FuseOps`` neither inlines
    them into every output element nor makes the full-size ``y`` their epilogue; ``y`` is the
    call the norm's binding takes, so the SiLU after it fuses into it.

    With ``workgroup_stats`` (WebGPU, where every dispatch costs) both moments of an NCHW norm
    come from one hand-scheduled kernel that reads x once (:func:`group_moments_kernel`, chunks
    of each group over many workgroups), which also writes the statistics where a group is one
    chunk: a norm is two or three dispatches instead of five.

    Caveat: the variances are one-pass float32 sums of squares (per channel, or per group with
    ``workgroup_stats``), which lose about 2·log2(|mean|/std) of float32's 24 bits (a shift by
    x[n, c, 0, 0] would avoid it but dlight's Reduction rule rejects the second read; open).
    Everything after the load of x is float32 (the float16 variant casts only the result), as the
    legalised op kept its statistics.

    Only SD1.5's layouts are rewritten: static shapes, C divisible by G, and either NCHW
    (``channel_axis=1``, ``axes=[2, 3]``), NCL (rank 3, ``axes=[2]``: the VAE attention's norm,
    viewed as NCHW with W = 1) or NHWC (``channel_axis=3``, ``axes=[1, 2]``, what
    ``ConvertLayout`` makes of it for CUDA). In NHWC the channel sums reduce over the outer axes,
    so they run in two stages: partial sums per block of rows (:func:`_partial_channel_sums`, ~64 K
    outputs read along contiguous channels), then the sum of the blocks per channel (faster
    than one thread per channel; docs/design.md, step 3). Anything else is left to the
    legalizer.
    """

    @tvm.transform.module_pass(opt_level=0, name="GroupNormReduction")
    def rewrite(mod, _ctx):
        rewriter = _Rewriter(mod, workgroup_stats)
        return relax.transform.Normalize()(rewrite_functions(rewriter, mod))

    return rewrite
