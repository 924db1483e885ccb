"""Which libraries a pack builds — its variants, one per (target, dtype) — and the weights' dtype.

The default serves the browser first: ``webgpu`` in float16 (devices with ``shader-f16``) and
float32 (the rest; runtime-web picks between them), ``opencl`` targets the same way (float16
needs ``cl_khr_fp16``, which not every driver offers), ``llvm`` in float32 (CPUs: float16 there is
slower and less exact), and ``cuda`` in float16 (tensor cores) when this machine has a CUDA GPU
and nvcc (:func:`local_cuda_target`).

Weights are stored once, in float16 whenever any variant runs in float16: half the download and
the disk, and a float32 variant widens them exactly at load time (every float16 is a float32;
runtime-web's ``paramFor``, the native :mod:`packer.runtime.generate`), so the float32 variant
computes in float32 over the float16-rounded weights. SD1.5 checkpoints are mostly distributed
and run in float16 already; rounding a weight to float16 moves it by at most 2^-11 of itself.
Without any float16 variant (``--targets llvm``) the weights stay float32: nothing is gained
by rounding them.

An explicit ``--dtype fp32`` or ``fp16`` gives a single-dtype bundle: every target in that dtype,
weights stored in it.
"""

from __future__ import annotations

from dataclasses import dataclass

from .targets import TARGETS, get_target

DEFAULT_TARGETS = ("webgpu", "llvm")
"""The targets of a pack without ``--targets`` (plus :func:`local_cuda_target`)."""

AUTO_DTYPES = {
    "webgpu": ("float16", "float32"),
    "cpu": ("float32",),
    "cuda": ("float16",),
    "opencl": ("float16", "float32"),
}
"""The dtypes a target is built in without ``--dtype``, by its runtime device."""


@dataclass(frozen=True)
class Variant:
    """One set of libraries: ``target`` as named (key or alias) and the dtype it computes in."""

    target: str
    dtype: str

    @property
    def key(self) -> str:
        """The manifest's name for it, ``<target letters>-<dtype>`` (``webgpu-float16``,
        ``cuda-float16``, ``cudasm86-float16``): the schema allows no other dash."""
        return f"{self.target.replace('-', '')}-{self.dtype}"


@dataclass(frozen=True)
class Plan:
    """The variants of one pack and the dtype its weights are stored in."""

    variants: tuple[Variant, ...]
    weights_dtype: str

    def display(self) -> str:
        return f"{', '.join(v.key for v in self.variants)} over {self.weights_dtype} weights"


def plan(targets: list[str] | None, dtype: str | None) -> Plan:
    """The variants for ``targets`` (None: the default) in ``dtype`` (None: each target's own)."""
    names = list(dict.fromkeys(targets if targets is not None else default_targets()))
    if dtype is not None:
        return Plan(tuple(Variant(t, dtype) for t in names), dtype)
    variants = tuple(Variant(t, d) for t in names for d in AUTO_DTYPES[get_target(t).device])
    weights = "float16" if any(v.dtype == "float16" for v in variants) else "float32"
    return Plan(variants, weights)


def default_targets() -> list[str]:
    """``webgpu``, ``llvm``, and this machine's CUDA target where it has one."""
    cuda = local_cuda_target()
    return [*DEFAULT_TARGETS, *([cuda] if cuda else [])]


def local_cuda_target() -> str | None:
    """The CUDA target of this machine's GPU, when it can both build and run CUDA libraries.

    Both must hold: nvcc is found (:func:`packer.compile.cuda_stub.find_nvcc`: the toolkit
    that compiles the kernels) and TVM's CUDA runtime sees a device (the driver loaded, GPU 0
    exists). The target is that GPU's architecture (``cuda-sm86`` for compute capability 8.6)
    if sdpack has one for it. nvcc alone — a build box without a GPU — does not count: there
    ``--targets ...,cuda-smXX`` cross-builds for the architecture the user names.
    """
    from .cuda_stub import find_nvcc

    if find_nvcc() is None:
        return None
    import tvm

    device = tvm.cuda(0)
    if not device.exist:
        return None
    key = "cuda-sm" + str(device.compute_version).replace(".", "")
    if key not in TARGETS:
        return None
    spec = TARGETS[key]
    return min((name for name, s in TARGETS.items() if s is spec), key=len)  # "cuda" for sm90
