"""The tokenizer folder every bundle ships: always with a ``tokenizer.json``.

Runtimes (Python and the browser) read only ``tokenizer.json``. Older diffusers folders and
CLIP downloads carry just ``vocab.json`` + ``merges.txt``; those are converted into a temporary
folder with transformers' CLIP tokenizer, never written next to the user's files.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from packer.errors import CheckpointError

CLIP_REPO = "openai/clip-vit-large-patch14"
FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "vocab.json",
    "merges.txt",
    "special_tokens_map.json",
)
HINT = "pass --tokenizer PATH: a folder with tokenizer.json, or CLIP vocab.json + merges.txt"


def prepare(folder: Path) -> Path:
    """A folder holding ``tokenizer.json`` for the tokenizer in ``folder``."""
    folder = Path(folder)
    if not folder.is_dir():
        raise CheckpointError(f"tokenizer folder {folder.name!r} does not exist", HINT)
    if (folder / "tokenizer.json").is_file():
        return folder
    if not ((folder / "vocab.json").is_file() and (folder / "merges.txt").is_file()):
        raise CheckpointError(
            f"tokenizer folder {folder.name!r} has neither tokenizer.json nor vocab.json + merges.txt",
            HINT,
        )
    from transformers import CLIPTokenizer

    out = Path(tempfile.mkdtemp(prefix="sdpack-tokenizer-"))
    for name in FILES:
        if (folder / name).is_file():
            shutil.copyfile(folder / name, out / name)
    try:
        CLIPTokenizer.from_pretrained(str(out)).save_pretrained(str(out))
    except Exception as exc:
        raise CheckpointError(
            f"tokenizer in {folder.name!r} cannot be read ({exc})", HINT
        ) from None
    return out


def default() -> Path:
    """SD1.x's tokenizer (CLIP ViT-L/14) from the Hub cache or a download."""
    import huggingface_hub

    try:
        path = huggingface_hub.snapshot_download(CLIP_REPO, allow_patterns=list(FILES))
    except Exception as exc:
        raise CheckpointError(
            f"single-file checkpoints carry no tokenizer and {CLIP_REPO} could not be fetched ({type(exc).__name__})",
            HINT,
        ) from None
    return prepare(Path(path))


def vocab_size(folder: Path) -> int:
    """How many token ids the tokenizer can emit (must fit the text encoder's embedding)."""
    from tokenizers import Tokenizer

    try:
        return Tokenizer.from_file(str(folder / "tokenizer.json")).get_vocab_size(
            with_added_tokens=True
        )
    except Exception as exc:
        raise CheckpointError(
            f"tokenizer.json in {folder.name!r} cannot be read ({exc})", HINT
        ) from None
