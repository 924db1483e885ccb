"""Publish faults that tests/hub/test_hub_publish.py does not inject yet, and the worst kind: the
server *did* the step (commit or tag landed) but the answer never reached the client.

After each failure: one HubError line naming the endpoint, no tag unless its commit is complete,
no partial version visible; then the same publish completes and a further one is a no-op.
"""

from __future__ import annotations

import pytest

from packer.errors import HubError
from packer.interface.publish import PublishArgs, publish
from packer.interface.pull import PullArgs, pull
from tests.hub.conftest import ALICE_TOKEN, bundles, hf_env, hub_server  # noqa: F401 - fixtures
from tests.hub_server import api
from tests.hub_server import server as server_mod
from tests.hub_server.wire import Drop

REPO = "sdpack/tiny-sd"


def bundle_files(bundle) -> set[str]:
    return {p.relative_to(bundle).as_posix() for p in bundle.rglob("*") if p.is_file()}


@pytest.fixture
def alice(monkeypatch, hf_env):  # noqa: F811
    monkeypatch.setenv("HF_TOKEN", ALICE_TOKEN)


def assert_no_partial_version(hub_server, expected: set[str]) -> None:  # noqa: F811
    repo = hub_server.storage.repos.get(REPO)
    if repo is None:
        return
    for commit in repo.commits.values():
        assert commit.parent is None or set(commit.tree) == expected
    for tag, oid in repo.tags.items():
        assert set(repo.commits[oid].tree) == expected, tag


def publish_completes_then_no_op(hub_server, bundle, expected):  # noqa: F811
    done = publish(PublishArgs(bundle, REPO, "1.0.0", endpoint=hub_server.url)).published
    view = hub_server.repo(REPO)
    assert view.tags == {"v1.0.0": done.commit} and set(view.files("v1.0.0")) == expected
    commits = view.commit_count
    hub_server.reset_counters()
    again = publish(PublishArgs(bundle, REPO, "1.0.0", endpoint=hub_server.url)).published
    assert again.already and again.commit == done.commit
    assert (
        view.commit_count == commits
        and hub_server.counters["commit"] == 0
        and hub_server.lfs_puts == []
    )


NEW_FAULTS = [
    ("create_repo", "500"),
    ("create_repo", "drop"),
    ("preupload", "drop"),
    ("lfs_batch", "500"),
    ("lfs_put", "drop"),
    ("lfs_verify", "drop"),
    ("tag", "drop"),
]


@pytest.mark.parametrize("point,mode", NEW_FAULTS)
def test_fault_leaves_no_version_and_rerun_completes(hub_server, alice, bundles, point, mode):  # noqa: F811
    expected = bundle_files(bundles.v1) | {"README.md", ".gitattributes"}
    hub_server.faults.add(point, mode)
    with pytest.raises(HubError) as err:
        publish(PublishArgs(bundles.v1, REPO, "1.0.0", endpoint=hub_server.url))
    assert hub_server.faults.fired(point) >= 1
    line = err.value.one_line()
    assert hub_server.url in line and "\n" not in line and err.value.hint
    assert hub_server.repo(REPO).tags == {}
    assert_no_partial_version(hub_server, expected)
    hub_server.faults.clear()
    publish_completes_then_no_op(hub_server, bundles.v1, expected)


def _landed_then_dropped(real):
    """The step happens on the server, then the connection is cut before the answer."""

    def handler(hub, req):
        saved = api.send_json
        api.send_json = lambda *a, **k: None
        try:
            real(hub, req)
        finally:
            api.send_json = saved
        raise Drop()

    return handler


@pytest.mark.parametrize("step", ["commit", "tag"])
def test_step_landed_but_answer_lost(hub_server, alice, bundles, monkeypatch, step):  # noqa: F811
    expected = bundle_files(bundles.v1) | {"README.md", ".gitattributes"}
    real = {"commit": api.commit, "tag": api.create_tag}[step]
    armed = [True]

    def once(hub, req):
        if armed[0]:
            armed[0] = False
            return _landed_then_dropped(real)(hub, req)
        return real(hub, req)

    routes = [(m, p, n, once if n == step else fn) for m, p, n, fn in server_mod.ROUTES]
    monkeypatch.setattr(server_mod, "ROUTES", routes)
    try:
        publish(PublishArgs(bundles.v1, REPO, "1.0.0", endpoint=hub_server.url))
    except HubError as err:  # the client may or may not retry its way to success; both are fine
        assert "\n" not in err.one_line() and hub_server.url in err.one_line()
    assert not armed[0]
    assert_no_partial_version(hub_server, expected)
    if step == "commit":
        assert set(hub_server.repo(REPO).tags) <= {"v1.0.0"}
    publish_completes_then_no_op(hub_server, bundles.v1, expected)
    assert_no_partial_version(hub_server, expected)


@pytest.mark.parametrize("mode", ["500", "drop"])
def test_pull_fault_leaves_no_output(hub_server, alice, bundles, tmp_path, mode):  # noqa: F811
    publish(PublishArgs(bundles.v1, REPO, "1.0.0", endpoint=hub_server.url))
    hub_server.faults.add("resolve", mode)
    out = tmp_path / "pulled"
    with pytest.raises(HubError) as err:
        pull(PullArgs(f"{REPO}@1.0.0", out, endpoint=hub_server.url))
    assert hub_server.url in err.value.one_line()
    assert not out.exists() and not list(tmp_path.glob(".pulled.partial-*"))
    hub_server.faults.clear()
    pulled = pull(PullArgs(f"{REPO}@1.0.0", out, endpoint=hub_server.url)).pulled
    assert bundle_files(out) == bundle_files(bundles.v1) | {
        "sdpack.lock.json"
    }  # + the pin pull leaves
    assert pulled.files == len(bundle_files(bundles.v1)) - 1  # + manifest
