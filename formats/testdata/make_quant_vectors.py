"""Regenerate formats/testdata/quant.json: golden vectors of the quantized-weight layout.

    python formats/testdata/make_quant_vectors.py [--check]

For each scheme (formats/README.md, "Quantized weights"), a few float16 weights — a linear and a
convolution shape, random values with heavy tails, exact rounding ties, an all-zero group and a
group whose largest magnitude is negative — with what the reference quantizer
(:mod:`packer.bundle.quantize`) makes of them: float16 scale bits, codes and packed uint32 words
(row by row in the format's reduction order: a convolution's taps outer, input channel inner)
and the dequantized float32 values (in the weight's own shape and C order). ``--check`` fails if the committed file differs.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))

from packer.bundle import quantize  # noqa: E402

OUT = HERE / "quant.json"


def weights(scheme: quantize.Scheme, rng: np.random.Generator) -> list[np.ndarray]:
    g, qmax = scheme.group_size, scheme.qmax
    linear = (rng.standard_t(3, size=(3, 2 * g)) * 0.05).astype(np.float16)
    linear[1, g:] = 0  # an all-zero group: scale 0, every code = offset
    step = np.float16(0.25)  # scale of row 2's first group: max 0.25·Q is exact in float16
    ties = (np.arange(g) % (2 * qmax) - qmax + 0.5).astype(np.float32) * np.float32(step)
    ties[0] = qmax * step  # the group's largest magnitude: scale = step exactly
    linear[2, :g] = ties.astype(np.float16)  # every other value lies halfway between two codes
    linear[0, :g] = -np.abs(linear[0, :g])  # largest magnitude negative: code 1 (q = -Q)
    conv = (rng.standard_normal((2, g // 4, 2, 2)) * 0.1).astype(np.float16)
    return [linear, conv]


def case(weight: np.ndarray, scheme: quantize.Scheme) -> dict:
    packed, scales = quantize.quantize(weight, scheme)
    return {
        "shape": list(weight.shape),
        "weight_float16_bits": weight.view(np.uint16).ravel().tolist(),
        "scales_float16_bits": scales.view(np.uint16).ravel().tolist(),
        "codes": quantize.unpack_codes(packed, scheme).ravel().tolist(),
        "packed_uint32": packed.ravel().tolist(),
        "dequantized_float32": [
            float(x) for x in quantize.dequantize(packed, scales, weight.shape, scheme).ravel()
        ],
    }


def build() -> bytes:
    doc = {}
    for name, scheme in quantize.SCHEMES.items():
        rng = np.random.default_rng(18)
        doc[name] = {
            **scheme.manifest_fields(),
            "cases": [case(w, scheme) for w in weights(scheme, rng)],
        }
    return (json.dumps(doc, indent=1, sort_keys=True) + "\n").encode()


def main(argv: list[str]) -> int:
    data = build()
    if "--check" in argv:
        if OUT.read_bytes() != data:
            print(f"{OUT} differs from what make_quant_vectors.py writes", file=sys.stderr)
            return 1
        return 0
    OUT.write_bytes(data)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
