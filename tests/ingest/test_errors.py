"""Every way a checkpoint can be wrong ends in one CheckpointError: what is wrong, what to do."""

from __future__ import annotations

import json
import os
import shutil
import struct

import pytest
import torch

from packer.errors import CheckpointError, UsageError
from packer.ingest import ingest

from .conftest import forge_safetensors

UNET = "model.diffusion_model."
CLIP = "cond_stage_model.transformer."


def expect(match: str, source, **kwargs) -> CheckpointError:
    with pytest.raises(CheckpointError, match=match) as err:
        ingest(source, **kwargs)
    assert err.value.hint and "\n" not in err.value.one_line()
    return err.value


# -- not SD1.x -----------------------------------------------------------------------------------
def test_sd2_openclip_text_encoder(ldm, write_ldm, example):
    sd2 = {
        k.replace(CLIP, "cond_stage_model.model.") if k.startswith(CLIP) else k: v
        for k, v in ldm.items()
    }
    expect(r"Stable Diffusion 2\.x .*OpenCLIP", write_ldm(sd2), tokenizer=example["tokenizer"])


def test_sd2_linear_proj_in(ldm, write_ldm, example):
    linear = {
        k: v[:, :, 0, 0]
        if k.endswith((".proj_in.weight", ".proj_out.weight")) and k.startswith(UNET)
        else v
        for k, v in ldm.items()
    }
    expect(
        r"Stable Diffusion 2\.x .*linear proj_in", write_ldm(linear), tokenizer=example["tokenizer"]
    )


@pytest.mark.parametrize(
    "extra", ["conditioner.embedders.1.model.positional_embedding", UNET + "label_emb.0.0.weight"]
)
def test_sdxl(ldm, write_ldm, example, extra):
    ldm[extra] = torch.zeros(4, 4)
    expect("SDXL", write_ldm(ldm), tokenizer=example["tokenizer"])


def test_inpainting(ldm, write_ldm, example):
    w = ldm[UNET + "input_blocks.0.0.weight"]
    ldm[UNET + "input_blocks.0.0.weight"] = torch.cat([w, w, w[:, :1]], dim=1)
    assert ldm[UNET + "input_blocks.0.0.weight"].shape[1] == 9
    expect(
        r"inpainting checkpoints \(9-channel UNet\) are not supported yet",
        write_ldm(ldm),
        tokenizer=example["tokenizer"],
    )


def test_sdxl_diffusers_folder(example, tmp_path):
    folder = shutil.copytree(example["diffusers"], tmp_path / "xl")
    index = json.loads((folder / "model_index.json").read_text())
    index.update(
        _class_name="StableDiffusionXLPipeline",
        text_encoder_2=["transformers", "CLIPTextModelWithProjection"],
    )
    (folder / "model_index.json").write_text(json.dumps(index))
    expect("SDXL", folder)


# -- missing components --------------------------------------------------------------------------
def test_vae_only(ldm, write_ldm):
    vae = {
        k.removeprefix("first_stage_model."): v
        for k, v in ldm.items()
        if k.startswith("first_stage_model.")
    }
    expect("VAE-only", write_ldm(vae))


def test_lora_only(write_ldm):
    lora = {
        "lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight": torch.zeros(4, 32),
        "lora_unet_down_blocks_0_attentions_0_proj_in.lora_up.weight": torch.zeros(32, 4),
        "lora_unet_down_blocks_0_attentions_0_proj_in.alpha": torch.tensor(4.0),
    }
    expect("LoRA", write_ldm(lora))


def test_missing_text_encoder(ldm, write_ldm):
    expect(
        "missing components: CLIP text encoder",
        write_ldm({k: v for k, v in ldm.items() if not k.startswith(CLIP)}),
    )


@pytest.mark.parametrize("component", ["unet", "vae", "text_encoder", "tokenizer"])
def test_diffusers_folder_missing_component(example, tmp_path, component):
    folder = shutil.copytree(example["diffusers"], tmp_path / "partial")
    shutil.rmtree(folder / component)
    expect(f"no {component}/", folder)


def test_weights_that_do_not_fit(ldm, write_ldm, example):
    del ldm[UNET + "out.2.bias"]
    expect(
        "unet weights do not fit.*missing 1 .*conv_out.bias",
        write_ldm(ldm),
        tokenizer=example["tokenizer"],
    )


