"""The targets sdpack compiles for: one :class:`TargetSpec` entry each.

A target entry says everything that differs between backends: the TVM target (as the JSON dict
TVM 0.27 requires), the host it runs beside, the dlight rules that schedule its kernels (none on
CPU, where LLVM compiles unscheduled loops correctly), how the executable becomes a file, and
whether the build needs the CUDA driver stub (:mod:`packer.compile.cuda_stub`).

Adding a target is one entry in ``_ENTRIES``. Planned ones and what they need:

* ``metal``: ``{"kind": "metal"}`` with the dlight GPU rules minus the simdgroup matmul attempt
  (slow and failing in 0.27, see the notes), ``device="metal"``.

``webgpu`` builds a standalone ``.wasm`` for tvmjs (``@mlc-ai/web-runtime@0.27.0-dev0``): the
kernels are WGSL, the host code is LLVM ``wasm32`` linked by emscripten against TVM's wasm
runtime objects (:mod:`packer.compile.webgpu`). WGSL has no i64: no library takes or computes
i64 tensors at run time (tests/compile/test_export.py). Its requirements name the WebGPU
features a device must have (``shader-f16`` for float16) and ``max_buffer_bytes``, the largest
single buffer the library allocates (measured by :func:`packer.compile.pipeline.build`).

``opencl`` (an x86-64 host, desktop OpenCL and CPU OpenCL such as pocl) and ``opencl-mali``
(an aarch64 Linux host, Arm Mali GPUs such as the RK3588's Mali-G610) emit OpenCL C kernels
embedded in a host shared library; the apache-tvm wheel's runtime cannot run them, sdpack's
OpenCL plugin can (:mod:`packer.runtime.opencl_runtime`). Their float16 variants compute in
``half``, so a device must offer ``cl_khr_fp16`` (``requirements.features``). ``opencl-mali``
schedules within Mali's limits (:data:`MALI_LIMITS`) and is cross-linked by Debian's
``aarch64-linux-gnu-g++``.

``toolchain`` checks what a build needs beyond the apache-tvm wheel (emscripten's ``emcc`` for
webgpu, ``nvcc`` for cuda) before anything is exported, so a missing tool is one line.
"""

from __future__ import annotations

import platform
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import UsageError

CUDA_LIMITS = {
    "max_threads_per_block": 1024,
    "max_shared_memory_per_block": 49152,
    "thread_warp_size": 32,
}
"""Spelled out because a bare ``{"kind": "cuda"}`` fails in dlight's AutoBind (notes)."""


_X86_64 = platform.machine().lower() in ("x86_64", "amd64")


def _cpu_target() -> dict:
    """LLVM for this machine's architecture; on x86-64 the x86-64-v3 level (AVX2, FMA, F16C).

    F16C is what makes the float16 variant buildable: without hardware half conversions LLVM
    expands every fp16 cast into soft-float code and a tiny UNet takes minutes to compile
    instead of seconds. v3 is the baseline of every x86-64 CPU since 2013-2015.
    """
    if _X86_64:
        return {"kind": "llvm", "mcpu": "x86-64-v3"}
    return {"kind": "llvm"}


MALI_LIMITS = {"max_num_threads": 256, "max_shared_memory_per_block": 32768, "thread_warp_size": 1}
"""What an ``opencl-mali`` kernel may use: 256 work-items per work-group (Bifrost/Valhall Mali
GPUs report 256 to 1024 depending on register use; 256 always launches), 32 KiB of local
memory (the Mali-G610's), and no warp-level code."""

AARCH64_CROSS_CXX = "aarch64-linux-gnu-g++"
"""The cross linker of ``opencl-mali`` libraries (Debian's ``g++-aarch64-linux-gnu``)."""


def _no_rules() -> list:
    return []


def _gpu_rules() -> list:
    """dlight's default GPU schedules, most specific first; Fallback binds whatever is left.

    Each rule but Fallback is :class:`~packer.compile.schedule_rules.Tolerant`: one that raises
    on a kernel it cannot schedule (dlight's GEMV on the 1×1-latent attention of a 64 px UNet)
    passes it on to the next rule instead of failing the build; what the rules schedule without
    raising is unchanged.
    """
    from tvm.s_tir import dlight as dl

    from .schedule_rules import tolerant

    return tolerant(
        [
            dl.gpu.Matmul(),
            dl.gpu.GEMV(),
            dl.gpu.Reduction(),
            dl.gpu.GeneralReduction(),
            dl.gpu.Fallback(),
        ]
    )


def _cuda_rules() -> list:
    """:func:`_gpu_rules`, with TVM's tensor-core intrinsics loaded for the Matmul rule."""
    from .schedule_rules import load_tensor_intrinsics

    load_tensor_intrinsics()
    return _gpu_rules()


