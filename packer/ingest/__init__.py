"""Ingest: any SD1.x checkpoint layout → one validated :class:`Checkpoint` (diffusers layout, fp32).

>>> ckpt = ingest("v1-5-pruned-emaonly.safetensors", tokenizer=Path("clip-tokenizer"))  # doctest: +SKIP
>>> ckpt.signature_configs()["unet"]["block_out_channels"]                              # doctest: +SKIP
[320, 640, 1280, 1280]

Nothing is written except into temporary or Hub cache folders.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from packer.errors import CheckpointError, UsageError
from packer.ingest.checkpoint import Checkpoint
from packer.support import spec

SINGLE_FILE = (".safetensors", ".ckpt", ".pt", ".pth")
KINDS = "a .safetensors/.ckpt file, a diffusers folder with model_index.json, or a Hub id org/name[@revision]"

__all__ = ["Checkpoint", "ingest", "with_image_size"]


def ingest(
    source: str | Path,
    *,
    tokenizer: Path | None = None,
    prediction_type: str | None = None,
    image_size: int | None = None,
) -> Checkpoint:
    """Read, validate and convert ``source``; raise :class:`CheckpointError` for anything else.

    ``tokenizer`` overrides the tokenizer (single files carry none); ``prediction_type``
    overrides the scheduler's (``"v_prediction"`` for v-prediction fine-tunes); ``image_size``
    (pixels) overrides the resolution the model is compiled for (single files rarely record it).
    """
    if prediction_type is not None and prediction_type not in spec.PREDICTION_TYPES:
        raise UsageError(
            f"prediction type {prediction_type!r} is not one of {', '.join(spec.PREDICTION_TYPES)}"
        )
    ckpt = _load(source, tokenizer=tokenizer, prediction_type=prediction_type)
    return ckpt if image_size is None else with_image_size(ckpt, image_size)


def with_image_size(ckpt: Checkpoint, pixels: int) -> Checkpoint:
    """The checkpoint set up for ``pixels``-square images: the UNet's and VAE's ``sample_size``.

    The size must survive the VAE's and the UNet's down-sampling exactly (multiples of 64 px for SD1.5).
    """
    vae, unet = ckpt.configs["vae"], ckpt.configs["unet"]
    vae_scale = spec.vae_scale(vae["block_out_channels"])
    step = vae_scale * 2 ** (len(unet["block_out_channels"]) - 1)
    if not isinstance(pixels, int) or pixels <= 0 or pixels % step:
        raise UsageError(
            f"image size {pixels} is not a positive multiple of {step} px",
            f"use e.g. {step * 8} or 512",
        )
    configs = {
        **ckpt.configs,
        "unet": {**unet, "sample_size": pixels // vae_scale},
        "vae": {**vae, "sample_size": pixels},
    }
    return dataclasses.replace(ckpt, configs=configs)


def _load(source: str | Path, *, tokenizer: Path | None, prediction_type: str | None) -> Checkpoint:
    from packer.ingest import diffusers_dir, hub, single_file

    path = Path(source)
    if path.is_file():
        if path.suffix.lower() not in SINGLE_FILE:
            raise CheckpointError(
                f"{path.name}: unknown file type {path.suffix or '(no extension)'!r}",
                f"pass {KINDS}",
            )
        return single_file.load(path, tokenizer=tokenizer, prediction_type=prediction_type)
    if path.is_dir():
        if not (path / "model_index.json").is_file():
            raise CheckpointError(
                f"{path.name}: unknown file type (a folder without model_index.json)",
                f"pass {KINDS}",
            )
        return diffusers_dir.load(path, tokenizer=tokenizer, prediction_type=prediction_type)
    if isinstance(source, str) and hub.parse(source):
        return hub.load(source, tokenizer=tokenizer, prediction_type=prediction_type)
    raise CheckpointError(f"{source}: no such file or folder", f"pass {KINDS}")
