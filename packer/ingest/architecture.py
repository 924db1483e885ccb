"""The SD1.x family: recognise it by structure, infer configs from tensor shapes, sign it.

Single-file checkpoints carry no configs, so every diffusers config field that shapes the model is
read from diffusers-layout tensor shapes. Two things shapes cannot say are fixed by rule:

* CLIP heads: ``hidden // 64`` when 64 divides ``hidden`` (ViT-L/14: 768 → 12); otherwise
  ``hidden // 8`` when 8 divides it (the tiny example: 32 → 4); otherwise one head.
* UNet heads (diffusers' ``attention_head_dim``, which counts heads): SD1.5's 8 when 8 divides
  every block width, else the largest smaller count that does.

Single files do not record their resolution either: ``sample_size`` comes from the safetensors
ModelSpec ``modelspec.resolution`` when present, else SD1.5's 512 px (64 latents).

The signature is the configs reduced to what changes compiled code, so two fine-tunes of one
architecture share compiled libraries: the CLIP shape fields and activation; every UNet config
field except ``dropout`` (per-block fields as lists, so ``8`` and ``[8, 8, 8, 8]`` sign alike;
``sample_size`` stays: compiled code is shape-specialised); every VAE field except runtime
constants (``scaling_factor``, ``shift_factor``, ``latents_mean/std``, ``force_upcast``,
``sample_size``).
"""

from __future__ import annotations

import json
import re

import torch

from packer.errors import CheckpointError

COMPONENTS = ("text_encoder", "unet", "vae")
SUPPORTED = (
    "sdpack packs SD1.x-architecture text-to-image models: pass SD 1.4/1.5 or a fine-tune of them"
)
VAE_SCALING_FACTOR = 0.18215
SD15_SAMPLE_SIZE = 64  # 512 px; single files do not record their resolution


def sd15_scheduler_config(prediction_type: str = "epsilon") -> dict:
    """SD1.5's training schedule as a diffusers PNDMScheduler config."""
    return {
        "_class_name": "PNDMScheduler",
        "num_train_timesteps": 1000,
        "beta_start": 0.00085,
        "beta_end": 0.012,
        "beta_schedule": "scaled_linear",
        "trained_betas": None,
        "steps_offset": 1,
        "set_alpha_to_one": False,
        "skip_prk_steps": True,
        "clip_sample": False,
        "timestep_spacing": "leading",
        "prediction_type": prediction_type,
    }


def clip_heads(hidden: int) -> int:
    for head_dim in (64, 8):
        if hidden % head_dim == 0:
            return hidden // head_dim
    return 1


def unet_heads(widths: list[int]) -> int:
    return max(h for h in range(1, 9) if all(w % h == 0 for w in widths))


def norm_groups(widths: list[int]) -> int:
    """SD's GroupNorm uses 32 groups; narrower test models use the largest count that divides."""
    return max(g for g in range(1, 33) if all(w % g == 0 for w in widths))


# -- structure -----------------------------------------------------------------------------------
def _fail(what: str, hint: str = SUPPORTED):
    raise CheckpointError(what, hint)


def check_structure(state_dicts: dict[str, dict[str, torch.Tensor]], name: str) -> None:
    """Reject what is not SD1.x text-to-image, by the shape of diffusers-layout weights."""
    missing = [c for c in COMPONENTS if not state_dicts.get(c)]
    if missing:
        _fail(
            f"{name}: no {', '.join(missing)} weights",
            "pass a full checkpoint (text encoder, UNet and VAE)",
        )
    unet, te = state_dicts["unet"], state_dicts["text_encoder"]
    if any(k.startswith("add_embedding.") for k in unet):
        _fail(f"{name}: SDXL checkpoints are not supported (the UNet has add_embedding)")
    if any(k.startswith("class_embedding.") for k in unet):
        _fail(f"{name}: class-conditioned UNets (upscaler/unCLIP) are not supported")
    proj_in = [v for k, v in unet.items() if k.endswith(".proj_in.weight")]
    if any(v.ndim == 2 for v in proj_in):
        _fail(f"{name}: Stable Diffusion 2.x checkpoints are not supported (linear proj_in)")
    for key in ("conv_in.weight", "conv_out.weight", "time_embedding.linear_1.weight"):
        if key not in unet:
            _fail(f"{name}: the UNet has no {key}", "is this an SD1.x checkpoint?")
    in_channels = unet["conv_in.weight"].shape[1]
    if in_channels == 9:
        _fail(
            f"{name}: inpainting checkpoints (9-channel UNet) are not supported yet",
            "use a text-to-image checkpoint",
        )
    if in_channels != 4:
        _fail(f"{name}: the UNet takes {in_channels} input channels; SD1.x text-to-image takes 4")
    if "embeddings.token_embedding.weight" not in te:
        _fail(f"{name}: the text encoder is not a CLIP text model", SUPPORTED)
    hidden = te["embeddings.token_embedding.weight"].shape[1]
    context = [v.shape[1] for k, v in unet.items() if k.endswith("attn2.to_k.weight")]
    if not context:
        _fail(f"{name}: the UNet has no cross-attention", SUPPORTED)
    if set(context) != {hidden}:
        _fail(
            f"{name}: UNet cross-attention width {context[0]} != text encoder width {hidden}",
            SUPPORTED,
        )


