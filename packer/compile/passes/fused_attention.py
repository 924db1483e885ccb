"""Fused attention on tensor cores for float16 CUDA libraries (pipeline step 2a)."""

from __future__ import annotations

import tvm
from tvm import relax
from tvm.relax.expr_functor import PyExprMutator, mutator

from . import attention_scale, attention_shape, ptx, rewrite_functions

SHARED_BYTES = 48 * 1024
"""Static shared memory a CUDA kernel may use without ``cudaFuncSetAttribute``."""

_LOG2E = 1.4426950408889634
_NEG = -1.0e30  # finite "−∞": exp2 of it is 0 and no inf − inf can make a NaN


def _round16(n: int) -> int:
    return (n + 15) // 16 * 16


def shared_bytes(head_dim: int, warps: int, kv_tile: int) -> int:
    """Shared memory of one CTA: the Q tile (read once) and one K and one V tile, rows padded
    to Dp + 8 halves."""
    return (16 * warps + 2 * kv_tile) * (_round16(head_dim) + 8) * 2


def tile_config(head_dim: int) -> tuple[int, int] | None:
    """(warps, kv_tile) for a head dim: the most query rows, then the longest key tile, whose
    buffers fit in :data:`SHARED_BYTES` and whose registers stay within 255 per thread; None
    when none does (the caller keeps the split form)."""
    dp = _round16(head_dim)
    if dp > 160:  # Q fragments and the output accumulators alone would take 120+ registers
        return None
    for warps, kv_tile in ((8, 64), (4, 64), (4, 32)):  # fastest first (docs/design.md, step 2a)
        # at 64², the same at 32² (docs/design.md, step 2a)
        if shared_bytes(head_dim, warps, kv_tile) <= SHARED_BYTES:
            return warps, kv_tile
    return None


