"""Reading weight files without trusting them.

A safetensors header is checked byte-for-byte against the file before the library maps it, so a
forged header (lying lengths, dtypes, shapes or offsets) becomes one clear error instead of a
crash or an out-of-bounds read. Pickles are only ever opened with ``weights_only=True``.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import struct
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors import safe_open

from packer.errors import CheckpointError
from packer.support import canonical

MAX_HEADER_BYTES = 100 * 1000 * 1000
ITEMSIZE = {
    "BOOL": 1, "U8": 1, "I8": 1, "F8_E4M3": 1, "F8_E5M2": 1,
    "U16": 2, "I16": 2, "F16": 2, "BF16": 2,
    "U32": 4, "I32": 4, "F32": 4,
    "U64": 8, "I64": 8, "F64": 8,
}  # fmt: skip
FORGED = "the file is truncated or forged; download it again from a source you trust"
UNSAFE = "re-save it as .safetensors with a tool you trust, or use the diffusers folder"


def _no_duplicates(pairs: list) -> dict:
    keys = [k for k, _ in pairs]
    if len(set(keys)) != len(keys):
        raise ValueError("duplicate key in header")
    return dict(pairs)


def _check_entry(name: str, entry, data_size: int) -> tuple[int, int]:
    """One tensor's header entry is well-formed and its bytes lie inside the data region."""
    if not isinstance(entry, dict) or set(entry) - {"dtype", "shape", "data_offsets"}:
        raise ValueError(f"tensor {name!r}: malformed entry")
    dtype, shape, offsets = entry.get("dtype"), entry.get("shape"), entry.get("data_offsets")
    if dtype not in ITEMSIZE:
        raise ValueError(f"tensor {name!r}: unknown dtype {dtype!r}")
    if not isinstance(shape, list) or not all(type(d) is int and d >= 0 for d in shape):
        raise ValueError(f"tensor {name!r}: bad shape {shape!r}")
    if not (
        isinstance(offsets, list) and len(offsets) == 2 and all(type(o) is int for o in offsets)
    ):
        raise ValueError(f"tensor {name!r}: bad data_offsets {offsets!r}")
    begin, end = offsets
    if not 0 <= begin <= end <= data_size:
        raise ValueError(
            f"tensor {name!r}: offsets {offsets} outside the {data_size}-byte data region"
        )
    if math.prod(shape) * ITEMSIZE[dtype] != end - begin:
        raise ValueError(
            f"tensor {name!r}: {dtype}{shape} needs {math.prod(shape) * ITEMSIZE[dtype]} bytes, offsets give {end - begin}"
        )
    return begin, end


def check_safetensors_header(path: Path) -> dict:
    """Validate ``path``'s header against its size; return the header (without ``__metadata__``)."""
    size = path.stat().st_size
    try:
        with open(path, "rb") as f:
            if size < 8:
                raise ValueError(f"{size} bytes is too short for a header")
            (n,) = struct.unpack("<Q", f.read(8))
            if n > MAX_HEADER_BYTES or 8 + n > size:
                raise ValueError(
                    f"header length {n} exceeds the file ({size} bytes) or the 100 MB limit"
                )
            header = json.loads(f.read(n).decode("utf-8"), object_pairs_hook=_no_duplicates)
        if not isinstance(header, dict):
            raise ValueError("header is not a JSON object")
        meta = header.pop("__metadata__", {})
        if not isinstance(meta, dict) or not all(isinstance(v, str) for v in meta.values()):
            raise ValueError("__metadata__ is not a string map")
        data_size = size - 8 - n
        spans = sorted(_check_entry(k, v, data_size) for k, v in header.items())
        covered = 0
        for begin, end in spans:
            if begin != covered:
                kind = "overlap" if begin < covered else "leave a gap"
                raise ValueError(f"tensors {kind} at byte {min(begin, covered)} of the data region")
            covered = end
        if covered != data_size:
            raise ValueError(f"tensors cover {covered} of {data_size} data bytes")
    except (
        ValueError,
        UnicodeDecodeError,
        struct.error,
        RecursionError,
    ) as exc:  # RecursionError: nesting bomb
        raise CheckpointError(f"{path.name}: invalid safetensors header: {exc}", FORGED) from None
    header["__metadata__"] = meta
    return header


