"""A diffusers pipeline folder (``model_index.json`` + one subfolder per component).

Configs come from the folder (they record what shapes cannot, e.g. ``sample_size``) but are still
checked against every tensor. Weights are read from safetensors (single or sharded), falling back
to ``.bin`` pickles loaded with ``weights_only=True``; fp16 variants only when nothing else is there.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from packer.errors import CheckpointError
from packer.ingest import architecture, weights
from packer.ingest.checkpoint import Checkpoint, finish
from packer.support import progress

WEIGHT_NAMES = {
    "text_encoder": "model",
    "unet": "diffusion_pytorch_model",
    "vae": "diffusion_pytorch_model",
}
FOLDER = "pass a complete SD1.x diffusers folder (model_index.json, text_encoder/, unet/, vae/, tokenizer/)"


def _json(path: Path, name: str) -> dict:
    try:
        doc = json.loads(path.read_text())
    except (
        OSError,
        UnicodeDecodeError,
        json.JSONDecodeError,
        RecursionError,
    ) as exc:  # RecursionError: nesting bomb
        raise CheckpointError(
            f"{name}: {path.parent.name}/{path.name} is not valid JSON ({exc})", FOLDER
        ) from None
    if not isinstance(doc, dict):
        raise CheckpointError(
            f"{name}: {path.parent.name}/{path.name} is not a JSON object", FOLDER
        )
    return doc


def weight_files(folder: Path, stem: str) -> list[Path]:
    """The files holding a component's weights, best format first; [] when there are none."""
    for suffix in (".safetensors", ".fp16.safetensors", ".bin", ".fp16.bin"):
        if (folder / f"{stem}{suffix}").is_file():
            return [folder / f"{stem}{suffix}"]
        index = folder / f"{stem}{suffix}.index.json"
        if index.is_file():
            shards = sorted(set(_json(index, folder.name).get("weight_map", {}).values()))
            if not shards or any("/" in s or "\\" in s or s.startswith(".") for s in shards):
                raise CheckpointError(f"{folder.name}/{index.name}: bad weight_map", FOLDER)
            return [folder / s for s in shards]
    return []


def _read(files: list[Path], on_bytes=None) -> dict[str, torch.Tensor]:
    state_dict: dict[str, torch.Tensor] = {}
    for f in files:
        if not f.is_file():
            raise CheckpointError(f"{f.parent.name}/{f.name}: listed shard is missing", FOLDER)
        state_dict.update(
            weights.read_safetensors(f, on_bytes)[0]
            if f.suffix == ".safetensors"
            else weights.read_pickle(f, on_bytes)
        )
    return weights.as_stored(state_dict)


def check_index(index: dict, name: str) -> None:
    cls = str(index.get("_class_name", ""))
    if "XL" in cls or "text_encoder_2" in index:
        raise CheckpointError(f"{name}: SDXL pipelines are not supported", architecture.SUPPORTED)
    if "Inpaint" in cls:
        raise CheckpointError(
            f"{name}: inpainting checkpoints (9-channel UNet) are not supported yet",
            "use a text-to-image checkpoint",
        )


def load(
    folder: Path,
    *,
    tokenizer: Path | None = None,
    prediction_type: str | None = None,
    source: dict | None = None,
) -> Checkpoint:
    """Ingest a diffusers folder; ``source`` replaces the default description (the Hub uses it)."""
    folder = Path(folder)
    name = (source or {}).get("name", folder.name)
    check_index(_json(folder / "model_index.json", name), name)
    configs, state_dicts, files = {}, {}, {}
    for component in architecture.COMPONENTS:
        sub = folder / component
        found = weight_files(sub, WEIGHT_NAMES[component]) if sub.is_dir() else []
        if not (sub / "config.json").is_file() or not found:
            raise CheckpointError(
                f"{name}: the diffusers folder has no {component}/ (config.json and weights)",
                FOLDER,
            )
        configs[component] = _json(sub / "config.json", name)
        files[component] = found
    size = sum(f.stat().st_size for found in files.values() for f in found if f.is_file())
    with progress.task(f"reading {name}", size, bytes_=True) as bar:
        for component, found in files.items():
            state_dicts[component] = _read(found, bar.advance)
    files = [f for found in files.values() for f in found]
    te = {k.removeprefix("text_model."): v for k, v in state_dicts["text_encoder"].items()}
    te.pop("embeddings.position_ids", None)
    state_dicts["text_encoder"] = te
    architecture.check_structure(state_dicts, name)
    if tokenizer is None and not (folder / "tokenizer").is_dir():
        raise CheckpointError(
            f"{name}: the diffusers folder has no tokenizer/", "pass --tokenizer PATH"
        )
    scheduler_path = folder / "scheduler" / "scheduler_config.json"
    scheduler = _json(scheduler_path, name) if scheduler_path.is_file() else None
    source = dict(source or {"name": folder.name, "format": "diffusers"})
    with progress.task(f"hashing {name}", size, bytes_=True) as bar:
        source["sha256"] = weights.folder_sha256(folder, files, bar.advance)
    ckpt = finish(
        source, configs, state_dicts, name=name, tokenizer=tokenizer, tokenizer_default=folder / "tokenizer",
        prediction_type=prediction_type, scheduler_config=scheduler,
    )  # fmt: skip
    ckpt.license = card_license(folder / "README.md")
    return ckpt


def card_license(path: Path) -> str | None:
    """The ``license`` of a model card's front matter, read with ``huggingface_hub.ModelCard``;
    None without a card, a license, or a readable front matter (the license is then the user's
    ``--license``)."""
    if not path.is_file():
        return None
    import yaml
    from huggingface_hub import ModelCard

    try:
        value = ModelCard.load(path, ignore_metadata_errors=True).data.license
    except (OSError, UnicodeDecodeError, ValueError, yaml.YAMLError):
        return None
    return value if isinstance(value, str) and value.strip() else None
