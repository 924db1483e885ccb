"""The test Hub itself: atomic commits, stable ids, visibility and the download headers."""

from __future__ import annotations

import base64
import json
import urllib.error
import urllib.request

from tests.hub.conftest import ALICE_TOKEN
from tests.hub_server import HubServer

REPO = "alice/proto"


def call(url, method="GET", body=None, token=None, headers=None):
    data = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def ndjson(*items) -> bytes:
    return b"".join(json.dumps(i).encode() + b"\n" for i in items)


def test_commit_is_all_or_nothing(hub_server):
    url = hub_server.url
    assert (
        call(
            f"{url}/api/repos/create",
            "POST",
            {"name": "proto", "organization": "alice"},
            ALICE_TOKEN,
        )[0]
        == 200
    )
    status, _, body = call(
        f"{url}/api/repos/create", "POST", {"name": "proto", "organization": "alice"}, ALICE_TOKEN
    )
    assert status == 409 and json.loads(body)["url"] == f"{url}/{REPO}"
    payload = ndjson(
        {"key": "header", "value": {"summary": "half"}},
        {
            "key": "file",
            "value": {
                "path": "a.txt",
                "content": base64.b64encode(b"hi").decode(),
                "encoding": "base64",
            },
        },
        {
            "key": "lfsFile",
            "value": {"path": "w.zst", "algo": "sha256", "oid": "ab" * 32, "size": 5},
        },
    )
    status, _, _ = call(f"{url}/api/models/{REPO}/commit/main", "POST", payload, ALICE_TOKEN)
    assert status == 422
    view = hub_server.repo(REPO)
    assert set(view.files("main")) == {".gitattributes"} and view.commit_count == 1


def test_commit_ids_hash_content_and_parent(tmp_path, hub_server):
    payload = ndjson(
        {"key": "header", "value": {"summary": "one"}},
        {
            "key": "file",
            "value": {
                "path": "a.txt",
                "content": base64.b64encode(b"hi").decode(),
                "encoding": "base64",
            },
        },
    )
    oids = []
    with HubServer(tmp_path / "second", tokens={ALICE_TOKEN: "alice"}) as other:
        for server in (hub_server, other):
            call(f"{server.url}/api/repos/create", "POST", {"name": "proto"}, ALICE_TOKEN)
            status, _, body = call(
                f"{server.url}/api/models/{REPO}/commit/main", "POST", payload, ALICE_TOKEN
            )
            oids.append(json.loads(body)["commitOid"])
    assert status == 200 and oids[0] == oids[1] and len(oids[0]) == 40


def test_private_repos_are_invisible_and_downloads_carry_hub_headers(hub_server):
    url = hub_server.url
    call(f"{url}/api/repos/create", "POST", {"name": "proto", "visibility": "private"}, ALICE_TOKEN)
    status, headers, _ = call(f"{url}/api/models/{REPO}")
    assert status == 404 and headers["X-Error-Code"] == "RepoNotFound"
    assert call(f"{url}/api/models/{REPO}", token="hf_wrong")[0] == 401
    status, headers, body = call(
        f"{url}/{REPO}/resolve/main/.gitattributes",
        token=ALICE_TOKEN,
        headers={"Range": "bytes=0-6"},
    )
    assert (status, body) == (206, b"*.bin f")
    assert headers["X-Repo-Commit"] == hub_server.repo(REPO).branches["main"]
    assert headers["Access-Control-Allow-Origin"] == "*" and headers["Accept-Ranges"] == "bytes"
    status, headers, _ = call(f"{url}/{REPO}/resolve/main/missing.bin", token=ALICE_TOKEN)
    assert status == 404 and headers["X-Error-Code"] == "EntryNotFound"
    status, headers, _ = call(f"{url}/{REPO}/resolve/main/.gitattributes", "OPTIONS")
    assert status == 204 and "Range" in headers["Access-Control-Allow-Headers"]
