"""torch → Relax: param naming, what gets lifted, and no i64 at run time."""

from __future__ import annotations

import re

from packer.compile import get_target, pipeline
from packer.compile.export import export_component

from .tiny import LATENT_HW, tiny_clip, tiny_vae


def test_vae_decoder_lifts_only_decoder_weights_under_vae_names():
    vae = tiny_vae(0)
    exported = export_component("vae_decoder", vae, LATENT_HW)
    assert exported.param_source == "vae"
    assert exported.params[:2] == ["post_quant_conv.weight", "post_quant_conv.bias"]
    assert set(exported.params) <= set(vae.state_dict())
    assert all(k.startswith(("post_quant_conv.", "decoder.")) for k in exported.params)
    decoder_keys = {k for k in vae.state_dict() if k.startswith(("decoder.", "post_quant_conv."))}
    assert set(exported.params) == decoder_keys


def test_text_encoder_has_no_i64_after_folding_and_leaves_the_model_alone():
    clip = tiny_clip(0)
    clip.train()
    attn_before = clip.config._attn_implementation
    exported = export_component("text_encoder", clip, LATENT_HW)
    assert clip.training and clip.config._attn_implementation == attn_before
    assert exported.params[0] == "embeddings.token_embedding.weight"

    spec = get_target("llvm")
    mod = pipeline.prepare(exported.mod, "float32")
    with spec.tvm_target():
        for step in pipeline.lower_passes(spec)[:5]:  # through FoldConstant/FuseTIR
            mod = step(mod)
    main = mod["main"].script()
    assert 'input_ids: R.Tensor((1, 77), dtype="int32")' in main
    assert not re.findall(r'R\.Tensor\([^)]*\), dtype="int64"', main)
