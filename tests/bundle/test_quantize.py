"""The quantized-weight layout: golden vectors, the reference quantizer's bounds, the manifest field."""

from __future__ import annotations

import copy
import json
import subprocess
import sys

import numpy as np
import pytest

from packer.bundle import Bundle, manifest, quantize
from packer.errors import BundleError, UsageError
from tests.helpers import GOLDEN


def test_golden_vectors_regenerate_byte_identical():
    proc = subprocess.run(
        [sys.executable, str(GOLDEN / "make_quant_vectors.py"), "--check"],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize("name", sorted(quantize.SCHEMES))
def test_golden_vectors_decode_by_the_spec(name):
    """Read the golden words with the formats/README.md rules written out here independently:
    code k of a row at bits [bits·(k mod n), +bits) of word k // n, value (code − offset)·scale,
    a convolution's k running over (tap, input channel)."""
    doc = json.loads((GOLDEN / "quant.json").read_text())[name]
    bits, group = doc["bits"], doc["group_size"]
    per_word, offset = 32 // bits, 1 << (bits - 1)
    assert doc["scheme"] == name and doc["scale_dtype"] == "float16" and doc["symmetric"] is True
    for case in doc["cases"]:
        rows = case["shape"][0]
        words = np.array(case["packed_uint32"], dtype=np.uint64).reshape(rows, -1)
        k = words.shape[1] * per_word
        codes = np.array(
            [
                [
                    (int(words[r, j // per_word]) >> (bits * (j % per_word))) & ((1 << bits) - 1)
                    for j in range(k)
                ]
                for r in range(rows)
            ]
        )
        assert codes.ravel().tolist() == case["codes"]
        assert codes.min() >= 1 and codes.max() <= 2 * offset - 1  # code 0 is never written
        scales = (
            np.array(case["scales_float16_bits"], dtype=np.uint16)
            .view(np.float16)
            .astype(np.float64)
        )
        values = (codes - offset) * np.repeat(scales.reshape(rows, -1), group, axis=1)
        if len(case["shape"]) == 4:  # k = (y·kw + x)·I + i: back to [O, I, kh, kw]
            o, i, kh, kw = case["shape"]
            values = values.reshape(o, kh, kw, i).transpose(0, 3, 1, 2)
        assert np.array_equal(
            values.ravel().astype(np.float32), np.array(case["dequantized_float32"], np.float32)
        )
        weight = (
            np.array(case["weight_float16_bits"], dtype=np.uint16)
            .view(np.float16)
            .reshape(case["shape"])
        )
        packed, got_scales = quantize.quantize(weight, quantize.SCHEMES[name])
        assert packed.ravel().tolist() == case["packed_uint32"]
        assert got_scales.view(np.uint16).ravel().tolist() == case["scales_float16_bits"]


def test_rounding_ties_go_to_even_and_zero_groups_stay_zero():
    doc = json.loads((GOLDEN / "quant.json").read_text())["q4f16"]
    codes = np.array(doc["cases"][0]["codes"]).reshape(3, -1)
    assert codes[2, :6].tolist() == [
        15,
        2,
        4,
        4,
        6,
        6,
    ]  # 7, then -6.5→-6, -5.5→-6, -4.5→-4, -3.5→-4 …
    assert set(codes[1, 32:].tolist()) == {8}  # the all-zero group
    assert codes[0, :32].min() == 1  # the group's largest magnitude is negative: q = -7


@pytest.mark.parametrize("name", sorted(quantize.SCHEMES))
def test_error_is_at_most_half_a_step_and_bytes_are_deterministic(name):
    scheme = quantize.SCHEMES[name]
    rng = np.random.default_rng(1)
    weight = (rng.standard_t(3, size=(64, 8, 3, 3 * scheme.group_size // 8)) * 0.03).astype(
        np.float16
    )
    packed, scales = quantize.quantize(weight, scheme)
    assert packed.dtype == np.dtype("<u4") and scales.dtype == np.float16
    assert packed.shape == (64, weight[0].size * scheme.bits // 32)
    assert scales.shape == (64, weight[0].size // scheme.group_size)
    back = quantize.dequantize(packed, scales, weight.shape, scheme)
    assert back.shape == weight.shape
    step = np.repeat(scales.astype(np.float32), scheme.group_size, axis=1)
    err = np.abs(quantize.reduction_rows(back - weight.astype(np.float32)))
    assert np.all(err <= step * 0.5 * (1 + 2**-10) + 1e-8)  # float16 scale rounding may add a hair
    again = quantize.quantize(weight.copy(), scheme)
    assert packed.tobytes() == again[0].tobytes() and scales.tobytes() == again[1].tobytes()


def test_which_shapes_take_a_scheme():
    q4 = quantize.SCHEMES["q4f16"]
    assert q4.applies_to((320, 320, 3, 3)) and q4.applies_to((768, 3072))
    assert not q4.applies_to((320, 4, 3, 3))  # K = 36: conv_in stays float
    assert not q4.applies_to((320,)) and not q4.applies_to((2, 3, 32))


def test_unknown_scheme_is_a_usage_error():
    with pytest.raises(UsageError, match="unknown --quantize 'q3f16'"):
        quantize.get_scheme("q3f16")


def test_schemes_are_the_manifest_schemas():
    enum = manifest.schema()["properties"]["quantization"]["properties"]["scheme"]["enum"]
    assert sorted(enum) == sorted(quantize.SCHEMES) == sorted(manifest.QUANTIZATION_SCHEMES)


def _quantized_manifest() -> dict:
    """The golden manifest with its unet's conv weight declared quantized (names changed to match)."""
    doc = copy.deepcopy(Bundle.open(GOLDEN / "bundle").manifest)
    params = doc["components"]["unet"]["params"]
    i = params.index("mid_block.resnets.0.conv1.weight")
    params[i : i + 1] = list(quantize.stored_names("mid_block.resnets.0.conv1.weight"))
    doc["quantization"] = quantize.manifest_entry(
        quantize.SCHEMES["q4f16"], {"unet": [("mid_block.resnets.0.conv1.weight", [16, 8, 3, 3])]}
    )
    return doc


def test_quantized_manifest_validates():
    manifest.validate(_quantized_manifest())


def test_unknown_scheme_in_a_manifest_is_refused_by_name():
    doc = _quantized_manifest()
    doc["quantization"]["scheme"] = "q2f8"
    with pytest.raises(
        BundleError, match="quantized with scheme 'q2f8', which this sdpack does not read"
    ) as exc:
        manifest.validate(doc)
    assert "upgrade sdpack" in exc.value.hint


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda q, c: q.update(group_size=64), "do not match scheme q4f16"),
        (lambda q, c: c.reverse(), "not consecutive params"),
        (
            lambda q, c: q["tensors"].update(vae_decoder=[]),
            "component 'vae_decoder', which the bundle lacks",
        ),
    ],
)
def test_inconsistent_quantization_is_refused(change, message):
    doc = _quantized_manifest()
    change(doc["quantization"], doc["components"]["unet"]["params"])
    with pytest.raises(BundleError, match=message):
        manifest.validate(doc)
