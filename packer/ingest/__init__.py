"""Ingest: any SD1.x checkpoint layout → one validated :class:`Checkpoint` (diffusers layout, fp32).

>>> ckpt = ingest("v1-5-pruned-emaonly.safetensors", tokenizer=Path("clip-tokenizer"))  # doctest: +SKIP
>>> ckpt.signature_configs()["unet"]["block_out_channels"]                              # doctest: +SKIP
[320, 640, 1280, 1280]

Nothing is written except into temporary or Hub cache folders.
"""

from __future__ import annotations

from pathlib import Path

from packer.errors import CheckpointError, UsageError
from packer.ingest.architecture import PREDICTION_TYPES
from packer.ingest.checkpoint import Checkpoint

SINGLE_FILE = (".safetensors", ".ckpt", ".pt", ".pth")
KINDS = "a .safetensors/.ckpt file, a diffusers folder with model_index.json, or a Hub id org/name[@revision]"

__all__ = ["Checkpoint", "ingest"]


def ingest(source: str | Path, *, tokenizer: Path | None = None, prediction_type: str | None = None) -> Checkpoint:
    """Read, validate and convert ``source``; raise :class:`CheckpointError` for anything else.

    ``tokenizer`` overrides the tokenizer (single files carry none); ``prediction_type``
    overrides the scheduler's (``"v_prediction"`` for v-prediction fine-tunes).
    """
    from packer.ingest import diffusers_dir, hub, single_file

    if prediction_type is not None and prediction_type not in PREDICTION_TYPES:
        raise UsageError(f"prediction type {prediction_type!r} is not one of {', '.join(PREDICTION_TYPES)}")
    path = Path(source)
    if path.is_file():
        if path.suffix.lower() not in SINGLE_FILE:
            raise CheckpointError(f"{path.name}: unknown file type {path.suffix or '(no extension)'!r}", f"pass {KINDS}")
        return single_file.load(path, tokenizer=tokenizer, prediction_type=prediction_type)
    if path.is_dir():
        if not (path / "model_index.json").is_file():
            raise CheckpointError(f"{path.name}: unknown file type (a folder without model_index.json)", f"pass {KINDS}")
        return diffusers_dir.load(path, tokenizer=tokenizer, prediction_type=prediction_type)
    if isinstance(source, str) and hub.parse(source):
        return hub.load(source, tokenizer=tokenizer, prediction_type=prediction_type)
    raise CheckpointError(f"{source}: no such file or folder", f"pass {KINDS}")