# -- configs from shapes -------------------------------------------------------------------------
def _indices(sd: dict, pattern: str) -> list[int]:
    """Sorted distinct integers captured by ``pattern`` (a regex with one group) over the keys."""
    rx = re.compile(pattern)
    return sorted({int(m.group(1)) for k in sd if (m := rx.match(k))})


def infer_text_encoder_config(sd: dict[str, torch.Tensor]) -> dict:
    vocab, hidden = sd["embeddings.token_embedding.weight"].shape
    return {
        "vocab_size": vocab,
        "hidden_size": hidden,
        "intermediate_size": sd["encoder.layers.0.mlp.fc1.weight"].shape[0],
        "num_hidden_layers": len(_indices(sd, r"encoder\.layers\.(\d+)\.")),
        "num_attention_heads": clip_heads(hidden),
        "max_position_embeddings": sd["embeddings.position_embedding.weight"].shape[0],
        "hidden_act": "quick_gelu",
        "layer_norm_eps": 1e-5,
        "projection_dim": hidden,
        "bos_token_id": vocab - 2,  # CLIP's <|startoftext|>, <|endoftext|> close the vocabulary
        "eos_token_id": vocab - 1,
        "pad_token_id": vocab - 1,
    }


def _block_types(sd: dict, prefix: str, attn: str, plain: str) -> list[str]:
    levels = _indices(sd, rf"{prefix}\.(\d+)\.")
    return [
        attn if any(k.startswith(f"{prefix}.{i}.attentions.") for k in sd) else plain
        for i in levels
    ]


def infer_unet_config(sd: dict[str, torch.Tensor], sample_size: int = SD15_SAMPLE_SIZE) -> dict:
    down = _block_types(sd, "down_blocks", "CrossAttnDownBlock2D", "DownBlock2D")
    widths = [sd[f"down_blocks.{i}.resnets.0.conv2.weight"].shape[0] for i in range(len(down))]
    attn_widths = [w for w, t in zip(widths, down) if t.startswith("CrossAttn")]
    attn_widths += widths[-1:] if any(k.startswith("mid_block.attentions.") for k in sd) else []
    depth = len(_indices(sd, r"down_blocks\.\d+\.attentions\.0\.transformer_blocks\.(\d+)\."))
    time_dim = sd["time_embedding.linear_1.weight"].shape[0]
    return {
        "sample_size": sample_size,
        "in_channels": sd["conv_in.weight"].shape[1],
        "out_channels": sd["conv_out.weight"].shape[0],
        "down_block_types": down,
        "up_block_types": _block_types(sd, "up_blocks", "CrossAttnUpBlock2D", "UpBlock2D"),
        "mid_block_type": "UNetMidBlock2DCrossAttn"
        if any(k.startswith("mid_block.attentions.") for k in sd)
        else None,
        "block_out_channels": widths,
        "layers_per_block": len(_indices(sd, r"down_blocks\.0\.resnets\.(\d+)\.")),
        "cross_attention_dim": next(
            v.shape[1] for k, v in sd.items() if k.endswith("attn2.to_k.weight")
        ),
        "attention_head_dim": unet_heads(attn_widths or widths),
        "transformer_layers_per_block": max(depth, 1),
        "norm_num_groups": norm_groups(widths),
        "use_linear_projection": False,
        "time_embedding_dim": None if time_dim == 4 * widths[0] else time_dim,
    }


