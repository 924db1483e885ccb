"""BundleWriter: sharding, encodings, determinism and atomicity."""

from __future__ import annotations

import importlib.util
import os

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from packer.bundle import Bundle, BundleWriter, encoding, tensor_cache
from packer.errors import BundleError
from tests.helpers import GOLDEN

_spec = importlib.util.spec_from_file_location("make_golden", GOLDEN / "make_golden.py")
make_golden = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(make_golden)


def _params(seed: int, n: int = 12):
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        shape = tuple(int(x) for x in rng.integers(1, 40, size=int(rng.integers(1, 4))))
        dtype = ["float16", "float32", "int32"][i % 3]
        out.append((f"layer{i}.weight", (rng.standard_normal(shape) * 3).astype(dtype)))
    return out


def _fields(w: BundleWriter, comps: dict) -> dict:
    index = {name: w.add_weights(name, p) for name, p in comps.items()}
    w.add_bytes("tokenizer/tokenizer.json", b"{}")
    w.add_bytes("tokenizer/tokenizer_config.json", b"{}")
    fields = make_golden.manifest_fields({"text_encoder": ("", []), "unet": ("", [])})
    fields["components"] = {
        n: {"weights": i, "params": p, "inputs": []} for n, (i, p) in index.items()
    }
    return fields


def _write(out, comps, **kw):
    with BundleWriter(out, **kw) as w:
        return w.commit(_fields(w, comps))


@pytest.mark.parametrize("shuffle", [True, False])
@pytest.mark.parametrize("shard_bytes", [256, 4096, 1 << 20])
def test_roundtrip_any_shard_size(tmp_path, shuffle, shard_bytes):
    comps = {"unet": _params(1), "text_encoder": _params(2, 5)}
    doc = _write(tmp_path / "b", comps, shard_bytes=shard_bytes, shuffle=shuffle)
    b = Bundle.open(tmp_path / "b")
    b.verify()
    for name, params in comps.items():
        loaded = b.load_params(name)
        assert list(loaded) == [n for n, _ in params]
        for n, arr in params:
            np.testing.assert_array_equal(loaded[n], arr)
            assert loaded[n].dtype == arr.dtype
    shards = [f for f in doc["files"] if f["path"].endswith(".zst")]
    largest = max(a.nbytes for p in comps.values() for _, a in p)
    assert all(f["encoding"]["raw_size"] <= max(shard_bytes, largest) for f in shards)
    assert all(("shuffle" in f["encoding"]) == shuffle for f in shards)


def test_same_input_twice_is_byte_identical(tmp_path):
    comps = {"unet": _params(3)}
    _write(tmp_path / "a", comps, shard_bytes=512)
    _write(tmp_path / "b", comps, shard_bytes=512)
    files_a = sorted(
        p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*") if p.is_file()
    )
    files_b = sorted(
        p.relative_to(tmp_path / "b") for p in (tmp_path / "b").rglob("*") if p.is_file()
    )
    assert files_a == files_b
    for rel in files_a:
        assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes(), rel
    assert os.stat(tmp_path / "a").st_mode & 0o777 == 0o755


def test_failure_leaves_nothing(tmp_path):
    with pytest.raises(RuntimeError):
        with BundleWriter(tmp_path / "out") as w:
            w.add_weights("unet", _params(4))
            raise RuntimeError("killed half way")
    assert list(tmp_path.iterdir()) == []


def test_invalid_manifest_is_not_committed(tmp_path):
    with pytest.raises(BundleError, match="schema violation"):
        with BundleWriter(tmp_path / "out") as w:
            fields = _fields(w, {"unet": _params(5)})
            fields["model"]["version"] = "1.0"
            w.commit(fields)
    assert list(tmp_path.iterdir()) == []


def test_existing_destination_is_kept(tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "mine.txt").write_text("keep me")
    with pytest.raises(BundleError, match="already exists"):
        with BundleWriter(tmp_path / "out"):
            pass
    assert (tmp_path / "out" / "mine.txt").read_text() == "keep me"


def test_unwritable_destination(tmp_path):
    """A destination whose parent is a file (root ignores permission bits, so use that)."""
    (tmp_path / "file").write_text("x")
    with pytest.raises(BundleError, match="cannot write"):
        with BundleWriter(tmp_path / "file" / "out"):
            pass
    assert (tmp_path / "file").read_text() == "x"


def test_overwrite_replaces_atomically(tmp_path):
    _write(tmp_path / "b", {"unet": _params(6)})
    _write(tmp_path / "b", {"unet": _params(7)}, overwrite=True)
    Bundle.open(tmp_path / "b").verify()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b"]


def test_shards_respect_cap_and_alignment():
    params = [(f"t{i}", np.ones(100 + i, "float16")) for i in range(50)]
    shards = tensor_cache.pack(params, 1024)
    for shard in shards:
        assert shard.nbytes <= 1024
        assert all(r["byteOffset"] % tensor_cache.ALIGN == 0 for r in shard.records)
    assert [r["name"] for s in shards for r in s.records] == [n for n, _ in params]
    with pytest.raises(ValueError, match="duplicate"):
        tensor_cache.pack([("a", np.ones(2, "float16"))] * 2, 1024)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=4096), st.sampled_from([1, 2, 4]))
def test_shuffle_roundtrip(data, size):
    shuffled = encoding.shuffle(data, size)
    assert len(shuffled) == len(data)
    assert encoding.unshuffle(shuffled, size) == data


@settings(max_examples=60, deadline=None)
@given(st.binary(max_size=8192), st.sampled_from([None, 2, 4]), st.integers(1, 19))
def test_encode_decode_roundtrip(data, size, level):
    blob = encoding.encode(data, level=level, element_size=size)
    assert encoding.decode(blob, raw_size=len(data), element_size=size, path="x") == data
    if data:
        with pytest.raises(BundleError):
            encoding.decode(blob, raw_size=len(data) + 1, element_size=size, path="x")