Progress = Callable[[int], None] | None  # hears of bytes read, converted or hashed


def _nbytes(t: torch.Tensor) -> int:
    return t.numel() * t.element_size()


def read_safetensors(
    path: Path, on_bytes: Progress = None
) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """The tensors and the ``__metadata__`` string map of a validated safetensors file."""
    meta = check_safetensors_header(path)["__metadata__"]
    try:
        tensors = {}
        with safe_open(str(path), framework="pt", device="cpu") as f:
            for name in f.keys():
                tensors[name] = f.get_tensor(name)
                if on_bytes:
                    on_bytes(_nbytes(tensors[name]))
        return tensors, meta
    except Exception as exc:  # the header was fine, so this is I/O or a library limit
        raise CheckpointError(
            f"{path.name}: cannot read safetensors data ({exc})", FORGED
        ) from None


def read_pickle(path: Path, on_bytes: Progress = None) -> dict[str, torch.Tensor]:
    """A ``.ckpt``/``.pt`` state dict, loaded with ``weights_only=True`` (no code runs)."""
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
        if on_bytes:
            on_bytes(path.stat().st_size)
    except Exception as exc:
        found = re.search(r"GLOBAL ([\w.]+)", str(exc))
        what = f"it refers to {found.group(1)}" if found else type(exc).__name__
        raise CheckpointError(
            f"{path.name}: not a plain-tensor PyTorch checkpoint ({what})", UNSAFE
        ) from None
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict):
        raise CheckpointError(
            f"{path.name}: holds a {type(obj).__name__}, not a state dict", UNSAFE
        )
    return {k: v for k, v in obj.items() if isinstance(k, str) and isinstance(v, torch.Tensor)}


KEPT_FLOATS = (torch.float16, torch.float32)
"""Floating dtypes a checkpoint's tensors keep through ingest (what bundles store)."""


def as_stored(
    state_dict: dict[str, torch.Tensor], on_bytes: Progress = None
) -> dict[str, torch.Tensor]:
    """Tensors as the bundle stores them: float16 and float32 kept (no copy), other floats
    (bfloat16, float64) widened or narrowed to float32, every tensor contiguous. A float16
    checkpoint is not widened here: that would double its memory for the whole pack; modules are
    built in float32 per component when a compile needs them (:meth:`Checkpoint._model`)."""
    out = {}
    for k, v in state_dict.items():
        if v.is_floating_point() and v.dtype not in KEPT_FLOATS:
            v = v.to(torch.float32)
        out[k] = v.contiguous()
        if on_bytes:
            on_bytes(_nbytes(v))
    return out


def tensor_bytes(state_dicts: dict[str, dict[str, torch.Tensor]]) -> int:
    return sum(_nbytes(t) for sd in state_dicts.values() for t in sd.values())


def warn_non_finite(state_dicts: dict[str, dict[str, torch.Tensor]]) -> None:
    """NaN/Inf weights are suspicious but not fatal (some fine-tunes ship unused broken tensors)."""
    bad = [
        f"{component}:{name}"
        for component, sd in state_dicts.items()
        for name, t in sd.items()
        if t.is_floating_point() and not bool(torch.isfinite(t).all())
    ]
    if bad:
        warnings.warn(
            f"{len(bad)} weight tensor(s) contain NaN or Inf, e.g. {', '.join(bad[:3])}; images may be black",
            RuntimeWarning,
            stacklevel=3,
        )


def folder_sha256(root: Path, files: list[Path], on_bytes: Progress = None) -> str:
    """sha256 over the sorted ``"<posix path> <sha256>\\n"`` lines of a folder's weight files."""
    lines = sorted(
        f"{f.relative_to(root).as_posix()} {canonical.sha256_file(f, on_bytes=on_bytes)}\n"
        for f in files
    )
    return hashlib.sha256("".join(lines).encode()).hexdigest()
