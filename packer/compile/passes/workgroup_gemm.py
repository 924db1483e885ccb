"""Convolutions and linear layers as one tiled GEMM in workgroup memory, for GPU targets without
tensor-core intrinsics (WebGPU)."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import tvm
from tvm import relax
from tvm.relax.expr_functor import PyExprMutator, mutator

from . import Packed, conv2d_shapes, linear_operands, packed_weight, rewrite_functions

THREADS = 16
"""Invocations along each of the workgroup's two axes (256 in all: WebGPU's default limit)."""
BK = 16
"""Reduction elements per tile held in workgroup memory."""
TILES = ((128, 128), (128, 64), (64, 128), (64, 64), (32, 32))
"""Workgroup tiles (rows × columns of the output), largest first; each invocation owns a
``(bm / 16) × (bn / 16)`` register micro-tile."""
MIN_WORKGROUPS = 128
"""A tile whose reduction is too short to split is taken when it gives at least this many
workgroups."""
SPLIT_WORKGROUPS = 512
"""A long reduction is split until the workgroups reach this many: a few per compute unit of a
large GPU, so that every unit has workgroups to switch between while one waits on memory."""
MAX_SPLITS = 16
"""At most this many workgroups share one output tile's reduction (split-K)."""
MIN_SPLIT_STEPS = 32
"""Each share of a split reduction covers at least this many ``BK`` steps, so that the float32
partial sums it writes, and the kernel that adds them reads, stay small next to its arithmetic."""
MIN_ROWS = 32
"""Products with fewer output rows (the time embedding's 2-row linears) stay with dlight's GEMV."""


@dataclass(frozen=True)
class Conv:
    """An NCHW convolution's geometry: GEMM row m is output pixel (n, oy, ox) = m as
    (N, OH, OW); column k is input channel k // (KH·KW) and tap (r, s) = k % (KH·KW) as (KH, KW)
    (the OIHW weight's own order)."""

    batch: int
    channels: int
    height: int
    width: int
    kh: int
    kw: int
    stride: tuple[int, int]
    pad: tuple[int, int]  # top, left
    out_hw: tuple[int, int]


@dataclass(frozen=True)
class Gemm:
    m: int
    n: int
    k: int
    bm: int
    bn: int
    dtype: str  # of the input and the weight
    out_dtype: str
    splits: int = 1  # workgroups along the reduction, each writing float32 partial sums


