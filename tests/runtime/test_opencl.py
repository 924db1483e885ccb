"""OpenCL bundles run through sdpack's OpenCL runtime plugin on a CPU OpenCL driver (pocl).

The ``opencl`` float32 libraries of the tiny example must match the ``llvm`` ones of the same
bundle (same weights, same inputs) within 1e-4 of the output's scale, component by component,
and ``packer generate --device opencl`` must write the image ``--device cpu`` writes. Debian's
pocl has no ``cl_khr_fp16``: here the float16 variant is checked to be passed over (or refused
in one line) rather than run; on a device with it, the float16 tolerance is that of
``packer/compile`` (3e-2 of the output's max).

The first OpenCL run compiles every kernel in pocl (about a minute on two cores; pocl caches
them under ~/.cache/pocl).
"""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from PIL import Image

from packer.bundle import Bundle
from packer.errors import UsageError
from packer.interface.pack import PackArgs, pack
from packer.runtime import opencl_runtime
from packer.runtime.generate import Pipeline, Request, to_uint8
from tests.helpers import packer

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        shutil.which("clinfo") is None or shutil.which("g++") is None,
        reason="needs g++ and an OpenCL ICD (scripts/setup installs them)",
    ),
]


@pytest.fixture(scope="module")
def bundle(example, lib_cache, tmp_path_factory, monkeypatch_module):
    """The tiny example with llvm and opencl libraries in float32 (llvm's are the session's)."""
    monkeypatch_module.setenv("SDPACK_CACHE", str(lib_cache))
    out = tmp_path_factory.mktemp("bundles") / "opencl-fp32"
    pack(
        PackArgs(
            str(example["safetensors"]),
            out,
            ["llvm", "opencl"],
            "fp32",
            "1.0.0",
            "sdpack/tiny-sd15",
            tokenizer=example["tokenizer"],
            image_size=64,
        )
    )
    return Bundle.open(out)


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as mp:
        yield mp


def test_opencl_components_match_llvm(bundle):
    cpu, ocl = Pipeline(bundle, "cpu"), Pipeline(bundle, "opencl")
    assert (cpu.variant_key, ocl.variant_key) == ("llvm-float32", "opencl-float32")
    rng = np.random.default_rng(0)
    sample = rng.standard_normal((2, 4, 8, 8)).astype(np.float32)
    hidden = np.concatenate([cpu.encode_prompt(""), cpu.encode_prompt("a red dragon")])
    calls = {
        "text_encoder": (cpu.token_ids("a red dragon"),),
        "unet": (sample, np.array([981.0, 981.0], np.float32), hidden),
        "vae_decoder": (sample[:1] / 0.18215,),
    }
    for name, inputs in calls.items():
        want, got = cpu.runners[name](*inputs), ocl.runners[name](*inputs)
        scale = float(np.abs(want).max())
        assert scale > 0.1, f"{name}: output is ~0, the comparison would prove nothing"
        assert float(np.abs(got - want).max()) <= 1e-4 * scale, name


def test_generate_on_opencl_writes_the_cpu_image(bundle, lib_cache, tmp_path):
    out = tmp_path / "opencl.png"
    r = packer(
        "generate",
        str(bundle.root),
        "--prompt",
        "a red dragon",
        "--seed",
        "3",
        "--steps",
        "2",
        "--device",
        "opencl",
        "--out",
        str(out),
        env={"SDPACK_CACHE": str(lib_cache)},
    )
    assert r.code == 0, r.err
    assert Image.open(out).text["variant"] == "opencl-float32"
    cpu = Pipeline(bundle, "cpu")(Request("a red dragon", seed=3, steps=2))
    want = to_uint8(cpu).astype(int)
    assert want.std() > 5
    assert np.abs(np.asarray(Image.open(out)).astype(int) - want).max() <= 1  # ~1e-6 apart


def test_float16_is_picked_only_where_the_device_has_cl_khr_fp16(bundle):
    m = bundle.manifest
    fp32 = m["targets"]["opencl-float32"]
    fp16 = {
        **fp32,
        "dtype": "float16",
        "requirements": {**fp32["requirements"], "features": ["cl_khr_fp16"]},
    }
    both = {**m, "dtype": "float16", "targets": {"opencl-float16": fp16, "opencl-float32": fp32}}
    only16 = {**m, "targets": {"opencl-float16": fp16}}
    if "cl_khr_fp16" in opencl_runtime.device_extensions():
        assert Pipeline._pick_variant(both, "opencl", None)[0] == "opencl-float16"
        return
    assert Pipeline._pick_variant(both, "opencl", None)[0] == "opencl-float32"
    with pytest.raises(UsageError, match="lacks cl_khr_fp16"):
        Pipeline._pick_variant(only16, "opencl", None)


def test_no_opencl_driver_is_one_line(bundle, lib_cache, tmp_path):
    env = {"SDPACK_CACHE": str(lib_cache), "OCL_ICD_VENDORS": str(tmp_path / "no-drivers")}
    r = packer(
        "generate",
        str(bundle.root),
        "--prompt",
        "x",
        "--device",
        "opencl",
        "--out",
        str(tmp_path / "x.png"),
        env=env,
    )
    assert r.code != 0
    assert "no OpenCL device available" in r.error_line
    assert not (tmp_path / "x.png").exists()
