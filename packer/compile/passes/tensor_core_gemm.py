"""Convolutions and linear layers as one hand-written tensor-core GEMM (pipeline step 1c)."""

from __future__ import annotations

from dataclasses import dataclass

import tvm
from tvm import relax
from tvm.relax.expr_functor import PyExprMutator, mutator

from . import Packed, linear_operands, packed_weight, ptx, rewrite_functions, static_shape
from .conv2d_implicit_gemm import nhwc_conv_shapes, sum_splits

SHARED_BYTES = 96 * 1024
"""The most dynamic shared memory a tile plan may take: what every CUDA target sdpack builds
for grants one block (sm_86/sm_89: 99 KiB; sm_80: 163; sm_90: 227). TVM's CUDA runtime raises
a kernel's limit past the default 48 KiB when it launches it."""
BK = 32
"""The shortest k-tile (4 vectors of 8 float16 per row); every reduction is a multiple of it."""
TARGET_BLOCKS = 264
"""Split the reduction until about this many CTAs run (an H100/H200 has 132 SMs, two each)."""
MAX_SPLITS = 16
LINEAR_MIN_K = 1024
"""Linear layers with a shorter reduction stay with dlight unless the product is split: dlight's
kernel with the bias add fused runs the UNet's 320- and 640-wide projections faster than this
kernel plus a separate bias add (10-20 k-tiles per CTA leave the ring's fill and drain exposed);
from k = 1280 on, and for the split small products, this kernel wins (docs/design.md, step 1c)."""


@dataclass(frozen=True)
class Conv:
    """An NHWC input's geometry: the im2col row m is output pixel (n, i, j) = m as
    (N, OH, OW); column k is tap k // C = (r, s) and channel k % C."""

    batch: int
    height: int
    width: int
    channels: int
    kh: int
    kw: int
    stride: tuple[int, int]
    pad: tuple[int, int]  # top, left
    out_hw: tuple[int, int]


@dataclass(frozen=True)
class Tiles:
    bm: int
    bn: int
    wm: int  # warps along m
    wn: int  # warps along n
    stages: int
    bk: int = BK  # the k-tile: 32 or 64

    @property
    def warps(self) -> int:
        return self.wm * self.wn

    def shared_bytes(self) -> int:
        return self.stages * (self.bm + self.bn) * self.bk * 2


TILES = (
    Tiles(128, 128, 2, 4, 2, 64),
    Tiles(128, 64, 2, 2, 2, 64),
    Tiles(128, 128, 2, 4, 4),
    Tiles(128, 64, 2, 2, 4),
)
"""Tried in order; the first whose ``bn`` divides the output width and whose ``bk`` divides the
reduction is used. Two 64-wide k-tiles in flight (64 or 48 KiB, two CTAs per SM) beat four
32-wide ones over the lab's shapes; 64×64 warp tiles are slower (docs/design.md, step 1c)."""


@dataclass(frozen=True)
class Plan:
    m: int
    n: int
    k: int
    tiles: Tiles
    splits: int


