"""TVM's tensor-cache layout (``tensor-cache.json`` + raw shards), written and read here.

Parameters are packed in order into shards of at most ``shard_bytes`` raw bytes; a tensor larger
than half a shard gets a shard of its own (as ``tvm.contrib.tvmjs.dump_tensor_cache`` does), so a
shard never exceeds ``max(shard_bytes, largest tensor)``. Records start at 16-byte aligned offsets,
which typed-array views and GPU uploads in the browser need. The decompressed layout is read by
``tvm.contrib.tvmjs.load_tensor_cache`` unchanged.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import numpy as np

from packer.errors import BundleError
from packer.support.spec import TENSOR_DTYPE_SIZES

DTYPES = {name: np.dtype(name).newbyteorder("<") for name in TENSOR_DTYPE_SIZES}  # little-endian
ALIGN = 16
DAMAGED = "the bundle is damaged or forged; pull it again"
INDEX_NAME = "tensor-cache.json"


@dataclass
class Shard:
    """One raw shard: its file name inside the component folder, bytes and tensor records."""

    data_path: str
    data: bytearray = field(default_factory=bytearray)
    records: list[dict] = field(default_factory=list)
    nbytes: int = 0  # kept after release() drops the bytes

    def release(self) -> bytes:
        """Hand over the raw bytes and forget them (the index still knows the size)."""
        data, self.data = bytes(self.data), bytearray()
        return data

    def append(self, name: str, array: np.ndarray) -> None:
        pad = -len(self.data) % ALIGN
        self.data += b"\0" * pad
        raw = np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<")).tobytes()
        self.records.append(
            {
                "name": name,
                "shape": [int(d) for d in array.shape],
                "dtype": str(array.dtype),
                "format": "raw",
                "nbytes": len(raw),
                "byteOffset": len(self.data),
            }
        )
        self.data += raw
        self.nbytes = len(self.data)

    def element_size(self) -> int:
        """The itemsize most of this shard's bytes have (for byte-plane shuffle)."""
        by_size: dict[int, int] = {}
        for rec in self.records:
            size = DTYPES[rec["dtype"]].itemsize
            by_size[size] = by_size.get(size, 0) + rec["nbytes"]
        return max(by_size, key=lambda s: (by_size[s], s))

    def index_entry(self) -> dict:
        return {
            "dataPath": self.data_path,
            "format": "raw-shard",
            "nbytes": self.nbytes,
            "records": self.records,
        }


def iter_shards(params: Iterable[tuple[str, np.ndarray]], shard_bytes: int) -> Iterator[Shard]:
    """Lay ``params`` out in shards, keeping their order, and yield each shard as soon as nothing
    more goes into it, so a writer can encode and drop it before the next one fills."""
    current: Shard | None = None
    count = 0
    seen: set[str] = set()
    for name, array in params:
        if name in seen:
            raise ValueError(f"duplicate parameter name {name!r}")
        seen.add(name)
        if str(array.dtype) not in DTYPES:
            raise ValueError(f"{name}: unsupported dtype {array.dtype}")
        nbytes = array.nbytes
        if nbytes * 2 >= shard_bytes:  # a large tensor gets a shard of its own
            if current is not None:
                yield current
                current = None
            shard = Shard(f"params_shard_{count}.bin")
            count += 1
            shard.append(name, array)
            yield shard
            continue
        if current is None or len(current.data) + nbytes + ALIGN > shard_bytes:
            if current is not None:
                yield current
            current = Shard(f"params_shard_{count}.bin")
            count += 1
        current.append(name, array)
    if current is not None:
        yield current


def pack(params: Iterable[tuple[str, np.ndarray]], shard_bytes: int) -> list[Shard]:
    """Lay ``params`` out in shards, keeping their order (all of them: :func:`iter_shards`)."""
    return list(iter_shards(params, shard_bytes))


def index(shards: list[Shard], metadata: dict) -> dict:
    """The ``tensor-cache.json`` document for ``shards``."""
    return {"metadata": metadata, "records": [s.index_entry() for s in shards]}


def _int(value) -> int:
    """A JSON integer (not a float, string or bool that int() would also take)."""
    if type(value) is not int:
        raise TypeError(f"{value!r} is not an integer")
    return value


def check_index(doc: dict, path: str) -> None:
    """Structural checks that no JSON Schema can express: every record inside its shard."""
    try:
        shards = doc["records"]
        if not isinstance(shards, list):
            raise TypeError("records is not a list")
        for shard in shards:
            if not isinstance(shard["dataPath"], str) or not isinstance(shard["records"], list):
                raise TypeError("a shard needs a dataPath string and a records list")
            size = _int(shard["nbytes"])
            for rec in shard["records"]:
                if not isinstance(rec["name"], str) or not isinstance(rec["shape"], list):
                    raise TypeError("a record needs a name string and a shape list")
                dtype = DTYPES.get(rec["dtype"])
                if dtype is None:
                    raise BundleError(
                        f"{path}: tensor {rec['name']!r} has unsupported dtype {rec['dtype']!r}",
                        DAMAGED,
                    )
                shape = [_int(d) for d in rec["shape"]]
                count = math.prod(shape)  # exact: numpy's int64 product would wrap around
                if any(d < 0 for d in shape) or count * dtype.itemsize != _int(rec["nbytes"]):
                    raise BundleError(
                        f"{path}: tensor {rec['name']!r}: shape/dtype do not match nbytes", DAMAGED
                    )
                start, nbytes = _int(rec["byteOffset"]), rec["nbytes"]
                if start < 0 or start + nbytes > size:
                    raise BundleError(
                        f"{path}: tensor {rec['name']!r} lies outside its shard {shard['dataPath']}",
                        DAMAGED,
                    )
    except (KeyError, TypeError, ValueError, OverflowError) as exc:
        raise BundleError(
            f"{path}: malformed tensor-cache index ({exc.__class__.__name__}: {exc})", DAMAGED
        ) from None


def read_tensor(raw: bytes, rec: dict) -> np.ndarray:
    """One tensor out of a raw shard's bytes, as a read-only view."""
    dtype = DTYPES[rec["dtype"]]
    return np.frombuffer(
        raw, dtype=dtype, count=rec["nbytes"] // dtype.itemsize, offset=rec["byteOffset"]
    ).reshape(rec["shape"])
