"""Config inference at SD1.5's real size, on the meta device (shapes only, no memory)."""

from __future__ import annotations

import torch
from diffusers.loaders import single_file_utils as sfu

from examples.make_example import learn_ldm_keys
from packer.ingest import architecture
from packer.ingest.single_file import check_keys, ldm_to_diffusers

SD15 = {
    "text_encoder": {
        "vocab_size": 49408, "hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12,
        "num_attention_heads": 12, "max_position_embeddings": 77, "hidden_act": "quick_gelu",
    },
    "unet": {
        "sample_size": 64, "block_out_channels": [320, 640, 1280, 1280], "layers_per_block": 2,
        "down_block_types": ["CrossAttnDownBlock2D"] * 3 + ["DownBlock2D"],
        "up_block_types": ["UpBlock2D"] + ["CrossAttnUpBlock2D"] * 3,
        "cross_attention_dim": 768, "attention_head_dim": 8,
    },
    "vae": {
        "sample_size": 512, "block_out_channels": [128, 256, 512, 512], "layers_per_block": 2, "latent_channels": 4,
        "down_block_types": ["DownEncoderBlock2D"] * 4, "up_block_types": ["UpDecoderBlock2D"] * 4,
    },
}  # fmt: skip


def test_sd15_configs_survive_the_ldm_round_trip_on_meta():
    state_dicts = {c: architecture.construct(c, cfg).state_dict() for c, cfg in SD15.items()}
    ldm = {}
    for component, keys in learn_ldm_keys(state_dicts, SD15).items():
        for key, ldm_key in keys.items():
            t = state_dicts[component][key]
            ldm[ldm_key] = t[:, :, None, None] if component == "vae" and t.ndim == 2 else t
    assert len(ldm) == sum(len(sd) for sd in state_dicts.values())
    assert sfu.infer_diffusers_model_type(ldm) == "v1"  # diffusers' own detector agrees
    assert sfu.CHECKPOINT_KEY_NAMES["v1"] in ldm and sfu.CHECKPOINT_KEY_NAMES["clip"] in ldm
    assert ldm["first_stage_model.decoder.mid.attn_1.q.weight"].shape == (512, 512, 1, 1)
    check_keys(list(ldm), "sd15")
    back = ldm_to_diffusers(ldm, "sd15")
    architecture.check_structure(back, "sd15")
    inferred = {
        "text_encoder": architecture.infer_text_encoder_config(back["text_encoder"]),
        "unet": architecture.infer_unet_config(back["unet"]),
        "vae": architecture.infer_vae_config(back["vae"]),
    }
    for component, given in SD15.items():
        full, ordered = architecture.complete(
            component, inferred[component], back[component], "sd15"
        )
        assert {k: full[k] for k in given} == given
        assert list(ordered) == list(state_dicts[component])
    sig = architecture.signature_configs(
        {c: architecture.complete(c, inferred[c], back[c], "x")[0] for c in SD15}
    )
    assert (
        sig["unet"]["attention_head_dim"] == [8, 8, 8, 8]
        and sig["text_encoder"]["num_attention_heads"] == 12
    )


def test_text_encoder_with_legacy_prefix_and_position_ids():
    sd = architecture.construct("text_encoder", SD15["text_encoder"]).state_dict()
    ldm = {f"cond_stage_model.transformer.text_model.{k}": v for k, v in sd.items()}
    ldm["cond_stage_model.transformer.text_model.embeddings.position_ids"] = torch.arange(77)[None]
    assert ldm_to_diffusers(ldm)["text_encoder"].keys() == sd.keys()
