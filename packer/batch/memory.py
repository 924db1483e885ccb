"""How much memory one job may take at its peak: declared to Ray as the task's ``memory`` resource,
so a node never runs more packs at once than its memory holds (Ray admits a task only while the
node's unclaimed ``memory`` covers it; it does not measure or cap the process).

The estimate is linear in the checkpoint's size on disk ``S``:

* :data:`BASE_BYTES`: the interpreter with torch, TVM, diffusers and transformers imported;
* ``PACK_FACTOR * S``: a pack whose libraries are cached. Ingest holds the weights as stored
  (``S``; a bfloat16 file is widened to float32, ``2 S``), and the bundle writer streams them
  through a few shards at a time. bench/pack.py measured 3.2 GiB for a 2.0 GiB float16 file,
  under the 4.5 GiB this gives;
* ``COMPILE_FACTOR * S`` more for a job that compiles: a module is built in float32 (``2 S`` for
  a float16 UNet) for ``torch.export`` and the Relax build, one component at a time. The same
  bench's first pack peaked at 7.5 GiB, under the 8.5 GiB this gives.

Too high costs parallelism, too low risks Ray's out-of-memory killer (the job is then retried).
A Hub id's size is unknown before download: a full-size SD1.5 float16 file is assumed.
"""

from __future__ import annotations

from pathlib import Path

GIB = 1 << 30
BASE_BYTES = int(1.5 * GIB)
PACK_FACTOR = 1.5
COMPILE_FACTOR = 2
FULL_SIZE_SD15_BYTES = 2_132_856_622  # v1-5-pruned-emaonly.safetensors (float16)
WEIGHT_SUFFIXES = (".safetensors", ".ckpt", ".pt", ".pth", ".bin")


def checkpoint_bytes(checkpoint: str) -> int:
    """Bytes of weights on disk: the file, or a diffusers folder's weight files; a Hub id: SD1.5's."""
    path = Path(checkpoint)
    if path.is_file():
        return path.stat().st_size
    if path.is_dir():
        return sum(
            p.stat().st_size for p in path.rglob("*") if p.is_file() and p.suffix in WEIGHT_SUFFIXES
        )
    return FULL_SIZE_SD15_BYTES


def peak_bytes(checkpoint: str, *, compiles: bool) -> int:
    """The memory a job declares: see the module docstring."""
    size = checkpoint_bytes(checkpoint)
    return int(BASE_BYTES + PACK_FACTOR * size + (COMPILE_FACTOR * size if compiles else 0))
