"""Fuzzing the validators that stand between untrusted bytes and the rest of sdpack.

Each validator may only answer with a value or its own one-line error type; anything else (a
KeyError, a RecursionError, a MemoryError from a believed size) would reach the user as a
traceback. Bounded: a fixed example budget, no deadline, no example database written to the repo,
derandomized so a failure reproduces. About half a minute on two cores.
"""

from __future__ import annotations

import copy
import json
import shutil
import struct
import tempfile
from pathlib import Path

import pytest
import zstandard
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from packer.bundle import Bundle, encoding, manifest, tensor_cache
from packer.errors import BundleError, CheckpointError, UsageError
from packer.hub import lock
from packer.ingest import weights
from packer.support import canonical
from tests.helpers import GOLDEN

FUZZ = settings(max_examples=300, deadline=None, database=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])  # fmt: skip

JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=True)
    | st.text(max_size=12),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
GOLDEN_MANIFEST = json.loads((GOLDEN / "bundle" / "manifest.json").read_text())
INDEX = "weights/unet/tensor-cache.json"
GOLDEN_INDEX = json.loads((GOLDEN / "bundle" / INDEX).read_text())


def _paths(doc, prefix=()):
    """Every (container, key) path inside a JSON document."""
    if isinstance(doc, dict):
        for k, v in doc.items():
            yield prefix + (k,)
            yield from _paths(v, prefix + (k,))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            yield prefix + (i,)
            yield from _paths(v, prefix + (i,))


@st.composite
def mutated(draw, base):
    """``base`` with a few edits: a value replaced, a key deleted, a string or number bent."""
    doc = copy.deepcopy(base)
    for _ in range(draw(st.integers(1, 4))):
        paths = list(_paths(doc))
        if not paths:
            break
        path = draw(st.sampled_from(paths))
        parent = doc
        for key in path[:-1]:
            parent = parent[key]
        key, old = path[-1], parent[path[-1]]
        action = draw(st.sampled_from(["replace", "delete", "bend"]))
        if action == "delete":
            del parent[key]
        elif action == "replace":
            parent[key] = draw(JSON)
        elif isinstance(old, str):
            parent[key] = draw(
                st.sampled_from(
                    ["", "..", "/abs", "a\\b", "./x", old + "/..", old * 3, "\x00", "é" * 40]
                )
            )
        elif isinstance(old, bool) or old is None:
            parent[key] = draw(JSON)
        elif isinstance(old, (int, float)):
            parent[key] = draw(
                st.sampled_from([-1, 0, 2**31, 2**32, 2**53 + 1, 2**64, 1.5, float("inf")])
            )
        else:
            parent[key] = draw(JSON)
    return doc


# -- safetensors headers -----------------------------------------------------------------------
ENTRY = st.fixed_dictionaries(
    {
        "dtype": st.sampled_from([*weights.ITEMSIZE, "F33", "", 7]),
        "shape": st.lists(st.integers(-2, 70), max_size=3) | JSON,
        "data_offsets": st.lists(st.integers(-8, 300), min_size=2, max_size=2) | JSON,
    },
    optional={"extra": JSON},
)
HEADER = st.dictionaries(st.text(max_size=6), ENTRY, max_size=5) | JSON


@st.composite
def safetensors_files(draw):
    if draw(st.booleans()):
        return draw(st.binary(max_size=300))
    header = draw(HEADER)
    text = json.dumps(header).encode() if draw(st.booleans()) else draw(st.binary(max_size=64))
    if draw(st.integers(0, 9)) == 0:
        text = b"[" * draw(st.integers(900, 30_000)) + b"]" * 10  # nesting bomb
    body = draw(st.binary(max_size=300))
    length = draw(st.sampled_from([len(text), len(text)]) | st.integers(0, 2**64 - 1))
    return struct.pack("<Q", length) + text + body


@FUZZ
@given(data=safetensors_files())
def test_safetensors_header_validator(data):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "f.safetensors"
        path.write_bytes(data)
        try:
            header = weights.check_safetensors_header(path)
        except CheckpointError as exc:
            assert "\n" not in exc.one_line() and exc.hint
            return
        assert isinstance(header, dict) and isinstance(header["__metadata__"], dict)


# -- manifests ------------------------------------------------------------------------------------
@st.composite
def manifest_bytes(draw):
    if draw(st.integers(0, 4)) == 0:  # raw byte damage of the golden manifest
        data = bytearray((GOLDEN / "bundle" / "manifest.json").read_bytes())
        for _ in range(draw(st.integers(1, 8))):
            data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
        return bytes(data)
    if draw(st.integers(0, 19)) == 0:
        return b'{"files":' * draw(st.integers(500, 20_000))
    return canonical.dumps(draw(mutated(GOLDEN_MANIFEST)))


