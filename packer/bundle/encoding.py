"""Shard encoding: optional byte-plane shuffle, then zstd (formats/README.md, "Weight shards").

Byte-plane shuffle of an ``element_size``-byte type stores byte 0 of every element, then byte 1,
and so on; trailing bytes that do not fill an element stay at the end unchanged. It is lossless
and lets zstd see the low-entropy exponent bytes of trained weights as one long run.
"""

from __future__ import annotations

import numpy as np
import zstandard

from packer.errors import BundleError

ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


def shuffle(raw: bytes, element_size: int) -> bytes:
    """Byte-plane shuffle: element-major bytes → plane-major bytes."""
    if element_size <= 1:
        return bytes(raw)
    n = len(raw) // element_size * element_size
    elems = np.frombuffer(raw, dtype=np.uint8, count=n).reshape(-1, element_size)
    out = np.empty(len(raw), dtype=np.uint8)
    planes = out[:n].reshape(element_size, -1)
    for j in range(element_size):  # one strided copy per plane beats a generic transpose
        planes[j] = elems[:, j]
    out[n:] = np.frombuffer(raw, dtype=np.uint8, offset=n)
    return out.tobytes()


def unshuffle(data: bytes, element_size: int) -> memoryview | bytes:
    """Inverse of :func:`shuffle` (returns a buffer; no extra copy to ``bytes``)."""
    if element_size <= 1:
        return data
    n = len(data) // element_size * element_size
    planes = np.frombuffer(data, dtype=np.uint8, count=n).reshape(element_size, -1)
    out = np.empty(len(data), dtype=np.uint8)
    elems = out[:n].reshape(-1, element_size)
    for j in range(element_size):
        elems[:, j] = planes[j]
    out[n:] = np.frombuffer(data, dtype=np.uint8, offset=n)
    return memoryview(out)


def encode(raw: bytes, *, level: int, element_size: int | None) -> bytes:
    """Encode one shard: shuffle when ``element_size`` is set, then a single zstd frame.

    The frame records its content size, and no checksum (the manifest's sha256 covers it), so the
    same input, level and zstd version always give the same bytes.
    """
    payload = shuffle(raw, element_size) if element_size else raw
    params = zstandard.ZstdCompressionParameters.from_level(
        level, source_size=len(payload), write_content_size=True, write_checksum=False
    )
    return zstandard.ZstdCompressor(compression_params=params).compress(payload)


def decode(
    stored: bytes, *, raw_size: int, element_size: int | None, path: str
) -> bytes | memoryview:
    """Decode one stored shard back to its raw bytes; ``path`` names it in errors."""
    if not stored.startswith(ZSTD_MAGIC):
        raise BundleError(f"{path}: not a zstd frame", "the file is damaged; pull the bundle again")
    try:
        declared = zstandard.frame_content_size(stored)
    except zstandard.ZstdError:
        raise BundleError(
            f"{path}: zstd frame header is corrupt", "pull the bundle again"
        ) from None
    if (
        declared != raw_size
    ):  # checked before any allocation: a small file cannot expand into a bomb
        what = "no content size" if declared < 0 else f"{declared} bytes"
        raise BundleError(
            f"{path}: zstd frame declares {what}, manifest says {raw_size}; corrupt or forged",
            "pull the bundle again",
        )
    try:
        payload = zstandard.ZstdDecompressor().decompress(stored, max_output_size=raw_size)
    except zstandard.ZstdError as exc:
        raise BundleError(
            f"{path}: zstd data is truncated or corrupt ({exc})", "pull the bundle again"
        ) from None
    if len(payload) != raw_size:
        raise BundleError(
            f"{path}: decodes to {len(payload)} bytes, manifest says {raw_size}",
            "pull the bundle again",
        )
    return unshuffle(payload, element_size) if element_size else payload
