"""The packed pipeline is the source model: images vs diffusers.StableDiffusionPipeline.

Same weights (the example's diffusers folder), same initial latents (the spec's seeded noise),
same scheduler class and config, same prompt and guidance. PSNR thresholds: ≥ 60 dB in fp32,
≥ 35 dB in fp16.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from packer.bundle import Bundle
from packer.runtime import noise, schedulers
from packer.runtime.generate import Pipeline, Request

PROMPT = "a photo of an astronaut riding a horse on the moon"
NEGATIVE = "blurry, low quality"


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(1.0 / mse)


def diffusers_image(folder, scheduler: str, seed: int, steps: int, guidance: float) -> np.ndarray:
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(
        str(folder), safety_checker=None, requires_safety_checker=False
    )
    pipe.set_progress_bar_config(disable=True)
    pipe.scheduler = schedulers.make(scheduler, dict(pipe.scheduler.config))
    latents = torch.from_numpy(noise.latents(seed, (1, 4, 8, 8)))
    with schedulers.spec_step_noise(pipe.scheduler, seed):
        out = pipe(
            PROMPT,
            negative_prompt=NEGATIVE,
            num_inference_steps=steps,
            guidance_scale=guidance,
            latents=latents,
            output_type="np",
            height=64,
            width=64,
        )
    return out.images[0]


@pytest.fixture(scope="module")
def fp32_pipeline(packed):
    return Pipeline(Bundle.open(packed("safetensors", "fp32")))


@pytest.mark.parametrize("scheduler", schedulers.NAMES)
def test_fp32_image_matches_diffusers(example, fp32_pipeline, scheduler):
    ours = fp32_pipeline(
        Request(PROMPT, NEGATIVE, seed=42, steps=8, guidance=7.5, scheduler=scheduler)
    )
    ref = diffusers_image(example["diffusers"], scheduler, seed=42, steps=8, guidance=7.5)
    assert ours.shape == ref.shape == (64, 64, 3)
    assert ref.std() > 0.05, "reference image is flat: the test would prove nothing"
    assert psnr(ours, ref) >= 60, f"{scheduler}: PSNR {psnr(ours, ref):.1f} dB"


def test_fp16_image_matches_diffusers(example, packed):
    pipe = Pipeline(Bundle.open(packed("safetensors", "fp16")))
    ours = pipe(Request(PROMPT, NEGATIVE, seed=7, steps=8, guidance=7.5, scheduler="dpm++"))
    ref = diffusers_image(example["diffusers"], "dpm++", seed=7, steps=8, guidance=7.5)
    assert psnr(ours, ref) >= 35, f"PSNR {psnr(ours, ref):.1f} dB"


def test_all_input_layouts_give_the_same_image(packed):
    images = []
    for layout in ("safetensors", "ckpt", "diffusers"):
        pipe = Pipeline(Bundle.open(packed(layout, "fp32")))
        images.append(pipe(Request(PROMPT, seed=3, steps=4, guidance=5.0, scheduler="euler")))
    np.testing.assert_array_equal(images[0], images[1])
    np.testing.assert_array_equal(images[0], images[2])


def test_seed_changes_image_and_latents_override(fp32_pipeline):
    a = fp32_pipeline(Request(PROMPT, seed=1, steps=2))
    b = fp32_pipeline(Request(PROMPT, seed=2, steps=2))
    c = fp32_pipeline(Request(PROMPT, steps=2, latents=noise.latents(1, (1, 4, 8, 8))))
    assert psnr(a, b) < 40
    np.testing.assert_array_equal(a, c)


def test_text_encoder_matches_torch(example, fp32_pipeline):
    from transformers import CLIPTextModel, CLIPTokenizer

    tok = CLIPTokenizer.from_pretrained(str(example["diffusers"] / "tokenizer"))
    model = CLIPTextModel.from_pretrained(str(example["diffusers"] / "text_encoder")).eval()
    for text in ["", PROMPT, "word " * 100]:
        ids = tok(
            text, padding="max_length", max_length=77, truncation=True, return_tensors="np"
        ).input_ids
        np.testing.assert_array_equal(fp32_pipeline.token_ids(text), ids.astype(np.int32))
        with torch.no_grad():
            ref = model(torch.from_numpy(ids)).last_hidden_state.numpy()
        got = fp32_pipeline.encode_prompt(text)
        assert np.abs(got - ref).max() <= 1e-4 * max(1.0, np.abs(ref).max())
