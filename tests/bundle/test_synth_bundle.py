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
