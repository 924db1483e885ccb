"""The JSON files of the format spec (formats/, manifests/): the copy packaged in the wheel, else the
repository's own."""

from __future__ import annotations

import functools
import json
from importlib import resources
from pathlib import Path

FOLDERS = (
    "formats",
    "manifests",
)  # where the repository keeps them; the wheel puts both in _formats/


def _text(name: str) -> str:
    packaged = resources.files("packer") / "_formats" / name
    if packaged.is_file():
        return packaged.read_text()
    repo = Path(__file__).resolve().parents[2]
    for folder in FOLDERS:
        if (repo / folder / name).is_file():
            return (repo / folder / name).read_text()
    raise FileNotFoundError(name)


@functools.cache
def spec_file(name: str) -> dict:
    """A JSON file shipped with sdpack's format spec, parsed once (``constants.json`` and the
    like)."""
    return json.loads(_text(name))


def schema(name: str = "manifest.schema.json") -> dict:
    """A JSON Schema shipped with sdpack (the formats/ or manifests/ copy)."""
    return spec_file(name)
