"""`packer pack --quantize` on the tiny example: a verified, reproducible bundle that generates."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from packer.bundle import Bundle
from tests.helpers import cli_json, packer

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def quantized(example, lib_cache, tmp_path_factory):
    """The example packed with q4f16 for llvm float32, twice (the second run reuses every library)."""
    outs = []
    env = {"SDPACK_CACHE": str(lib_cache)}
    for i in range(2):
        out = tmp_path_factory.mktemp("quantized") / f"q4-{i}"
        r = packer(
            "pack",
            str(example["safetensors"]),
            "--out",
            str(out),
            "--tokenizer",
            str(example["tokenizer"]),
            "--image-size",
            "64",
            "--version",
            "1.0.0",
            "--model-id",
            "sdpack/tiny-sd15",
            "--targets",
            "llvm",
            "--dtype",
            "fp16",
            "--quantize",
            "q4f16",
            "--json",
            env=env,
        )
        outs.append((out, cli_json(r, "pack")))
    return outs


def test_quantized_pack_is_reproducible_verified_and_smaller(quantized, packed, lib_cache):
    (first, doc1), (second, doc2) = quantized
    assert doc2["libraries"]["compiled"] == 0
    assert doc1["manifest_sha256"] == doc2["manifest_sha256"]
    assert (first / "manifest.json").read_bytes() == (second / "manifest.json").read_bytes()
    r = packer("verify", str(first), "--json")
    assert cli_json(r, "verify")["quantization"]["tensors"] == {"text_encoder": 12, "unet": 82}
    r = packer("inspect", str(first))
    assert "quantized  q4f16 (4-bit, groups of 32" in r.out

    m = Bundle.open(first).manifest
    quant = m["quantization"]
    assert (quant["scheme"], quant["bits"], quant["group_size"]) == ("q4f16", 4, 32)
    assert "vae_decoder" not in quant["tensors"]
    records = {
        r["name"]: r
        for comp in m["components"]
        for s in Bundle.open(first).tensor_index(comp)["records"]
        for r in s["records"]
    }
    t = quant["tensors"]["unet"][0]
    assert records[t["packed"]]["dtype"] == "uint32" and records[t["scales"]]["dtype"] == "float16"
    assert not any(t["name"] in records for ts in quant["tensors"].values() for t in ts)
    fp16 = Bundle.open(packed("safetensors", "fp16")).manifest
    size = {
        c: sum(f["size"] for f in doc["files"] if f["path"].startswith(f"weights/{c}/"))
        for doc in (m,)
        for c in ("unet",)
    }
    size16 = sum(f["size"] for f in fp16["files"] if f["path"].startswith("weights/unet/"))
    assert size["unet"] < 0.45 * size16, (size, size16)


def test_quantized_bundle_generates_close_to_float16(quantized, packed, lib_cache, tmp_path):
    env = {"SDPACK_CACHE": str(lib_cache)}
    images = []
    for bundle in (quantized[0][0], packed("safetensors", "fp16")):
        png = tmp_path / f"{len(images)}.png"
        r = packer(
            "generate",
            str(bundle),
            "--prompt",
            "a castle",
            "--seed",
            "3",
            "--steps",
            "2",
            "--out",
            str(png),
            "--json",
            env=env,
        )
        assert cli_json(r, "generate")["variant"] == "llvm-float16"
        images.append(np.asarray(Image.open(png)).astype(np.float64))
    mse = float(np.mean((images[0] - images[1]) ** 2))
    psnr = 10 * np.log10(255**2 / max(mse, 1e-12))
    print(f"q4f16 vs float16 image PSNR {psnr:.1f} dB (tiny random model)")
    assert (
        images[0].std() > 5 and psnr > 10
    )  # the tiny model's 0.05-scale random weights are hard on 4 bits


def test_unknown_scheme_in_a_bundle_is_one_line(quantized, tmp_path):
    import shutil

    bundle = tmp_path / "b"
    shutil.copytree(quantized[0][0], bundle)
    doc = json.loads((bundle / "manifest.json").read_text())
    doc["quantization"]["scheme"] = "q3f16"
    (bundle / "manifest.json").write_text(json.dumps(doc))
    r = packer("generate", str(bundle), "--prompt", "x", "--out", str(tmp_path / "x.png"))
    assert (
        r.code != 0
        and "quantized with scheme 'q3f16', which this sdpack does not read" in r.error_line
    )
    assert len(r.err.strip().splitlines()) == 1 and not (tmp_path / "x.png").exists()
