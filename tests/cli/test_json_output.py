"""`--json` on every verb prints one object valid against formats/cli-output.schema.json.

pack and generate are checked where they already run (tests/runtime/test_cli.py); serve here in
a subprocess, since it keeps serving."""

from __future__ import annotations

import json
import subprocess
import sys

from packer.cli import app
from packer.support.schemas import schema
from tests.cli.conftest import ALICE_TOKEN, make_bundle
from tests.helpers import REPO as SOURCE_TREE
from tests.helpers import cli_json

REPO = "sdpack/tiny-sd"


def test_every_verb_has_a_json_option_and_a_schema():
    from typer.main import get_command

    commands = get_command(app).commands
    assert set(commands) == set(schema("cli-output.schema.json")["$defs"]) & set(commands)
    for name, command in commands.items():
        assert "--json" in [o for p in command.params for o in p.opts], name


def test_local_verbs(cli, tmp_path):
    bundle = make_bundle(tmp_path / "bundle")
    hub, lock = tmp_path / "hub", tmp_path / "lock.json"
    assert cli_json(cli("version", "--json"), "version")["sdpack"]
    assert cli_json(cli("verify", bundle, "--json"), "verify")["files"] == 7
    assert (
        cli_json(cli("inspect", bundle, "--json"), "inspect")["components"]["unet"]["params"] == 12
    )
    published = cli_json(
        cli("publish", REPO, "--bundle", bundle, "--version", "1.0.0", "--hub", hub, "--json"),
        "publish",
    )
    assert published["already"] is False and published["hub"] == str(hub.absolute())
    resolved = cli_json(
        cli("resolve", f"{REPO}@1.0.0", "--hub", hub, "--lock-out", lock, "--json"), "resolve"
    )
    assert resolved["commit"] == published["commit"] and resolved["lock_file"] == str(lock)
    assert json.loads(cli("resolve", str(lock)).out) == {
        k: v for k, v in resolved.items() if k != "lock_file"
    }
    listed = cli_json(cli("versions", REPO, "--hub", hub, "--json"), "versions")
    assert [v["commit"] for v in listed["versions"]] == [published["commit"]]
    pulled = cli_json(cli("pull", lock, "--out", tmp_path / "out", "--json"), "pull")
    assert pulled["files"] == 7 and pulled["cached_files"] == 0


def test_hub_verbs(cli, hub_server, hf_env, monkeypatch, tmp_path):
    bundle = make_bundle(tmp_path / "bundle")
    monkeypatch.setenv("HF_TOKEN", ALICE_TOKEN)
    published = cli_json(
        cli(
            "publish",
            REPO,
            "--bundle",
            bundle,
            "--version",
            "1.0.0",
            "--hub",
            hub_server.url,
            "--json",
        ),
        "publish",
    )
    assert published["hub"] == hub_server.url and "manifest.json" in published["uploaded"]
    again = cli_json(
        cli(
            "publish",
            REPO,
            "--bundle",
            bundle,
            "--version",
            "1.0.0",
            "--hub",
            hub_server.url,
            "--json",
        ),
        "publish",
    )
    assert again["already"] is True and again["uploaded"] == []
    monkeypatch.delenv("HF_TOKEN")
    resolved = cli_json(
        cli("resolve", f"{REPO}@1.0.0", "--hub", hub_server.url, "--json"), "resolve"
    )
    assert (
        resolved["manifest_url"]
        == f"{hub_server.url}/{REPO}/resolve/{published['commit']}/manifest.json"
    )
    assert "serve" not in resolved
    assert (
        cli_json(cli("versions", REPO, "--hub", hub_server.url, "--json"), "versions")["versions"][
            0
        ]["version"]
        == "1.0.0"
    )
    pulled = cli_json(
        cli("pull", f"{REPO}@1.0.0", "--hub", hub_server.url, "--out", tmp_path / "out", "--json"),
        "pull",
    )
    assert pulled["downloaded_bytes"] > 0 and pulled["repaired"] == []


def test_serve(tmp_path):
    bundle = make_bundle(tmp_path / "bundle")
    hub = tmp_path / "hub"
    from packer.interface.publish import PublishArgs, publish

    publish(PublishArgs(bundle, REPO, "1.0.0", to=hub))
    proc = subprocess.Popen(
        [sys.executable, "-m", "packer", "serve", str(hub), "--port", "0", "--json"],
        cwd=SOURCE_TREE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        lines = []
        while not lines or lines[-1] != "}\n":
            lines.append(proc.stdout.readline())
            assert lines[-1], proc.stderr.read()
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    from tests.helpers import Result

    doc = cli_json(Result(0, "".join(lines), ""), "serve")
    assert doc["url"].startswith("http://127.0.0.1:") and doc["app_url"] is None
