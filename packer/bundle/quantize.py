"""Weight-only group quantization: the reference quantizer that writes a quantized bundle's bytes.

The layout is part of the bundle format (formats/README.md, "Quantized weights"):

* A weight of shape ``[O, *rest]`` (a linear ``[O, I]`` or a convolution ``[O, I, kh, kw]``) is
  viewed as ``[O, K]`` with ``K = prod(rest)`` and cut into groups of ``group_size`` consecutive
  elements along ``K``. A linear row is ``K = I`` as stored; a convolution's reduction is
  flattened taps outer, input channel inner (``k = (y * kw + x) * I + i``: the weight read as
  ``[O, kh, kw, I]``), the order in which an implicit-GEMM kernel over channels-last
  activations walks it, so that the codes of consecutive input channels of one tap share a word
  and a scale.
* Symmetric, one float16 scale per group: ``scale = fp16(max|w| / Q)`` with ``Q = 2**(bits-1) - 1``
  (7 for 4-bit, 127 for 8-bit), ``q = clip(rint(w / scale), -Q, Q)`` computed in float32 with
  round-half-to-even (an all-zero group has scale 0 and q 0). The code stored is ``q + 2**(bits-1)``
  (offset binary; code 0 is never written).
* Codes are packed little-end first into little-endian uint32 words: element ``j`` of a row lies
  in word ``j // (32 // bits)`` at bit ``bits * (j % (32 // bits))``. A group never straddles
  words (``group_size`` is a multiple of ``32 // bits``).
* Stored tensors: ``NAME.packed`` uint32 ``[O, K * bits // 32]`` and ``NAME.scales`` float16
  ``[O, K // group_size]``, in that order where ``NAME`` stood in the parameter list.
* Dequantized value: ``(code - 2**(bits-1)) * scale``, the exact product rounded once to the
  variant's float type (the kernels compute it that way; it is exact in float32).

Symmetric because the weights of linear and convolution layers are centred on zero group by group:
a zero point would add a second number per group and a subtraction per weight in every kernel for
almost no accuracy. Nothing here depends on the machine: the same weights give the same bytes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from packer.bundle.manifest import QUANTIZATION_SCHEMES
from packer.errors import UsageError

SCALE_DTYPE = "float16"
PACKED_SUFFIX = ".packed"
SCALES_SUFFIX = ".scales"


@dataclass(frozen=True)
class Scheme:
    """A quantization scheme: ``bits`` per weight, ``group_size`` weights per float16 scale."""

    name: str
    bits: int
    group_size: int

    @property
    def qmax(self) -> int:
        return (1 << (self.bits - 1)) - 1

    @property
    def offset(self) -> int:
        return 1 << (self.bits - 1)

    @property
    def per_word(self) -> int:
        return 32 // self.bits

    def applies_to(self, shape) -> bool:
        """Whether a weight of ``shape`` can take this scheme: 2-D or 4-D, K a whole number of groups."""
        if len(shape) not in (2, 4):
            return False
        k = int(np.prod(shape[1:]))
        return k > 0 and k % self.group_size == 0

    def stored_names(self, name: str) -> tuple[str, str]:
        return stored_names(name)

    def manifest_fields(self) -> dict:
        return {
            "scheme": self.name,
            "bits": self.bits,
            "group_size": self.group_size,
            "scale_dtype": SCALE_DTYPE,
            "symmetric": True,
        }


SCHEMES = {name: Scheme(name, bits, group) for name, (bits, group) in QUANTIZATION_SCHEMES.items()}


def get_scheme(name: str) -> Scheme:
    try:
        return SCHEMES[name]
    except KeyError:
        raise UsageError(
            f"unknown --quantize {name!r}", f"use one of: {', '.join(SCHEMES)}"
        ) from None


def stored_names(name: str) -> tuple[str, str]:
    """The two tensors a quantized weight ``name`` is stored as: packed codes, then scales."""
    return name + PACKED_SUFFIX, name + SCALES_SUFFIX


def reduction_rows(weight: np.ndarray) -> np.ndarray:
    """``weight`` viewed as ``[O, K]`` in the format's reduction order (a convolution's
    ``[O, I, kh, kw]`` read as ``[O, kh, kw, I]``)."""
    if weight.ndim == 4:
        weight = weight.transpose(0, 2, 3, 1)
    return weight.reshape(weight.shape[0], -1)


def from_reduction_rows(rows: np.ndarray, shape) -> np.ndarray:
    """The inverse of :func:`reduction_rows`: ``[O, K]`` back to the weight's own ``shape``."""
    shape = tuple(int(d) for d in shape)
    if len(shape) == 4:
        o, i, kh, kw = shape
        return rows.reshape(o, kh, kw, i).transpose(0, 3, 1, 2)
    return rows.reshape(shape)


