"""Publish, resolve and pull through the real huggingface_hub client against the test Hub."""

from __future__ import annotations

import hashlib
import json

import pytest

from packer.errors import HubError, UsageError
from packer.interface.publish import PublishArgs, publish
from packer.interface.pull import PullArgs, pull
from packer.interface.resolve import ResolveArgs, resolve
from tests.hub.conftest import ALICE_TOKEN, BOB_TOKEN, make_bundle

REPO = "sdpack/tiny-sd"


def sha256(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def shard_oids(bundle) -> dict[str, str]:
    return {p.name: sha256(p) for p in sorted((bundle / "weights/unet").glob("*.zst"))}


def bundle_files(bundle) -> set[str]:
    return {p.relative_to(bundle).as_posix() for p in bundle.rglob("*") if p.is_file()}


@pytest.fixture
def alice(monkeypatch, hf_env):
    monkeypatch.setenv("HF_TOKEN", ALICE_TOKEN)


def test_two_versions_publish_resolve_pull(hub_server, alice, bundles, tmp_path):
    first = publish(PublishArgs(bundles.v1, REPO, "1.0.0", endpoint=hub_server.url)).published
    view = hub_server.repo(REPO)
    assert view.tags == {"v1.0.0": first.commit}
    assert set(view.files("v1.0.0")) == bundle_files(bundles.v1) | {"README.md", ".gitattributes"}
    assert sorted(hub_server.lfs_puts) == sorted(shard_oids(bundles.v1).values())
    assert hub_server.counters["commit"] == 1  # one commit for the whole bundle

    hub_server.reset_counters()
    second = publish(PublishArgs(bundles.v2, REPO, "v1.1.0", endpoint=hub_server.url)).published
    changed = {n for n, oid in shard_oids(bundles.v2).items() if oid != shard_oids(bundles.v1)[n]}
    assert changed == {"params_shard_1.bin.zst"}
    assert hub_server.lfs_puts == [
        shard_oids(bundles.v2)["params_shard_1.bin.zst"]
    ]  # unchanged shards not sent
    assert set(second.uploaded) == {
        "manifest.json",
        "README.md",
        "weights/unet/params_shard_1.bin.zst",
    }
    assert view.tags == {"v1.0.0": first.commit, "v1.1.0": second.commit}
    assert (
        view.read("v1.0.0", "manifest.json") == (bundles.v1 / "manifest.json").read_bytes()
    )  # tags never move

    for version, bundle, published in (("1.0.0", bundles.v1, first), ("1.1.0", bundles.v2, second)):
        lock_file = tmp_path / f"lock-{version}.json"
        resolved = resolve(
            ResolveArgs(f"{REPO}@{version}", endpoint=hub_server.url, lock_out=lock_file)
        ).resolved
        assert resolved.commit == published.commit
        assert resolved.manifest_sha256 == sha256(bundle / "manifest.json")
        assert (
            resolved.manifest_url
            == f"{hub_server.url}/{REPO}/resolve/{published.commit}/manifest.json"
        )
        assert json.loads(lock_file.read_text())["commit"] == published.commit

        out = tmp_path / f"pulled-{version}"
        pulled = pull(PullArgs(f"{REPO}@v{version}", out, endpoint=hub_server.url)).pulled
        assert pulled.resolved.commit == published.commit
        assert bundle_files(out) == bundle_files(bundle) | {
            "sdpack.lock.json"
        }  # the pin, beside the bundle's files
        assert all(
            (out / f).read_bytes() == (bundle / f).read_bytes() for f in bundle_files(bundle)
        )
        assert json.loads((out / "sdpack.lock.json").read_text())["commit"] == published.commit

        from_lock = pull(
            PullArgs(str(lock_file), tmp_path / f"from-lock-{version}")
        ).pulled  # endpoint from the lock
        assert from_lock.resolved.commit == published.commit

    by_sha = resolve(ResolveArgs(f"{REPO}@{first.commit}", endpoint=hub_server.url)).resolved
    assert (by_sha.version, by_sha.commit) == ("1.0.0", first.commit)


def test_a_version_holds_exactly_its_bundle(hub_server, alice, bundles, tmp_path):
    publish(PublishArgs(bundles.v1, REPO, "1.0.0", endpoint=hub_server.url))
    smaller = make_bundle(tmp_path / "smaller", version="2.0.0", count=5)  # fewer shards than 1.0.0
    publish(PublishArgs(smaller, REPO, "2.0.0", endpoint=hub_server.url))
    assert set(hub_server.repo(REPO).files("v2.0.0")) == bundle_files(smaller) | {
        "README.md",
        ".gitattributes",
    }
    assert set(hub_server.repo(REPO).files("v1.0.0")) == bundle_files(bundles.v1) | {
        "README.md",
        ".gitattributes",
    }


def test_republishing_the_same_version_is_a_no_op(hub_server, alice, bundles):
    first = publish(PublishArgs(bundles.v1, REPO, "1.0.0", endpoint=hub_server.url))
    commits = hub_server.repo(REPO).commit_count
    hub_server.reset_counters()
    again = publish(PublishArgs(bundles.v1, REPO, "1.0.0", endpoint=hub_server.url))
    assert again.published.already and again.published.commit == first.published.commit
    assert "already published" in again.display()
    assert hub_server.repo(REPO).commit_count == commits
    assert hub_server.lfs_puts == [] and hub_server.counters["commit"] == 0


def test_a_version_cannot_change(hub_server, alice, bundles, tmp_path):
    first = publish(PublishArgs(bundles.v1, REPO, "1.0.0", endpoint=hub_server.url)).published
    other = make_bundle(tmp_path / "other", changed=3)
    with pytest.raises(HubError) as err:
        publish(PublishArgs(other, REPO, "1.0.0", endpoint=hub_server.url))
    assert "already published with different content" in err.value.one_line()
    assert "bump --version" in err.value.one_line()
    assert hub_server.repo(REPO).tags == {"v1.0.0": first.commit}


def test_private_repo_is_invisible_without_its_token(
    hub_server, hf_env, monkeypatch, bundles, tmp_path
):
    monkeypatch.setenv("HF_TOKEN", ALICE_TOKEN)
    publish(PublishArgs(bundles.v1, REPO, "1.0.0", private=True, endpoint=hub_server.url))
    assert (
        resolve(ResolveArgs(f"{REPO}@1.0.0", endpoint=hub_server.url)).resolved.version == "1.0.0"
    )
    for token in (None, BOB_TOKEN):
        if token:
            monkeypatch.setenv("HF_TOKEN", token)
        else:
            monkeypatch.delenv("HF_TOKEN")
        with pytest.raises(HubError) as err:
            resolve(ResolveArgs(f"{REPO}@1.0.0", endpoint=hub_server.url))
        assert f"repository {REPO} not found" in err.value.one_line()
        with pytest.raises(HubError):
            pull(PullArgs(f"{REPO}@1.0.0", tmp_path / f"out-{token}", endpoint=hub_server.url))
        assert not (tmp_path / f"out-{token}").exists()


@pytest.mark.parametrize("token", ["hf_not_a_real_token_000000000000", BOB_TOKEN, None])
def test_bad_or_missing_token_is_an_authentication_error(
    hub_server, hf_env, monkeypatch, bundles, token
):
    if token:
        monkeypatch.setenv("HF_TOKEN", token)
    with pytest.raises(HubError) as err:
        publish(PublishArgs(bundles.v1, REPO, "1.0.0", endpoint=hub_server.url))
    line = err.value.one_line()
    assert line.startswith(f"authentication failed for {REPO}")
    assert "(set HF_TOKEN or run `hf auth login`)" in line
    assert not hub_server.repo(REPO).exists


def test_stored_login_is_used(hub_server, hf_env, bundles):
    from huggingface_hub import constants

    with open(constants.HF_TOKEN_PATH, "w") as f:  # what `hf auth login` leaves behind
        f.write(ALICE_TOKEN)
    assert publish(PublishArgs(bundles.v1, REPO, "1.0.0", endpoint=hub_server.url)).published.commit


FAULTS = [
    ("lfs_put", "half"),
    ("lfs_put", "500"),
    ("preupload", "500"),
    ("lfs_batch", "drop"),
    ("lfs_verify", "500"),
    ("commit", "drop"),
    ("commit", "500"),
    ("tag", "500"),
]


@pytest.mark.parametrize("point,mode", FAULTS)
def test_interrupted_publish_leaves_no_version_and_rerun_completes(
    hub_server, alice, bundles, point, mode
):
    hub_server.faults.add(point, mode)
    with pytest.raises(HubError) as err:
        publish(PublishArgs(bundles.v1, REPO, "1.0.0", endpoint=hub_server.url))
    assert hub_server.faults.fired(point) >= 1
    line = err.value.one_line()
    assert hub_server.url in line and "\n" not in line
    view = hub_server.repo(REPO)
    assert view.tags == {}
    if point != "tag":  # everything before the tag: the commit never became visible
        assert set(view.files("main")) == {".gitattributes"} and view.commit_count == 1
    hub_server.faults.clear()
    done = publish(PublishArgs(bundles.v1, REPO, "1.0.0", endpoint=hub_server.url)).published
    assert view.tags == {"v1.0.0": done.commit}
    assert set(view.files("v1.0.0")) == bundle_files(bundles.v1) | {"README.md", ".gitattributes"}


def test_unreachable_hub_is_one_line(hub_server, alice, bundles, tmp_path):
    url = hub_server.url
    hub_server.stop()
    calls = [
        lambda: publish(PublishArgs(bundles.v1, REPO, "1.0.0", endpoint=url)),
        lambda: resolve(ResolveArgs(f"{REPO}@1.0.0", endpoint=url)),
        lambda: pull(PullArgs(f"{REPO}@1.0.0", tmp_path / "out", endpoint=url)),
    ]
    for call in calls:
        with pytest.raises(HubError) as err:
            call()
        assert err.value.one_line().startswith(f"cannot reach {url}")
    assert not (tmp_path / "out").exists()


def test_hf_endpoint_variable_is_read_at_call_time(hub_server, alice, monkeypatch, bundles):
    monkeypatch.setenv("HF_ENDPOINT", hub_server.url)
    published = publish(PublishArgs(bundles.v1, REPO, "1.0.0")).published
    assert published.location == hub_server.url


@pytest.mark.parametrize(
    "repo,version",
    [
        ("bad--name/x", "1.0.0"),
        ("sdpack/a..b", "1.0.0"),
        ("no-slash", "1.0.0"),
        ("-x/y", "1.0.0"),
        (REPO, "1.0"),
        (REPO, "01.0.0"),
    ],
)
def test_invalid_repo_id_or_version_is_a_usage_error(hub_server, alice, bundles, repo, version):
    with pytest.raises(UsageError):
        publish(PublishArgs(bundles.v1, repo, version, endpoint=hub_server.url))
    with pytest.raises(UsageError):
        resolve(ResolveArgs(f"{repo}@{version}", endpoint=hub_server.url))
    assert hub_server.counters == {}


def test_publishing_under_another_name_or_version_is_refused(hub_server, alice, bundles):
    with pytest.raises(UsageError, match="not sdpack/tiny-sd 2.0.0"):
        publish(PublishArgs(bundles.v1, REPO, "2.0.0", endpoint=hub_server.url))
    with pytest.raises(UsageError, match="not sdpack/other 1.0.0"):
        publish(PublishArgs(bundles.v1, "sdpack/other", "1.0.0", endpoint=hub_server.url))
    assert hub_server.counters == {}


def test_unknown_version_lists_the_published_ones(hub_server, alice, bundles):
    publish(PublishArgs(bundles.v1, REPO, "1.0.0", endpoint=hub_server.url))
    with pytest.raises(HubError) as err:
        resolve(ResolveArgs(f"{REPO}@9.9.9", endpoint=hub_server.url))
    assert (
        err.value.one_line()
        == f"{REPO}@9.9.9 is not published at {hub_server.url} (published versions: 1.0.0)"
    )
