"""Single-file LDM checkpoints (``.safetensors``, ``.ckpt``): the original CompVis key layout.

Keys are mapped with diffusers' own converters (``diffusers.loaders.single_file_utils``) so the
mapping stays whatever diffusers loads; the only things read here are the two counts those
converters need (UNet layers per block, VAE levels), from key names alone.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch
from diffusers.loaders import single_file_utils as sfu

from packer.errors import CheckpointError
from packer.ingest import architecture, weights
from packer.ingest.checkpoint import Checkpoint, finish
from packer.support import canonical, progress

UNET = sfu.LDM_UNET_KEY  # "model.diffusion_model."
CLIP = "cond_stage_model.transformer."
OPEN_CLIP = "cond_stage_model.model."
SDXL = ("conditioner.embedders.", UNET + "label_emb.")
FULL = "pass a full SD1.x checkpoint (UNet, VAE and CLIP text encoder in one file)"


def _vae_prefix(keys) -> str | None:
    found = [p for p in sfu.LDM_VAE_KEYS if any(k.startswith(p) for k in keys)]
    return found[-1] if found else None  # the converter prefers the last one present


def check_keys(keys: list[str], name: str) -> None:
    """Name what the file is when it is not an SD1.x LDM checkpoint, before any conversion."""
    if not keys:
        raise CheckpointError(f"{name}: holds no tensors", FULL)
    if any(k.startswith(SDXL) for k in keys):
        raise CheckpointError(f"{name}: SDXL checkpoints are not supported", architecture.SUPPORTED)
    if any(k.startswith(OPEN_CLIP) for k in keys):
        raise CheckpointError(
            f"{name}: Stable Diffusion 2.x checkpoints are not supported (OpenCLIP text encoder)",
            architecture.SUPPORTED,
        )
    has_unet = any(k.startswith(UNET) for k in keys)
    if not has_unet and any("lora" in k.lower() for k in keys):
        raise CheckpointError(
            f"{name}: a LoRA file, not a checkpoint",
            "merge the LoRA into its base model and pack that",
        )
    vae_like = ("encoder.", "decoder.", "quant_conv.", "post_quant_conv.", *sfu.LDM_VAE_KEYS)
    if not has_unet and all(k.startswith(vae_like) for k in keys):
        raise CheckpointError(f"{name}: a VAE-only file, not a checkpoint", FULL)
    if not has_unet and any(
        k.startswith(("down_blocks.", "conv_in.", "text_model.")) for k in keys
    ):
        raise CheckpointError(
            f"{name}: diffusers-layout weights, not an LDM checkpoint",
            "pass the diffusers folder (with model_index.json)",
        )
    missing = [label for label, ok in (
        ("UNet (model.diffusion_model.*)", has_unet),
        ("VAE (first_stage_model.*)", _vae_prefix(keys) is not None),
        ("CLIP text encoder (cond_stage_model.transformer.*)", any(k.startswith(CLIP) for k in keys)),
    ) if not ok]  # fmt: skip
    if missing:
        raise CheckpointError(f"{name}: missing components: {', '.join(missing)}", FULL)


def _count(keys, pattern: str) -> int:
    rx = re.compile(pattern)
    return len({m.group(1) for k in keys if (m := rx.match(k))})


def ldm_to_diffusers(
    ldm: dict[str, torch.Tensor], name: str = "checkpoint"
) -> dict[str, dict[str, torch.Tensor]]:
    """LDM keys → diffusers keys for the three components, via diffusers' converters.

    Works from key names only (tensors pass through untouched except the VAE attention 1×1 convs
    diffusers flattens), so it also maps probe tensors; ``examples/make_example.py`` inverts it
    that way. Every UNet and text-encoder tensor must map; unmapped ones mean another architecture.
    """
    keys = list(ldm)
    vae_prefix = _vae_prefix(keys)
    levels = _count(keys, rf"{re.escape(UNET)}input_blocks\.(\d+)\.0\.op\.") + 1
    inputs = _count(keys, rf"{re.escape(UNET)}input_blocks\.(\d+)\.")
    vae_levels = _count(keys, rf"{re.escape(vae_prefix or '')}encoder\.down\.(\d+)\.")
    block_types = {"down_block_types": [None] * vae_levels, "up_block_types": [None] * vae_levels}
    unet = (
        sfu.convert_ldm_unet_checkpoint(ldm, {"layers_per_block": inputs // levels - 1})
        if inputs
        else {}
    )
    vae_part = {k: v for k, v in ldm.items() if vae_prefix and k.startswith(vae_prefix)}
    vae = sfu.convert_ldm_vae_checkpoint(vae_part, block_types) if vae_part else {}
    clip = sfu.convert_ldm_clip_checkpoint({k: v for k, v in ldm.items() if k.startswith(CLIP)})
    text_encoder = {k.removeprefix("text_model."): v for k, v in clip.items()}
    text_encoder.pop(
        "embeddings.position_ids", None
    )  # a buffer, not a weight, in current transformers
    for label, prefix, mapped in (("UNet", UNET, unet), ("text encoder", CLIP, text_encoder)):
        source = [k for k in keys if k.startswith(prefix) and not k.endswith("position_ids")]
        if len(mapped) != len(source):
            raise CheckpointError(
                f"{name}: {len(source) - len(mapped)} of {len(source)} {label} tensors do not map to SD1.x",
                architecture.SUPPORTED,
            )
    return {"text_encoder": text_encoder, "unet": unet, "vae": vae}


def _sample_size(meta: dict[str, str], vae_levels: int) -> int:
    """SAI ModelSpec ``modelspec.resolution`` ("512x512") when present, else SD1.5's 512 px."""
    m = re.fullmatch(r"(\d+)x(\d+)", meta.get("modelspec.resolution", ""))
    factor = 2 ** (vae_levels - 1)
    if m and m.group(1) == m.group(2) and int(m.group(1)) % factor == 0:
        return int(m.group(1)) // factor
    return architecture.SD15_SAMPLE_SIZE


