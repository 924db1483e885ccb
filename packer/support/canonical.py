"""Canonical JSON and hashing: the same content always gives the same bytes."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any


def dumps(obj: Any) -> bytes:
    """JSON with sorted keys, two-space indent, ASCII only and a final newline."""
    return (json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=True) + "\n").encode()


def sha256_bytes(data: bytes | memoryview) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(
    path: Path, chunk: int = 1 << 22, on_bytes: Callable[[int], None] | None = None
) -> str:
    """The file's sha256; ``on_bytes`` hears of each block hashed (for a progress bar)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
            if on_bytes:
                on_bytes(len(block))
    return h.hexdigest()