def attention_kernel(
    batch: int,
    seq_q: int,
    seq_kv: int,
    heads: int,
    head_dim: int,
    scale: float,
    warps: int,
    kv_tile: int,
):
    """The fused float16 attention PrimFunc ``(q, k, v) -> o`` for one static shape."""
    from tvm.script import tirx as T

    d, dp = head_dim, _round16(head_dim)
    if d % 8:
        raise ValueError(f"head dim {d} is not a multiple of 8")
    ld = dp + 8  # shared row stride (halves): 8 ldmatrix rows hit 8 distinct 16-byte bank groups
    rows = 16 * warps
    threads = 32 * warps
    kd = dp // 16  # k-steps of Q·Kᵀ
    ns = kv_tile // 8  # 16×8 score tiles per warp
    kp = kv_tile // 16  # k-steps of P·V
    nd = dp // 8  # 16×8 output tiles per warp
    vec_d, vec_p = d // 8, dp // 8  # 8-wide (16-byte) vectors per row: data, padded
    q_tiles = (seq_q + rows - 1) // rows
    kv_tiles = (seq_kv + kv_tile - 1) // kv_tile
    masked = seq_kv % kv_tile != 0
    c = float(scale) * _LOG2E
    q_loads = (rows * vec_p + threads - 1) // threads
    kv_loads = (kv_tile * vec_p + threads - 1) // threads
    zero16 = T.float16(0)
    neg = T.float32(_NEG)
    full = T.uint32(0xFFFFFFFF)

    ldsm, mma, pack = ptx.ldmatrix_x4, ptx.mma_16816, ptx.pack_half2

    @T.prim_func(private=True)
    def fused_attention(
        q_handle: T.handle, k_handle: T.handle, v_handle: T.handle, o_handle: T.handle
    ):
        T.func_attr({"tirx.noalias": True, "tirx.is_scheduled": True})
        q = T.match_buffer(q_handle, (batch, seq_q, heads, d), "float16")
        k = T.match_buffer(k_handle, (batch, seq_kv, heads, d), "float16")
        v = T.match_buffer(v_handle, (batch, seq_kv, heads, d), "float16")
        o = T.match_buffer(o_handle, (batch, seq_q, heads, d), "float16")
        for bx in T.thread_binding(q_tiles, thread="blockIdx.x"):
            for by in T.thread_binding(batch * heads, thread="blockIdx.y"):
                for ty in T.thread_binding(warps, thread="threadIdx.y"):
                    for tx in T.thread_binding(32, thread="threadIdx.x"):
                        qs = T.alloc_buffer((rows * ld,), "float16", scope="shared")
                        ks = T.alloc_buffer((kv_tile * ld,), "float16", scope="shared")
                        vs = T.alloc_buffer((kv_tile * ld,), "float16", scope="shared")
                        qf = T.alloc_buffer((kd * 4,), "uint32", scope="local")
                        kb = T.alloc_buffer((4,), "uint32", scope="local")
                        vb = T.alloc_buffer((4,), "uint32", scope="local")
                        pf = T.alloc_buffer((kp * 4,), "uint32", scope="local")
                        sacc = T.alloc_buffer((ns * 4,), "float32", scope="local")
                        oacc = T.alloc_buffer((nd * 4,), "float32", scope="local")
                        # per row half (rows g and g + 8): running max, partial sum, new max,
                        # rescale factor
                        m = T.alloc_buffer((2,), "float32", scope="local")
                        den = T.alloc_buffer((2,), "float32", scope="local")
                        mx = T.alloc_buffer((2,), "float32", scope="local")
                        alpha = T.alloc_buffer((2,), "float32", scope="local")
                        b = T.meta_var(by // heads)
                        h = T.meta_var(by % heads)
                        q0 = T.meta_var(bx * rows)
                        tid = T.meta_var(ty * 32 + tx)
                        g = T.meta_var(tx // 4)  # this lane's rows: g and g + 8 of the warp's
                        t = T.meta_var(tx % 4)  # this lane's column pair: 2t, 2t + 1
                        base = T.meta_var(ty * 16)  # the warp's first row in the CTA's tile

                        # Q tile → shared (zero-padded) → this warp's A fragments
                        for it in T.serial(q_loads):
                            item = T.meta_var(it * threads + tid)
                            if item < rows * vec_p:
                                r = T.meta_var(item // vec_p)
                                cv = T.meta_var(item % vec_p)
                                if q0 + r < seq_q and cv < vec_d:
                                    for e in T.vectorized(8):
                                        qs[r * ld + cv * 8 + e] = q[b, q0 + r, h, cv * 8 + e]
                                else:
                                    for e in T.vectorized(8):
                                        qs[r * ld + cv * 8 + e] = zero16
                        T.tvm_storage_sync("shared")
                        for f in T.unroll(kd):
                            T.evaluate(
                                ldsm(qf, f * 4, qs, (base + tx % 16) * ld + f * 16 + tx // 16 * 8)
                            )
                        for i in T.unroll(2):
                            m[i] = neg
                            den[i] = T.float32(0)
                        for i in T.unroll(nd * 4):
                            oacc[i] = T.float32(0)

                        for kt in T.serial(kv_tiles):
                            kv0 = T.meta_var(kt * kv_tile)
                            T.tvm_storage_sync("shared")  # every warp is done with the last tile
                            for it in T.serial(kv_loads):
                                item = T.meta_var(it * threads + tid)
                                if item < kv_tile * vec_p:
                                    r = T.meta_var(item // vec_p)
                                    cv = T.meta_var(item % vec_p)
                                    if kv0 + r < seq_kv and cv < vec_d:
                                        for e in T.vectorized(8):
                                            ks[r * ld + cv * 8 + e] = k[b, kv0 + r, h, cv * 8 + e]
                                        for e in T.vectorized(8):
                                            vs[r * ld + cv * 8 + e] = v[b, kv0 + r, h, cv * 8 + e]
                                    else:
                                        for e in T.vectorized(8):
                                            ks[r * ld + cv * 8 + e] = zero16
                                        for e in T.vectorized(8):
                                            vs[r * ld + cv * 8 + e] = zero16
                            T.tvm_storage_sync("shared")

                            # S = Q·Kᵀ: ns tiles of 16×8 in registers
                            for i in T.unroll(ns * 4):
                                sacc[i] = T.float32(0)
                            for jj in T.unroll(ns // 2):
                                for f in T.unroll(kd):
                                    T.evaluate(
                                        ldsm(
                                            kb,
                                            0,
                                            ks,
                                            (jj * 16 + tx % 8 + tx // 16 * 8) * ld
                                            + f * 16
                                            + tx // 8 % 2 * 8,
                                        )
                                    )
                                    T.evaluate(mma(sacc, jj * 8, qf, f * 4, kb, 0))
                                    T.evaluate(mma(sacc, jj * 8 + 4, qf, f * 4, kb, 2))

                            # online softmax; register e of a tile: row g + 8·(e // 2),
                            # key kv0 + 8·tile + 2t + e % 2
                            for i in T.unroll(2):
                                mx[i] = m[i]
                            for n in T.unroll(ns):
                                for e in T.unroll(4):
                                    if masked:
                                        sacc[n * 4 + e] = T.if_then_else(
                                            kv0 + n * 8 + t * 2 + e % 2 < seq_kv,
                                            sacc[n * 4 + e] * T.float32(c),
                                            neg,
                                        )
                                    else:
                                        sacc[n * 4 + e] = sacc[n * 4 + e] * T.float32(c)
                                    mx[e // 2] = T.max(mx[e // 2], sacc[n * 4 + e])
                            for i in T.unroll(2):
                                mx[i] = T.max(mx[i], T.tvm_warp_shuffle_xor(full, mx[i], 1, 32, 32))
                                mx[i] = T.max(mx[i], T.tvm_warp_shuffle_xor(full, mx[i], 2, 32, 32))
                                alpha[i] = T.exp2(m[i] - mx[i])
                                m[i] = mx[i]
                                den[i] = den[i] * alpha[i]
                            for n in T.unroll(ns):
                                for e in T.unroll(4):
                                    sacc[n * 4 + e] = T.exp2(sacc[n * 4 + e] - m[e // 2])
                                    den[e // 2] = den[e // 2] + sacc[n * 4 + e]
                            for n in T.unroll(nd):
                                for e in T.unroll(4):
                                    oacc[n * 4 + e] = oacc[n * 4 + e] * alpha[e // 2]
                            # P as A fragments: the score tiles' registers, packed to float16
                            for kk in T.unroll(kp):
                                for e in T.unroll(4):
                                    pf[kk * 4 + e] = pack(
                                        sacc[(kk * 2 + e // 2) * 4 + e % 2 * 2],
                                        sacc[(kk * 2 + e // 2) * 4 + e % 2 * 2 + 1],
                                    )

                            # O += P·V
                            for kk in T.unroll(kp):
                                for dd in T.unroll(nd // 2):
                                    T.evaluate(
                                        ldsm(
                                            vb,
                                            0,
                                            vs,
                                            (kk * 16 + tx % 8 + tx // 8 % 2 * 8) * ld
                                            + dd * 16
                                            + tx // 16 * 8,
                                            trans=True,
                                        )
                                    )
                                    T.evaluate(mma(oacc, dd * 8, pf, kk * 4, vb, 0))
                                    T.evaluate(mma(oacc, dd * 8 + 4, pf, kk * 4, vb, 2))

                        for i in T.unroll(2):
                            den[i] = den[i] + T.tvm_warp_shuffle_xor(full, den[i], 1, 32, 32)
                            den[i] = den[i] + T.tvm_warp_shuffle_xor(full, den[i], 2, 32, 32)
                        for n in T.unroll(vec_d):  # output tiles inside D (D % 8 == 0)
                            for e in T.unroll(4):
                                if q0 + base + g + e // 2 * 8 < seq_q:
                                    o[b, q0 + base + g + e // 2 * 8, h, n * 8 + t * 2 + e % 2] = (
                                        T.Cast("float16", oacc[n * 4 + e] / den[e // 2])
                                    )

    return fused_attention


@mutator
class _Fuser(PyExprMutator):
    def __init__(self, mod):
        super().__init__(mod)
        self.kernels: dict[tuple, relax.GlobalVar] = {}

    def visit_call_(self, call):
        call = super().visit_call_(call)
        shape = attention_shape(call)
        if shape is None:
            return call
        batch, seq_q, seq_kv, heads, dim, dtype = shape
        if dtype != "float16" or dim % 8:
            return call
        config = tile_config(dim)
        if config is None:
            return call
        key = (batch, seq_q, seq_kv, heads, dim, attention_scale(call, dim), *config)
        gvar = self.kernels.get(key)
        if gvar is None:
            gvar = self.builder_.add_func(attention_kernel(*key), "fused_attention")
            self.kernels[key] = gvar
        return relax.call_tir(
            gvar, list(call.args), relax.TensorType([batch, seq_q, heads, dim], "float16")
        )


@tvm.transform.module_pass(opt_level=0, name="FusedAttention")
def FusedAttention(mod, _ctx):  # noqa: N802  (a pass, named like TVM's)
    """The module pass: every Relax function of ``mod`` rewritten.

    ``SplitAttention`` materialises the (B, H, Sq, Sk) scores: for the UNet's 64² self-attention
    that is 2·8·4096² float16 values written by one product, read and rewritten by the softmax and
    read again by the second (what that costs: docs/design.md, step 2a). :func:`attention_kernel` is one hand-written TIR kernel per
    shape that never stores a score outside registers: the online-softmax algorithm of
    FlashAttention-2 (Dao, 2023) on ``mma.sync.m16n8k16`` tensor-core instructions. One CTA of
    ``warps`` warps owns ``16·warps`` query rows of one (batch, head); each warp keeps its 16 rows'
    Q fragments, scores, running max/sum and float32 output accumulators in registers. Per tile of
    ``kv_tile`` keys:

    1. all threads copy the K and V tiles to shared memory (16-byte vectors; zero rows past Sk and
       zero columns from D up to Dp, the head dim rounded up to 16; rows padded by 8 halves so
       ``ldmatrix`` reads 8 distinct bank groups);
    2. S = Q·Kᵀ: ``ldmatrix`` K fragments, ``mma.sync`` into 16×8 float32 tiles;
    3. per row (4 lanes share one, two shuffles): scale with log2 e folded in, mask keys past Sk
       (compiled in only when the last tile is partial), new running max, exp2, per-lane partial
       sums, rescale of the output accumulators by exp2(m_old − m_new);
    4. O += P·V with P taken straight from the score registers (the accumulator layout of one
       ``mma`` is the A-operand layout of the next: a pack to float16 pairs, no shuffle) and V
       through ``ldmatrix.trans``.

    At the end the row sums are reduced across the 4 lanes and O/l is written as float16 in the
    (B, Sq, H, D) layout of ``R.nn.attention``. The PTX is four small device functions
    (:mod:`packer.compile.passes.ptx`); everything else is TIR.
    :func:`tile_config` keeps shared memory within the 48 KiB a kernel gets without opting in.
    Accuracy: float32 scores, max, sums and output; P is rounded to float16 for the second product,
    as cuDNN's and FlashAttention's kernels do (the same error as torch's float16 SDPA, ten times
    less than the split form's; docs/design.md, step 2a).

    :class:`FusedAttention` is the Relax pass: it replaces every plain ``R.nn.attention`` (no bias,
    mask or window; static float16 shapes, D == Dv, D a multiple of 8, Dp ≤ 160) with a
    ``call_tir`` of its kernel, marked scheduled so that dlight leaves it alone. It runs before
    ``SplitAttention``, which then sees only the rest (the VAE's one 512-wide head).
    """
    return relax.transform.Normalize()(rewrite_functions(_Fuser(mod), mod))
