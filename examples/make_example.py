"""The embedded example: a tiny SD1.5-architecture model in all three input layouts.

``make_example(out)`` writes, from fixed-seed random weights and the tiny tokenizer:

* ``diffusers/``        a ``StableDiffusionPipeline.save_pretrained`` folder;
* ``tiny-sd15.safetensors`` the same weights as an LDM single file (ModelSpec metadata records
  its 64×64 resolution);
* ``tiny-sd15.ckpt``    the same LDM state dict as ``{"state_dict": ...}`` (no resolution: read as 512 px);
* ``tokenizer/``        the tiny CLIP-style tokenizer (``examples/tiny_tokenizer.py``).

The LDM files are not written from a key table: an LDM key *template* (the CompVis module layout)
is run through ingest's converter — diffusers' own functions — on probe tensors, which learns the
LDM → diffusers mapping; its inverse writes the file, and the forward conversion is re-run to
prove every tensor comes back bit-identical.

    python -m examples.make_example OUT
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import torch

from examples import tiny_tokenizer
from packer.ingest import architecture
from packer.ingest.single_file import CLIP, UNET, ldm_to_diffusers

VAE = "first_stage_model."
SAMPLE_SIZE = 8  # 8×8 latents, 64×64 px
TEXT_ENCODER = {
    "vocab_size": 691, "hidden_size": 32, "intermediate_size": 128, "num_hidden_layers": 2,
    "num_attention_heads": architecture.clip_heads(32), "max_position_embeddings": 77,
    "hidden_act": "quick_gelu", "layer_norm_eps": 1e-5, "projection_dim": 32,
    "bos_token_id": 689, "eos_token_id": 690, "pad_token_id": 690,
}  # fmt: skip
UNET_CONFIG = {
    "sample_size": SAMPLE_SIZE, "in_channels": 4, "out_channels": 4, "block_out_channels": [32, 64],
    "layers_per_block": 1, "down_block_types": ["CrossAttnDownBlock2D", "DownBlock2D"],
    "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D"], "cross_attention_dim": 32,
    "attention_head_dim": architecture.unet_heads([32, 64]), "norm_num_groups": 32,
    "use_linear_projection": False,
}  # fmt: skip
VAE_CONFIG = {  # four levels: SD's 8× downsampling, so 8×8 latents decode to 64×64 px
    "sample_size": SAMPLE_SIZE * 8, "in_channels": 3, "out_channels": 3, "latent_channels": 4,
    "block_out_channels": [32, 32, 64, 64], "layers_per_block": 1, "norm_num_groups": 32,
    "down_block_types": ["DownEncoderBlock2D"] * 4, "up_block_types": ["UpDecoderBlock2D"] * 4,
    "scaling_factor": architecture.VAE_SCALING_FACTOR,
}  # fmt: skip
MODELSPEC = {
    "modelspec.sai_model_spec": "1.0.0",
    "modelspec.architecture": "stable-diffusion-v1",
    "modelspec.title": "sdpack tiny example",
    "modelspec.resolution": f"{SAMPLE_SIZE * 8}x{SAMPLE_SIZE * 8}",
}


# -- weights -------------------------------------------------------------------------------------
@torch.no_grad()
def _randomise(model: torch.nn.Module, gen: torch.Generator) -> None:
    """Every tensor distinct and non-trivial: fan-in-scaled weights, norms near 1, small biases."""
    for name, p in model.named_parameters():
        noise = torch.randn(p.shape, generator=gen)
        if p.ndim >= 2:
            p.copy_(noise * p[0].numel() ** -0.5)
        elif "norm" in name and name.endswith("weight"):
            p.copy_(1 + 0.1 * noise)
        else:
            p.copy_(0.1 * noise)


def build_models(seed: int = 0) -> dict[str, torch.nn.Module]:
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    models = {
        "text_encoder": architecture.construct("text_encoder", TEXT_ENCODER, device="cpu"),
        "unet": architecture.construct("unet", UNET_CONFIG, device="cpu"),
        "vae": architecture.construct("vae", VAE_CONFIG, device="cpu"),
    }
    for model in models.values():
        _randomise(model, gen)
        model.eval()
    return models


# -- the LDM layout, learned through diffusers' converter ------------------------------------------
RESBLOCK = (
    "in_layers.0",
    "in_layers.2",
    "emb_layers.1",
    "out_layers.0",
    "out_layers.3",
    "skip_connection",
)
VAE_RESBLOCK = ("norm1", "conv1", "norm2", "conv2", "nin_shortcut")
VAE_ATTENTION = ("norm", "q", "k", "v", "proj_out")


def _params(modules: list[str]) -> list[str]:
    return [f"{m}.{p}" for m in modules for p in ("weight", "bias")]


def _unet_template(cfg: dict, attention: list[str]) -> list[str]:
    """CompVis openaimodel slots: input_blocks / middle_block / output_blocks."""
    keys = _params(["time_embed.0", "time_embed.2", "input_blocks.0.0", "out.0", "out.2"])
    res = lambda slot: _params([f"{slot}.{r}" for r in RESBLOCK])  # noqa: E731
    attn = lambda slot: [f"{slot}.{a}" for a in attention]  # noqa: E731
    n, per = len(cfg["down_block_types"]), cfg["layers_per_block"]
    idx = 1
    for i, kind in enumerate(cfg["down_block_types"]):
        for _ in range(per):
            keys += res(f"input_blocks.{idx}.0") + (
                attn(f"input_blocks.{idx}.1") if "CrossAttn" in kind else []
            )
            idx += 1
        if i < n - 1:
            keys += _params([f"input_blocks.{idx}.0.op"])
            idx += 1
    keys += res("middle_block.0") + attn("middle_block.1") + res("middle_block.2")
    idx = 0
    for i, kind in enumerate(cfg["up_block_types"]):
        for j in range(per + 1):
            cross = "CrossAttn" in kind
            keys += res(f"output_blocks.{idx}.0") + (
                attn(f"output_blocks.{idx}.1") if cross else []
            )
            if j == per and i < n - 1:
                keys += _params([f"output_blocks.{idx}.{2 if cross else 1}.conv"])
            idx += 1
    return [UNET + k for k in keys]


def _vae_template(cfg: dict) -> list[str]:
    """CompVis autoencoder slots: encoder.down / decoder.up (reversed) / mid.block_1, attn_1, block_2."""
    n, per = len(cfg["block_out_channels"]), cfg["layers_per_block"]
    modules = ["quant_conv", "post_quant_conv"]
    for part in ("encoder", "decoder"):
        modules += [f"{part}.conv_in", f"{part}.norm_out", f"{part}.conv_out"]
        modules += [f"{part}.mid.block_{b}.{r}" for b in (1, 2) for r in VAE_RESBLOCK]
        modules += [f"{part}.mid.attn_1.{a}" for a in VAE_ATTENTION]
    for i in range(n):
        modules += [f"encoder.down.{i}.block.{j}.{r}" for j in range(per) for r in VAE_RESBLOCK]
        modules += [f"decoder.up.{i}.block.{j}.{r}" for j in range(per + 1) for r in VAE_RESBLOCK]
        modules += [f"encoder.down.{i}.downsample.conv"] if i < n - 1 else []
        modules += [f"decoder.up.{i}.upsample.conv"] if i > 0 else []
    return [VAE + k for k in _params(modules)]


def learn_ldm_keys(
    state_dicts: dict[str, dict[str, torch.Tensor]], configs: dict[str, dict]
) -> dict[str, dict[str, str]]:
    """``{component: {diffusers key: LDM key}}``, learned by converting numbered probe tensors.

    Template keys that do not exist in this model (e.g. a shortcut conv where widths match)
    convert to diffusers keys the model lacks and are dropped; the result must cover every
    diffusers key exactly once.
    """
    attention = sorted(
        k.removeprefix("mid_block.attentions.0.")
        for k in state_dicts["unet"]
        if k.startswith("mid_block.attentions.0.")
    )
    template = (
        _unet_template(configs["unet"], attention)
        + _vae_template(configs["vae"])
        + [f"{CLIP}text_model.{k}" for k in state_dicts["text_encoder"]]
    )
    probes = {k: torch.tensor(float(i)) for i, k in enumerate(template)}
    inverse = {}
    for component, mapped in ldm_to_diffusers(probes).items():
        real = state_dicts[component]
        inverse[component] = {k: template[int(v)] for k, v in mapped.items() if k in real}
        if inverse[component].keys() != real.keys() or len(set(inverse[component].values())) != len(
            real
        ):
            missing = sorted(real.keys() - inverse[component].keys())
            raise RuntimeError(f"LDM template does not cover the {component}: {missing[:5]}")
    return inverse


def to_ldm(
    state_dicts: dict[str, dict[str, torch.Tensor]], configs: dict[str, dict]
) -> dict[str, torch.Tensor]:
    """The LDM single-file state dict; checked to convert back to ``state_dicts`` bit for bit."""
    ldm = {}
    for component, keys in learn_ldm_keys(state_dicts, configs).items():
        for key, ldm_key in keys.items():
            t = state_dicts[component][key]
            # LDM's VAE attention uses 1×1 convolutions where diffusers has linear layers.
            ldm[ldm_key] = (
                (t[:, :, None, None] if component == "vae" and t.ndim == 2 else t)
                .clone()
                .contiguous()
            )
    ldm = dict(sorted(ldm.items()))
    back = ldm_to_diffusers(ldm)
    for component, sd in state_dicts.items():
        if back[component].keys() != sd.keys() or not all(
            torch.equal(back[component][k], v) for k, v in sd.items()
        ):
            raise RuntimeError(f"LDM {component} does not convert back to the original weights")
    return ldm


# -- files ---------------------------------------------------------------------------------------
def _save_safetensors(
    tensors: dict[str, torch.Tensor], path: Path, metadata: dict[str, str]
) -> None:
    """``safetensors.torch.save`` with its header re-serialised in a fixed order.

    The library writes ``__metadata__`` in hash-map order, which changes between runs; the
    tensor data and offsets are untouched (offsets are relative to the end of the header).
    """
    import json
    import struct

    from safetensors.torch import save

    blob = save(tensors, metadata=metadata)
    (n,) = struct.unpack("<Q", blob[:8])
    header = json.loads(blob[8 : 8 + n])
    header["__metadata__"] = dict(sorted(header["__metadata__"].items()))
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    path.write_bytes(struct.pack("<Q", len(text)) + text + blob[8 + n :])


def _save_pipeline(models: dict, folder: Path, tokenizer_dir: Path) -> None:
    from diffusers import PNDMScheduler, StableDiffusionPipeline
    from transformers import CLIPTokenizer

    scheduler_config = {
        k: v for k, v in architecture.sd15_scheduler_config().items() if not k.startswith("_")
    }
    pipe = StableDiffusionPipeline(
        vae=models["vae"], text_encoder=models["text_encoder"], unet=models["unet"],
        tokenizer=CLIPTokenizer.from_pretrained(str(tokenizer_dir)), scheduler=PNDMScheduler.from_config(scheduler_config),
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )  # fmt: skip
    pipe.save_pretrained(str(folder), safe_serialization=True)
    shutil.rmtree(folder / "tokenizer")  # ship the tiny tokenizer's own files, byte for byte
    tiny_tokenizer.save(folder / "tokenizer")


def make_example(out: Path, seed: int = 0) -> dict[str, Path]:
    """Write the example in every layout under ``out``; same seed → byte-identical files."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = {
        "diffusers": out / "diffusers",
        "safetensors": out / "tiny-sd15.safetensors",
        "ckpt": out / "tiny-sd15.ckpt",
        "tokenizer": out / "tokenizer",
    }
    for p in (paths["diffusers"], paths["tokenizer"]):
        shutil.rmtree(p, ignore_errors=True)
    tiny_tokenizer.save(paths["tokenizer"])
    models = build_models(seed)
    _save_pipeline(models, paths["diffusers"], paths["tokenizer"])
    state_dicts = {c: m.state_dict() for c, m in models.items()}
    ldm = to_ldm(state_dicts, {"unet": UNET_CONFIG, "vae": VAE_CONFIG})
    _save_safetensors(ldm, paths["safetensors"], MODELSPEC)
    torch.save({"state_dict": ldm}, paths["ckpt"])
    return paths


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python -m examples.make_example OUT")
    for kind, path in make_example(Path(sys.argv[1])).items():
        sys.stdout.write(f"{kind}: {path}\n")
