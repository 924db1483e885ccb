"""The directory hub: same versions, pins and immutability as the Hub, on a plain folder."""

from __future__ import annotations

import hashlib
import json

import pytest

from packer.errors import HubError, UsageError
from packer.hub.local import LocalHub
from packer.interface.publish import PublishArgs, publish
from packer.interface.pull import PullArgs, pull
from packer.interface.resolve import ResolveArgs, resolve
from tests.hub.conftest import make_bundle

REPO = "sdpack/tiny-sd"


def objects(hub_dir):
    return sorted(p.name for p in (hub_dir / "sdpack/tiny-sd/objects").rglob("*") if p.is_file())


def test_local_publish_resolve_pull(bundles, tmp_path):
    hub_dir = tmp_path / "hub"
    first = publish(PublishArgs(bundles.v1, REPO, "1.0.0", to=hub_dir)).published
    n_objects = len(objects(hub_dir))
    second = publish(PublishArgs(bundles.v2, REPO, "1.1.0", to=hub_dir)).published
    assert second.uploaded == ["README.md", "manifest.json", "weights/unet/params_shard_1.bin.zst"]
    assert len(objects(hub_dir)) == n_objects + 3  # unchanged files are stored once
    assert (hub_dir / REPO / "refs/tags/v1.0.0").read_text().strip() == first.commit
    assert LocalHub(hub_dir).tags(REPO) == {"v1.0.0": first.commit, "v1.1.0": second.commit}

    for version, bundle, published in (("1.0.0", bundles.v1, first), ("1.1.0", bundles.v2, second)):
        lock_file = tmp_path / f"{version}.lock.json"
        resolved = resolve(
            ResolveArgs(f"{REPO}@{version}", endpoint=str(hub_dir), lock_out=lock_file)
        ).resolved
        assert resolved.commit == published.commit
        assert (
            resolved.manifest_sha256
            == hashlib.sha256((bundle / "manifest.json").read_bytes()).hexdigest()
        )
        out = pull(PullArgs(str(lock_file), tmp_path / f"out-{version}")).pulled.out
        assert (out / "manifest.json").read_bytes() == (bundle / "manifest.json").read_bytes()
        assert not list(out.parent.glob(".out-*partial*"))


def test_local_republish_is_a_no_op_and_conflict_is_refused(bundles, tmp_path):
    hub_dir = tmp_path / "hub"
    first = publish(PublishArgs(bundles.v1, REPO, "1.0.0", to=hub_dir)).published
    again = publish(PublishArgs(bundles.v1, REPO, "1.0.0", to=hub_dir)).published
    assert again.already and again.commit == first.commit and again.uploaded == []
    with pytest.raises(HubError, match="bump --version"):
        publish(PublishArgs(make_bundle(tmp_path / "other", changed=2), REPO, "1.0.0", to=hub_dir))
    assert LocalHub(hub_dir).tags(REPO) == {"v1.0.0": first.commit}


def test_unwritable_destination(bundles, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    with pytest.raises(HubError) as err:
        publish(PublishArgs(bundles.v1, REPO, "1.0.0", to=blocker / "hub"))
    assert err.value.one_line().startswith(f"cannot write to hub directory {blocker / 'hub'}")


def test_failure_mid_publish_leaves_no_version(bundles, tmp_path, monkeypatch):
    hub_dir = tmp_path / "hub"
    real = LocalHub._put_object
    calls = []

    def flaky(self, repo, content):
        calls.append(1)
        if len(calls) == 4:
            raise OSError(28, "No space left on device")
        return real(self, repo, content)

    monkeypatch.setattr(LocalHub, "_put_object", flaky)
    with pytest.raises(HubError, match="No space left on device"):
        publish(PublishArgs(bundles.v1, REPO, "1.0.0", to=hub_dir))
    assert not (hub_dir / REPO / "refs").exists()
    monkeypatch.setattr(LocalHub, "_put_object", real)
    published = publish(PublishArgs(bundles.v1, REPO, "1.0.0", to=hub_dir)).published
    assert LocalHub(hub_dir).tags(REPO) == {"v1.0.0": published.commit}


def test_tampered_lock_or_hub_is_caught(bundles, tmp_path):
    hub_dir = tmp_path / "hub"
    publish(PublishArgs(bundles.v1, REPO, "1.0.0", to=hub_dir))
    lock_file = tmp_path / "lock.json"
    resolve(ResolveArgs(f"{REPO}@1.0.0", endpoint=str(hub_dir), lock_out=lock_file))
    record = json.loads(lock_file.read_text())
    lock_file.write_text(json.dumps({**record, "manifest_sha256": "0" * 64}))
    with pytest.raises(HubError, match="differs from the lock record"):
        pull(PullArgs(str(lock_file), tmp_path / "out"))
    lock_file.write_text(json.dumps({**record, "commit": "not-a-sha"}))
    with pytest.raises(UsageError, match="not a valid lock record"):
        pull(PullArgs(str(lock_file), tmp_path / "out"))

    hub = LocalHub(hub_dir)
    commit = hub.tags(REPO)["v1.0.0"]
    shard = hub.object_path(
        REPO, hub.snapshot(REPO, commit)["weights/unet/params_shard_0.bin.zst"]["sha256"]
    )
    shard.write_bytes(b"\0" + shard.read_bytes()[1:])
    with pytest.raises(Exception) as err:
        pull(PullArgs(f"{REPO}@1.0.0", tmp_path / "out2", endpoint=str(hub_dir)))
    assert "sha256 mismatch" in err.value.one_line()
    assert not (tmp_path / "out2").exists()


def test_unknown_repo_and_version(bundles, tmp_path):
    hub_dir = tmp_path / "hub"
    publish(PublishArgs(bundles.v1, REPO, "1.0.0", to=hub_dir))
    with pytest.raises(HubError, match="repository sdpack/nope not found"):
        resolve(ResolveArgs("sdpack/nope@1.0.0", endpoint=str(hub_dir)))
    with pytest.raises(HubError) as err:
        resolve(ResolveArgs(f"{REPO}@2.0.0", endpoint=str(hub_dir)))
    assert err.value.one_line().endswith("(published versions: 1.0.0)")
    with pytest.raises(UsageError):
        publish(PublishArgs(bundles.v1, REPO, "1.0.0", private=True, to=hub_dir))
    with pytest.raises(UsageError, match="already exists"):
        pull(PullArgs(f"{REPO}@1.0.0", bundles.v1, endpoint=str(hub_dir)))
