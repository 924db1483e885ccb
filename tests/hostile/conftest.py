"""Session fixtures for the hostile-input suite: the tiny example, one packed bundle, a directory
hub holding it, a lock record, and a pre-loaded launcher for the real CLI (launcher.py).

Every command runs with ``SDPACK_CACHE`` and ``HF_HOME`` in session folders, so the suite never
touches the user's caches and tests can search them for leftovers and secrets.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
from hypothesis.configuration import set_hypothesis_home_dir

set_hypothesis_home_dir(
    tempfile.mkdtemp(prefix="sdpack-hypothesis-")
)  # not .hypothesis/ in the repo

from examples.make_example import make_example
from tests.hostile.corpus import REPO
from tests.hostile.launcher import Launcher


@pytest.fixture(scope="session")
def session_dirs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("hostile-session")
    dirs = {
        name: root / name for name in ("cache", "hf-home", "launcher", "example", "bundles", "hub")
    }
    for d in dirs.values():
        d.mkdir()
    return dirs


@pytest.fixture(scope="session")
def launcher(session_dirs):
    env = {
        "SDPACK_CACHE": str(session_dirs["cache"]),
        "HF_HOME": str(session_dirs["hf-home"]),
        "HF_HUB_DISABLE_XET": "1",
        "HF_HUB_DISABLE_TELEMETRY": "1",
    }
    for var in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_ENDPOINT", "HF_HUB_OFFLINE"):
        env[var] = None
    launch = Launcher(env, session_dirs["launcher"])
    yield launch
    launch.close()


@pytest.fixture(scope="session")
def example(session_dirs) -> dict[str, Path]:
    return make_example(session_dirs["example"], seed=0)


@pytest.fixture(scope="session")
def pack_run(launcher, example, session_dirs):
    """The example packed once (llvm, fp32, 64 px) as sdpack/tiny 1.0.0 through the real CLI,
    compiling for real (the session's cache starts empty): the bundle and the run's Result."""
    out = session_dirs["bundles"] / "tiny"
    r = launcher.run(
        "pack",
        example["safetensors"],
        "--out",
        out,
        "--tokenizer",
        example["tokenizer"],
        "--image-size",
        "64",
        "--model-id",
        REPO,
        "--version",
        "1.0.0",
        "--targets",
        "llvm",
        "--dtype",
        "fp32",
    )
    assert r.code == 0, r.err
    for p in out.rglob("*"):  # shared by every case: nobody may change it
        p.chmod(0o444 if p.is_file() else 0o555)
    return out, r


@pytest.fixture(scope="session")
def packed(pack_run) -> Path:
    return pack_run[0]


@pytest.fixture(scope="session")
def local_hub(launcher, packed, session_dirs) -> tuple[Path, Path]:
    """A directory hub with sdpack/tiny 1.0.0 and a lock record pinning it."""
    hub = session_dirs["hub"] / "hub"
    r = launcher.run("publish", REPO, "--bundle", packed, "--version", "1.0.0", "--to", hub)
    assert r.code == 0, r.err
    lock = session_dirs["hub"] / "tiny.lock.json"
    r = launcher.run("resolve", f"{REPO}@1.0.0", "--endpoint", hub, "--lock-out", lock)
    assert r.code == 0, r.err
    return hub, lock