def plan(
    m: int,
    n: int,
    k: int,
    channels: int | None = None,
    tiles_tried: tuple[Tiles, ...] | None = None,
) -> Plan | None:
    """The tiles (the first of ``tiles_tried``, default :data:`TILES`, that fits) and k-splits
    for an ``m × n`` product over ``k``, or None when the kernel does not apply: ``k`` must be
    a multiple of the tile's ``bk``, ``n`` of its width, an NHWC input's channels of 8 (one
    16-byte vector never straddles two taps), and ``m`` at least 16 (below that a GEMV
    schedule is the right kernel)."""
    if k % BK or m < 16 or (channels is not None and channels % 8):
        return None
    tiles = next((t for t in tiles_tried or TILES if n % t.bn == 0 and k % t.bk == 0), None)
    if tiles is None:
        return None
    ctas = -(-m // tiles.bm) * (n // tiles.bn)
    k_tiles = k // tiles.bk
    splits = 1
    for parts in range(2, MAX_SPLITS + 1):
        if ctas * parts > TARGET_BLOCKS:
            break
        if k_tiles % parts == 0 and k_tiles // parts >= 2 * tiles.stages:
            splits = parts
    return Plan(m, n, k, tiles, splits)


def gemm_kernel(p: Plan, conv: Conv | None = None, packed: Packed | None = None):
    """The PrimFunc ``(a, w, out)``: ``a`` is ``[m, k]`` (or the NHWC input of ``conv``),
    ``w`` ``[n, k]``, ``out`` ``[m, n]`` float16 (``[splits, m, n]`` float32 when split).
    With ``packed``, ``(a, codes, scales, out)``: the weight as a quantized bundle stores it,
    ``codes`` uint32 ``[n, k·bits/32]`` and ``scales`` float16 ``[n, k/group]``, decoded as each
    k-tile is staged into shared memory."""
    from tvm.script import tirx as T

    t = p.tiles
    m, n, k = p.m, p.n, p.k
    bm, bn, stages = t.bm, t.bn, t.stages
    threads = 32 * t.warps
    warp_m, warp_n = bm // t.wm, bn // t.wn
    mi, ni = warp_m // 16, warp_n // 8  # 16×16 A fragments, 16×8 accumulator tiles per warp
    bk = t.bk
    vr = bk // 8  # 16-byte vectors per k-tile row
    if warp_m % 16 or warp_n % 16 or (bm * vr) % threads or (bn * vr) % threads:
        raise ValueError(f"tiles {t} do not fit the warp layout")
    a_loads, b_loads = bm * vr // threads, bn * vr // threads  # 16-byte vectors per thread
    row_step = threads // vr  # each thread copies vector tid % vr of rows tid // vr + i·step
    k_tiles = k // bk // p.splits
    a_stage, b_stage = bm * bk, bn * bk
    a_shape = (m, k) if conv is None else (conv.batch, conv.height, conv.width, conv.channels)
    split = p.splits > 1
    out_shape = (p.splits, m, n) if split else (m, n)
    out_dtype = "float32" if split else "float16"
    if max(m * k, n * k, m * n * p.splits) >= 2**31 or (
        conv and conv.batch * conv.height * conv.width * conv.channels >= 2**31
    ):
        raise ValueError("the kernel indexes with int32")

    ldsm, mma = ptx.ldmatrix_x4, ptx.mma_16816
    if packed is not None and (packed.group % 8 or k % packed.group):
        raise ValueError(f"group {packed.group} does not fit 8-wide vectors of k = {k}")
    words = 0 if packed is None else packed.words_per_vector
    scale_regs = 1 if packed is None else b_loads

    def swizzle(row, vec):  # element offset of 16-byte vector `vec` of a k-tile's `row`
        if vr == 8:  # 128-byte rows: row r's vectors rotate by r % 8
            return row * bk + (vec ^ (row & 7)) * 8
        return row * bk + (vec ^ ((row >> 1) & 3)) * 8  # 64-byte rows: two rows per 128 bytes

    # Where the 8 float16 of A at (row i of this thread, column kv) start, and whether they
    # exist (rows past m and the convolution's padding read as zeros). Per thread and row, the
    # prologue keeps in registers `base`: the row's start (linear) or its image's (conv), and
    # for a conv `y`, `x`: the top-left input pixel of its window (y = -2²⁰ for rows past m).
    if conv is None:

        def a_vector(base, y, x, i, kv):
            return y[i] == 0, base[i] + kv
    else:
        ch, kw = conv.channels, conv.kw
        oh, ow = conv.out_hw
        sh, sw = conv.stride
        top, left = conv.pad
        height, width = conv.height, conv.width

        def a_vector(base, y, x, i, kv):
            tap = kv // ch
            yy, xx = y[i] + tap // kw, x[i] + tap % kw
            ok = tvm.tirx.all(0 <= yy, yy < height, 0 <= xx, xx < width)
            return ok, base[i] + (yy * width + xx) * ch + kv % ch

    # one k-tile (kt0 + kt) of A (and of W when it is not packed) into ring slot `stage`
    @T.macro
    def load_tile(sa, sb, a, w, row_base, row_y, row_x, tid, n0, kt0, stage, kt):
        vec = T.meta_var(tid % vr)
        kv = T.meta_var((kt0 + kt) * bk + vec * 8)
        for i in T.unroll(a_loads):
            r = T.meta_var(tid // vr + i * row_step)
            ok, src = T.meta_var(a_vector(row_base, row_y, row_x, i, kv))
            T.evaluate(
                ptx.cp_async16(
                    sa,
                    stage * a_stage + swizzle(r, vec),
                    a,
                    T.if_then_else(ok, src, 0),
                    T.if_then_else(ok, 16, 0),
                )
            )
        if packed is None:
            for i in T.unroll(b_loads):
                r = T.meta_var(tid // vr + i * row_step)
                T.evaluate(
                    ptx.cp_async16(sb, stage * b_stage + swizzle(r, vec), w, (n0 + r) * k + kv, 16)
                )

    def store_vector(sb, offset, bw, bs, i):
        pairs = [
            ptx.pack_half2(decoded(bw, bs, i, 2 * h), decoded(bw, bs, i, 2 * h + 1))
            for h in range(4)
        ]
        return ptx.st_shared16(sb, offset, pairs)

    def decoded(bw, bs, i, e):  # element e (0..7) of vector i, as float32 (exact)
        word = bw[i * words + e // packed.per_word]
        shift = tvm.tirx.const(packed.bits * (e % packed.per_word), "uint32")
        code = (word >> shift) & tvm.tirx.const((1 << packed.bits) - 1, "uint32")
        q = code.astype("int32") - packed.offset
        return q.astype("float32") * bs[i].astype("float32")

    # a packed W: a k-tile's codes and scales into registers (plain loads, in flight while the
    # tensor cores work on the current tile) ...
    @T.macro
    def fetch_codes(codes, scales, bw, bs, tid, n0, kt0, kt):
        vec = T.meta_var(tid % vr)
        kv = T.meta_var((kt0 + kt) * bk + vec * 8)
        for i in T.unroll(b_loads):
            r = T.meta_var(tid // vr + i * row_step)
            for j in T.unroll(words):
                bw[i * words + j] = codes[n0 + r, kv // packed.per_word + j]
            bs[i] = scales[n0 + r, kv // packed.group]

    # ... then decoded, (code − offset) · scale rounded once to float16, 8 values per 16-byte
    # store into ring slot `stage`
    @T.macro
    def store_codes(sb, bw, bs, tid, stage):
        vec = T.meta_var(tid % vr)
        for i in T.unroll(b_loads):
            r = T.meta_var(tid // vr + i * row_step)
            T.evaluate(store_vector(sb, stage * b_stage + swizzle(r, vec), bw, bs, i))

    @T.macro
    def body(a, w, codes, scales, o):
        for bx in T.thread_binding(n // bn, thread="blockIdx.x"):
            for by in T.thread_binding((m + bm - 1) // bm, thread="blockIdx.y"):
                for bz in T.thread_binding(p.splits, thread="blockIdx.z"):
                    for ty in T.thread_binding(t.warps, thread="threadIdx.y"):
                        for tx in T.thread_binding(32, thread="threadIdx.x"):
                            # the ring (dynamic shared memory: more than the static 48 KiB)
                            sa = T.alloc_buffer((stages * a_stage,), "float16", scope="shared.dyn")
                            sb = T.alloc_buffer((stages * b_stage,), "float16", scope="shared.dyn")
                            acc = T.alloc_buffer((mi * ni * 4,), "float32", scope="local")
                            af = T.alloc_buffer((mi * 4,), "uint32", scope="local")
                            bf = T.alloc_buffer((ni * 2,), "uint32", scope="local")
                            # a packed W's next k-tile, codes and scales, in flight
                            bw = T.alloc_buffer((max(b_loads * words, 1),), "uint32", scope="local")
                            bs = T.alloc_buffer((scale_regs,), "float16", scope="local")
                            # this thread's A rows: the start of the row (linear) or the
                            # top-left input pixel of its window and its image (conv)
                            row_base = T.alloc_buffer((a_loads,), "int32", scope="local")
                            row_y = T.alloc_buffer((a_loads,), "int32", scope="local")
                            row_x = T.alloc_buffer((a_loads,), "int32", scope="local")
                            tid = T.meta_var(ty * 32 + tx)
                            m0 = T.meta_var(by * bm)
                            n0 = T.meta_var(bx * bn)
                            kt0 = T.meta_var(bz * k_tiles)
                            wm0 = T.meta_var(ty // t.wn * warp_m)
                            wn0 = T.meta_var(ty % t.wn * warp_n)
                            g = T.meta_var(tx // 4)
                            q = T.meta_var(tx % 4)

                            for i in T.unroll(a_loads):
                                row = T.meta_var(m0 + tid // vr + i * row_step)
                                if conv is None:
                                    row_base[i] = row * k
                                    row_y[i] = T.if_then_else(row < m, 0, -(2**20))
                                else:
                                    row_base[i] = row // (oh * ow) * (height * width * ch)
                                    row_y[i] = T.if_then_else(
                                        row < m, row % (oh * ow) // ow * sh - top, -(2**20)
                                    )
                                    row_x[i] = row % ow * sw - left

                            for i in T.unroll(mi * ni * 4):
                                acc[i] = T.float32(0)
                            for s in T.unroll(stages - 1):
                                if s < k_tiles:
                                    load_tile(
                                        sa, sb, a, w, row_base, row_y, row_x, tid, n0, kt0, s, s
                                    )
                                    if packed is not None:
                                        fetch_codes(codes, scales, bw, bs, tid, n0, kt0, s)
                                        store_codes(sb, bw, bs, tid, s)
                                T.evaluate(ptx.cp_async_commit())
                            for kt in T.serial(k_tiles):
                                T.evaluate(ptx.cp_async_wait(stages - 2))
                                T.tvm_storage_sync("shared")
                                if kt + stages - 1 < k_tiles:  # into the stage read last round
                                    load_tile(
                                        sa,
                                        sb,
                                        a,
                                        w,
                                        row_base,
                                        row_y,
                                        row_x,
                                        tid,
                                        n0,
                                        kt0,
                                        (kt + stages - 1) % stages,
                                        kt + stages - 1,
                                    )
                                    if packed is not None:
                                        fetch_codes(
                                            codes, scales, bw, bs, tid, n0, kt0, kt + stages - 1
                                        )
                                T.evaluate(ptx.cp_async_commit())
                                cur = T.meta_var(kt % stages)
                                for kk in T.unroll(bk // 16):
                                    for i in T.unroll(mi):
                                        T.evaluate(
                                            ldsm(
                                                af,
                                                i * 4,
                                                sa,
                                                cur * a_stage
                                                + swizzle(
                                                    wm0 + i * 16 + tx % 16, kk * 2 + tx // 16
                                                ),
                                            )
                                        )
                                    for j in T.unroll(ni // 2):
                                        T.evaluate(
                                            ldsm(
                                                bf,
                                                j * 4,
                                                sb,
                                                cur * b_stage
                                                + swizzle(
                                                    wn0 + j * 16 + tx % 8 + tx // 16 * 8,
                                                    kk * 2 + tx // 8 % 2,
                                                ),
                                            )
                                        )
                                    for i in T.unroll(mi):
                                        for j in T.unroll(ni):
                                            T.evaluate(
                                                mma(acc, (i * ni + j) * 4, af, i * 4, bf, j * 2)
                                            )
                                # a packed W's tile into the slot of tile kt - 1: every warp
                                # is past its reads (this round's barrier); read after the next
                                # (two ifs: the first is Python, decided when the kernel is made)
                                if packed is not None:  # noqa: SIM102
                                    if kt + stages - 1 < k_tiles:
                                        store_codes(sb, bw, bs, tid, (kt + stages - 1) % stages)
                            T.evaluate(ptx.cp_async_wait(0))

                            # registers 2h, 2h + 1 of tile (i, j): row g + 8h, columns 2q, 2q + 1
                            # (stored as one pair: 4 lanes write 16 or 32 contiguous bytes)
                            if split:
                                for i in T.unroll(mi):
                                    for j in T.unroll(ni):
                                        for h in T.unroll(2):
                                            row = T.meta_var(m0 + wm0 + i * 16 + g + h * 8)
                                            col = T.meta_var(n0 + wn0 + j * 8 + q * 2)
                                            if row < m:
                                                for e in T.vectorized(2):
                                                    o[bz, row, col + e] = acc[
                                                        (i * ni + j) * 4 + h * 2 + e
                                                    ]
                            else:
                                o_pairs = T.decl_buffer((m * n // 2,), "uint32", data=o.data)
                                for i in T.unroll(mi):
                                    for j in T.unroll(ni):
                                        for h in T.unroll(2):
                                            row = T.meta_var(m0 + wm0 + i * 16 + g + h * 8)
                                            col = T.meta_var(n0 + wn0 + j * 8 + q * 2)
                                            reg = T.meta_var((i * ni + j) * 4 + h * 2)
                                            if row < m:
                                                o_pairs[(row * n + col) // 2] = ptx.pack_half2(
                                                    acc[reg], acc[reg + 1]
                                                )

    if packed is None:

        @T.prim_func(private=True)
        def tensor_core_gemm(a_handle: T.handle, w_handle: T.handle, o_handle: T.handle):
            T.func_attr({"tirx.noalias": True, "tirx.is_scheduled": True})
            a = T.match_buffer(a_handle, a_shape, "float16")
            w = T.match_buffer(w_handle, (n, k), "float16")
            o = T.match_buffer(o_handle, out_shape, out_dtype)
            body(a, w, None, None, o)

        return tensor_core_gemm

    @T.prim_func(private=True)
    def tensor_core_gemm_packed(
        a_handle: T.handle, c_handle: T.handle, s_handle: T.handle, o_handle: T.handle
    ):
        T.func_attr({"tirx.noalias": True, "tirx.is_scheduled": True})
        a = T.match_buffer(a_handle, a_shape, "float16")
        codes = T.match_buffer(c_handle, (n, k // packed.per_word), "uint32")
        scales = T.match_buffer(s_handle, (n, k // packed.group), "float16")
        o = T.match_buffer(o_handle, out_shape, out_dtype)
        body(a, None, codes, scales, o)

    return tensor_core_gemm_packed


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

    def _packed(self, w) -> tuple | None:
        """``(codes, scales, Packed)`` when the weight ``w`` is a decode of stored quantized
        tensors in the layout this kernel reads, with groups of whole 8-wide vectors."""
        layout = "OHWI" if len(static_shape(w.ty)) == 4 else "OIHW"
        found = packed_weight(self.builder_.get(), w, self.lookup_binding, layout, "float16")
        return None if found is None or found[2].group % 8 else found

    def _conv2d(self, call):
        shapes = nhwc_conv_shapes(call)
        x, w = call.args
        if shapes is None or not _float16(x, w, call):
            return None
        x_shape, w_shape, out = shapes
        attrs = call.attrs
        batch, height, width, channels = x_shape
        o, kh, kw, _ = w_shape
        m, k = out[0] * out[1] * out[2], kh * kw * channels
        p = plan(m, o, k, channels)
        if p is None:
            return None
        padding = [int(v) for v in attrs.padding]
        conv = Conv(
            batch,
            height,
            width,
            channels,
            kh,
            kw,
            tuple(int(s) for s in attrs.strides),
            (padding[0], padding[1]),
            (out[1], out[2]),
        )
        packed = self._packed(w)
        if packed is not None:
            return self._gemm(p, conv, x, packed, out)
        return self._gemm(p, conv, x, relax.op.reshape(w, [o, k]), out)

    def _linear(self, call):
        operands = linear_operands(call, self.lookup_binding)
        if operands is None:
            return None
        x, w, m, n, k, out = operands
        if not _float16(x, w, call):
            return None
        p = plan(m, n, k)
        if p is None or (k < LINEAR_MIN_K and p.splits == 1):
            return None
        a = x if len(out) == 2 else relax.op.reshape(x, [m, k])
        return self._gemm(p, None, a, self._packed(w) or w, out)

    def _gemm(self, p: Plan, conv: Conv | None, a, w, out_shape):
        """``w``: the ``[n, k]`` weight, or ``(codes, scales, Packed)`` for a packed one."""
        packed = w[2] if isinstance(w, tuple) else None
        key = (p, conv, packed)
        gvar = self.kernels.get(key)
        if gvar is None:
            name = "tensor_core_gemm" if packed is None else f"tensor_core_gemm_q{packed.bits}"
            gvar = self.builder_.add_func(gemm_kernel(p, conv, packed), name)
            self.kernels[key] = gvar
        weights = list(w[:2]) if packed is not None else [w]
        args = [self.builder_.emit(e) if isinstance(e, relax.Call) else e for e in (a, *weights)]
        if p.splits == 1:
            y = self.builder_.emit(
                relax.call_tir(gvar, args, relax.TensorType([p.m, p.n], "float16"))
            )
            return relax.op.reshape(y, out_shape)
        part = self.builder_.emit(
            relax.call_tir(gvar, args, relax.TensorType([p.splits, p.m, p.n], "float32"))
        )
        if len(out_shape) == 4:
            return self.builder_.call_te(
                sum_splits, part, out_shape, "float16", primfunc_name_hint="gemm_sum_splits"
            )
        y = self.builder_.emit_te(
            sum_splits, part, [1, 1, p.m, p.n], "float16", primfunc_name_hint="gemm_sum_splits"
        )
        return relax.op.reshape(y, out_shape)


def _float16(*exprs) -> bool:
    return all(str(e.ty.dtype) == "float16" for e in exprs)


@tvm.transform.module_pass(opt_level=0, name="TensorCoreGemm")
def TensorCoreGemm(mod, _ctx):  # noqa: N802  (a pass, named like TVM's)
    """The module pass: every Relax function of ``mod`` rewritten.

    Without it, convolutions go through dlight's tensor-core Matmul rule over an implicit-GEMM view
    (:mod:`packer.compile.passes.conv2d_implicit_gemm`): WMMA fragments loaded from shared memory that
    registers filled, one k-tile at a time, well below cuDNN's speed (docs/design.md, step 1c).
    :func:`gemm_kernel` is one TIR kernel per shape for

        out[m, o] = Σ_k A[m, k] · W[o, k]          (float16 in, float32 accumulation)

    where ``W`` is the weight as stored (a linear layer's ``[out, in]``, a convolution's OHWI
    weight read as ``[O, R·S·C]``) and ``A`` is either a row-major matrix (a linear layer's input,
    leading dims flattened) or the im2col view of an NHWC input, never materialised: each 16-byte
    vector of 8 channels is gathered from the input pixel it comes from, with the convolution's
    zero padding as zero-filled copies. Per CTA (``bm × bn`` outputs, ``warps`` warps each owning a
    ``(bm / wm) × (bn / wn)`` block of 16×8 ``mma.sync`` accumulators in registers):

    1. a ``stages``-deep ring of k-tiles (``bk`` = 64, or 32 where k is not a multiple of 64) in
       dynamic shared memory, filled by ``cp.async`` (global → shared without registers),
       ``stages − 1`` tiles in flight while one is multiplied, one barrier per tile; a tile's row
       of ``bk / 8`` 16-byte vectors stores vector ``c`` at ``c ^ (row & 7)`` (``bk`` = 64) or
       ``c ^ ((row >> 1) & 3)`` (32), so that the 8 rows an ``ldmatrix`` reads, and the rows a
       warp's copies write, fall in 8 distinct bank groups;
    2. per k-tile, ``bk / 16`` k16 steps of ``ldmatrix`` A and B fragments and
       ``mma.sync.m16n8k16``;
    3. the accumulators are written in pairs as float16 (or, split along k, as float32 partial
       sums that :func:`packer.compile.passes.conv2d_implicit_gemm.sum_splits` adds up with the
       epilogue).

    :class:`TensorCoreGemm` is the Relax pass (float16 CUDA targets, before
    ``Conv2dImplicitGemm``): every NHWC/OHWI ``conv2d`` and every ``matmul(x, permute_dims(W))``
    (a torch linear layer) whose sizes fit the tiles (:func:`plan`; linears also
    :data:`LINEAR_MIN_K`) becomes a ``call_tir`` of its kernel between free reshapes; the rest
    (the 4-channel ``conv_in``, the 4- or 3-channel ``conv_out``, the time embedding's 2-row
    products, the short linears) is left to the passes after it.

    ``python -m bench.gpu.gemmlab`` checks and times the kernel on every SD1.5 shape against dlight
    and torch; docs/design.md, step 1c, has the numbers.
    """
    return relax.transform.Normalize()(rewrite_functions(_Rewriter(mod), mod))