WEBGPU_MATMUL_CONFIGS = {
    "t64": {
        "block_size_x": 16,
        "block_size_y": 16,
        "micro_size_x": 4,
        "micro_size_y": 4,
        "micro_size_k": 16,
        "vector_size": 1,
    },
    "t128": {
        "block_size_x": 16,
        "block_size_y": 16,
        "micro_size_x": 8,
        "micro_size_y": 8,
        "micro_size_k": 8,
        "vector_size": 1,
    },
}
"""Tile configs of dlight's Matmul rule for WebGPU, by name: 256 invocations (WebGPU's default
limit) of 4×4 or 8×8 outputs each, so a 64×64 or 128×128 output tile per workgroup against
dlight's default 8×8 invocations of 4×4 (32×32). Vectorised loads (``vector_size`` > 1) fail
in TVM's WebGPU storage rewrite."""

WEBGPU_MATMUL = "dlight"
"""The config the ``webgpu`` target builds with: a key of :data:`WEBGPU_MATMUL_CONFIGS`, or
``"dlight"`` for dlight's own default."""


def webgpu_rules(matmul: str = WEBGPU_MATMUL) -> list:
    """The GPU rules with dlight's Matmul on the named tile config (:data:`WEBGPU_MATMUL`)."""
    from tvm.s_tir import dlight as dl

    rules = _gpu_rules()
    if matmul == "dlight":
        return rules
    config = dl.gpu.Matmul.Config(**WEBGPU_MATMUL_CONFIGS[matmul])

    class ConfiguredMatmul(dl.gpu.Matmul):
        def get_configs(self, target):
            return config

    from .schedule_rules import Tolerant

    return [Tolerant(ConfiguredMatmul()) if _is_matmul(rule) else rule for rule in rules]


def _is_matmul(rule) -> bool:
    from tvm.s_tir import dlight as dl

    return isinstance(getattr(rule, "rule", rule), dl.gpu.Matmul)


def _export_shared_library(executable, path: Path) -> None:
    """A host shared library; device code (a CUDA fatbin) is embedded in it."""
    executable.export_library(str(path))


def _export_wasm(executable, path: Path) -> None:
    """A standalone ``.wasm`` for tvmjs; WGSL kernels are embedded in it."""
    from .webgpu import export_wasm

    export_wasm(executable, path)


def _export_aarch64_library(executable, path: Path) -> None:
    """An aarch64 Linux shared library, linked by the cross compiler; kernels embedded."""
    from tvm.support import cc

    executable.export_library(str(path), fcompile=cc.cross_compiler(AARCH64_CROSS_CXX))


def _opencl_requirements(dtype: str) -> dict:
    """float16 kernels compute in OpenCL's ``half``: the device must offer ``cl_khr_fp16``."""
    return {"features": ["cl_khr_fp16"] if dtype == "float16" else []}


def _webgpu_requirements(dtype: str) -> dict:
    """float16 kernels use WGSL's ``f16``: the device must offer the ``shader-f16`` feature."""
    return {"features": ["shader-f16"] if dtype == "float16" else []}


def _no_dtype_requirements(dtype: str) -> dict:
    return {}


def _no_toolchain() -> None:
    """LLVM is inside the apache-tvm wheel: nothing else to install."""


def _emscripten() -> None:
    """The wasm link needs emscripten's ``emcc`` (a CompileError saying what to do otherwise)."""
    from .webgpu import emcc

    emcc()


def _nvcc() -> None:
    """CUDA kernels are compiled by the toolkit's ``nvcc``, with or without a GPU here."""
    from ..errors import CompileError
    from .cuda_stub import find_nvcc

    if find_nvcc() is None:
        raise CompileError(
            "the cuda targets need the CUDA toolkit's nvcc, which is not installed",
            "install the CUDA toolkit (nvcc in /usr/local/cuda*/bin or on PATH), "
            "or leave cuda out of --targets",
        )


def _aarch64_cross() -> None:
    """``opencl-mali`` libraries are linked for aarch64 by the cross toolchain."""
    import shutil

    from ..errors import CompileError

    if shutil.which(AARCH64_CROSS_CXX) is None and platform.machine() != "aarch64":
        raise CompileError(
            f"the opencl-mali target needs the aarch64 cross linker "
            f"{AARCH64_CROSS_CXX}, which is not installed",
            "apt-get install g++-aarch64-linux-gnu, or leave opencl-mali out of --targets",
        )


