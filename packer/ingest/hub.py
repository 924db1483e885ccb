"""Hub ids (``org/name[@revision]``): download the diffusers layout, then ingest the folder.

Only the files ingest reads are fetched (no safety checker, no fp16 variants, no ``.bin``), and
the model card, whose ``license`` the bundle inherits.
The snapshot folder's name is the resolved commit, recorded as ``source["revision"]``.
"""

from __future__ import annotations

import re
from pathlib import Path

from packer.errors import CheckpointError
from packer.ingest import diffusers_dir
from packer.ingest.checkpoint import Checkpoint

HUB_ID = re.compile(r"(?P<repo>[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*)(?:@(?P<revision>[\w./-]+))?")
WEIGHT_SUFFIXES = (".safetensors", ".ckpt", ".pt", ".pth", ".bin")
ALLOW_PATTERNS = [
    "model_index.json",
    "README.md",  # the model card: its license becomes the bundle's
    "scheduler/scheduler_config.json",
    "tokenizer/*",
    *(f"{c}/config.json" for c in ("text_encoder", "unet", "vae")),
    "text_encoder/model.safetensors",
    "text_encoder/model.safetensors.index.json",
    "text_encoder/model-*-of-*.safetensors",
    *(f"{c}/diffusion_pytorch_model{s}" for c in ("unet", "vae") for s in (".safetensors", ".safetensors.index.json", "-*-of-*.safetensors")),
]  # fmt: skip


def parse(source: str) -> tuple[str, str | None] | None:
    """``(repo_id, revision)`` when ``source`` reads as a Hub id rather than a file name."""
    m = HUB_ID.fullmatch(source)
    if not m or source.lower().endswith(WEIGHT_SUFFIXES) or ".." in source:
        return None
    return m.group("repo"), m.group("revision")


def load(
    source: str, *, tokenizer: Path | None = None, prediction_type: str | None = None
) -> Checkpoint:
    import huggingface_hub

    repo_id, revision = parse(source)
    try:
        folder = Path(
            huggingface_hub.snapshot_download(
                repo_id, revision=revision, allow_patterns=ALLOW_PATTERNS
            )
        )
    except Exception as exc:
        raise CheckpointError(
            f"{source}: cannot download from the Hugging Face Hub ({type(exc).__name__})",
            "check the id, revision, network and HF_TOKEN, or pass a local folder or file",
        ) from None
    if not (folder / "model_index.json").is_file():
        raise CheckpointError(
            f"{source}: the Hub repo is not a diffusers pipeline (no model_index.json)",
            diffusers_dir.FOLDER,
        )
    resolved = folder.name if re.fullmatch(r"[0-9a-f]{40}", folder.name) else revision
    described = {"name": repo_id, "format": "hub", **({"revision": resolved} if resolved else {})}
    return diffusers_dir.load(
        folder, tokenizer=tokenizer, prediction_type=prediction_type, source=described
    )
