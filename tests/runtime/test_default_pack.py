"""What `packer pack` builds without --targets/--dtype: the web variants and llvm over float16
weights — verified, loadable by runtime-web's variant choice, and running natively in float32
over the float16 weights as diffusers does on the same rounded weights."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

from packer.bundle import Bundle
from packer.compile.variants import local_cuda_target
from packer.runtime import noise, schedulers
from packer.runtime.generate import Pipeline, Request
from tests.helpers import packer

pytestmark = (
    pytest.mark.slow
)  # six WebGPU libraries on a fresh cache (the llvm ones are the session's)

PROMPT = "a photo of an astronaut riding a horse on the moon"
NEGATIVE = "blurry"


@pytest.fixture(scope="module")
def default_bundle(example, packed, lib_cache, tmp_path_factory):
    packed(
        "safetensors", "fp32"
    )  # the session's llvm-float32 libraries: the default pack reuses them
    out = tmp_path_factory.mktemp("default") / "bundle"
    r = packer(
        "pack",
        str(example["safetensors"]),
        "--out",
        str(out),
        "--tokenizer",
        str(example["tokenizer"]),
        "--image-size",
        "64",
        "--model-id",
        "sdpack/tiny-sd15",
        "--version",
        "1.0.0",
        env={"SDPACK_CACHE": str(lib_cache)},
    )
    assert r.code == 0, r.err
    reused = int(re.search(r"(\d+) reused", r.out).group(1))
    assert reused >= 3, r.out  # libraries do not depend on the weights' dtype
    return out


def expected_variants() -> set[str]:
    cuda = local_cuda_target()  # None here: nvcc without a GPU does not add cuda
    return {"webgpu-float16", "webgpu-float32", "llvm-float32"} | (
        {f"{cuda.replace('-', '')}-float16"} if cuda else set()
    )


def test_default_pack_has_exactly_the_default_variants_and_verifies(default_bundle):
    m = Bundle.open(default_bundle).manifest
    assert set(m["targets"]) == expected_variants()
    assert m["dtype"] == "float16"
    for key, t in m["targets"].items():
        assert t["dtype"] == key.rsplit("-", 1)[1]
        assert set(t["libs"]) == {"text_encoder", "unet", "vae_decoder"}
        assert all(p.startswith(f"libs/{key}/") for p in t["libs"].values())
    assert m["targets"]["webgpu-float16"]["requirements"]["features"] == ["shader-f16"]
    assert m["targets"]["webgpu-float32"]["requirements"]["features"] == []
    records = Bundle.open(default_bundle).tensor_index("unet")["records"]
    assert {r["dtype"] for shard in records for r in shard["records"]} == {
        "float16"
    }  # stored once, in float16
    r = packer("verify", str(default_bundle))
    assert r.code == 0 and r.out.startswith("ok:"), r.err


def runtime_web_pick(manifest: dict, features: list[str], max_buffer: int) -> str | None:
    """runtime-web's pickVariant (src/variant.ts) for an adapter: the webgpu float16 variant
    where the device has shader-f16, else the float32 one; only variants whose required
    features it has; None where the chosen one needs larger buffers than the device allows."""
    usable = {
        k: t
        for k, t in manifest["targets"].items()
        if t["kind"] == "webgpu" and set(t["requirements"].get("features", [])) <= set(features)
    }
    by_dtype = {t["dtype"]: k for k, t in sorted(usable.items())}
    chosen = by_dtype.get("float16") if "shader-f16" in features else None
    chosen = chosen or by_dtype.get("float32")
    if (
        chosen is None
        or manifest["targets"][chosen]["requirements"].get("max_buffer_bytes", 0) > max_buffer
    ):
        return None
    return chosen


def test_runtime_web_has_a_variant_for_every_webgpu_device(default_bundle):
    m = Bundle.open(default_bundle).manifest
    limit = 128 << 20  # WebGPU's default maxStorageBufferBindingSize
    assert runtime_web_pick(m, ["shader-f16"], limit) == "webgpu-float16"
    assert (
        runtime_web_pick(m, [], limit) == "webgpu-float32"
    )  # e.g. NVIDIA on Vulkan: no shader-f16
    for key in ("webgpu-float16", "webgpu-float32"):
        assert 0 < m["targets"][key]["requirements"]["max_buffer_bytes"] <= limit


def rounded_pipeline(folder):
    """diffusers' pipeline with every weight rounded to float16 and back: what the bundle stores."""
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(
        str(folder), safety_checker=None, requires_safety_checker=False
    )
    pipe.set_progress_bar_config(disable=True)
    with torch.no_grad():
        for module in (pipe.text_encoder, pipe.unet, pipe.vae):
            for p in module.parameters():
                p.copy_(p.half().float())
    return pipe


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(1.0 / mse)


def test_llvm_float32_over_float16_weights_matches_diffusers(example, default_bundle, tmp_path):
    ours = Pipeline(Bundle.open(default_bundle))
    assert ours.variant_key == "llvm-float32" and ours.float == np.float32
    ref = rounded_pipeline(example["diffusers"])

    ids = ours.token_ids(PROMPT)
    with torch.no_grad():
        hidden = ref.text_encoder(torch.from_numpy(ids.astype(np.int64))).last_hidden_state.numpy()
    got = ours.encode_prompt(PROMPT)
    assert got.dtype == np.float32 and np.abs(got - hidden).max() <= 1e-4 * max(
        1.0, np.abs(hidden).max()
    )

    ref.scheduler = schedulers.make("dpm++", dict(ref.scheduler.config))
    with schedulers.spec_step_noise(ref.scheduler, 11):
        want = ref(
            PROMPT,
            negative_prompt=NEGATIVE,
            num_inference_steps=6,
            guidance_scale=7.5,
            height=64,
            width=64,
            latents=torch.from_numpy(noise.latents(11, (1, 4, 8, 8))),
            output_type="np",
        ).images[0]
    image = ours(Request(PROMPT, NEGATIVE, seed=11, steps=6, guidance=7.5, scheduler="dpm++"))
    assert want.std() > 0.05, "reference image is flat: the test would prove nothing"
    assert psnr(image, want) >= 60, f"PSNR {psnr(image, want):.1f} dB"


def test_webgpu_without_emscripten_is_one_line_before_any_build(example, tmp_path, monkeypatch):
    from packer.errors import CompileError
    from packer.interface.pack import PackArgs, pack

    monkeypatch.setenv("PATH", str(tmp_path))  # no emcc on it
    monkeypatch.setenv(
        "SDPACK_CACHE", str(tmp_path / "empty-cache")
    )  # no WebGPU library cached either
    out = tmp_path / "out"
    with pytest.raises(CompileError) as err:
        pack(
            PackArgs(
                str(example["safetensors"]), out, tokenizer=example["tokenizer"], image_size=64
            )
        )
    line = err.value.one_line()
    assert "emcc" in line and "--targets llvm" in line and "\n" not in line, line
    assert (
        not out.exists() and not (tmp_path / "empty-cache" / "compiled").exists()
    )  # nothing was built