def infer_vae_config(sd: dict[str, torch.Tensor], sample_size: int = SD15_SAMPLE_SIZE) -> dict:
    """``sample_size`` is the UNet's (latent) size; the VAE's is that times its downsampling."""
    levels = _indices(sd, r"encoder\.down_blocks\.(\d+)\.")
    widths = [sd[f"encoder.down_blocks.{i}.resnets.0.conv2.weight"].shape[0] for i in levels]
    return {
        "sample_size": sample_size * 2 ** (len(levels) - 1),
        "in_channels": sd["encoder.conv_in.weight"].shape[1],
        "out_channels": sd["decoder.conv_out.weight"].shape[0],
        "down_block_types": ["DownEncoderBlock2D"] * len(levels),
        "up_block_types": ["UpDecoderBlock2D"] * len(levels),
        "block_out_channels": widths,
        "layers_per_block": len(_indices(sd, r"encoder\.down_blocks\.0\.resnets\.(\d+)\.")),
        "latent_channels": sd["decoder.conv_in.weight"].shape[1],
        "norm_num_groups": norm_groups(widths),
        "scaling_factor": VAE_SCALING_FACTOR,
        "use_quant_conv": "quant_conv.weight" in sd,
        "use_post_quant_conv": "post_quant_conv.weight" in sd,
        "mid_block_add_attention": any(k.startswith("encoder.mid_block.attentions.") for k in sd),
    }


# -- models --------------------------------------------------------------------------------------
def model_class(component: str):
    if component == "text_encoder":
        from transformers import CLIPTextModel

        return CLIPTextModel
    import diffusers

    return {"unet": diffusers.UNet2DConditionModel, "vae": diffusers.AutoencoderKL}[component]


def construct(component: str, config: dict, device: str = "meta") -> torch.nn.Module:
    """An uninitialised model of ``component`` (on the meta device unless asked otherwise)."""
    cls = model_class(component)
    with torch.device(device):
        if component == "text_encoder":
            from transformers import CLIPTextConfig

            return cls(CLIPTextConfig(**config))
        return cls.from_config(config)


_VOLATILE = {"transformers_version", "architectures", "dtype", "torch_dtype", "model_type", "output_attentions",
             "output_hidden_states", "return_dict", "use_return_dict"}  # fmt: skip


def complete(
    component: str, config: dict, state_dict: dict[str, torch.Tensor], name: str
) -> tuple[dict, dict]:
    """The full config (library defaults filled in) and ``state_dict`` in the model's key order,
    after checking that every tensor fits the model that config builds."""
    try:
        model = construct(component, dict(config))
    except Exception as exc:
        raise CheckpointError(f"{name}: invalid {component} config ({exc})", SUPPORTED) from None
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    got = {k: tuple(v.shape) for k, v in state_dict.items()}
    missing, extra = sorted(expected.keys() - got.keys()), sorted(got.keys() - expected.keys())
    wrong = sorted(k for k in expected.keys() & got.keys() if expected[k] != got[k])
    if missing or extra or wrong:
        detail = "; ".join(
            f"{label} {len(keys)} (e.g. {keys[0]})"
            for label, keys in (("missing", missing), ("unexpected", extra), ("misshapen", wrong))
            if keys
        )
        raise CheckpointError(
            f"{name}: {component} weights do not fit an SD1.x {component}: {detail}", SUPPORTED
        )
    full = model.config.to_dict() if component == "text_encoder" else dict(model.config)
    full = {k: v for k, v in full.items() if not k.startswith("_") and k not in _VOLATILE}
    return json.loads(json.dumps(full)), {k: state_dict[k] for k in expected}


# -- signature -----------------------------------------------------------------------------------
TEXT_ENCODER_FIELDS = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                       "num_attention_heads", "max_position_embeddings", "hidden_act", "layer_norm_eps")  # fmt: skip
UNET_PER_BLOCK = ("attention_head_dim", "num_attention_heads", "transformer_layers_per_block",
                  "only_cross_attention", "cross_attention_dim")  # fmt: skip
RUNTIME_ONLY = {
    "unet": {"dropout"},
    "vae": {
        "sample_size",
        "scaling_factor",
        "shift_factor",
        "latents_mean",
        "latents_std",
        "force_upcast",
    },
}


def signature_configs(configs: dict[str, dict]) -> dict:
    """What determines compiled code: structural fields only, per-block fields as lists."""
    te = {k: configs["text_encoder"][k] for k in TEXT_ENCODER_FIELDS}
    unet = {k: v for k, v in configs["unet"].items() if k not in RUNTIME_ONLY["unet"]}
    blocks = len(unet["down_block_types"])
    for key in UNET_PER_BLOCK:
        if unet.get(key) is not None and not isinstance(unet[key], list):
            unet[key] = [unet[key]] * blocks
    vae = {k: v for k, v in configs["vae"].items() if k not in RUNTIME_ONLY["vae"]}
    return json.loads(json.dumps({"text_encoder": te, "unet": unet, "vae": vae}, sort_keys=True))
