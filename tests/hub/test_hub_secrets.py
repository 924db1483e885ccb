"""The token never appears in any message, output or file that sdpack or the client writes."""

from __future__ import annotations

import logging

import pytest

from packer.errors import SdpackError
from packer.interface.publish import PublishArgs, publish
from packer.interface.pull import PullArgs, pull
from packer.interface.resolve import ResolveArgs, resolve
from tests.hub.conftest import ALICE_TOKEN

REPO = "sdpack/tiny-sd"
BAD_TOKEN = "hf_leakcheckBADtoken4242424242424242"


def test_token_is_never_printed_or_written(
    hub_server, hf_env, monkeypatch, bundles, tmp_path, capfd, caplog
):
    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv("SDPACK_VERBOSE", "1")  # the chattiest setting
    texts = []

    monkeypatch.setenv("HF_TOKEN", ALICE_TOKEN)
    texts.append(
        publish(
            PublishArgs(bundles.v1, REPO, "1.0.0", private=True, endpoint=hub_server.url)
        ).display()
    )
    hub_server.faults.add("lfs_put", "half")
    with pytest.raises(SdpackError) as err:
        publish(PublishArgs(bundles.v2, REPO, "1.1.0", endpoint=hub_server.url))
    texts += [str(err.value), err.value.one_line(), repr(err.value)]
    hub_server.faults.clear()
    texts.append(publish(PublishArgs(bundles.v2, REPO, "1.1.0", endpoint=hub_server.url)).display())
    texts.append(
        resolve(
            ResolveArgs(f"{REPO}@1.1.0", endpoint=hub_server.url, lock_out=tmp_path / "lock.json")
        ).display()
    )
    texts.append(
        pull(PullArgs(f"{REPO}@1.1.0", tmp_path / "pulled", endpoint=hub_server.url)).display()
    )

    monkeypatch.setenv("HF_TOKEN", BAD_TOKEN)
    for call in (
        lambda: publish(PublishArgs(bundles.v1, REPO, "1.0.0", endpoint=hub_server.url)),
        lambda: resolve(ResolveArgs(f"{REPO}@1.0.0", endpoint=hub_server.url)),
        lambda: pull(PullArgs(f"{REPO}@1.0.0", tmp_path / "nope", endpoint=hub_server.url)),
    ):
        with pytest.raises(SdpackError) as err:
            call()
        texts += [str(err.value), err.value.one_line(), repr(err.value)]

    captured = capfd.readouterr()
    texts += [captured.out, captured.err, caplog.text]
    for token in (ALICE_TOKEN, BAD_TOKEN):
        assert not [t for t in texts if token in t]
        leaked = [
            p for p in tmp_path.rglob("*") if p.is_file() and token.encode() in p.read_bytes()
        ]
        assert leaked == []
    assert (tmp_path / "hf-home" / "hub").is_dir()  # the client's cache was there to be searched
