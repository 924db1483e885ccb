"""The pack → publish → pull → generate flow through the real `packer` CLI, and its bad inputs."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from examples.make_example import make_example
from packer import __version__
from tests.helpers import cli_json, packer


@pytest.fixture
def env(lib_cache):
    return {"SDPACK_CACHE": str(lib_cache)}


def test_generate_writes_png_with_its_parameters(packed, env, tmp_path):
    out = tmp_path / "img.png"
    r = packer(
        "generate",
        str(packed("safetensors", "fp32")),
        "--prompt",
        "a red dragon",
        "--seed",
        "5",
        "--steps",
        "3",
        "--scheduler",
        "ddim",
        "--guidance",
        "7",
        "--out",
        str(out),
        "--json",
        env=env,
    )
    doc = cli_json(r, "generate")
    assert (doc["out"], doc["variant"], doc["width"], doc["height"]) == (
        str(out),
        "llvm-float32",
        64,
        64,
    )
    img = np.asarray(Image.open(out))
    assert img.shape == (64, 64, 3) and img.std() > 5
    assert Image.open(out).text == {  # formats/README.md, "Image metadata"; a packed bundle has no commit
        "prompt": "a red dragon", "negative_prompt": "", "seed": "5", "steps": "3", "guidance": "7",
        "scheduler": "ddim", "model": "sdpack/tiny-sd15@1.0.0", "width": "64", "height": "64",
        "variant": "llvm-float32", "Software": f"sdpack {__version__}",
        "parameters": "a red dragon\nNegative prompt: \nSteps: 3, Sampler: ddim, CFG scale: 7, Seed: 5, "
                      "Size: 64x64, Model: sdpack/tiny-sd15@1.0.0",
    }  # fmt: skip


def test_second_checkpoint_reuses_libraries_and_publish_pull_roundtrip(
    example, packed, env, tmp_path
):
    """A different checkpoint of the same architecture compiles nothing; publish → pull → same image."""
    packed("safetensors", "fp32")  # warm the library cache with the first checkpoint
    other = make_example(tmp_path / "other", seed=1)
    hub = tmp_path / "hub"
    r = packer(
        "publish",
        "acme/other-model",
        "--checkpoint",
        str(other["safetensors"]),
        "--tokenizer",
        str(other["tokenizer"]),
        "--image-size",
        "64",
        "--version",
        "1.0.0",
        "--to",
        str(hub),
        "--targets",
        "llvm",
        "--dtype",
        "fp32",
        env=env,
    )
    assert r.code == 0, r.err
    assert "published acme/other-model 1.0.0" in r.out
    r = packer(
        "resolve",
        "acme/other-model@1.0.0",
        "--endpoint",
        str(hub),
        "--lock-out",
        str(tmp_path / "lock.json"),
    )
    assert r.code == 0, r.err
    lock = json.loads((tmp_path / "lock.json").read_text())
    assert lock["version"] == "1.0.0" and len(lock["commit"]) == 40
    r = packer("pull", str(tmp_path / "lock.json"), "--out", str(tmp_path / "pulled"), "--json")
    assert cli_json(r, "pull")["commit"] == lock["commit"]
    r = packer(
        "pack",
        str(other["safetensors"]),
        "--out",
        str(tmp_path / "direct"),
        "--tokenizer",
        str(other["tokenizer"]),
        "--image-size",
        "64",
        "--version",
        "1.0.0",
        "--model-id",
        "acme/other-model",
        "--targets",
        "llvm",
        "--dtype",
        "fp32",
        "--json",
        env=env,
    )
    assert cli_json(r, "pack")["libraries"] == {"compiled": 0, "reused": 3}
    # same checkpoint, same versions → byte-identical manifest to the published one
    assert (tmp_path / "direct" / "manifest.json").read_bytes() == (
        tmp_path / "pulled" / "manifest.json"
    ).read_bytes()
    images = []
    for bundle in ("pulled", "direct"):
        png = tmp_path / f"{bundle}.png"
        r = packer(
            "generate",
            str(tmp_path / bundle),
            "--prompt",
            "cat",
            "--seed",
            "9",
            "--steps",
            "2",
            "--out",
            str(png),
            env=env,
        )
        assert r.code == 0, r.err
        images.append(np.asarray(Image.open(png)))
    np.testing.assert_array_equal(*images)


@pytest.mark.parametrize(
    "args, message",
    [
        (["--dtype", "fp8"], "unknown --dtype"),
        (["--version", "1.0"], "invalid version"),
        (["--targets", "tpu"], "unknown target"),
        (["--model-id", "no-slash"], "invalid repo id"),
        (["--image-size", "100"], "image size 100"),
        (["--base-model", "not-an-id"], "--base-model 'not-an-id' is not a Hub repo id"),
        (["--quantize", "q3f16"], "unknown --quantize 'q3f16'"),
    ],
)
def test_pack_bad_arguments(example, tmp_path, args, message, env):
    out = tmp_path / "out"
    r = packer(
        "pack",
        str(example["safetensors"]),
        "--out",
        str(out),
        "--tokenizer",
        str(example["tokenizer"]),
        *args,
        env=env,
    )
    assert r.code == 2 and message in r.error_line, r.err
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_pack_bad_checkpoints(tmp_path, env):
    trunc = tmp_path / "trunc.safetensors"
    trunc.write_bytes(b'\x10\x00\x00\x00\x00\x00\x00\x00{"a":')
    for ckpt, message in (
        (tmp_path / "missing.safetensors", "no such file"),
        (trunc, "trunc.safetensors"),
    ):
        r = packer("pack", str(ckpt), "--out", str(tmp_path / "out"), env=env)
        assert r.code == 2 and message in r.error_line, r.err
        assert not (tmp_path / "out").exists()


def test_pack_refuses_existing_out(example, tmp_path, env):
    (tmp_path / "out").mkdir()
    r = packer("pack", str(example["safetensors"]), "--out", str(tmp_path / "out"), env=env)
    assert r.code == 2 and "already exists" in r.error_line


@pytest.mark.parametrize(
    "args, message",
    [
        (["--scheduler", "lms"], "unknown scheduler"),
        (["--device", "tpu"], "unknown device"),
        (["--steps", "0"], "--steps"),
        (["--device", "cuda"], "no cuda library"),
        (["--device", "opencl"], "no opencl library for this machine"),
    ],
)
def test_generate_bad_arguments(packed, tmp_path, args, message, env):
    r = packer(
        "generate",
        str(packed("safetensors", "fp32")),
        "--prompt",
        "x",
        "--out",
        str(tmp_path / "x.png"),
        *args,
        env=env,
    )
    assert r.code == 2 and message in r.error_line, r.err
    assert not (tmp_path / "x.png").exists()


def test_generate_bad_latents(packed, tmp_path, env):
    np.save(tmp_path / "lat.npy", np.zeros((1, 4, 16, 16), np.float32))
    r = packer(
        "generate",
        str(packed("safetensors", "fp32")),
        "--prompt",
        "x",
        "--latents",
        str(tmp_path / "lat.npy"),
        "--out",
        str(tmp_path / "x.png"),
        env=env,
    )
    assert r.code == 2 and "shape" in r.error_line