@FUZZ
@given(data=manifest_bytes())
def test_manifest_parse(data):
    try:
        doc = manifest.parse(data)
    except BundleError as exc:
        assert "\n" not in exc.one_line()
        return
    assert isinstance(doc, dict)
    for f in doc["files"]:  # whatever passed must be safe to join onto a bundle root
        assert not f["path"].startswith("/") and ".." not in f["path"].split("/")


# -- lock records -----------------------------------------------------------------------------------
VALID_LOCK = {
    "lock_version": 1, "repo": "sdpack/tiny", "version": "1.0.0", "commit": "a" * 40,
    "manifest_sha256": "b" * 64, "endpoint": "https://huggingface.co",
}  # fmt: skip


def test_valid_lock_is_accepted():
    assert lock.validate(dict(VALID_LOCK)) == VALID_LOCK


@FUZZ
@given(record=mutated(VALID_LOCK) | JSON)
def test_lock_validate(record):
    try:
        assert lock.validate(record) is record
    except UsageError as exc:
        assert "\n" not in exc.one_line() and exc.hint


@FUZZ
@given(data=st.binary(max_size=200) | st.builds(lambda d: canonical.dumps(d), mutated(VALID_LOCK)))
def test_lock_read(data):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "x.lock.json"
        path.write_bytes(data)
        try:
            assert isinstance(lock.read(path), dict)
        except UsageError as exc:
            assert "\n" not in exc.one_line()


# -- tensor-cache indexes -----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def golden_copy(tmp_path_factory):
    return shutil.copytree(GOLDEN / "bundle", tmp_path_factory.mktemp("fuzz") / "bundle")


def test_golden_index_is_accepted(golden_copy):
    assert Bundle.open(golden_copy).tensor_index("unet")["records"]


@FUZZ
@given(doc=mutated(GOLDEN_INDEX) | JSON)
def test_tensor_cache_check_index(doc):
    try:
        tensor_cache.check_index(doc, INDEX)
    except BundleError as exc:
        assert "\n" not in exc.one_line()


@settings(FUZZ, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(doc=mutated(GOLDEN_INDEX))
def test_bundle_tensor_index(golden_copy, doc):
    """A forged index whose manifest entry agrees with it (size and sha256 rewritten)."""
    data = canonical.dumps(doc)
    (golden_copy / INDEX).write_bytes(data)
    m = copy.deepcopy(GOLDEN_MANIFEST)
    for f in m["files"]:
        if f["path"] == INDEX:
            f["size"], f["sha256"] = len(data), canonical.sha256_bytes(data)
    try:
        index = Bundle(golden_copy, m).tensor_index("unet")
    except BundleError as exc:
        assert "\n" not in exc.one_line()
        return
    finally:
        shutil.copyfile(GOLDEN / "bundle" / INDEX, golden_copy / INDEX)
    for shard in index["records"]:  # accepted: every record lies inside its shard
        for rec in shard["records"]:
            assert 0 <= rec["byteOffset"] and rec["byteOffset"] + rec["nbytes"] <= shard["nbytes"]


# -- shard decoding ------------------------------------------------------------------------------------
@st.composite
def shards(draw):
    raw = draw(st.binary(max_size=200))
    kind = draw(st.integers(0, 3))
    if kind == 0:
        stored = draw(st.binary(max_size=200))
    elif kind == 1:
        stored = encoding.ZSTD_MAGIC + draw(st.binary(max_size=200))
    else:
        stored = bytearray(zstandard.ZstdCompressor(write_content_size=kind == 2).compress(raw))
        for _ in range(draw(st.integers(0, 3))):
            if stored:
                stored[draw(st.integers(0, len(stored) - 1))] = draw(st.integers(0, 255))
        stored = bytes(stored)
    raw_size = draw(st.sampled_from([len(raw)]) | st.integers(0, 2**32))
    return stored, raw_size, draw(st.sampled_from([None, 1, 2, 4, 8]))


@FUZZ
@given(case=shards())
def test_encoding_decode(case):
    stored, raw_size, element_size = case
    try:
        out = encoding.decode(stored, raw_size=raw_size, element_size=element_size, path="x.zst")
    except BundleError as exc:
        assert "\n" not in exc.one_line()
        return
    assert len(out) == raw_size
