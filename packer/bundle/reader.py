"""Open a bundle and read it, every byte checked against the manifest before it is used."""

from __future__ import annotations

import json
import math
import posixpath
from collections.abc import Callable
from pathlib import Path

import numpy as np

from packer.bundle import encoding, manifest, tensor_cache
from packer.errors import BundleError
from packer.support import canonical

HINT = "the bundle is damaged or was tampered with; pull or pack it again"


class Bundle:
    """A bundle on disk. Opening it validates the manifest; reads verify sizes and hashes.

    >>> b = Bundle.open("out/my-model")                    # doctest: +SKIP
    >>> params = b.load_params("unet")                     # name -> np.ndarray, in order
    """

    def __init__(self, root: Path, doc: dict):
        self.root = Path(root)
        self.manifest = doc
        self.files = {f["path"]: f for f in doc["files"]}

    @classmethod
    def open(cls, root: str | Path) -> Bundle:
        root = Path(root)
        path = root / manifest.MANIFEST_NAME
        if not root.is_dir():
            raise BundleError(
                f"{root}: no such bundle directory",
                "pass the folder `packer pack` or `packer pull` wrote",
            )
        if not path.is_file():
            raise BundleError(f"{root}: no manifest.json", "is this an sdpack bundle?")
        return cls(root, manifest.parse(path.read_bytes()))

    # -- single files ----------------------------------------------------------------------------
    def _stored(self, rel: str) -> bytes:
        entry = self.files.get(rel)
        if entry is None:
            raise BundleError(f"{rel}: not listed in the manifest", HINT)
        path = self.root / rel
        root = self.root.resolve()
        if not path.resolve().is_relative_to(root):
            raise BundleError(f"{rel}: resolves outside the bundle", HINT)
        if not path.is_file():
            raise BundleError(f"{rel}: missing", HINT)
        size = path.stat().st_size
        if size != entry["size"]:
            raise BundleError(f"{rel}: size {size} != {entry['size']} in the manifest", HINT)
        data = path.read_bytes()
        if canonical.sha256_bytes(data) != entry["sha256"]:
            raise BundleError(f"{rel}: sha256 mismatch", HINT)
        return data

    def read(self, rel: str) -> bytes:
        """The file's content, verified; encoded shards come back decoded and verified again."""
        data = self._stored(rel)
        enc = self.files[rel].get("encoding")
        if enc is None:
            return data
        raw = encoding.decode(
            data, raw_size=enc["raw_size"], element_size=enc.get("shuffle"), path=rel
        )
        if canonical.sha256_bytes(raw) != enc["raw_sha256"]:
            raise BundleError(f"{rel}: decoded bytes do not match raw_sha256", HINT)
        return raw

    def read_json(self, rel: str) -> dict:
        try:
            return json.loads(self.read(rel))
        except (
            UnicodeDecodeError,
            json.JSONDecodeError,
            RecursionError,
        ) as exc:  # RecursionError: nesting bomb
            raise BundleError(f"{rel}: not valid JSON ({exc})", HINT) from None

    # -- weights ---------------------------------------------------------------------------------
    def _shard_file(self, index_rel: str, data_path: str) -> str:
        rel = posixpath.join(posixpath.dirname(index_rel), data_path)
        manifest.check_path(rel, index_rel)
        for candidate in (rel + ".zst", rel):
            if candidate in self.files:
                return candidate
        raise BundleError(f"{index_rel}: shard {data_path} is not listed in the manifest", HINT)

    def tensor_index(self, component: str) -> dict:
        """The component's tensor-cache.json, checked for consistency with the manifest."""
        comp = self.manifest["components"].get(component)
        if comp is None:
            raise BundleError(f"bundle has no component {component!r}", HINT)
        rel = comp["weights"]
        doc = self.read_json(rel)
        tensor_cache.check_index(doc, rel)
        names = []
        for shard in doc["records"]:
            stored = self._shard_file(rel, shard["dataPath"])
            enc = self.files[stored].get("encoding")
            raw_size = enc["raw_size"] if enc else self.files[stored]["size"]
            if raw_size != shard["nbytes"]:
                raise BundleError(
                    f"{stored}: holds {raw_size} raw bytes, {rel} says {shard['nbytes']}", HINT
                )
            names += [r["name"] for r in shard["records"]]
        if names != comp["params"]:
            raise BundleError(
                f"{rel}: tensor names/order differ from the manifest's params list", HINT
            )
        self._check_quantized(component, doc, rel)
        return doc

    def _check_quantized(self, component: str, doc: dict, rel: str) -> None:
        """Each quantized weight's packed and scales records have the dtype and shape its
        manifest entry implies (formats/README.md, "Quantized weights")."""
        quant = self.manifest.get("quantization")
        if quant is None or component not in quant["tensors"]:
            return
        records = {r["name"]: r for shard in doc["records"] for r in shard["records"]}
        bits, group = quant["bits"], quant["group_size"]
        for t in quant["tensors"][component]:
            rows, k = t["shape"][0], math.prod(t["shape"][1:])
            if k % group:
                raise BundleError(
                    f"{rel}: quantized weight {t['name']!r}: reduction {k} is not a multiple of {group}",
                    HINT,
                )
            want = {
                t["packed"]: ("uint32", [rows, k * bits // 32]),
                t["scales"]: ("float16", [rows, k // group]),
            }
            for name, (dtype, shape) in want.items():
                rec = records.get(name)
                if rec is None or rec["dtype"] != dtype or rec["shape"] != shape:
                    raise BundleError(
                        f"{rel}: {name} should be {dtype} {shape} for the quantized weight "
                        f"{t['name']!r}",
                        HINT,
                    )

    def iter_shards(self, component: str):
        """Yield ``(raw bytes, records)`` for each of the component's shards, verified."""
        rel = self.manifest["components"][component]["weights"]
        for shard in self.tensor_index(component)["records"]:
            yield self.read(self._shard_file(rel, shard["dataPath"])), shard["records"]

    def load_params(self, component: str) -> dict[str, np.ndarray]:
        """Every parameter of ``component`` as numpy arrays, in the manifest's order."""
        out: dict[str, np.ndarray] = {}
        for raw, records in self.iter_shards(component):
            for rec in records:
                out[rec["name"]] = tensor_cache.read_tensor(raw, rec)
        return out

    def extract_weights(self, component: str, dest: Path) -> Path:
        """Write the decoded tensor-cache folder (for ``tvmjs.load_tensor_cache``); return it."""
        dest = Path(dest)
        dest.mkdir(parents=True, exist_ok=True)
        rel = self.manifest["components"][component]["weights"]
        doc = self.tensor_index(component)
        for shard in doc["records"]:
            (dest / shard["dataPath"]).write_bytes(
                self.read(self._shard_file(rel, shard["dataPath"]))
            )
        (dest / tensor_cache.INDEX_NAME).write_bytes(self.read(rel))
        return dest

    # -- the whole bundle --------------------------------------------------------------------------
    def verify(self, on_file: Callable[[dict], None] | None = None) -> None:
        """Check every file (size, sha256, encoding) and every tensor index; raise on the first bad one."""
        for entry in self.manifest["files"]:
            self.read(entry["path"])
            if on_file:
                on_file(entry)
        for component in self.manifest["components"]:
            self.tensor_index(component)
