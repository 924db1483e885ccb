"""The Hub token never shows up in what the `packer` CLI prints or writes, on success or failure.

Extends tests/hub/test_hub_secrets.py (library calls) to the real CLI: publish, resolve, pull,
every failure path we can provoke without the client's multi-second retry back-off, with
SDPACK_VERBOSE=1; then greps every output and every file under the outputs, the lock file,
SDPACK_CACHE, HF_HOME, the launcher's captured stdout/stderr, and the test Hub's own storage.
(The SIGKILL runs in test_publish_kills.py grep for their token too.)
"""

from __future__ import annotations

import shutil

from tests.hostile.corpus import REPO, SHARD
from tests.hub.conftest import ALICE_TOKEN
from tests.hub_server.fixtures import hub_server  # noqa: F401 - fixture

TOKEN = "hf_sdpackSECRETcli9d8c7b6a5f4e3d2c1b0a"


def test_token_never_printed_or_written(launcher, packed, session_dirs, hub_server, tmp_path):  # noqa: F811
    hub_server.tokens[TOKEN] = "alice"
    env = {"HF_TOKEN": TOKEN, "SDPACK_VERBOSE": "1"}
    url = hub_server.url
    runs = []

    def cli(*argv, expect=None, token=TOKEN):
        r = launcher.run(*argv, env={**env, "HF_TOKEN": token})
        runs.append(r)
        if expect is not None:
            assert r.code == expect, (argv, r.err)
        return r

    cli(
        "publish",
        REPO,
        "--bundle",
        packed,
        "--version",
        "1.0.0",
        "--private",
        "--endpoint",
        url,
        expect=0,
    )
    cli(
        "publish", REPO, "--bundle", packed, "--version", "1.0.0", "--endpoint", url, expect=0
    )  # no-op
    lock = tmp_path / "tiny.lock.json"
    cli("resolve", f"{REPO}@1.0.0", "--endpoint", url, "--lock-out", lock, expect=0)
    cli("pull", lock, "--out", tmp_path / "pulled", expect=0)

    # failures: wrong token, someone else's token, missing version, changed content, a damaged bundle
    wrong = TOKEN[:-4] + "XXXX"
    cli(
        "publish",
        REPO,
        "--bundle",
        packed,
        "--version",
        "1.0.0",
        "--endpoint",
        url,
        token=wrong,
        expect=2,
    )
    cli("resolve", f"{REPO}@1.0.0", "--endpoint", url, token=wrong, expect=2)
    cli(
        "pull",
        f"{REPO}@1.0.0",
        "--endpoint",
        url,
        "--out",
        tmp_path / "nope",
        token=wrong,
        expect=2,
    )
    hub_server.tokens[ALICE_TOKEN] = "bob"
    cli(
        "pull",
        f"{REPO}@1.0.0",
        "--endpoint",
        url,
        "--out",
        tmp_path / "nope",
        token=ALICE_TOKEN,
        expect=2,
    )
    cli("resolve", f"{REPO}@9.9.9", "--endpoint", url, expect=2)
    damaged = shutil.copytree(packed, tmp_path / "damaged")
    (damaged / SHARD).chmod(0o644)
    (damaged / SHARD).write_bytes(b"\0" + (damaged / SHARD).read_bytes()[1:])
    cli("publish", REPO, "--bundle", damaged, "--version", "1.0.0", "--endpoint", url, expect=1)
    url_with_password = url.replace(
        "http://", f"http://user:{TOKEN}@"
    )  # a token pasted into the URL
    cli("resolve", f"{REPO}@1.0.0", "--endpoint", url_with_password)
    hub_server.stop()
    cli("publish", REPO, "--bundle", packed, "--version", "2.0.0", "--endpoint", url, expect=2)

    assert all("Traceback" not in r.err for r in runs)
    texts = [t for r in runs for t in (r.out, r.err)]
    assert [t for t in texts if TOKEN in t] == []
    roots = [
        tmp_path,
        session_dirs["hf-home"],
        session_dirs["cache"],
        session_dirs["launcher"],
        hub_server.storage.root,
    ]
    leaked = [
        p
        for root in roots
        for p in root.rglob("*")
        if p.is_file() and TOKEN.encode() in p.read_bytes()
    ]
    assert leaked == []
    assert (session_dirs["hf-home"] / "hub").is_dir()  # the client's cache was there to be searched
