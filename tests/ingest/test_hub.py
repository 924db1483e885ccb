"""Hub ids go through ``huggingface_hub.snapshot_download`` (monkeypatched: no network)."""

from __future__ import annotations

import dataclasses
import shutil

import huggingface_hub
import pytest
import torch

from packer.errors import CheckpointError
from packer.ingest import hub, ingest

SHA = "0123456789abcdef0123456789abcdef01234567"


def test_hub_id_parsing(tmp_path):
    assert hub.parse("org/name@rev") == ("org/name", "rev")
    assert hub.parse("runwayml/stable-diffusion-v1-5") == ("runwayml/stable-diffusion-v1-5", None)
    for not_an_id in ("model.safetensors", "dir/model.safetensors", "/abs/path", "../x/y", "a/b/c"):
        assert hub.parse(not_an_id) is None


def test_hub_snapshot_is_ingested_as_a_diffusers_folder(example, ingested, tmp_path, monkeypatch):
    snapshot = tmp_path / "snapshots" / SHA
    shutil.copytree(example["diffusers"], snapshot)
    (snapshot / "README.md").write_text("---\nlicense: mit\ntags:\n- x\n---\n# the source's card\n")
    calls = []

    def fake_snapshot_download(repo_id, *, revision=None, allow_patterns=None, **kwargs):
        calls.append((repo_id, revision, allow_patterns))
        return str(snapshot)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot_download)
    ckpt = ingest("org/tiny-sd@rev")
    assert calls[0][:2] == ("org/tiny-sd", "rev")
    assert "unet/diffusion_pytorch_model.safetensors" in calls[0][2]
    assert "safety_checker/model.safetensors" not in calls[0][2]
    assert (
        "README.md" in calls[0][2] and ckpt.license == "mit"
    )  # the card's license, read with ModelCard
    assert ckpt.source == {
        "name": "org/tiny-sd", "format": "hub", "revision": SHA, "sha256": ingested["diffusers"].source["sha256"]
    }  # fmt: skip
    for component, sd in ingested["diffusers"].state_dicts.items():
        assert all(torch.equal(ckpt.state_dicts[component][k], v) for k, v in sd.items())


def _offline(*args, **kwargs):
    raise OSError("no network")


def test_hub_download_failure(monkeypatch):
    monkeypatch.setattr(huggingface_hub, "snapshot_download", _offline)
    with pytest.raises(CheckpointError, match="org/missing") as err:
        ingest("org/missing@main")
    assert err.value.hint


def test_default_tokenizer_failure_hints_at_the_option(example, monkeypatch):
    monkeypatch.setattr(huggingface_hub, "snapshot_download", _offline)
    with pytest.raises(CheckpointError, match="clip-vit-large-patch14") as err:
        ingest(example["safetensors"])
    assert "--tokenizer" in err.value.hint


def test_the_source_gives_the_bundle_its_base_model_and_license(ingested):
    from packer.bundle.manifest import DEFAULT_BASE_MODEL, DEFAULT_LICENSE, model_fields

    local = ingested["diffusers"]  # a folder without a card
    hub_ckpt = dataclasses.replace(
        local, source={**local.source, "name": "org/tiny-sd", "format": "hub"}, license="mit"
    )
    args = {"checkpoint": "org/tiny-sd", "version": "0.1.0"}
    assert (
        model_fields(hub_ckpt, **args)["base_model"] == "org/tiny-sd"
        and model_fields(hub_ckpt, **args)["license"] == "mit"
    )
    assert (model_fields(local, **args)["base_model"], model_fields(local, **args)["license"]) == (
        DEFAULT_BASE_MODEL,
        DEFAULT_LICENSE,
    )
    given = {**args, "base_model": "other/base", "license": "openrail"}
    assert (
        model_fields(hub_ckpt, **given)["base_model"],
        model_fields(hub_ckpt, **given)["license"],
    ) == ("other/base", "openrail")
    assert DEFAULT_BASE_MODEL == "stable-diffusion-v1-5/stable-diffusion-v1-5"


@pytest.mark.parametrize("card, license", [
    ("---\nlicense: creativeml-openrail-m\n---\n", "creativeml-openrail-m"),
    ("# no front matter\n", None),
    ("---\nlicense: [broken\n---\n", None),
    ("---\ntags: [a]\n---\n", None),
])  # fmt: skip
def test_card_license(tmp_path, card, license):
    from packer.ingest.diffusers_dir import card_license

    (tmp_path / "README.md").write_text(card)
    assert card_license(tmp_path / "README.md") == license
    assert card_license(tmp_path / "missing.md") is None