def infer_configs(
    state_dicts: dict[str, dict[str, torch.Tensor]], meta: dict[str, str], name: str
) -> dict[str, dict]:
    """The three components' configs from diffusers-layout weights (shapes only: meta tensors do)
    and the file's metadata, after checking the structure is SD1.x text-to-image."""
    architecture.check_structure(state_dicts, name)
    vae_levels = _count(state_dicts["vae"], r"encoder\.down_blocks\.(\d+)\.")
    sample_size = _sample_size(meta, vae_levels)
    return {
        "text_encoder": architecture.infer_text_encoder_config(state_dicts["text_encoder"]),
        "unet": architecture.infer_unet_config(state_dicts["unet"], sample_size),
        "vae": architecture.infer_vae_config(state_dicts["vae"], sample_size),
    }


def load(
    path: Path, *, tokenizer: Path | None = None, prediction_type: str | None = None
) -> Checkpoint:
    """Ingest one LDM single-file checkpoint."""
    path = Path(path)
    size = path.stat().st_size
    with progress.task(f"reading {path.name}", size, bytes_=True) as bar:
        if path.suffix.lower() == ".safetensors":
            fmt, (raw, meta) = "ldm-safetensors", weights.read_safetensors(path, bar.advance)
        else:
            fmt, raw, meta = "ldm-ckpt", weights.read_pickle(path, bar.advance), {}
        check_keys(list(raw), path.name)
        converted = ldm_to_diffusers(raw, path.name)
        bar.describe(f"converting {path.name}", weights.tensor_bytes(converted))
        state_dicts = {c: weights.as_stored(sd, bar.advance) for c, sd in converted.items()}
        del raw, converted
    configs = infer_configs(state_dicts, meta, path.name)
    with progress.task(f"hashing {path.name}", size, bytes_=True) as bar:
        source = {
            "name": path.name,
            "format": fmt,
            "sha256": canonical.sha256_file(path, on_bytes=bar.advance),
        }
    return finish(
        source, configs, state_dicts, name=path.name, tokenizer=tokenizer, tokenizer_default=None,
        prediction_type=prediction_type, scheduler_config=None,
    )  # fmt: skip
