"""`packer versions` on the test Hub and on a directory hub, and `packer resolve`'s URL for a
directory hub loading from `packer serve`."""

from __future__ import annotations

import hashlib
import json
import threading
import urllib.request

import pytest
from huggingface_hub import HfApi

from packer.hub.serve import make_server
from packer.hub.versions import list_versions
from packer.interface.publish import PublishArgs, publish
from tests.helpers import cli_json, packer, read_manifest
from tests.hub.conftest import ALICE_TOKEN, make_bundle

REPO = "sdpack/tiny-sd"


def pull_size(bundle) -> int:
    return (
        sum(f["size"] for f in read_manifest(bundle)["files"])
        + (bundle / "manifest.json").stat().st_size
    )


def check_listing(listing, published: dict, bundles: dict) -> None:
    """Newest first; each version's commit, tag, size and (weights-only) targets."""
    assert [v.version for v in listing.versions] == ["2.0.0", "1.1.0", "1.0.0"]
    for v in listing.versions:
        assert (v.tag, v.commit, v.size, v.targets) == (
            f"v{v.version}",
            published[v.version],
            pull_size(bundles[v.version]),
            [],
        )
    dates = [v.date for v in listing.versions]
    assert all(dates) and dates == sorted(dates, reverse=True)


@pytest.fixture
def three(bundles, tmp_path) -> dict:
    """1.0.0, 1.1.0, then 2.0.0 (published in that order)."""
    return {
        "1.0.0": bundles.v1,
        "1.1.0": bundles.v2,
        "2.0.0": make_bundle(tmp_path / "b-2.0.0", version="2.0.0", changed=2),
    }


def test_versions_on_the_hub(hub_server, hf_env, monkeypatch, three):
    monkeypatch.setenv("HF_TOKEN", ALICE_TOKEN)
    published = {
        v: publish(PublishArgs(b, REPO, v, endpoint=hub_server.url)).published.commit
        for v, b in three.items()
    }
    HfApi(endpoint=hub_server.url, token=ALICE_TOKEN).create_tag(
        REPO, tag="latest", revision=published["1.1.0"]
    )
    monkeypatch.delenv("HF_TOKEN")
    listing = list_versions(REPO, hub_server.url)
    assert (
        listing.hub == hub_server.url and "latest" in hub_server.repo(REPO).tags
    )  # listed: versions only
    check_listing(listing, published, three)
    r = packer(
        "versions",
        REPO,
        "--hub",
        hub_server.url,
        "--json",
        env={"HF_HOME": str(hf_env), "HF_HUB_DISABLE_XET": "1", "HF_TOKEN": ""},
    )
    assert cli_json(r, "versions") == {"command": "versions", **listing.as_dict()}


def test_versions_on_a_directory_hub(three, tmp_path):
    hub = tmp_path / "hub"
    published = {
        v: publish(PublishArgs(b, REPO, v, to=hub)).published.commit for v, b in three.items()
    }
    listing = list_versions(REPO, hub)
    assert listing.hub == str(hub.absolute())
    check_listing(listing, published, three)
    r = packer("versions", REPO, "--hub", str(hub))
    assert r.code == 0, r.err
    lines = r.out.splitlines()
    assert lines[0].split() == ["VERSION", "COMMIT", "DATE", "SIZE", "TARGETS"]
    assert [line.split()[0] for line in lines[1:]] == ["2.0.0", "1.1.0", "1.0.0"]
    assert all("none (weights only)" in line for line in lines[1:])


def test_a_repository_without_versions(tmp_path, bundles):
    hub = tmp_path / "hub"
    publish(PublishArgs(bundles.v1, REPO, "1.0.0", to=hub))
    r = packer("versions", "sdpack/other", "--hub", str(hub))
    assert r.code == 2 and "repository sdpack/other not found" in r.error_line


def test_resolve_url_of_a_directory_hub_loads_from_packer_serve(bundles, tmp_path):
    hub = tmp_path / "hub"
    commit = publish(PublishArgs(bundles.v1, REPO, "1.0.0", to=hub)).published.commit
    doc = cli_json(packer("resolve", f"{REPO}@1.0.0", "--hub", str(hub), "--json"), "resolve")
    assert doc["manifest_url"] == f"http://127.0.0.1:8000/{REPO}/resolve/{commit}/manifest.json"
    assert doc["serve"] == f"packer serve {hub.absolute()} --port 8000"
    server = make_server(hub, port=0)  # what `serve` starts, on a free port instead of 8000
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = doc["manifest_url"].replace(":8000/", f":{server.server_address[1]}/")
        with urllib.request.urlopen(url) as answer:
            data = answer.read()
    finally:
        server.shutdown()
        server.server_close()
    assert hashlib.sha256(data).hexdigest() == doc["manifest_sha256"]
    assert json.loads(data)["model"]["version"] == "1.0.0"
