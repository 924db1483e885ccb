"""`packer pull` through the Hugging Face cache against the test Hub: a cut-off pull resumes with a
Range request, a second pull downloads nothing, a bad cached file is fetched again, bad bytes from
the hub are refused. The first two go through the real CLI (one stderr line, exit codes)."""

from __future__ import annotations

import hashlib
import os

import pytest

from packer.errors import BundleError, HubError
from packer.hub import hf_cache
from packer.interface.publish import PublishArgs, publish
from packer.interface.pull import PullArgs, pull
from tests.helpers import cli_json, packer, read_manifest
from tests.hub.conftest import ALICE_TOKEN

REPO = "sdpack/tiny-sd"


@pytest.fixture
def published(hub_server, hf_env, monkeypatch, bundles):
    """sdpack/tiny-sd 1.0.0 on the test Hub; the pulls that follow run without a token."""
    monkeypatch.setenv("HF_TOKEN", ALICE_TOKEN)
    publish(PublishArgs(bundles.v1, REPO, "1.0.0", endpoint=hub_server.url))
    monkeypatch.delenv("HF_TOKEN")
    hub_server.reset_counters()
    return bundles.v1


def cli_env(hf_env) -> dict:
    """The CLI in a subprocess sees the same client cache as this process (hf_env's HF_HOME)."""
    return {"HF_HOME": str(hf_env), "HF_HUB_DISABLE_XET": "1", "HF_TOKEN": "", "HF_ENDPOINT": ""}


def largest_shard(bundle) -> dict:
    shards = [f for f in read_manifest(bundle)["files"] if f["path"].endswith(".zst")]
    return max(shards, key=lambda f: f["size"])


def same_files(a, b) -> bool:
    files = [f["path"] for f in read_manifest(a)["files"]] + ["manifest.json"]
    return all((a / f).read_bytes() == (b / f).read_bytes() for f in files)


def test_cut_off_pull_resumes_and_a_second_pull_downloads_nothing(
    hub_server, hf_env, published, tmp_path
):
    shard = largest_shard(published)
    hub_server.faults.add("download", "cut", path=shard["path"])
    pulls = tmp_path / "pulls"
    out = pulls / "out"
    first = packer(
        "pull", f"{REPO}@1.0.0", "--hub", hub_server.url, "--out", str(out), env=cli_env(hf_env)
    )
    assert first.code == 2
    assert first.error_line.startswith(
        f"error: cannot reach {hub_server.url} while downloading {shard['path']}"
    )
    assert "run the same command again to resume" in first.error_line
    assert [p.name for p in pulls.iterdir()] == []  # no --out, no staging folder
    cut = [d for d in hub_server.downloads if d.path == shard["path"]]
    kept = sum(d.sent for d in cut)
    assert len(cut) == 3 and 0 < kept < shard["size"]  # three attempts, each cut half-way
    partial = hf_cache.repo_folder(REPO) / "blobs" / f"{shard['sha256']}.incomplete"
    assert partial.stat().st_size == kept

    hub_server.faults.clear()
    hub_server.reset_counters()
    second = cli_json(
        packer(
            "pull",
            f"{REPO}@1.0.0",
            "--hub",
            hub_server.url,
            "--out",
            str(out),
            "--json",
            env=cli_env(hf_env),
        ),
        "pull",
    )
    assert [(d.path, d.range, d.sent) for d in hub_server.downloads] == [
        (shard["path"], f"bytes={kept}-", shard["size"] - kept)  # only the rest of the cut shard
    ]
    assert second["downloaded_bytes"] == shard["size"] - kept
    assert same_files(published, out) and not partial.exists()

    hub_server.reset_counters()
    again = pull(PullArgs(f"{REPO}@1.0.0", tmp_path / "again", endpoint=hub_server.url)).pulled
    assert (
        hub_server.downloads == [] and hub_server.counters["resolve"] == 0
    )  # not even the manifest
    assert (again.downloaded, again.reused) == (0, len(read_manifest(published)["files"]))
    assert same_files(published, tmp_path / "again")
    blob = hf_cache.repo_folder(REPO) / "blobs" / shard["sha256"]
    assert os.path.samefile(blob, tmp_path / "again" / shard["path"])  # linked, not copied


def test_a_damaged_cache_entry_is_fetched_again(hub_server, hf_env, published, tmp_path):
    pull(PullArgs(f"{REPO}@1.0.0", tmp_path / "first", endpoint=hub_server.url))
    shard = largest_shard(published)
    blob = hf_cache.repo_folder(REPO) / "blobs" / shard["sha256"]
    os.unlink(blob)  # replace the blob (in place would damage the first pull's hard link too)
    blob.write_bytes(b"\0" * shard["size"])
    hub_server.reset_counters()
    pulled = pull(PullArgs(f"{REPO}@1.0.0", tmp_path / "second", endpoint=hub_server.url)).pulled
    assert pulled.repaired == [shard["path"]]
    assert [(d.path, d.range) for d in hub_server.downloads] == [(shard["path"], None)]
    assert hashlib.sha256(blob.read_bytes()).hexdigest() == shard["sha256"]
    assert same_files(published, tmp_path / "second")


def test_a_damaged_cached_manifest_is_fetched_again(hub_server, hf_env, published, tmp_path):
    pull(PullArgs(f"{REPO}@1.0.0", tmp_path / "first", endpoint=hub_server.url))
    link = (
        hf_cache.repo_folder(REPO)
        / "snapshots"
        / hub_server.repo(REPO).tags["v1.0.0"]
        / "manifest.json"
    )
    blob = link.resolve()
    os.unlink(blob)
    blob.write_text("{}")
    pulled = pull(PullArgs(f"{REPO}@1.0.0", tmp_path / "second", endpoint=hub_server.url)).pulled
    assert (
        pulled.resolved.manifest_sha256
        == hashlib.sha256((published / "manifest.json").read_bytes()).hexdigest()
    )
    assert same_files(published, tmp_path / "second")


def test_wrong_bytes_from_the_hub_are_refused(hub_server, hf_env, published, tmp_path, monkeypatch):
    monkeypatch.setattr(hf_cache, "RETRY_DELAYS", (0, 0))
    shard = largest_shard(published)
    stored = hub_server.storage.object_path(shard["sha256"])
    stored.write_bytes(b"\1" * shard["size"])  # the hub now serves other bytes under the same name
    with pytest.raises(BundleError) as err:
        pull(PullArgs(f"{REPO}@1.0.0", tmp_path / "out", endpoint=hub_server.url))
    assert err.value.one_line().startswith(
        f"{shard['path']}: sha256 mismatch in what {hub_server.url} sent"
    )
    assert err.value.exit_code == 1
    assert not (tmp_path / "out").exists()
    blobs = hf_cache.repo_folder(REPO) / "blobs"
    assert not [
        p for p in blobs.iterdir() if p.name.startswith(shard["sha256"])
    ]  # nothing kept, nothing linked


def test_an_unwritable_cache_is_one_line(hub_server, hf_env, published, tmp_path, monkeypatch):
    from huggingface_hub import constants

    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(blocker / "hub"))
    with pytest.raises(HubError) as err:
        pull(PullArgs(f"{REPO}@1.0.0", tmp_path / "out", endpoint=hub_server.url))
    assert err.value.one_line().startswith(f"cannot write to the Hugging Face cache ({blocker}")
    assert not (tmp_path / "out").exists()
