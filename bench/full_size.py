"""Full-size SD1.5 components with random weights, built from bench/sd15.py's configs the way
packer builds a checkpoint's (``architecture.construct``): for the benches and tests that need the
real shapes, not trained values."""

from __future__ import annotations

import torch

from packer.ingest import architecture

from .sd15 import CLIP_L, UNET, VAE

CONFIGS = {"text_encoder": CLIP_L, "unet": UNET, "vae": VAE}


def full_size(component: str) -> torch.nn.Module:
    """``component`` ("text_encoder", "unet", "vae"; "vae_decoder", as the compiler names the
    decoder's library, is the VAE) with weights drawn from torch's global generator: seed it first
    for repeatable weights."""
    key = "vae" if component == "vae_decoder" else component
    return architecture.construct(key, CONFIGS[key], device="cpu")