# -- forged or truncated safetensors ---------------------------------------------------------------
def test_truncated_file(example, tmp_path):
    data = example["safetensors"].read_bytes()
    path = tmp_path / "cut.safetensors"
    path.write_bytes(data[: len(data) // 2])
    expect("invalid safetensors header", path)


def test_header_length_past_eof(example, tmp_path):
    data = example["safetensors"].read_bytes()
    path = tmp_path / "long.safetensors"
    path.write_bytes(struct.pack("<Q", len(data)) + data[8:])
    expect("header length .* exceeds", path)


def test_tiny_file(tmp_path):
    path = tmp_path / "tiny.safetensors"
    path.write_bytes(b"\x01\x02")
    expect("too short", path)


F32_16 = {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}


@pytest.mark.parametrize(
    "header, data, match",
    [
        ({"a": dict(F32_16, dtype="F33")}, 16, "unknown dtype"),
        ({"a": dict(F32_16, dtype="F64")}, 16, "needs 32 bytes"),
        ({"a": dict(F32_16, shape=[5])}, 16, "needs 20 bytes"),
        ({"a": dict(F32_16, shape=[-4])}, 16, "bad shape"),
        ({"a": dict(F32_16, data_offsets=[16, 32])}, 16, "outside"),
        ({"a": dict(F32_16, data_offsets=[8, 24])}, 16, "outside"),
        ({"a": F32_16, "b": F32_16}, 32, "overlap"),
        ({"a": F32_16, "b": dict(F32_16, data_offsets=[8, 24])}, 24, "overlap"),
        ({"a": F32_16}, 24, "cover 16 of 24"),
        ({"a": dict(F32_16, data_offsets=[8, 24])}, 24, "gap"),
        ({"a": dict(F32_16, extra=1)}, 16, "malformed"),
        ({"__metadata__": {"x": 1}, "a": F32_16}, 16, "__metadata__"),
        ([1, 2], 0, "not a JSON object"),
    ],
)
def test_forged_header(tmp_path, header, data, match):
    expect(match, forge_safetensors(tmp_path / "forged.safetensors", header, b"\0" * data))


def test_header_not_json(tmp_path):
    path = tmp_path / "junk.safetensors"
    path.write_bytes(struct.pack("<Q", 5) + b"{nope" + b"\0" * 8)
    expect("invalid safetensors header", path)


def test_duplicate_header_keys(tmp_path):
    text = b'{"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]},"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}}'
    path = tmp_path / "dup.safetensors"
    path.write_bytes(struct.pack("<Q", len(text)) + text + b"\0" * 16)
    expect("duplicate", path)


# -- pickles ---------------------------------------------------------------------------------------
class Exploit:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_malicious_pickle_does_not_run(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {"x": torch.zeros(1), "y": Exploit(marker)}}, path)
    err = expect("not a plain-tensor PyTorch checkpoint", path)
    assert "system" in err.message
    assert not marker.exists()


def test_pickle_of_the_wrong_thing(tmp_path):
    path = tmp_path / "list.pt"
    torch.save([torch.zeros(1)], path)
    expect("not a state dict", path)


def test_bare_dict_ckpt_is_accepted(ldm, example, ingested, tmp_path):
    path = tmp_path / "bare.pth"
    torch.save(ldm, path)
    ckpt = ingest(path, tokenizer=example["tokenizer"])
    assert all(
        torch.equal(ckpt.state_dicts["unet"][k], v)
        for k, v in ingested["ckpt"].state_dicts["unet"].items()
    )


def test_garbage_ckpt(tmp_path):
    path = tmp_path / "garbage.ckpt"
    path.write_bytes(b"not a zip or a pickle")
    expect("not a plain-tensor PyTorch checkpoint", path)


# -- what is not a checkpoint at all -----------------------------------------------------------------
def test_unknown_extension(tmp_path):
    path = tmp_path / "model.onnx"
    path.write_bytes(b"\0" * 16)
    expect("unknown file type '.onnx'", path)


def test_folder_without_model_index(tmp_path):
    expect("unknown file type", tmp_path)


@pytest.mark.parametrize("name", ["missing.safetensors", "sub/missing.ckpt"])
def test_nonexistent_path(tmp_path, name):
    expect("no such file or folder", str(tmp_path / name))
    expect("no such file or folder", name)


def test_bad_prediction_type_argument(example):
    with pytest.raises(UsageError):
        ingest(example["diffusers"], prediction_type="sample")


def test_tokenizer_larger_than_vocabulary(ldm, write_ldm, example):
    ldm[CLIP + "text_model.embeddings.token_embedding.weight"] = ldm[
        CLIP + "text_model.embeddings.token_embedding.weight"
    ][:600]
    expect("tokenizer has 691 tokens", write_ldm(ldm), tokenizer=example["tokenizer"])


# -- suspicious but accepted ---------------------------------------------------------------------------
def test_nan_weights_warn(ldm, write_ldm, example):
    ldm[UNET + "out.2.bias"][0] = float("nan")
    ldm[CLIP + "text_model.final_layer_norm.weight"][1] = float("inf")
    with pytest.warns(RuntimeWarning, match=r"2 weight tensor\(s\) contain NaN or Inf"):
        ckpt = ingest(write_ldm(ldm), tokenizer=example["tokenizer"])
    assert torch.isnan(ckpt.state_dicts["unet"]["conv_out.bias"][0])


def test_fp16_checkpoint_stays_fp16_and_builds_fp32_modules(ldm, write_ldm, example):
    """Weights keep the checkpoint's float16 through ingest (a pack never holds a float32 copy of
    the whole model); the modules a compile builds are float32 with the same values."""
    ckpt = ingest(write_ldm({k: v.half() for k, v in ldm.items()}), tokenizer=example["tokenizer"])
    assert all(t.dtype == torch.float16 for sd in ckpt.state_dicts.values() for t in sd.values())
    unet = ckpt.unet()
    assert all(p.dtype == torch.float32 for p in unet.parameters())
    key = "conv_in.weight"
    assert torch.equal(unet.state_dict()[key], ckpt.state_dicts["unet"][key].float())


def test_bf16_checkpoint_becomes_fp32(ldm, write_ldm, example):
    ckpt = ingest(
        write_ldm({k: v.bfloat16() for k, v in ldm.items()}), tokenizer=example["tokenizer"]
    )
    assert all(t.dtype == torch.float32 for sd in ckpt.state_dicts.values() for t in sd.values())