@dataclass(frozen=True)
class TargetSpec:
    """One compile target. ``key`` names it in the CLI, the cache and ``tuning/<key>/``."""

    key: str
    device: str  # runtime device kind for ComponentRunner / the manifest: "cpu", "cuda", ...
    target: dict
    host: dict | None = None
    schedule_rules: Callable[[], list] = _no_rules
    export: Callable[[object, Path], None] = _export_shared_library
    lib_suffix: str = ".so"
    needs_cuda_driver: bool = False
    aliases: tuple[str, ...] = field(default=())
    requirements: dict = field(default_factory=dict)  # manifest "requirements": what a device needs
    dtype_requirements: Callable[[str], dict] = _no_dtype_requirements  # added per dtype
    measure_buffers: bool = False  # record the largest buffer as requirements.max_buffer_bytes
    conv_layout: str = "NCHW"  # convolutions' layout inside the library (pipeline step 1b)
    mma_kernels: bool = False  # float16 hand-written mma.sync kernels (pipeline steps 1c, 2a)
    workgroup_attention: bool = False  # fused attention in workgroup memory (pipeline step 2b)
    workgroup_gemm: bool = False  # convolutions and linears tiled in workgroup memory (step 1e)
    workgroup_norm: bool = False  # group norms' statistics in one workgroup kernel (step 3)
    toolchain: Callable[[], None] = (
        _no_toolchain  # raises, saying what to install, if a tool is missing
    )

    def requirements_for(self, dtype: str) -> dict:
        """The manifest ``requirements`` of this target's libraries of ``dtype``."""
        return {**self.requirements, **self.dtype_requirements(dtype)}

    def tvm_target(self):
        """The ``tvm.target.Target`` (with host) this entry describes."""
        import tvm

        if self.host is None:
            return tvm.target.Target(self.target)
        return tvm.target.Target(self.target, host=self.host)

    def target_json(self) -> dict:
        """The fully resolved target as plain JSON (what the manifest and cache key record)."""
        return _plain(self.tvm_target().export())


def _plain(value):
    """TVM's Map/Array/String → dict/list/str, recursively (json cannot encode FFI containers)."""
    if hasattr(value, "items"):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)) or type(value).__name__ == "Array":
        return [_plain(v) for v in value]
    if isinstance(value, (bool, int, float)) or value is None:
        return value
    return str(value)


def _cuda(arch: str, *aliases: str) -> TargetSpec:
    return TargetSpec(
        key=f"cuda-{arch.replace('_', '')}",
        device="cuda",
        target={"kind": "cuda", "arch": arch, **CUDA_LIMITS},
        host={"kind": "llvm"},
        schedule_rules=_cuda_rules,
        needs_cuda_driver=True,
        aliases=aliases,
        requirements={"arch": arch},
        conv_layout="NHWC",  # tensor-core implicit GEMM (packer.compile.passes.conv2d_implicit_gemm)
        mma_kernels=True,  # tensor-core GEMM and flash attention (pipeline steps 1c, 2a)
        toolchain=_nvcc,
    )


_ENTRIES: tuple[TargetSpec, ...] = (
    TargetSpec(
        key="llvm",
        device="cpu",
        target=_cpu_target(),
        aliases=("cpu",),
        requirements={"arch": "x86-64-v3", "features": ["avx2", "fma", "f16c"]} if _X86_64 else {},
    ),
    _cuda("sm_80"),
    _cuda("sm_86"),
    _cuda("sm_89"),
    _cuda("sm_90", "cuda"),
    TargetSpec(
        key="opencl",
        device="opencl",
        target={"kind": "opencl"},
        host=_cpu_target(),
        schedule_rules=_gpu_rules,
        dtype_requirements=_opencl_requirements,
        requirements={"arch": "x86-64-v3"} if _X86_64 else {},
    ),
    TargetSpec(
        key="opencl-mali",
        device="opencl",
        target={"kind": "opencl", "device": "mali", **MALI_LIMITS},
        host={"kind": "llvm", "mtriple": "aarch64-linux-gnu"},
        schedule_rules=_gpu_rules,
        export=_export_aarch64_library,
        requirements={"arch": "aarch64"},
        dtype_requirements=_opencl_requirements,
        toolchain=_aarch64_cross,
    ),
    TargetSpec(
        key="webgpu",
        device="webgpu",
        target={"kind": "webgpu"},
        host={"kind": "llvm", "mtriple": "wasm32-unknown-unknown-wasm"},
        schedule_rules=webgpu_rules,
        export=_export_wasm,
        lib_suffix=".wasm",
        dtype_requirements=_webgpu_requirements,
        measure_buffers=True,
        workgroup_attention=True,
        workgroup_gemm=True,
        workgroup_norm=True,
        toolchain=_emscripten,
    ),
)

TARGETS: dict[str, TargetSpec] = {
    **{alias: spec for spec in _ENTRIES for alias in spec.aliases},
    **{spec.key: spec for spec in _ENTRIES},
}
"""Every accepted target name, keys and aliases (``cuda`` = ``cuda-sm90``, ``cpu`` = ``llvm``)."""


def get_target(name: str) -> TargetSpec:
    """Look a target up by key (``cuda-sm86``) or alias; ``spec.key`` is the canonical name."""
    spec = TARGETS.get(name)
    if spec is None:
        raise UsageError(f"unknown target {name!r}", f"choose one of: {', '.join(sorted(TARGETS))}")
    return spec
