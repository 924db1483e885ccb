"""Fused attention in workgroup memory, for GPU targets without tensor-core intrinsics (WebGPU)."""

from __future__ import annotations

import tvm
from tvm import relax
from tvm.relax.expr_functor import PyExprMutator, mutator

from . import attention_scale, attention_shape, rewrite_functions

WORKGROUP_BYTES = 32 * 1024
"""Workgroup memory a kernel may use: what tvmjs asks every WebGPU device for."""

THREADS = 16
"""Invocations along each of the workgroup's two axes (256 in all: WebGPU's default limit)."""
KEY_TILE = 64  # keys per tile: 4 per invocation along tx
D_CHUNK = 16  # head dims per step of Q·Kᵀ
_NEG = -1.0e30  # finite "−∞": exp of it minus a real max is 0, and no inf − inf can make a NaN


def _round16(n: int) -> int:
    return (n + 15) // 16 * 16


def workgroup_words(head_dim: int, rows_per_thread: int, v_chunk: int) -> int:
    """float32 words of workgroup memory one workgroup uses (module docstring)."""
    rows = THREADS * rows_per_thread
    qk = D_CHUNK * (rows + KEY_TILE)
    return max(qk, v_chunk * _round16(head_dim)) + rows * KEY_TILE


ACCUMULATORS = 64
"""Output accumulators one invocation may keep (rows × dims): beyond this they spill."""


def tile_config(seq_q: int, head_dim: int) -> tuple[int, int] | None:
    """(rows per invocation, V chunk) for a shape: 4 rows (64 per workgroup) unless the queries
    would give too few workgroups or the accumulators would not fit in :data:`ACCUMULATORS`,
    the longest V chunk that fits :data:`WORKGROUP_BYTES`; None when nothing fits (the caller
    keeps the split form)."""
    dims = (head_dim + THREADS - 1) // THREADS
    for rows in (4, 2, 1) if seq_q > 256 else (2, 4, 1):
        if rows * dims > ACCUMULATORS:
            continue
        for v_chunk in (16, 8, 4):
            if workgroup_words(head_dim, rows, v_chunk) * 4 <= WORKGROUP_BYTES:
                return rows, v_chunk
    return None


