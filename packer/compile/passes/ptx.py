"""The PTX instructions sdpack's hand-written CUDA kernels are made of, as TIR calls.

Each is a small ``__device__`` function emitted once per library through TVM's
``cuda_func_call`` (the source rides on the call; codegen writes each distinct function once).
Everything else in those kernels — indexing, loops, shared buffers, shuffles — is TIR. Used by
:mod:`packer.compile.passes.fused_attention` and :mod:`packer.compile.passes.tensor_core_gemm`.
"""

from __future__ import annotations


def _ldmatrix_source(name: str, variant: str) -> str:
    return f"""
__forceinline__ __device__ void {name}(void* dst, void* src) {{
  unsigned* r = (unsigned*)dst;
  unsigned addr = (unsigned)__cvta_generic_to_shared(src);
  asm volatile("ldmatrix.sync.aligned.m8n8.x4{variant}.shared.b16 {{%0, %1, %2, %3}}, [%4];\\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(addr) : "memory");
}}
"""


def _wait_source(pending: int) -> str:
    return f"""
__forceinline__ __device__ void sdpack_cp_async_wait{pending}() {{
  asm volatile("cp.async.wait_group {pending};\\n" ::: "memory");
}}
"""


HELPERS = {
    # ldmatrix: four 8×8 b16 matrices from shared memory; lane l gives the address of row l % 8
    # of matrix l // 8, and receives in register i its share of matrix i (transposed: .trans)
    "sdpack_ldsm_x4": _ldmatrix_source("sdpack_ldsm_x4", ""),
    "sdpack_ldsm_x4_trans": _ldmatrix_source("sdpack_ldsm_x4_trans", ".trans"),
    # D = A·B + D for one 16×8 float32 tile: A 16×16 float16 (4 registers), B 16×8 (2)
    "sdpack_mma_16816": """
__forceinline__ __device__ void sdpack_mma_16816(void* acc, void* a, void* b) {
  float* d = (float*)acc;
  const unsigned* x = (const unsigned*)a;
  const unsigned* y = (const unsigned*)b;
  asm("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 "
      "{%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};\\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(x[0]), "r"(x[1]), "r"(x[2]), "r"(x[3]), "r"(y[0]), "r"(y[1]));
}
""",
    "sdpack_pack_half2": """
__forceinline__ __device__ unsigned sdpack_pack_half2(float lo, float hi) {
  __half2 h = __floats2half2_rn(lo, hi);
  return *reinterpret_cast<unsigned*>(&h);
}
""",
    # 16 bytes global → shared without passing through registers (L1 bypassed); the bytes past
    # `bytes` (0 or 16) are zero-filled, so an out-of-range row reads as zeros
    "sdpack_cp_async16": """
__forceinline__ __device__ void sdpack_cp_async16(void* dst, void* src, int bytes) {
  unsigned addr = (unsigned)__cvta_generic_to_shared(dst);
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\\n"
               :: "r"(addr), "l"(src), "r"(bytes) : "memory");
}
""",
    # 16 bytes (four 32-bit registers) → shared, one vector store
    "sdpack_st_shared16": """
__forceinline__ __device__ void sdpack_st_shared16(void* dst, unsigned a, unsigned b, unsigned c,
                                                   unsigned d) {
  unsigned addr = (unsigned)__cvta_generic_to_shared(dst);
  asm volatile("st.shared.v4.b32 [%0], {%1, %2, %3, %4};\\n"
               :: "r"(addr), "r"(a), "r"(b), "r"(c), "r"(d) : "memory");
}
""",
    "sdpack_cp_async_commit": """
__forceinline__ __device__ void sdpack_cp_async_commit() {
  asm volatile("cp.async.commit_group;\\n" ::: "memory");
}
""",
    **{f"sdpack_cp_async_wait{n}": _wait_source(n) for n in range(8)},
}


def call(name: str, *args, return_type: str = "void"):
    """A TIR call of helper ``name``."""
    from tvm.backend.cuda.op import cuda_func_call

    return cuda_func_call(name, *args, source_code=HELPERS[name], return_type=return_type)


def ldmatrix_x4(dst, dst_offset, src, src_offset, trans: bool = False):
    """Four 8×8 float16 matrices from shared ``src`` (this lane's row address at
    ``src_offset``) into four uint32 registers of ``dst`` from ``dst_offset``."""
    name = "sdpack_ldsm_x4_trans" if trans else "sdpack_ldsm_x4"
    return call(
        name, dst.access_ptr("w", offset=dst_offset), src.access_ptr("r", offset=src_offset)
    )


def mma_16816(acc, acc_offset, a, a_offset, b, b_offset):
    """``acc[acc_offset:+4] += A·B``: A from four uint32 registers of ``a``, B from two of ``b``."""
    return call(
        "sdpack_mma_16816",
        acc.access_ptr("rw", offset=acc_offset),
        a.access_ptr("r", offset=a_offset),
        b.access_ptr("r", offset=b_offset),
    )


def pack_half2(lo, hi):
    """Two float32 values rounded to float16 and packed into one uint32 (``lo`` in the low half)."""
    return call("sdpack_pack_half2", lo, hi, return_type="uint32")


def cp_async16(dst, dst_offset, src, src_offset, nbytes):
    """Start copying 16 bytes ``src[src_offset:]`` (global) → ``dst[dst_offset:]`` (shared);
    ``nbytes`` 0 writes zeros instead (``src`` must still be a valid address).

    The destination is passed as a read (access mask "r"): the kernels that use this order
    their shared-memory ring with their own barriers and ``cp.async.wait_group``, and TVM's
    barrier planner, which cannot tell the ring's slots apart, would otherwise add a second
    barrier per tile between these copies and the ``ldmatrix`` reads of another slot."""
    return call(
        "sdpack_cp_async16",
        dst.access_ptr("r", offset=dst_offset),
        src.access_ptr("r", offset=src_offset),
        nbytes,
    )


def st_shared16(dst, dst_offset, words):
    """Store four uint32 values ``words`` (16 bytes) at ``dst[dst_offset:]`` (shared).

    Passed as a read (access mask "r") for the reason :func:`cp_async16` gives: the kernels that
    use it fill a ring slot no warp reads until their own next barrier."""
    return call("sdpack_st_shared16", dst.access_ptr("r", offset=dst_offset), *words)


def cp_async_commit():
    """Close the group of copies started since the last commit."""
    return call("sdpack_cp_async_commit")


def cp_async_wait(pending: int):
    """Wait until at most ``pending`` committed groups are still in flight (0 ≤ pending < 8)."""
    return call(f"sdpack_cp_async_wait{pending}")
