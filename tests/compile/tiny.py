"""Tiny SD1.5-architecture components built from configs, and how to run and compare them.

The models are small enough that every build runs in seconds on one core; they keep the shape
of the real ones (cross-attention UNet blocks, a two-block VAE decoder, a causal CLIP tower),
so each test exercises the same export and pass list as a full checkpoint.
"""

from __future__ import annotations

import numpy as np
import torch

torch.set_num_threads(1)  # the build machines are shared: one core for torch, one for TVM


def _perturb(module: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Seeded weights with every tensor nonzero (some inits zero biases or output convs)."""
    torch.manual_seed(seed)
    with torch.no_grad():
        for param in module.parameters():
            param.add_(torch.randn_like(param) * 0.05)
    return module.eval()


def tiny_clip(seed: int = 0):
    from transformers import CLIPTextConfig, CLIPTextModel

    config = CLIPTextConfig(
        hidden_size=32,
        intermediate_size=37,
        num_hidden_layers=2,
        num_attention_heads=4,
        vocab_size=691,
        max_position_embeddings=77,
        bos_token_id=0,
        eos_token_id=2,
        pad_token_id=1,
    )
    torch.manual_seed(seed)
    return _perturb(CLIPTextModel(config), seed)


def tiny_unet(seed: int = 0):
    from diffusers import UNet2DConditionModel

    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        block_out_channels=(32, 64),
        layers_per_block=1,
        sample_size=8,
        norm_num_groups=32,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=32,
        attention_head_dim=8,
        in_channels=4,
        out_channels=4,
    )
    return _perturb(unet, seed)


def tiny_vae(seed: int = 0):
    from diffusers import AutoencoderKL

    torch.manual_seed(seed)
    vae = AutoencoderKL(
        block_out_channels=(32, 64),
        latent_channels=4,
        norm_num_groups=32,
        down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2,
    )
    return _perturb(vae, seed)


MODULES = {"text_encoder": tiny_clip, "unet": tiny_unet, "vae_decoder": tiny_vae}
LATENT_HW = (8, 8)


def signature_configs(component: str, module) -> dict:
    """What ingest's ``signature_configs()`` gives for a component: its architecture config."""
    if component == "text_encoder":
        return module.config.to_diff_dict()
    return dict(module.config)


def example_inputs(component: str, seed: int = 0) -> list[np.ndarray]:
    """float32/int32 inputs in the calling convention's order."""
    rng = np.random.default_rng(seed)
    if component == "text_encoder":
        return [rng.integers(0, 691, size=(1, 77)).astype(np.int32)]
    if component == "unet":
        return [
            rng.standard_normal((2, 4, 8, 8)).astype(np.float32),
            np.array([999.0, 1.0], dtype=np.float32),
            rng.standard_normal((2, 77, 32)).astype(np.float32),
        ]
    return [rng.standard_normal((1, 4, 8, 8)).astype(np.float32)]


def torch_reference(component: str, module, inputs: list[np.ndarray]) -> np.ndarray:
    """The float32 torch output the compiled component must reproduce."""
    args = [torch.from_numpy(x) for x in inputs]
    with torch.no_grad():
        if component == "text_encoder":
            return module(input_ids=args[0].long()).last_hidden_state.numpy()
        if component == "unet":
            return module(args[0], args[1], encoder_hidden_states=args[2], return_dict=False)[
                0
            ].numpy()
        return module.decoder(module.post_quant_conv(args[0])).numpy()


def run_compiled(compiled, module, inputs: list[np.ndarray]) -> np.ndarray:
    """Run a library with ``module``'s weights looked up by the returned state-dict keys."""
    from packer.runtime.module import ComponentRunner

    state = module.state_dict()
    params = [state[key].numpy().astype(compiled.dtype) for key in compiled.params]
    cast = [x.astype(spec["dtype"]) for x, spec in zip(inputs, compiled.inputs)]
    return ComponentRunner(compiled.lib_path, params)(*cast)
