"""dlight's GPU rules made total: a rule that raises on a kernel counts as "not applicable".

dlight's ``ApplyDefaultSchedule`` tries its rules in order and takes the first schedule one
returns; ``None`` means "not mine, try the next". Some rules, though, *raise* on kernels that
pass their own applicability checks but that they cannot schedule, and the exception aborts the
whole build. In apache-tvm 0.27 that is ``dl.gpu.GEMV`` on two classes of GEMV-shaped kernels
(a reduction block ``C[b…, s] += A[b…, r] · B[b…, r, s]`` where some read misses an iterator):

* **unit reduction** (every GPU target): a batched product ``[B…, M, 1] @ [B…, 1, N]`` whose
  reduction extent is 1 and where exactly one of M, N is 1, e.g. ``[2, 8, 1, 1] @ [2, 8, 1,
  160]``. ``normalize`` in ``dlight/analysis/gemv.py`` drops unit iterators from the dominant
  read's index, finds no reduction loop left and fails ``assert r_loops``. In SD1.5 this is
  the self-attention P·V of a level whose latent is 1×1 (the UNet mid block at 8×8 latents,
  i.e. ``--image-size 64``), where the sequence length — P·V's reduction — is 1, wherever the
  attention is split into two products (``SplitAttention``): CUDA float32 always, CUDA float16
  for head dims over 160 (``FusedAttention`` takes the rest), WebGPU for head dims over 1024
  (``WorkgroupAttention`` takes the rest).
  Channel and head counts matter only through that choice: every UNet whose deepest attention
  level shrinks to one pixel and is split there hits it.
* **odd GEMV width on CUDA**: a batched product ``[B, 1, K] @ [B, K, N]`` (one batch axis of
  extent B ≥ 2, unit axes aside) whose width N is not a multiple of 16 (77, 40, 100, …; below
  16 only some widths, depending on B): the inner-reduction schedule builds a symbolic
  ``FloorDiv`` where it expects a constant (``AttributeError: 'FloorDiv' object has no
  attribute 'value'``). Found on single products; the SD1.5 graphs checked (split attention,
  linear layers) do not produce this form.

Wrapping each rule (:class:`Tolerant`) turns such a raise into ``None``, so the next rule —
ultimately ``Fallback``, which binds the spatial loops to threads and keeps the reduction in
each thread (for a unit reduction: an elementwise product) — schedules the kernel. Kernels on
which no rule raises get exactly the schedule the unwrapped rules give: the wrapper only changes
what happens where a rule would raise and fail the build. ``Fallback`` itself is not wrapped: if
it raised, nothing would be left to schedule the kernel, and its own error says more than the
unbound-thread error the codegen would give later.
"""

from __future__ import annotations

import logging

from tvm.s_tir.dlight.base import ScheduleRule

log = logging.getLogger(__name__)


class Tolerant(ScheduleRule):
    """``rule``, except that an exception from ``rule.apply`` means "not applicable" (``None``).

    The exception is logged at debug level on ``packer.compile.schedule_rules``.
    """

    def __init__(self, rule: ScheduleRule):
        self.rule = rule

    def apply(self, func, target, tunable):
        try:
            return self.rule.apply(func, target, tunable)
        except Exception as exc:  # dlight raises AssertionError, AttributeError, TVMError, ...
            log.debug(
                "dlight %s cannot schedule the kernel with buffers %s (%s: %s); "
                "trying the next rule",
                type(self.rule).__name__,
                _buffers(func),
                type(exc).__name__,
                exc,
            )
            return None

    def is_target_available(self, target) -> bool:
        return self.rule.is_target_available(target)

    def __repr__(self) -> str:
        return f"Tolerant({type(self.rule).__name__})"


def load_tensor_intrinsics() -> None:
    """Import TVM's tensor-core intrinsics (``tvm.s_tir.tensor_intrin``), quickly.

    dlight's tensor-core Matmul rule and the tuning records need them. The import parses a few
    hundred TVMScript functions, and each parse walks the Python stack with ``inspect``; naming a
    frame of the import machinery (a frozen module: no file) makes ``inspect.getmodule`` scan
    every loaded module, each time. With torch and diffusers loaded that is most of a minute,
    or minutes on a loaded machine. Recording those frames' module names in inspect's own
    file→module cache first makes each lookup a dict hit; nothing else changes.
    """
    import inspect
    import sys

    if "tvm.s_tir.tensor_intrin.cuda" in sys.modules:
        return
    for name in ("importlib._bootstrap", "importlib._bootstrap_external"):
        inspect.modulesbyfile.setdefault(f"<frozen {name}>", name)
    import tvm.s_tir.tensor_intrin.cuda  # noqa: F401  registers the wmma / mma intrinsics


def tolerant(rules: list) -> list:
    """Every rule but the last wrapped in :class:`Tolerant` (the last one is the catch-all)."""
    return [Tolerant(rule) for rule in rules[:-1]] + list(rules[-1:])


def _buffers(func) -> str:
    """``name[shape] dtype`` of a PrimFunc's parameters, for the log line."""
    try:
        return ", ".join(
            f"{var.name}{[int(x) for x in var.shape]} {var.dtype}"
            if getattr(var, "shape", None) is not None
            else str(var.name)
            for var in func.params
        )
    except Exception:  # symbolic shapes, not a PrimFunc: the log line is not worth a failure
        return "?"
