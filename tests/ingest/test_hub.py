"""Hub ids go through ``huggingface_hub.snapshot_download`` (monkeypatched: no network)."""

from __future__ import annotations

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
    calls = []

    def fake_snapshot_download(repo_id, *, revision=None, allow_patterns=None, **kwargs):
        calls.append((repo_id, revision, allow_patterns))
        return str(snapshot)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot_download)
    ckpt = ingest("org/tiny-sd@rev")
    assert calls[0][:2] == ("org/tiny-sd", "rev")
    assert "unet/diffusion_pytorch_model.safetensors" in calls[0][2]
    assert "safety_checker/model.safetensors" not in calls[0][2]
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
