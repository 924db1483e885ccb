"""Every way a bundle can be bad: `packer verify` exits 1 with one line naming the file."""

from __future__ import annotations

import json
import shutil

import pytest
import zstandard

from tests.helpers import GOLDEN, file_entry, packer, read_manifest, rehash, write_manifest

SHARD = "weights/unet/params_shard_0.bin.zst"
INDEX = "weights/unet/tensor-cache.json"


def flip_byte(root):
    p = root / SHARD
    data = bytearray(p.read_bytes())
    data[len(data) // 2] ^= 0x40
    p.write_bytes(bytes(data))
    return SHARD, "sha256 mismatch"


def truncate_shard(root):
    p = root / SHARD
    p.write_bytes(p.read_bytes()[:-10])
    return SHARD, "size"


def delete_shard(root):
    (root / SHARD).unlink()
    return SHARD, "missing"


def non_zstd_shard(root):
    (root / SHARD).write_bytes(b"PK\x03\x04 not zstd at all" * 10)
    rehash(root, SHARD)
    return SHARD, "not a zstd frame"


def truncated_zstd_frame(root):
    p = root / SHARD
    p.write_bytes(p.read_bytes()[:-40])
    rehash(root, SHARD)
    return SHARD, "truncated or corrupt"


def zstd_bomb(root):
    """A valid frame that decodes to far more than the manifest's raw_size."""
    p = root / SHARD
    p.write_bytes(zstandard.ZstdCompressor().compress(b"\0" * (64 << 20)))
    rehash(root, SHARD)
    return SHARD, "corrupt"


def raw_hash_mismatch(root):
    doc = read_manifest(root)
    file_entry(doc, SHARD)["encoding"]["raw_sha256"] = "0" * 64
    write_manifest(root, doc)
    return SHARD, "raw_sha256"


def record_outside_shard(root):
    p = root / INDEX
    doc = json.loads(p.read_text())
    doc["records"][0]["records"][-1]["byteOffset"] = 10**6
    p.write_text(json.dumps(doc))
    rehash(root, INDEX)
    return INDEX, "outside its shard"


def params_reordered(root):
    doc = read_manifest(root)
    params = doc["components"]["unet"]["params"]
    params[0], params[1] = params[1], params[0]
    write_manifest(root, doc)
    return INDEX, "order"


def tokenizer_tampered(root):
    p = root / "tokenizer/tokenizer.json"
    p.write_text(p.read_text().replace("photo", "phot0"))
    return "tokenizer/tokenizer.json", "sha256 mismatch"


def _path_case(bad_path):
    def case(root):
        doc = read_manifest(root)
        doc["files"][0]["path"] = bad_path
        write_manifest(root, doc)
        return "manifest.json", repr(bad_path)[1:-1] if "\\" not in bad_path else "backslash"

    case.__name__ = f"path_{bad_path}"
    return case


def unknown_format_version(root):
    doc = read_manifest(root)
    doc["format_version"] = 2
    write_manifest(root, doc)
    return "manifest.json", "unknown format_version 2"


def schema_violation(root):
    doc = read_manifest(root)
    del doc["model"]["license"]
    write_manifest(root, doc)
    return "manifest.json", "license"


def negative_size(root):
    doc = read_manifest(root)
    doc["files"][0]["size"] = -1
    write_manifest(root, doc)
    return "manifest.json", "schema violation"


def unlisted_reference(root):
    doc = read_manifest(root)
    doc["files"] = [e for e in doc["files"] if e["path"] != INDEX]
    write_manifest(root, doc)
    return "manifest.json", INDEX


def invalid_json(root):
    (root / "manifest.json").write_text('{"format": "sdpack.bundle",')
    return "manifest.json", "not valid JSON"


def symlink_escape(root):
    outside = root.parent / "outside.bin"
    shutil.copy(root / SHARD, outside)
    (root / SHARD).unlink()
    (root / SHARD).symlink_to(outside)
    return SHARD, "outside the bundle"


CASES = [
    flip_byte,
    truncate_shard,
    delete_shard,
    non_zstd_shard,
    truncated_zstd_frame,
    zstd_bomb,
    raw_hash_mismatch,
    record_outside_shard,
    params_reordered,
    tokenizer_tampered,
    _path_case("../escape.bin"),
    _path_case("/etc/passwd"),
    _path_case("weights\\unet\\x.bin"),
    _path_case("weights/./x.bin"),
    unknown_format_version,
    schema_violation,
    negative_size,
    unlisted_reference,
    invalid_json,
    symlink_escape,
]


@pytest.mark.parametrize("tamper", CASES, ids=lambda f: f.__name__)
def test_verify_names_the_bad_file(tmp_path, tamper):
    root = tmp_path / "bundle"
    shutil.copytree(GOLDEN / "bundle", root)
    before = sorted(p.relative_to(root) for p in root.rglob("*"))
    culprit, reason = tamper(root)
    r = packer("verify", str(root))
    assert r.code == 1, (r.out, r.err)
    line = r.error_line
    assert line.startswith("error: ") and culprit in line and reason in line, line
    assert sorted(p.relative_to(root) for p in root.rglob("*")) == before or tamper is delete_shard


def test_missing_bundle_dir(tmp_path):
    r = packer("verify", str(tmp_path / "nope"))
    assert r.code == 1 and "no such bundle directory" in r.error_line
