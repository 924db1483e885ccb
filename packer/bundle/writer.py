"""Write a bundle atomically: everything goes to a staging folder, manifest.json last, then one
rename puts it in place. A failure at any point leaves the destination as it was."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections import deque
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from packer.bundle import encoding, manifest, tensor_cache
from packer.errors import BundleError
from packer.support import canonical, progress

DEFAULT_SHARD_BYTES = 32 << 20
DEFAULT_ZSTD_LEVEL = 3  # bench/RESULTS.md: higher levels save nothing more on fp16 weights
DEFAULT_SHUFFLE = True


class BundleWriter:
    """Collects a bundle's files in a staging folder and commits them with one rename.

    >>> with BundleWriter(Path("out/my-model")) as w:          # doctest: +SKIP
    ...     w.add_weights("unet", [("conv.weight", np.zeros((4, 4), "float16"))])
    ...     w.add_bytes("tokenizer/tokenizer.json", b"{}")
    ...     w.commit(fields)                                    # the rest of the manifest
    """

    def __init__(
        self,
        out: Path,
        *,
        shard_bytes: int = DEFAULT_SHARD_BYTES,
        zstd_level: int = DEFAULT_ZSTD_LEVEL,
        shuffle: bool = DEFAULT_SHUFFLE,
        overwrite: bool = False,
    ):
        self.out = Path(out)
        self.shard_bytes = shard_bytes
        self.zstd_level = zstd_level
        self.shuffle = shuffle
        self.overwrite = overwrite
        self._entries: dict[str, dict] = {}
        self._stage: Path | None = None

    def __enter__(self) -> BundleWriter:
        if self.out.exists() and not self.overwrite:
            raise BundleError(f"{self.out} already exists", "choose another --out or remove it")
        parent = self.out.parent
        try:
            parent.mkdir(parents=True, exist_ok=True)
            self._stage = Path(tempfile.mkdtemp(prefix=f".{self.out.name}.partial-", dir=parent))
            self._stage.chmod(0o755)
        except OSError as exc:
            raise BundleError(
                f"cannot write to {parent}: {exc.strerror}", "choose a writable --out"
            ) from None
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if self._stage is not None and self._stage.exists():
            shutil.rmtree(self._stage, ignore_errors=True)

    # -- adding files -------------------------------------------------------------------------
    def _write(self, rel: str, data: bytes, extra: dict | None = None) -> dict:
        manifest.check_path(rel, "bundle writer")
        if rel in self._entries or rel == manifest.MANIFEST_NAME:
            raise ValueError(f"{rel} written twice")
        dest = self._stage / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(data)
        entry = {"path": rel, "size": len(data), "sha256": canonical.sha256_bytes(data)}
        if extra:
            entry["encoding"] = extra
        self._entries[rel] = entry
        return entry

    def add_bytes(self, rel: str, data: bytes) -> dict:
        """Store ``data`` at ``rel`` as is."""
        return self._write(rel, data)

    def add_file(self, rel: str, src: Path) -> dict:
        """Copy a file (a compiled library, a tokenizer file) into the bundle."""
        return self._write(rel, Path(src).read_bytes())

    def add_json(self, rel: str, doc: dict) -> dict:
        return self._write(rel, canonical.dumps(doc))

    def add_weights(
        self,
        component: str,
        params: Iterable[tuple[str, np.ndarray]],
        metadata: dict | None = None,
        total_bytes: int | None = None,
    ) -> tuple[str, list[str]]:
        """Shard, encode and store one component's parameters in tensor-cache layout.

        ``params`` is consumed as a stream: each shard is encoded (on a pool of one thread per
        core) and written as soon as it is full, and at most two shards per thread wait for it,
        so memory holds a few shards, not the component. ``total_bytes`` (raw, if known) only
        sizes the progress bar. Returns the path of its ``tensor-cache.json`` and the parameter
        names in order.
        """
        folder = f"weights/{component}"
        workers = os.cpu_count() or 1
        shards: list[tensor_cache.Shard] = []
        with (
            progress.task(f"compress {component}", total_bytes, bytes_=True) as bar,
            ThreadPoolExecutor(max_workers=workers) as pool,
        ):

            def encode(shard: tensor_cache.Shard) -> tuple[tensor_cache.Shard, bytes, dict]:
                size = shard.element_size() if self.shuffle else 1
                raw = shard.release()
                extra = {
                    "compression": "zstd",
                    "raw_size": len(raw),
                    "raw_sha256": canonical.sha256_bytes(raw),
                }
                if size > 1:
                    extra["shuffle"] = size
                return shard, encoding.encode(raw, level=self.zstd_level, element_size=size), extra

            pending: deque = deque()

            def write_done(keep: int) -> None:  # in shard order, as they were made
                while len(pending) > keep:
                    shard, blob, extra = pending.popleft().result()
                    self._write(f"{folder}/{shard.data_path}.zst", blob, extra)
                    bar.advance(shard.nbytes)

            for shard in tensor_cache.iter_shards(params, self.shard_bytes):
                shards.append(shard)
                pending.append(pool.submit(encode, shard))
                write_done(2 * workers)
            write_done(0)
        index_path = f"{folder}/{tensor_cache.INDEX_NAME}"
        self.add_json(index_path, tensor_cache.index(shards, metadata or {}))
        names = [rec["name"] for s in shards for rec in s.records]
        return index_path, names

    # -- committing ---------------------------------------------------------------------------
    def commit(self, fields: dict) -> dict:
        """Write manifest.json from ``fields`` plus the file list, validate it, move into place."""
        doc = dict(fields)
        doc["format"] = manifest.FORMAT
        doc["format_version"] = manifest.FORMAT_VERSION
        doc["generator"] = {
            **doc["generator"],
            "zstd_level": self.zstd_level,
            "zstd": _zstd_version(),
        }
        doc["files"] = [self._entries[p] for p in sorted(self._entries)]
        manifest.validate(doc, where="manifest being written")
        (self._stage / manifest.MANIFEST_NAME).write_bytes(canonical.dumps(doc))
        self._move_into_place()
        return doc

    def _move_into_place(self) -> None:
        old = None
        if self.out.exists():
            old = self.out.with_name(f".{self.out.name}.old-{os.getpid()}")
            os.replace(self.out, old)
        os.replace(self._stage, self.out)
        self._stage = None
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)


def _zstd_version() -> str:
    import zstandard

    return ".".join(map(str, zstandard.ZSTD_VERSION))