def splits_for(workgroups: int, k: int, max_splits: int = MAX_SPLITS) -> int:
    """Shares of a ``k``-long reduction for an output of ``workgroups`` tiles: enough to reach
    :data:`SPLIT_WORKGROUPS`, each at least :data:`MIN_SPLIT_STEPS` steps, at most
    ``max_splits``, with no share left empty by :func:`split_steps`."""
    k_tiles = math.ceil(k / BK)
    want = min(math.ceil(SPLIT_WORKGROUPS / workgroups), k_tiles // MIN_SPLIT_STEPS, max_splits)
    if want <= 1:
        return 1
    return math.ceil(k_tiles / math.ceil(k_tiles / want))


def split_steps(k: int, splits: int) -> int:
    """``BK`` steps of each share of a reduction split ``splits`` ways (the last takes the rest)."""
    k_tiles = math.ceil(k / BK)
    return math.ceil(k_tiles / splits)


def plan(m: int, n: int, k: int, max_splits: int = MAX_SPLITS) -> tuple[int, int, int]:
    """Workgroup tile and reduction shares ``(bm, bn, splits)`` for an ``m × n × k`` product: the
    largest tile of :data:`TILES` that, its reduction split (:func:`splits_for`), reaches
    :data:`SPLIT_WORKGROUPS` workgroups, or that gives :data:`MIN_WORKGROUPS` with a reduction too
    short to split; else the one that gives the most workgroups."""
    best = None
    for bm, bn in TILES:
        workgroups = math.ceil(m / bm) * math.ceil(n / bn)
        splits = splits_for(workgroups, k, max_splits)
        total = workgroups * splits
        if total >= SPLIT_WORKGROUPS or (splits == 1 and workgroups >= MIN_WORKGROUPS):
            return bm, bn, splits
        if best is None or total > best[0]:
            best = (total, (bm, bn, splits))
    return best[1]


_planner: Callable[[int, int, int], tuple[int, int, int]] | None = None


@contextlib.contextmanager
def planned_by(planner: Callable[[int, int, int], tuple[int, int, int]]) -> Iterator[None]:
    """Within the block, :class:`WorkgroupGemm` plans each product with ``planner(m, n, k) ->
    (bm, bn, splits)`` instead of :func:`plan`: for benches and tests that build the pipeline's
    module under other plans (``lambda m, n, k: plan(m, n, k, 1)``: reductions never split)."""
    global _planner
    before, _planner = _planner, planner
    try:
        yield
    finally:
        _planner = before


def workgroup_words(bm: int, bn: int) -> int:
    """float32 words of workgroup memory: a ``BK × bm`` and a ``BK × bn`` tile, rows padded by one
    word so that a column's stores fall in distinct banks."""
    return BK * (bm + 1 + bn + 1)


def gemm_kernel(g: Gemm, conv: Conv | None, packed: Packed | None = None):
    """The PrimFunc ``(a, w) -> out`` for one shape: ``out[m, o] = Σ_k A[m, k]·W[o, k]`` with
    ``A`` the ``[m, k]`` input (a linear layer) or the im2col view of an NCHW input (``conv``),
    ``W`` the weight as stored (``[o, k]`` or OIHW), ``out`` ``[m, o]`` or NCHW.

    With ``packed``, ``(a, codes, scales) -> out``: the weight as a quantized bundle stores it
    (formats/README.md, "Quantized weights": ``codes`` uint32 ``[o, k·bits/32]``, ``scales``
    ``[o, k/group]`` in the input's dtype, a convolution's reduction in the format's
    ``(y·kw + x)·I + i`` order), each element decoded as the weight tile is loaded exactly as
    the decode PrimFunc computes it — ``(code − offset) · scale`` in the storage dtype — so no
    decoded copy of the weight exists."""
    from tvm.script import tirx as T

    bm, bn = g.bm, g.bn
    tm, tn = bm // THREADS, bn // THREADS
    threads = THREADS * THREADS
    sa, sb = bm + 1, bn + 1  # row strides of the two tiles
    b_base = BK * sa
    words = workgroup_words(bm, bn)
    k_tiles = math.ceil(g.k / BK)
    m_tiles, n_tiles = math.ceil(g.m / bm), math.ceil(g.n / bn)
    a_loads, b_loads = bm * BK // threads, bn * BK // threads
    zero = T.float32(0)
    splits = g.splits
    steps = split_steps(g.k, splits)
    m_, n_, k_ = g.m, g.n, g.k
    if conv is None:
        a_shape, w_shape, o_shape = (m_, k_), (n_, k_), (m_, n_)
    else:
        oh, ow = conv.out_hw
        taps = conv.kh * conv.kw
        a_shape = (conv.batch, conv.channels, conv.height, conv.width)
        w_shape = (n_, conv.channels, conv.kh, conv.kw)
        o_shape = (conv.batch, n_, oh, ow)

    def weight(w, n, kk):
        """Element (n, kk) of the weight in this kernel's reduction order, as float32."""
        if packed is None:
            if conv is None:
                return T.Cast("float32", w[n, kk])
            return T.Cast("float32", w[n, kk // taps, kk % taps // conv.kw, kk % conv.kw])
        codes, scales = w
        fk = kk if conv is None else kk % taps * conv.channels + kk // taps
        word = codes[n, fk // packed.per_word]
        shift = T.Cast("uint32", fk % packed.per_word * packed.bits)
        code = T.shift_right(word, shift) & T.uint32((1 << packed.bits) - 1)
        value = T.Cast(g.dtype, code) - T.Cast(g.dtype, packed.offset)
        return T.Cast("float32", value * scales[n, fk // packed.group])

    @T.macro
    def body(a, w, o):
        for bx in T.thread_binding(m_tiles, thread="blockIdx.x"):
            # blockIdx.y numbers (share, column tile): WebGPU's blockIdx.z is not free
            for byz in T.thread_binding(n_tiles * splits, thread="blockIdx.y"):
                for ty in T.thread_binding(THREADS, thread="threadIdx.y"):
                    for tx in T.thread_binding(THREADS, thread="threadIdx.x"):
                        sm = T.alloc_buffer((words,), "float32", scope="shared")
                        acc = T.alloc_buffer((tm * tn,), "float32", scope="local")
                        ra = T.alloc_buffer((tm,), "float32", scope="local")
                        rb = T.alloc_buffer((tn,), "float32", scope="local")
                        bz = T.meta_var(byz // n_tiles)
                        m0 = T.meta_var(bx * bm)
                        n0 = T.meta_var(byz % n_tiles * bn)
                        tid = T.meta_var(ty * THREADS + tx)
                        for i in T.unroll(tm * tn):
                            acc[i] = zero
                        # the last share of a split reduction may have fewer steps
                        for kt in T.serial(T.min(steps, k_tiles - bz * steps)):
                            k0 = T.meta_var((bz * steps + kt) * BK)
                            T.tvm_storage_sync("shared")  # the last tile's reads are done
                            for it in T.serial(a_loads):
                                item = T.meta_var(it * threads + tid)
                                if conv is None:
                                    # along k: a row's neighbours are neighbours in memory
                                    kl = T.meta_var(item % BK)
                                    ml = T.meta_var(item // BK)
                                    if m0 + ml < m_ and k0 + kl < k_:
                                        sm[kl * sa + ml] = T.Cast("float32", a[m0 + ml, k0 + kl])
                                    else:
                                        sm[kl * sa + ml] = zero
                                else:
                                    # along m: neighbouring output pixels read neighbouring pixels
                                    ml = T.meta_var(item % bm)
                                    kl = T.meta_var(item // bm)
                                    mm = T.meta_var(m0 + ml)
                                    kk = T.meta_var(k0 + kl)
                                    p = T.meta_var(mm % (oh * ow))
                                    tap = T.meta_var(kk % taps)
                                    iy = T.meta_var(
                                        p // ow * conv.stride[0] + tap // conv.kw - conv.pad[0]
                                    )
                                    ix = T.meta_var(
                                        p % ow * conv.stride[1] + tap % conv.kw - conv.pad[1]
                                    )
                                    if (
                                        mm < m_
                                        and kk < k_
                                        and 0 <= iy
                                        and iy < conv.height
                                        and 0 <= ix
                                        and ix < conv.width
                                    ):
                                        sm[kl * sa + ml] = T.Cast(
                                            "float32", a[mm // (oh * ow), kk // taps, iy, ix]
                                        )
                                    else:
                                        sm[kl * sa + ml] = zero
                            for it in T.serial(b_loads):
                                item = T.meta_var(it * threads + tid)
                                kl = T.meta_var(item % BK)
                                nl = T.meta_var(item // BK)
                                if n0 + nl < n_ and k0 + kl < k_:
                                    sm[b_base + kl * sb + nl] = weight(w, n0 + nl, k0 + kl)
                                else:
                                    sm[b_base + kl * sb + nl] = zero
                            T.tvm_storage_sync("shared")
                            for kk in T.unroll(BK):
                                for i in T.unroll(tm):
                                    if conv is None:
                                        ra[i] = sm[kk * sa + ty + i * THREADS]
                                    else:
                                        ra[i] = sm[kk * sa + tx + i * THREADS]
                                for j in T.unroll(tn):
                                    if conv is None:
                                        rb[j] = sm[b_base + kk * sb + tx + j * THREADS]
                                    else:
                                        rb[j] = sm[b_base + kk * sb + ty + j * THREADS]
                                for i in T.unroll(tm):
                                    for j in T.unroll(tn):
                                        acc[i * tn + j] = acc[i * tn + j] + ra[i] * rb[j]
                        for i in T.unroll(tm):
                            for j in T.unroll(tn):
                                if conv is None:
                                    if m0 + ty + i * THREADS < m_ and n0 + tx + j * THREADS < n_:
                                        if splits == 1:
                                            o[m0 + ty + i * THREADS, n0 + tx + j * THREADS] = (
                                                T.Cast(g.out_dtype, acc[i * tn + j])
                                            )
                                        else:
                                            o[
                                                bz,
                                                (m0 + ty + i * THREADS) * n_
                                                + n0
                                                + tx
                                                + j * THREADS,
                                            ] = acc[i * tn + j]
                                else:
                                    mo = T.meta_var(m0 + tx + i * THREADS)
                                    if mo < m_ and n0 + ty + j * THREADS < n_:
                                        if splits == 1:
                                            o[
                                                mo // (oh * ow),
                                                n0 + ty + j * THREADS,
                                                mo % (oh * ow) // ow,
                                                mo % ow,
                                            ] = T.Cast(g.out_dtype, acc[i * tn + j])
                                        else:
                                            o[
                                                bz,
                                                (mo // (oh * ow) * n_ + n0 + ty + j * THREADS)
                                                * (oh * ow)
                                                + mo % (oh * ow),
                                            ] = acc[i * tn + j]

    out_shape, out_dtype = (o_shape, g.out_dtype) if splits == 1 else partial_of(o_shape, splits)

    if packed is None:

        @T.prim_func(private=True)
        def workgroup_gemm(a_handle: T.handle, w_handle: T.handle, o_handle: T.handle):
            T.func_attr({"tirx.noalias": True, "tirx.is_scheduled": True})
            a = T.match_buffer(a_handle, a_shape, g.dtype)
            w = T.match_buffer(w_handle, w_shape, g.dtype)
            o = T.match_buffer(o_handle, out_shape, out_dtype)
            body(a, w, o)

        return workgroup_gemm

    k_words, k_groups = k_ // packed.per_word, k_ // packed.group

    @T.prim_func(private=True)
    def workgroup_gemm_packed(
        a_handle: T.handle, c_handle: T.handle, s_handle: T.handle, o_handle: T.handle
    ):
        T.func_attr({"tirx.noalias": True, "tirx.is_scheduled": True})
        a = T.match_buffer(a_handle, a_shape, g.dtype)
        codes = T.match_buffer(c_handle, (n_, k_words), "uint32")
        scales = T.match_buffer(s_handle, (n_, k_groups), g.dtype)
        o = T.match_buffer(o_handle, out_shape, out_dtype)
        body(a, (codes, scales), o)

    return workgroup_gemm_packed


def partial_of(shape: tuple, splits: int) -> tuple[tuple, str]:
    """Shape and dtype of a split GEMM's partial sums: one float32 output per share, flattened
    (the output's own element order)."""
    return (splits, math.prod(shape)), "float32"


def add_shares(partial, splits: int, out_dtype: str):
    """TE: a split GEMM's output from its shares (``partial`` ``[splits, *out]``, float32): their
    sum, written out term by term, cast once to ``out_dtype``: one read of each share, one write,
    injective, so that FuseOps fuses it with what follows (the bias add, a cast) into one kernel."""
    from tvm import te

    def element(*i):
        total = partial[(0, *i)]
        for z in range(1, splits):
            total = total + partial[(z, *i)]
        return total.astype(out_dtype)

    return te.compute(partial.shape[1:], element, name="add_shares")


def _dtype(expr) -> str:
    return str(expr.ty.dtype)


@mutator
class _Rewriter(PyExprMutator):
    def __init__(self, mod):
        super().__init__(mod)
        self.kernels: dict[tuple, relax.GlobalVar] = {}

    def visit_call_(self, call):
        call = super().visit_call_(call)
        if not isinstance(call.op, tvm.ir.Op):
            return call
        rewrite = {"relax.nn.conv2d": self._conv2d, "relax.matmul": self._linear}.get(call.op.name)
        new = rewrite(call) if rewrite else None
        return call if new is None else new

    def _stored(self, w, dtype: str):
        """The weight as the kernel reads it: ``w`` itself when it is a function parameter,
        ``(codes, scales, Packed)`` when it is the decode of a quantized weight
        (:mod:`packer.compile.quantize`, OIHW order, scales in ``dtype``), else None (a value
        computed in the graph)."""
        if not isinstance(w, relax.Var):
            return None
        if self.lookup_binding(w) is None:
            return w
        return packed_weight(self.builder_.get(), w, self.lookup_binding, "OIHW", dtype)

    def _conv2d(self, call):
        shapes = conv2d_shapes(call, ("NCHW", "OIHW", "NCHW"))
        x, w = call.args
        if shapes is None or not _supported(x, w, call):
            return None
        w = self._stored(w, _dtype(x))
        if w is None:
            return None
        (batch, channels, height, width), (o, _, kh, kw), out = shapes
        m, k = out[0] * out[2] * out[3], channels * kh * kw
        if m < MIN_ROWS:
            return None
        attrs = call.attrs
        padding = [int(v) for v in attrs.padding]
        conv = Conv(
            batch,
            channels,
            height,
            width,
            kh,
            kw,
            tuple(int(s) for s in attrs.strides),
            (padding[0], padding[1]),
            (out[2], out[3]),
        )
        return self._gemm(m, o, k, conv, x, w, call.ty)

    def _linear(self, call):
        operands = linear_operands(call, self.lookup_binding)
        if operands is None:
            return None
        x, w, m, n, k, out = operands
        if not _supported(x, w, call) or m < MIN_ROWS:
            return None
        w = self._stored(w, _dtype(x))
        if w is None:
            return None
        a = x if len(out) == 2 else self.builder_.emit(relax.op.reshape(x, [m, k]))
        y = self._gemm(m, n, k, None, a, w, relax.TensorType([m, n], _dtype(call)))
        return y if len(out) == 2 else relax.op.reshape(self.builder_.emit(y), out)

    def _gemm(self, m, n, k, conv, a, w, out_ty):
        """``w``: the weight parameter, or ``(codes, scales, Packed)`` for a quantized one."""
        bm, bn, splits = (_planner or plan)(m, n, k)
        g = Gemm(m, n, k, bm, bn, _dtype(a), str(out_ty.dtype), splits)
        packed = w[2] if isinstance(w, tuple) else None
        key = (g, conv, packed)
        gvar = self.kernels.get(key)
        if gvar is None:
            name = "workgroup_gemm" if packed is None else f"workgroup_gemm_q{packed.bits}"
            gvar = self.builder_.add_func(gemm_kernel(g, conv, packed), name)
            self.kernels[key] = gvar
        args = [a, w] if packed is None else [a, w[0], w[1]]
        if splits == 1:
            return relax.call_tir(gvar, args, out_ty)
        shape = [int(d) for d in out_ty.shape]
        p_shape, p_dtype = partial_of(shape, splits)
        partial = self.builder_.emit(relax.call_tir(gvar, args, relax.TensorType(p_shape, p_dtype)))
        shares = self.builder_.emit(relax.op.reshape(partial, [splits, *shape]))
        return self.builder_.call_te(
            add_shares,
            shares,
            splits=splits,
            out_dtype=g.out_dtype,
            primfunc_name_hint="workgroup_gemm_sum",
        )


def _supported(x, w, call) -> bool:
    dtypes = {_dtype(x), _dtype(w)}
    return (
        len(dtypes) == 1
        and dtypes <= {"float32", "float16"}
        and _dtype(call) in dtypes | {"float32"}
    )


@tvm.transform.module_pass(opt_level=0, name="WorkgroupGemm")
def WorkgroupGemm(mod, _ctx):  # noqa: N802  (a pass, named like TVM's)
    """The module pass: every Relax function of ``mod`` rewritten.

    dlight's Matmul rule on WebGPU (no tensor cores, no vector loads through TVM's WebGPU storage
    rewrite) runs the UNet's and VAE's convolutions at a few percent of an adapter's scalar rate.
    :func:`gemm_kernel` is one kernel per shape written in plain TIR — loops, workgroup
    (``shared``) buffers, private arrays and barriers — so that WGSL can express it: the classic
    two-level tiling of a GEMM. One workgroup of 16 × 16 invocations owns a ``bm × bn`` output
    tile (:func:`tiles`) and walks the reduction in steps of :data:`BK`; per step

    1. the ``BK × bm`` slice of A and the ``BK × bn`` slice of W go to workgroup memory as float32
       (k-major, rows padded by a word), zero past m, n, k and in the convolution's padding; A is
       read along m for a convolution (neighbouring output pixels read neighbouring input
       pixels of an NCHW plane) and along k for a linear layer, W along k (the stored rows);
    2. each invocation multiplies its ``(bm/16) × (bn/16)`` micro-tile in registers: per k, bm/16
       values of A and bn/16 of W read from workgroup memory feed (bm/16)·(bn/16) multiply-adds.

    Where the output has too few tiles to keep a large GPU busy and the reduction is long (the
    UNet's convolutions at 32², 16² and 8²: a few dozen 128 × 128 tiles, k up to 11 520), the
    reduction is split (:func:`plan`): ``splits`` workgroups per tile, numbered along
    ``blockIdx.y`` with the column tiles, each walk their share of the k steps and write float32
    partial sums ``[splits, m·n]``; :func:`add_shares`, injective, adds them in float32 and
    casts once, fused with the bias add after it.

    Invocation (ty, tx) owns the rows ``tx + 16·i`` of a convolution's tile (output pixels, so
    that a row of invocations writes neighbouring pixels of an NCHW plane) and the columns
    ``tx + 16·j`` of a linear layer's (neighbouring output features). Accumulation is float32
    whatever the storage dtype; the result is written in the call's dtype and layout, the bias
    and everything after it left to the following kernels.

    :class:`WorkgroupGemm` is the Relax pass (targets with ``workgroup_gemm``, after mixed
    precision): every NCHW/OIHW ``conv2d`` (one group, no dilation) and every
    ``matmul(x, permute_dims(W))`` (a torch linear layer) with static shapes, float32 or float16,
    at least :data:`MIN_ROWS` output rows and a weight read as stored (a parameter, or the decode
    of a quantized weight's codes and scales, which the kernel then reads packed) becomes a
    ``call_tir`` of its kernel.
    """
    return relax.transform.Normalize()(rewrite_functions(_Rewriter(mod), mod))
