"""`packer serve`: a directory hub answering browsers (CORS, Range) and the Hub client."""

from __future__ import annotations

import hashlib
import json
import threading
import urllib.error
import urllib.request

import pytest

from packer.interface.publish import PublishArgs, publish
from packer.interface.serve import ServeArgs, serve

REPO = "sdpack/tiny-sd"


@pytest.fixture
def served(bundles, tmp_path):
    hub_dir = tmp_path / "hub"
    published = publish(PublishArgs(bundles.v1, REPO, "1.0.0", to=hub_dir)).published
    serving = serve(ServeArgs(hub_dir, port=0))
    threading.Thread(target=serving.server.serve_forever, daemon=True).start()
    yield serving, published
    serving.stop()


def fetch(url: str, method: str = "GET", headers: dict | None = None):
    req = urllib.request.Request(url, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def test_get_head_range_and_cors(served, bundles):
    serving, published = served
    manifest = (bundles.v1 / "manifest.json").read_bytes()
    assert serving.server.server_address[0] == "127.0.0.1"
    for rev in ("v1.0.0", "main", published.commit):
        status, headers, body = fetch(f"{serving.url}/{REPO}/resolve/{rev}/manifest.json")
        assert (status, body) == (200, manifest)
        assert headers["Access-Control-Allow-Origin"] == "*"
        assert headers["X-Repo-Commit"] == published.commit
        assert headers["ETag"] == f'"{hashlib.sha256(manifest).hexdigest()}"'
        assert "X-Repo-Commit" in headers["Access-Control-Expose-Headers"]
    assert "immutable" in headers["Cache-Control"]  # by commit: cache forever

    status, headers, body = fetch(f"{serving.url}/{REPO}/resolve/v1.0.0/manifest.json", "HEAD")
    assert (status, body, headers["Content-Length"]) == (200, b"", str(len(manifest)))

    status, headers, body = fetch(
        f"{serving.url}/{REPO}/resolve/v1.0.0/manifest.json", headers={"Range": "bytes=10-19"}
    )
    assert (status, body) == (206, manifest[10:20])
    assert (
        headers["Content-Range"] == f"bytes 10-19/{len(manifest)}"
        and headers["Accept-Ranges"] == "bytes"
    )
    status, _, body = fetch(
        f"{serving.url}/{REPO}/resolve/v1.0.0/manifest.json", headers={"Range": "bytes=-5"}
    )
    assert (status, body) == (206, manifest[-5:])
    status, headers, _ = fetch(
        f"{serving.url}/{REPO}/resolve/v1.0.0/manifest.json",
        headers={"Range": f"bytes={len(manifest)}-"},
    )
    assert status == 416 and headers["Content-Range"] == f"bytes */{len(manifest)}"

    status, headers, _ = fetch(f"{serving.url}/{REPO}/resolve/v1.0.0/manifest.json", "OPTIONS")
    assert status == 204 and "Range" in headers["Access-Control-Allow-Headers"]
    assert headers["Access-Control-Allow-Origin"] == "*"


@pytest.mark.parametrize(
    "path,code",
    [
        (f"/{REPO}/resolve/v9.9.9/manifest.json", "RevisionNotFound"),
        (f"/{REPO}/resolve/v1.0.0/nope.json", "EntryNotFound"),
        ("/sdpack/other/resolve/v1.0.0/manifest.json", "RepoNotFound"),
        (f"/{REPO}/resolve/v1.0.0/../../etc/passwd", "EntryNotFound"),
        (f"/{REPO}/objects", "EntryNotFound"),
        ("/", "EntryNotFound"),
    ],
)
def test_anything_else_is_404(served, path, code):
    serving, _ = served
    status, headers, _ = fetch(serving.url + path)
    assert status == 404 and headers["X-Error-Code"] == code


def test_the_hub_client_reads_a_served_directory_hub(served, hf_env, bundles):
    from huggingface_hub import hf_hub_download

    serving, published = served
    path = hf_hub_download(
        REPO, "weights/unet/params_shard_2.bin.zst", revision="v1.0.0", endpoint=serving.url
    )
    assert (
        open(path, "rb").read() == (bundles.v1 / "weights/unet/params_shard_2.bin.zst").read_bytes()
    )


def test_api_revision_names_the_commit_as_the_hub_does(served, bundles):
    """``GET /api/models/ORG/NAME/revision/REV`` -> ``{"id", "sha", "siblings"}``: how the web runtime
    turns ``ORG/NAME@1.0.0`` into a commit before loading by commit."""
    serving, published = served
    for rev in ("v1.0.0", "main", published.commit):
        status, headers, body = fetch(f"{serving.url}/api/models/{REPO}/revision/{rev}")
        assert status == 200 and headers["Access-Control-Allow-Origin"] == "*"
        info = json.loads(body)
        assert (info["id"], info["sha"]) == (REPO, published.commit)
        assert "manifest.json" in {s["rfilename"] for s in info["siblings"]}
    status, _, body = fetch(f"{serving.url}/api/models/{REPO}")
    assert status == 200 and json.loads(body)["sha"] == published.commit  # no revision: main
    for path, code in (
        (f"/api/models/{REPO}/revision/v9.9.9", "RevisionNotFound"),
        ("/api/models/sdpack/other/revision/v1.0.0", "RepoNotFound"),
        ("/api/models/sdpack/x--y/revision/v1.0.0", "RepoNotFound"),
    ):
        status, headers, body = fetch(serving.url + path)
        assert (
            status == 404 and headers["X-Error-Code"] == code and code in json.loads(body)["error"]
        )