def quantize(weight: np.ndarray, scheme: Scheme) -> tuple[np.ndarray, np.ndarray]:
    """``weight`` (any float dtype; float16 in a bundle) → (packed uint32, float16 scales)."""
    if not scheme.applies_to(weight.shape):
        raise ValueError(f"shape {tuple(weight.shape)} cannot take {scheme.name}")
    rows = weight.shape[0]
    w = reduction_rows(np.asarray(weight, dtype=np.float32)).reshape(rows, -1, scheme.group_size)
    amax = np.abs(w).max(axis=2, keepdims=True)
    scales = (amax / np.float32(scheme.qmax)).astype(np.float16)
    s32 = scales.astype(np.float32)
    with np.errstate(divide="ignore", invalid="ignore"):
        q = np.where(s32 > 0, np.rint(w / np.where(s32 > 0, s32, np.float32(1))), np.float32(0))
    codes = (
        (np.clip(q, -scheme.qmax, scheme.qmax) + scheme.offset).astype(np.uint32).reshape(rows, -1)
    )
    words = codes.reshape(rows, -1, scheme.per_word) << (
        np.arange(scheme.per_word, dtype=np.uint32) * scheme.bits
    )
    packed = np.bitwise_or.reduce(words, axis=2).astype("<u4")
    return np.ascontiguousarray(packed), np.ascontiguousarray(scales.reshape(rows, -1))


def unpack_codes(packed: np.ndarray, scheme: Scheme) -> np.ndarray:
    """The stored codes ``[O, K]`` (uint32, 0 … 2**bits - 1, in the format's reduction order)
    of a packed weight."""
    shifts = np.arange(scheme.per_word, dtype=np.uint32) * scheme.bits
    codes = (packed.astype(np.uint32)[..., None] >> shifts) & np.uint32((1 << scheme.bits) - 1)
    return codes.reshape(packed.shape[0], -1)


def dequantize(
    packed: np.ndarray, scales: np.ndarray, shape, scheme: Scheme, dtype: str = "float32"
) -> np.ndarray:
    """The weight the kernels compute from the stored tensors, in ``dtype`` and the weight's own
    ``shape`` (the numpy reference)."""
    q = unpack_codes(packed, scheme).astype(np.float32) - np.float32(scheme.offset)
    s = np.repeat(scales.astype(np.float32), scheme.group_size, axis=1)
    return np.ascontiguousarray(from_reduction_rows((q * s).astype(dtype), shape))


def quantize_params(params, quantized: set[str], scheme: Scheme):
    """``(name, array)`` pairs with each weight named in ``quantized`` replaced by its two stored
    tensors (packed, scales), in place, so the order matches the compiled library's params."""
    for name, array in params:
        if name in quantized:
            packed, scales = quantize(array, scheme)
            packed_name, scales_name = stored_names(name)
            yield packed_name, packed
            yield scales_name, scales
        else:
            yield name, array


def manifest_entry(scheme: Scheme, tensors: dict[str, list[tuple[str, list[int]]]]) -> dict:
    """The manifest's ``quantization`` object: the scheme plus, per component, each quantized
    weight's name, shape and stored tensor names."""
    listed = {}
    for component, items in tensors.items():
        listed[component] = [
            {
                "name": name,
                "shape": [int(d) for d in shape],
                "packed": stored_names(name)[0],
                "scales": stored_names(name)[1],
            }
            for name, shape in items
        ]
    return {**scheme.manifest_fields(), "tensors": listed}
