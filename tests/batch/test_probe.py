"""Whether a job's version is already published, asked of the test Hub server through the real
client and of a directory hub (what lets a rerun skip a job before packing it)."""

from __future__ import annotations

from packer.batch.jobs import Job
from packer.batch.probe import published_commit
from packer.interface.publish import PublishArgs, publish
from tests.hub.conftest import hf_env, make_bundle  # noqa: F401 - fixtures
from tests.hub_server.fixtures import ALICE_TOKEN, hub_server  # noqa: F401 - fixtures

REPO = "alice/tiny"


def job(version: str) -> Job:
    return Job(repo=REPO, checkpoint="unused.safetensors", version=version)


def test_hub_repo_missing_then_published(hub_server, hf_env, monkeypatch, tmp_path):  # noqa: F811
    monkeypatch.setenv("HF_TOKEN", ALICE_TOKEN)
    assert published_commit(hub_server.url, job("1.0.0")) is None  # no such repository yet
    bundle = make_bundle(tmp_path / "bundle", repo=REPO, version="1.0.0")
    done = publish(
        PublishArgs(bundle, REPO, "1.0.0", to="hf", endpoint=hub_server.url).checked()
    ).published
    assert published_commit(hub_server.url, job("1.0.0")) == done.commit
    assert (
        published_commit(hub_server.url, job("1.0.1")) is None
    )  # the repository exists, this version not


def test_directory_hub(tmp_path):
    hub = tmp_path / "hub"
    assert published_commit(str(hub), job("1.0.0")) is None  # the directory does not exist yet
    bundle = make_bundle(tmp_path / "bundle", repo=REPO, version="1.0.0")
    done = publish(PublishArgs(bundle, REPO, "1.0.0", to=hub).checked()).published
    assert published_commit(str(hub), job("1.0.0")) == done.commit
    assert published_commit(str(hub), job("2.0.0")) is None
