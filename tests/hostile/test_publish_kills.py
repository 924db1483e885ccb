"""`packer publish` SIGKILLed at 20 seeded random moments, to the Hub (test server) and to a
directory hub; after each kill: no tag unless its commit fully landed, no visible partial version,
a rerun completes, a further rerun is a no-op; and the token appears in no output or file.

The CLI runs as a child of the pre-loaded launcher (launcher.py), so every delay in
``[0, typical publish time]`` lands inside the publish itself rather than in interpreter start-up.
"""

from __future__ import annotations

import json
import random
import time
from pathlib import Path

import pytest

from packer.hub.local import LocalHub
from tests.hostile.corpus import REPO
from tests.hub_server.server import HubServer

KILLS = 20
SEED = 20260707
TOKEN = "hf_sdpackKILLtestTOKEN7f3a9c2e5b1d4068"  # distinctive: grep finds it anywhere it leaks


def bundle_files(bundle: Path) -> set[str]:
    return {p.relative_to(bundle).as_posix() for p in bundle.rglob("*") if p.is_file()}


def grep_token(texts: list[str], roots: list[Path]) -> list[str]:
    leaks = [t[:80] for t in texts if TOKEN in t]
    for root in roots:
        leaks += [
            str(p) for p in root.rglob("*") if p.is_file() and TOKEN.encode() in p.read_bytes()
        ]
    return leaks


def delays(typical: float) -> list[float]:
    rng = random.Random(SEED)
    return [rng.uniform(0, typical) for _ in range(KILLS)]


def timed(launcher, *argv, env=None):
    running = launcher.start(*argv, env=env)
    r = running.wait()
    return r, time.monotonic() - running.t0


# -- the Hub ---------------------------------------------------------------------------------------
def check_hub_state(server: HubServer, expected: set[str]) -> None:
    repo = server.storage.repos.get(REPO)
    if repo is None:
        return
    for oid, commit in repo.commits.items():  # every commit a reader could ask for
        if commit.parent is not None:
            assert set(commit.tree) == expected, f"commit {oid} holds a partial version"
    main = repo.commits[repo.branches["main"]]
    assert main.parent is None or set(main.tree) == expected
    if "v1.0.0" in repo.tags:
        assert set(repo.commits[repo.tags["v1.0.0"]].tree) == expected
    assert set(repo.tags) <= {"v1.0.0"}


def test_sigkill_publish_to_hub(launcher, packed, session_dirs, tmp_path):
    expected = bundle_files(packed) | {"README.md", ".gitattributes"}
    env = {"HF_TOKEN": TOKEN}
    texts: list[str] = []

    def fresh_server(i: int) -> HubServer:
        return HubServer(
            tmp_path / f"server-{i}", tokens={TOKEN: "alice"}, orgs={"sdpack": ["alice"]}
        ).start()

    calib = fresh_server(-1)

    def argv(url: str) -> tuple:
        return ("publish", REPO, "--bundle", packed, "--version", "1.0.0", "--endpoint", url)

    r, typical = timed(launcher, *argv(calib.url), env=env)
    calib.stop()
    assert r.code == 0, r.err
    texts += [r.out, r.err]

    outcomes = []
    for i, delay in enumerate(delays(typical)):
        server = fresh_server(i)
        try:
            running = launcher.start(*argv(server.url), env=env)
            time.sleep(max(0.0, delay - (time.monotonic() - running.t0)))
            running.kill()
            killed = running.wait()
            texts += [killed.out, killed.err]
            assert "Traceback" not in killed.err
            outcomes.append(killed.code)
            check_hub_state(server, expected)

            again = launcher.run(*argv(server.url), env=env)
            texts += [again.out, again.err]
            assert again.code == 0, again.err
            check_hub_state(server, expected)
            tags = server.repo(REPO).tags
            assert set(tags) == {"v1.0.0"}
            commits = server.repo(REPO).commit_count

            noop = launcher.run(*argv(server.url), env=env)
            texts += [noop.out, noop.err]
            assert (
                noop.code == 0 and "already published" in noop.out and "nothing to do" in noop.out
            ), noop
            assert server.repo(REPO).tags == tags and server.repo(REPO).commit_count == commits
        finally:
            server.stop()
    assert outcomes.count(-9) >= KILLS // 2, f"too few runs were really killed: {outcomes}"
    assert (
        grep_token(texts, [tmp_path, session_dirs["hf-home"], session_dirs["cache"], packed]) == []
    )


# -- a directory hub ----------------------------------------------------------------------------------
def check_local_state(hub_dir: Path, expected: set[str]) -> None:
    repo = hub_dir / REPO
    if not (repo / "refs").exists():
        return
    hub = LocalHub(hub_dir)
    for record in (repo / "commits").glob(
        "*.json"
    ):  # the glob skips .tmp files: readers never see them
        commit = record.stem
        files = hub.snapshot(REPO, commit)
        assert set(files) == expected, f"commit {commit} holds a partial version"
        for path, entry in files.items():  # every object a visible commit names is there, whole
            obj = hub.object_path(REPO, entry["sha256"])
            assert obj.is_file() and obj.stat().st_size == entry["size"], path
    head = hub.commit_for(REPO, "main")
    tags = hub.tags(REPO)
    assert set(tags) <= {"v1.0.0"}
    for commit in [head, *tags.values()]:
        if commit is not None:
            assert (repo / "commits" / f"{commit}.json").is_file()


def test_sigkill_publish_to_directory_hub(launcher, packed, tmp_path):
    expected = bundle_files(packed) | {"README.md"}
    argv = lambda hub: ("publish", REPO, "--bundle", packed, "--version", "1.0.0", "--to", hub)  # noqa: E731
    r, typical = timed(launcher, *argv(tmp_path / "calib"))
    assert r.code == 0, r.err
    typical = max(typical, 0.05)

    outcomes = []
    for i, delay in enumerate(delays(typical)):
        hub = tmp_path / f"hub-{i}"
        running = launcher.start(*argv(hub))
        time.sleep(max(0.0, delay - (time.monotonic() - running.t0)))
        running.kill()
        killed = running.wait()
        assert "Traceback" not in killed.err
        outcomes.append(killed.code)
        check_local_state(hub, expected)

        again = launcher.run(*argv(hub))
        assert again.code == 0, again.err
        check_local_state(hub, expected)
        tag = (hub / REPO / "refs/tags/v1.0.0").read_text()
        commits = sorted((hub / REPO / "commits").iterdir())

        noop = launcher.run(*argv(hub))
        assert noop.code == 0 and "already published" in noop.out, noop
        assert (hub / REPO / "refs/tags/v1.0.0").read_text() == tag
        assert sorted((hub / REPO / "commits").iterdir()) == commits

        out = tmp_path / f"pulled-{i}"
        pulled = launcher.run("pull", f"{REPO}@1.0.0", "--endpoint", hub, "--out", out)
        assert pulled.code == 0, pulled.err  # the version a reader gets verifies, file by file
        assert json.loads((out / "manifest.json").read_text())["model"]["version"] == "1.0.0"
    assert outcomes.count(-9) >= KILLS // 4, f"too few runs were really killed: {outcomes}"


@pytest.fixture(autouse=True)
def _no_stray_children(launcher):
    yield
    assert launcher.proc.poll() is None  # the launcher survived every kill of its children