def attention_kernel(
    batch: int,
    seq_q: int,
    seq_kv: int,
    heads: int,
    head_dim: int,
    scale: float,
    dtype: str,
    rows_per_thread: int,
    v_chunk: int,
):
    """The fused attention PrimFunc ``(q, k, v) -> o`` for one static shape and dtype."""
    from tvm.script import tirx as T

    d = head_dim
    rt, vc = rows_per_thread, v_chunk
    rows = THREADS * rt
    dt = (d + THREADS - 1) // THREADS  # output dims per invocation
    dp = dt * THREADS
    d_chunks = (d + D_CHUNK - 1) // D_CHUNK
    q_tiles = (seq_q + rows - 1) // rows
    kv_tiles = (seq_kv + KEY_TILE - 1) // KEY_TILE
    threads = THREADS * THREADS
    q_loads = (rows * D_CHUNK + threads - 1) // threads
    k_loads = (KEY_TILE * D_CHUNK + threads - 1) // threads
    v_loads = (vc * dp + threads - 1) // threads
    k_base = D_CHUNK * rows  # offsets into the one workgroup buffer
    p_base = max(D_CHUNK * (rows + KEY_TILE), vc * dp)
    words = p_base + rows * KEY_TILE
    masked = seq_kv % KEY_TILE != 0
    zero = T.float32(0)
    neg = T.float32(_NEG)
    c = T.float32(scale)

    @T.prim_func(private=True)
    def workgroup_attention(
        q_handle: T.handle, k_handle: T.handle, v_handle: T.handle, o_handle: T.handle
    ):
        T.func_attr({"tirx.noalias": True, "tirx.is_scheduled": True})
        q = T.match_buffer(q_handle, (batch, seq_q, heads, d), dtype)
        k = T.match_buffer(k_handle, (batch, seq_kv, heads, d), dtype)
        v = T.match_buffer(v_handle, (batch, seq_kv, heads, d), dtype)
        o = T.match_buffer(o_handle, (batch, seq_q, heads, d), dtype)
        for bx in T.thread_binding(q_tiles, thread="blockIdx.x"):
            for by in T.thread_binding(batch * heads, thread="blockIdx.y"):
                for ty in T.thread_binding(THREADS, thread="threadIdx.y"):
                    for tx in T.thread_binding(THREADS, thread="threadIdx.x"):
                        sm = T.alloc_buffer((words,), "float32", scope="shared")
                        sacc = T.alloc_buffer((rt * 4,), "float32", scope="local")
                        oacc = T.alloc_buffer((rt * dt,), "float32", scope="local")
                        m = T.alloc_buffer((rt,), "float32", scope="local")
                        den = T.alloc_buffer((rt,), "float32", scope="local")
                        mx = T.alloc_buffer((rt,), "float32", scope="local")
                        alpha = T.alloc_buffer((rt,), "float32", scope="local")
                        pv = T.alloc_buffer((rt,), "float32", scope="local")
                        b = T.meta_var(by // heads)
                        h = T.meta_var(by % heads)
                        q0 = T.meta_var(bx * rows)
                        tid = T.meta_var(ty * THREADS + tx)
                        r0 = T.meta_var(ty * rt)  # this invocation's first row in the tile
                        for i in T.unroll(rt):
                            m[i] = neg
                            den[i] = zero
                        for i in T.unroll(rt * dt):
                            oacc[i] = zero

                        for kt in T.serial(kv_tiles):
                            kv0 = T.meta_var(kt * KEY_TILE)
                            for i in T.unroll(rt * 4):
                                sacc[i] = zero
                            # 1. S = Q·Kᵀ, D in chunks of 16 through workgroup memory
                            for dc in T.serial(d_chunks):
                                d0 = T.meta_var(dc * D_CHUNK)
                                T.tvm_storage_sync("shared")  # the last reads of this area are done
                                for it in T.serial(q_loads):
                                    item = T.meta_var(it * threads + tid)
                                    if item < rows * D_CHUNK:
                                        r = T.meta_var(item // D_CHUNK)
                                        e = T.meta_var(item % D_CHUNK)
                                        if q0 + r < seq_q and d0 + e < d:
                                            sm[e * rows + r] = T.Cast(
                                                "float32", q[b, q0 + r, h, d0 + e]
                                            )
                                        else:
                                            sm[e * rows + r] = zero
                                for it in T.serial(k_loads):
                                    item = T.meta_var(it * threads + tid)
                                    if item < KEY_TILE * D_CHUNK:
                                        r = T.meta_var(item // D_CHUNK)
                                        e = T.meta_var(item % D_CHUNK)
                                        if kv0 + r < seq_kv and d0 + e < d:
                                            sm[k_base + e * KEY_TILE + r] = T.Cast(
                                                "float32", k[b, kv0 + r, h, d0 + e]
                                            )
                                        else:
                                            sm[k_base + e * KEY_TILE + r] = zero
                                T.tvm_storage_sync("shared")
                                for e in T.unroll(D_CHUNK):
                                    for i in T.unroll(rt):
                                        for j in T.unroll(4):
                                            sacc[i * 4 + j] = (
                                                sacc[i * 4 + j]
                                                + sm[e * rows + r0 + i]
                                                * sm[k_base + e * KEY_TILE + tx + j * THREADS]
                                            )
                            # 2. scaled scores to the tile; running max; P over own scores
                            for i in T.unroll(rt):
                                for j in T.unroll(4):
                                    if masked:
                                        sacc[i * 4 + j] = T.if_then_else(
                                            kv0 + tx + j * THREADS < seq_kv,
                                            sacc[i * 4 + j] * c,
                                            neg,
                                        )
                                    else:
                                        sacc[i * 4 + j] = sacc[i * 4 + j] * c
                                    sm[p_base + (r0 + i) * KEY_TILE + tx + j * THREADS] = sacc[
                                        i * 4 + j
                                    ]
                            T.tvm_storage_sync("shared")
                            for i in T.unroll(rt):
                                mx[i] = m[i]
                                for key in T.serial(KEY_TILE):
                                    mx[i] = T.max(mx[i], sm[p_base + (r0 + i) * KEY_TILE + key])
                                alpha[i] = T.exp(m[i] - mx[i])  # what the old terms scale by
                                m[i] = mx[i]
                                den[i] = den[i] * alpha[i]
                                for j in T.unroll(dt):
                                    oacc[i * dt + j] = oacc[i * dt + j] * alpha[i]
                            T.tvm_storage_sync("shared")  # every row max is read
                            for i in T.unroll(rt):
                                for j in T.unroll(4):
                                    sm[p_base + (r0 + i) * KEY_TILE + tx + j * THREADS] = T.exp(
                                        sacc[i * 4 + j] - m[i]
                                    )
                            # 3. O += P·V, keys in chunks of vc (V in the Q/K area)
                            for vt in T.serial(KEY_TILE // vc):
                                T.tvm_storage_sync("shared")
                                for it in T.serial(v_loads):
                                    item = T.meta_var(it * threads + tid)
                                    if item < vc * dp:
                                        r = T.meta_var(item // dp)
                                        e = T.meta_var(item % dp)
                                        if kv0 + vt * vc + r < seq_kv and e < d:
                                            sm[item] = T.Cast(
                                                "float32", v[b, kv0 + vt * vc + r, h, e]
                                            )
                                        else:
                                            sm[item] = zero
                                T.tvm_storage_sync("shared")
                                for key in T.unroll(vc):
                                    for i in T.unroll(rt):
                                        pv[i] = sm[p_base + (r0 + i) * KEY_TILE + vt * vc + key]
                                        den[i] = den[i] + pv[i]
                                        for j in T.unroll(dt):
                                            oacc[i * dt + j] = (
                                                oacc[i * dt + j]
                                                + pv[i] * sm[key * dp + tx + j * THREADS]
                                            )

                        for i in T.unroll(rt):
                            for j in T.unroll(dt):
                                if q0 + r0 + i < seq_q and tx + j * THREADS < d:
                                    o[b, q0 + r0 + i, h, tx + j * THREADS] = T.Cast(
                                        dtype, oacc[i * dt + j] / den[i]
                                    )

    return workgroup_attention


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
        if dtype not in ("float32", "float16"):
            return call
        config = tile_config(seq_q, dim)
        scale = attention_scale(call, dim)
        if config is None or scale is None:
            return call
        key = (batch, seq_q, seq_kv, heads, dim, scale, dtype, *config)
        gvar = self.kernels.get(key)
        if gvar is None:
            gvar = self.builder_.add_func(attention_kernel(*key), "workgroup_attention")
            self.kernels[key] = gvar
        return relax.call_tir(
            gvar, list(call.args), relax.TensorType([batch, seq_q, heads, dim], dtype)
        )


@tvm.transform.module_pass(opt_level=0, name="WorkgroupAttention")
def WorkgroupAttention(mod, _ctx):  # noqa: N802  (a pass, named like TVM's)
    """The module pass: every Relax function of ``mod`` rewritten.

    ``SplitAttention`` materialises the (B, H, Sq, Sk) scores in global memory: for the UNet's 64²
    self-attention that is 2·8·4096² values, 512 MiB in float16 and 1 GiB in float32, more than
    the 128 MiB storage binding a WebGPU device gives by default, written by one kernel, read and
    rewritten by the softmax and read again by the second product. :func:`attention_kernel` is one
    kernel per shape that keeps every score inside its workgroup: the online softmax of
    FlashAttention (Dao et al., 2022) written in plain TIR — loops, workgroup (``shared``) buffers,
    private arrays and barriers — so that every GPU codegen TVM has, WGSL included, can emit it.

    One workgroup of 16 × 16 invocations owns ``16·RT`` query rows of one (batch, head) and walks
    the keys in tiles of 64. Invocation (ty, tx) owns query rows ``ty·RT + i`` (i < RT) and, per
    tile, keys ``tx + 16·j`` (j < 4) of the scores and head dims ``tx + 16·j`` (j < ⌈D/16⌉) of the
    output: register micro-tiles, so that each workgroup-memory read feeds several multiply-adds.
    Per key tile:

    1. S = Q·Kᵀ over D in chunks of 16: the Q and K chunks go to workgroup memory transposed
       (d-major, so that neighbouring invocations read neighbouring words), zero past Sq, Sk, D;
    2. the scaled scores (−1e30 for keys past Sk) go to a score tile in workgroup memory; each
       invocation reads its rows' 64 scores for the new running max, rescales its output
       accumulators and running sums by exp(m_old − m_new), then overwrites its own scores with
       P = exp(s − m_new);
    3. O += P·V over the tile's keys in chunks of ``vc`` (V chunks reuse the Q/K area), adding each
       P value to the row's running sum as it is read.

    Every invocation of a row group computes the same max and sum (the same reads in the same
    order), so no cross-invocation reduction is needed. Scores, max, sums and the output
    accumulate in float32 whatever the storage dtype. At the end O/l is written in the (B, Sq, H, D)
    layout of ``R.nn.attention``. Workgroup memory: ``max(16·(16·RT + 64), vc·Dp) + 16·RT·64``
    float32 words (Dp = D rounded up to 16), at most :data:`WORKGROUP_BYTES`.

    :class:`WorkgroupAttention` is the Relax pass: it replaces every plain ``R.nn.attention`` (no
    bias, mask or window; static shapes, D == Dv, float32 or float16) whose tiles fit with a
    ``call_tir`` of its kernel, marked scheduled so that dlight leaves it alone. Targets with
    ``mma_kernels`` (CUDA float16) use :mod:`.fused_attention` instead; heads too wide for the
    workgroup memory stay with ``SplitAttention``.
    """
    return relax.transform.Normalize()(rewrite_functions(_Fuser(mod), mod))
