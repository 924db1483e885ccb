"""Compiled libraries by architecture signature, so a second checkpoint never recompiles.

Layout under the cache root (``$SDPACK_CACHE``, else ``$XDG_CACHE_HOME/sdpack``, else
``~/.cache/sdpack``)::

    compiled/<signature>.so     the library (suffix from the target entry)
    compiled/<signature>.json   what the library is: params, inputs, outputs, target, and the
                                library's sha256 — everything a cache hit must return without
                                exporting the model again
    cuda_stub/<hash>/libcuda.so.1

Writes are atomic: the library is built into a temporary file in the same directory and renamed,
then the JSON — written the same way — commits the entry. An interrupted build leaves at most a
stray temporary file, never an entry. Reads verify the JSON and the library's sha256; a
damaged entry is deleted and reported as a miss, so it is rebuilt instead of loaded.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

from ..support.canonical import dumps, sha256_file

ENTRY_FORMAT = 1
_REQUIRED = (
    "format",
    "signature",
    "lib",
    "lib_sha256",
    "params",
    "param_source",
    "inputs",
    "outputs",
)


def cache_root(cache_dir: Path | str | None = None) -> Path:
    """``cache_dir``, else ``$SDPACK_CACHE``, else ``$XDG_CACHE_HOME/sdpack``, else ``~/.cache/sdpack``.

    A relative ``XDG_CACHE_HOME`` is ignored, as the XDG base directory spec says."""
    if cache_dir is not None:
        return Path(cache_dir)
    env = os.environ.get("SDPACK_CACHE")
    if env:
        return Path(env)
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    return (Path(xdg) if os.path.isabs(xdg) else Path.home() / ".cache") / "sdpack"


class LibraryCache:
    """The ``compiled/`` directory of one cache root."""

    def __init__(self, root: Path):
        self.root = root
        self.dir = root / "compiled"

    def lookup(self, signature: str) -> dict | None:
        """The entry's metadata (with ``lib_path``) if it exists and is intact, else None."""
        meta_path = self.dir / f"{signature}.json"
        if not meta_path.exists():
            return None
        try:
            meta = json.loads(meta_path.read_text())
            if any(key not in meta for key in _REQUIRED) or meta["format"] != ENTRY_FORMAT:
                raise ValueError("incomplete entry")
            if meta["signature"] != signature or Path(meta["lib"]).name != meta["lib"]:
                raise ValueError("entry for another signature")
            lib_path = self.dir / meta["lib"]
            if sha256_file(lib_path) != meta["lib_sha256"]:
                raise ValueError("library does not match its recorded sha256")
        except (OSError, ValueError, TypeError):
            self.evict(signature)
            return None
        return {**meta, "lib_path": lib_path}

    def store(
        self,
        signature: str,
        suffix: str,
        write_lib: Callable[[Path], None],
        meta: dict,
        extra: dict | None = None,
    ) -> dict:
        """Build the library with ``write_lib(tmp_path)``, then commit it and its metadata.

        ``extra`` is read after ``write_lib`` returns: facts the build measured (e.g.
        ``max_buffer_bytes``) join the metadata.
        """
        self.dir.mkdir(parents=True, exist_ok=True)
        lib_path = self.dir / f"{signature}{suffix}"
        tmp_lib = self._tmp_path(signature, suffix)
        try:
            write_lib(tmp_lib)
            lib_sha = sha256_file(tmp_lib)
            os.replace(tmp_lib, lib_path)
        finally:
            tmp_lib.unlink(missing_ok=True)
        meta = {
            **meta,
            **(extra or {}),
            "format": ENTRY_FORMAT,
            "signature": signature,
            "lib": lib_path.name,
            "lib_sha256": lib_sha,
        }
        self._write_atomic(self.dir / f"{signature}.json", dumps(meta))
        return {**meta, "lib_path": lib_path}

    def evict(self, signature: str) -> None:
        """Delete an entry's metadata and any library of that signature."""
        (self.dir / f"{signature}.json").unlink(missing_ok=True)
        for lib in self.dir.glob(f"{signature}.*"):
            if not lib.name.endswith(".json") and ".tmp-" not in lib.name:
                lib.unlink(missing_ok=True)

    def _tmp_path(self, signature: str, suffix: str) -> Path:
        # The suffix stays last: TVM's export_library picks the linker from it.
        fd, name = tempfile.mkstemp(dir=self.dir, prefix=f"{signature}.tmp-", suffix=suffix)
        os.close(fd)
        return Path(name)

    def _write_atomic(self, path: Path, data: bytes) -> None:
        tmp = self._tmp_path(path.stem, path.suffix)
        try:
            tmp.write_bytes(data)
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
