"""The example in all three layouts ingests to the same weights, configs and signature."""

from __future__ import annotations

import hashlib
import json
import shutil

import pytest
import torch

from examples import make_example as mk
from packer.ingest import architecture, ingest
from packer.support import canonical

COMPONENTS = ("text_encoder", "unet", "vae")


@pytest.fixture(scope="module")
def originals():
    return {c: m.state_dict() for c, m in mk.build_models(seed=0).items()}


@pytest.mark.parametrize("layout", ["diffusers", "safetensors", "ckpt"])
def test_layout_gives_the_original_weights_bitwise(ingested, originals, layout):
    ckpt = ingested[layout]
    for component in COMPONENTS:
        got, want = ckpt.state_dicts[component], originals[component]
        assert list(got) == list(want)
        for key, tensor in want.items():
            assert got[key].dtype == torch.float32
            assert torch.equal(got[key], tensor), f"{layout} {component} {key}"


def test_inferred_configs_round_trip(ingested):
    folder, single, ckpt = (ingested[k].configs for k in ("diffusers", "safetensors", "ckpt"))
    assert single == folder  # ModelSpec resolution carries sample_size in the .safetensors
    for component, size in (("unet", 64), ("vae", 512)):  # .ckpt has no resolution: SD1.5's 512 px
        assert ckpt[component].pop("sample_size") == size
        assert ckpt[component] == {k: v for k, v in folder[component].items() if k != "sample_size"}
    assert ckpt["text_encoder"] == folder["text_encoder"]
    for component, given in (
        ("text_encoder", mk.TEXT_ENCODER),
        ("unet", mk.UNET_CONFIG),
        ("vae", mk.VAE_CONFIG),
    ):
        assert {k: folder[component][k] for k in given} == json.loads(json.dumps(given))


def test_signature_is_canonical_and_shared(ingested):
    sig = ingested["diffusers"].signature_configs()
    assert sig == ingested["safetensors"].signature_configs()
    assert json.loads(canonical.dumps(sig)) == sig
    assert set(sig) == set(COMPONENTS)
    assert (
        sig["unet"]["attention_head_dim"] == [8, 8]
        and sig["text_encoder"]["num_attention_heads"] == 4
    )
    assert "scaling_factor" not in sig["vae"] and "dropout" not in sig["unet"]
    other = dict(
        ingested["diffusers"].configs,
        vae=dict(ingested["diffusers"].configs["vae"], scaling_factor=0.13),
    )
    assert architecture.signature_configs(other) == sig  # a runtime constant does not change code


def test_head_rules():
    assert (
        architecture.clip_heads(768) == 12
        and architecture.clip_heads(32) == 4
        and architecture.clip_heads(31) == 1
    )
    assert architecture.unet_heads([320, 640, 1280]) == 8 and architecture.unet_heads([36, 60]) == 6


def test_sources(ingested, example):
    assert ingested["safetensors"].source == {
        "name": "tiny-sd15.safetensors", "format": "ldm-safetensors",
        "sha256": canonical.sha256_file(example["safetensors"]),
    }  # fmt: skip
    assert ingested["ckpt"].source["format"] == "ldm-ckpt"
    root = example["diffusers"]
    files = sorted(p for p in root.rglob("*.safetensors"))
    lines = sorted(f"{p.relative_to(root).as_posix()} {canonical.sha256_file(p)}\n" for p in files)
    assert ingested["diffusers"].source == {
        "name": "diffusers", "format": "diffusers", "sha256": hashlib.sha256("".join(lines).encode()).hexdigest()
    }  # fmt: skip


def test_tokenizer_and_scheduler(ingested, example):
    assert ingested["diffusers"].tokenizer_dir == example["diffusers"] / "tokenizer"
    assert (ingested["safetensors"].tokenizer_dir / "tokenizer.json").is_file()
    for ckpt in ingested.values():
        assert ckpt.prediction_type == "epsilon" == ckpt.scheduler_config["prediction_type"]
        assert ckpt.scheduler_config["beta_schedule"] == "scaled_linear"
        assert (
            ckpt.scheduler_config["steps_offset"] == 1
            and ckpt.scheduler_config["num_train_timesteps"] == 1000
        )
    assert ingested["ckpt"].scheduler_config == architecture.sd15_scheduler_config()


def test_models_run_and_images_are_not_flat(ingested):
    ckpt = ingested["safetensors"]
    with torch.no_grad():
        ids = torch.randint(0, 691, (1, 77), generator=torch.Generator().manual_seed(0))
        text = ckpt.text_encoder()(ids).last_hidden_state
        eps = ckpt.unet()(torch.randn(1, 4, 8, 8), torch.tensor([500]), text, return_dict=False)[0]
        image = ckpt.vae().decode(torch.randn(1, 4, 8, 8)).sample
    assert text.shape == (1, 77, 32) and eps.shape == (1, 4, 8, 8) and image.shape == (1, 3, 64, 64)
    assert eps.std() > 0.05 and image.std() > 0.05


def test_prediction_type_override(example):
    ckpt = ingest(example["diffusers"], prediction_type="v_prediction")
    assert ckpt.prediction_type == "v_prediction" == ckpt.scheduler_config["prediction_type"]


def test_make_example_is_deterministic(example, tmp_path):
    again = mk.make_example(tmp_path / "again", seed=0)
    for kind in ("safetensors", "ckpt"):
        assert again[kind].read_bytes() == example[kind].read_bytes()
    for root_a, root_b in (
        (example["diffusers"], again["diffusers"]),
        (example["tokenizer"], again["tokenizer"]),
    ):
        files = sorted(p.relative_to(root_a) for p in root_a.rglob("*") if p.is_file())
        assert files == sorted(p.relative_to(root_b) for p in root_b.rglob("*") if p.is_file())
        assert all((root_a / f).read_bytes() == (root_b / f).read_bytes() for f in files)


def test_vocab_and_merges_only_tokenizer_gets_tokenizer_json(example, tmp_path):
    from tokenizers import Tokenizer

    folder = tmp_path / "clip-tok"
    folder.mkdir()
    for name in ("vocab.json", "merges.txt", "tokenizer_config.json", "special_tokens_map.json"):
        shutil.copy(example["tokenizer"] / name, folder / name)
    ckpt = ingest(example["safetensors"], tokenizer=folder)
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        ["vocab.json", "merges.txt", "tokenizer_config.json", "special_tokens_map.json"]
    )  # nothing written next to the user's files
    made, tiny = (
        Tokenizer.from_file(str(d / "tokenizer.json"))
        for d in (ckpt.tokenizer_dir, example["tokenizer"])
    )
    for text in ("a photo of an astronaut riding a horse", "Oil   PAINTING, ñ 42!"):
        assert made.encode(text).ids == tiny.encode(text).ids


def test_ingest_writes_nothing(example):
    def snapshot():
        root = example["diffusers"].parent
        return {p: (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*")}

    before = snapshot()
    ingest(example["diffusers"])
    ingest(example["ckpt"], tokenizer=example["tokenizer"])
    assert snapshot() == before
