"""Generation parameters in PNG files (formats/README.md, "Image metadata"), read back with
Pillow and with a chunk walk of our own: the chunk layout the spec fixes, the commit a pulled
bundle's lock record gives, JavaScript's number form for guidance."""

from __future__ import annotations

import shutil
import struct
import zlib

import pytest
from PIL import Image

from packer.hub import lock
from packer.interface.generate import GenerateArgs, generate
from packer.runtime.image_metadata import KEYS, number_text
from packer.support import canonical

COMMIT = "0123456789abcdef0123456789abcdef01234567"


def chunks(path) -> list[tuple[bytes, bytes]]:
    """``(type, data)`` of every chunk, CRCs checked."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    out, pos = [], 8
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        assert struct.unpack(">I", data[pos + 8 + length : pos + 12 + length])[0] == zlib.crc32(
            kind + body
        )
        out.append((kind, body))
        pos += 12 + length
    return out


def itxt(body: bytes) -> tuple[str, str]:
    """An iTXt chunk's keyword and text, asserting the spec's form: uncompressed, no language tag,
    no translated keyword."""
    keyword, rest = body.split(b"\0", 1)
    assert rest[:2] == b"\0\0"  # compression flag, method
    lang, rest = rest[2:].split(b"\0", 1)
    tkey, text = rest.split(b"\0", 1)
    assert lang == b"" and tkey == b""
    return keyword.decode("latin-1"), text.decode("utf-8")


@pytest.fixture
def bundle(packed, tmp_path):
    return shutil.copytree(packed("safetensors", "fp32"), tmp_path / "bundle")


def run(bundle, out, **kw):
    args = GenerateArgs(
        bundle,
        "ein Schloß am Meer 🏰",
        out,
        negative_prompt="blurry",
        seed=2**64 - 1,
        steps=2,
        guidance=7.5,
        scheduler="euler-a",
        **kw,
    )
    return generate(args)


def test_chunks_are_itxt_before_the_image_data_in_spec_order(bundle, tmp_path):
    out = tmp_path / "a.png"
    run(bundle, out)
    kinds = [k for k, _ in chunks(out)]
    first_idat = kinds.index(b"IDAT")
    text = [itxt(body) for kind, body in chunks(out) if kind == b"iTXt"]
    assert all(k != b"iTXt" for k in kinds[first_idat:]) and not {b"tEXt", b"zTXt"} & set(kinds)
    assert [k for k, _ in text] == [
        k for k in KEYS if k != "commit"
    ]  # a packed bundle has no commit
    values = dict(text)
    assert values == Image.open(out).text
    assert values["prompt"] == "ein Schloß am Meer 🏰" and values["seed"] == "18446744073709551615"
    assert values["parameters"] == (
        "ein Schloß am Meer 🏰\nNegative prompt: blurry\nSteps: 2, Sampler: euler-a, "
        "CFG scale: 7.5, Seed: 18446744073709551615, Size: 64x64, Model: sdpack/tiny-sd15@1.0.0"
    )


def test_commit_comes_from_the_lock_record_pull_leaves(bundle, tmp_path):
    manifest_sha = canonical.sha256_file(bundle / "manifest.json")
    lock.write(
        bundle / lock.BUNDLE_LOCK,
        lock.make("sdpack/tiny-sd15", "1.0.0", COMMIT, manifest_sha, "https://huggingface.co"),
    )
    run(bundle, tmp_path / "pinned.png")
    text = Image.open(tmp_path / "pinned.png").text
    assert text["commit"] == COMMIT and list(text).index("commit") == list(text).index("model") + 1
    # a record that pins another manifest says nothing about this one
    lock.write(
        bundle / lock.BUNDLE_LOCK,
        lock.make("sdpack/tiny-sd15", "1.0.0", COMMIT, "f" * 64, "https://huggingface.co"),
    )
    run(bundle, tmp_path / "other.png")
    assert "commit" not in Image.open(tmp_path / "other.png").text


@pytest.mark.parametrize("value, text", [
    (7.5, "7.5"), (7.0, "7"), (0.1, "0.1"), (1 / 3, "0.3333333333333333"), (-2.0, "-2"), (0.0, "0"),
    (1e-6, "0.000001"), (1e-7, "1e-7"), (1.5e-7, "1.5e-7"), (1e21, "1e+21"), (123456789012345680000.0, "123456789012345680000"),
])  # fmt: skip
def test_guidance_is_written_as_javascript_writes_numbers(value, text):
    assert number_text(value) == text  # String(value) in JavaScript
