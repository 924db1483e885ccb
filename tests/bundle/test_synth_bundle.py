"""bench/web/synth_bundle.py: a bundle's skeleton (no shards) → the same bundle with random weights."""

from __future__ import annotations

import json

import numpy as np

from bench.web import synth_bundle
from packer.bundle import Bundle
from tests.bundle.test_writer import _params, _write


def test_skeleton_then_make_gives_a_verified_bundle_of_the_same_tensors(tmp_path):
    params = {"unet": _params(1), "text_encoder": _params(2, 5)}
    params["unet"].append(("norm1.weight", np.zeros(7, "float16")))
    source = _write(tmp_path / "src", params)
    synth_bundle.skeleton(tmp_path / "src", tmp_path / "skel")
    kept = sorted(
        str(p.relative_to(tmp_path / "skel")) for p in (tmp_path / "skel").rglob("*") if p.is_file()
    )
    assert not any(p.endswith(".zst") for p in kept) and "manifest.json" in kept
    assert "weights/unet/tensor-cache.json" in kept and "tokenizer/tokenizer.json" in kept

    doc = synth_bundle.make(tmp_path / "skel", tmp_path / "out", seed=3)
    bundle = Bundle.open(tmp_path / "out")
    bundle.verify()  # every file's sha256 and size, raw sizes and hashes, the manifest's schema
    assert doc["model"]["id"] == "bench/synthetic-seed3"
    assert doc["components"] == source["components"]
    for name, original in params.items():
        loaded = bundle.load_params(name)
        assert list(loaded) == [n for n, _ in original]
        for n, arr in original:
            assert loaded[n].shape == arr.shape and loaded[n].dtype == arr.dtype
        for n, a in original:
            if a.dtype.kind == "f" and a.size > 8:
                assert not np.array_equal(loaded[n], a), n
                assert np.abs(loaded[n].astype("float32")).max() <= 1.0, n  # uniform ±1/√fan_in
    np.testing.assert_array_equal(bundle.load_params("unet")["norm1.weight"], np.ones(7, "float16"))
    source_files = {f["path"]: f for f in source["files"] if not f["path"].startswith("weights/")}
    assert {
        f["path"]: f for f in doc["files"] if not f["path"].startswith("weights/")
    } == source_files
    again = synth_bundle.make(tmp_path / "skel", tmp_path / "again", seed=3)
    assert json.dumps(again["files"]) == json.dumps(doc["files"])  # seeded: the same bytes


def test_a_quantized_bundle_gets_codes_and_scales_of_random_weights(tmp_path):
    """Each quantized weight is drawn at its own shape and stored as packer stores it: the
    synthesized codes and scales decode to weights within the initialiser's bounds."""
    from packer.bundle import BundleWriter
    from packer.bundle import quantize as qz
    from tests.bundle.test_writer import _fields

    scheme = qz.SCHEMES["q4f16"]
    rng = np.random.default_rng(0)
    conv = rng.standard_normal((16, 32, 3, 3)).astype("float16")
    plain = [("conv_in.weight", rng.standard_normal((16, 4, 3, 3)).astype("float16"))]
    params = list(qz.quantize_params([("mid.conv1.weight", conv)], {"mid.conv1.weight"}, scheme))
    with BundleWriter(tmp_path / "src") as w:
        fields = _fields(w, {"unet": plain + params, "text_encoder": _params(2, 3)})
        fields["quantization"] = qz.manifest_entry(
            scheme, {"unet": [("mid.conv1.weight", [16, 32, 3, 3])]}
        )
        w.commit(fields)
    synth_bundle.skeleton(tmp_path / "src", tmp_path / "skel")
    doc = synth_bundle.make(tmp_path / "skel", tmp_path / "out", seed=1)
    assert doc["quantization"]["scheme"] == "q4f16"
    bundle = Bundle.open(tmp_path / "out")
    bundle.verify()
    loaded = bundle.load_params("unet")
    packed, scales = (loaded[n] for n in qz.stored_names("mid.conv1.weight"))
    assert packed.dtype == np.uint32 and packed.shape == params[0][1].shape
    assert scales.dtype == np.float16 and scales.shape == params[1][1].shape
    weight = qz.dequantize(packed, scales, (16, 32, 3, 3), scheme)
    bound = 1 / np.sqrt(32 * 9)
    assert np.abs(weight).max() <= bound * 1.01 and np.abs(weight).max() > bound / 2
    codes = qz.unpack_codes(packed, scheme)
    assert len(np.unique(codes)) == 15  # symmetric 4-bit codes, spread over the whole range

    # the same model unquantized, same seed: the same weights, which quantize to the same codes
    with BundleWriter(tmp_path / "src-float") as w:
        w.commit(
            _fields(
                w,
                {"unet": plain + [("mid.conv1.weight", conv)], "text_encoder": _params(2, 3)},
            )
        )
    synth_bundle.skeleton(tmp_path / "src-float", tmp_path / "skel-float")
    floats = synth_bundle.make(tmp_path / "skel-float", tmp_path / "float", 1, "bench/float")
    assert floats["model"]["id"] == "bench/float"
    weights = Bundle.open(tmp_path / "float").load_params("unet")
    again, again_scales = qz.quantize(weights["mid.conv1.weight"], scheme)
    np.testing.assert_array_equal(again, packed)
    np.testing.assert_array_equal(again_scales, scales)
    np.testing.assert_array_equal(weights["conv_in.weight"], loaded["conv_in.weight"])
