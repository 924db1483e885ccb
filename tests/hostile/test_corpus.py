"""Every hostile input of corpus.py through the real CLI: the promised failure, nothing else.

For each case: the expected exit code (never 0 for bad input), no traceback, exactly one stderr
line that says what is wrong and, in parentheses at its end, what to do; the destination
(``--out``/``--to``/``--lock-out``) absent or unchanged; no new files in ``SDPACK_CACHE`` except
complete, valid cache entries; no staging folders (``.*.partial-*``) or temporary files left;
nothing left in the command's TMPDIR; no marker file from code that must never run.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import pytest

from tests.helpers import packer
from tests.hostile import corpus
from tests.hostile.corpus import CASES, World, destinations

# The hint: what to do, as the last parenthesised part of the line (SdpackError.one_line).
HINT = re.compile(r"\(([^()]*(?:\([^()]*\)[^()]*)*)\)$")
VERBS = re.compile(
    r"\b(use|pass|choose|check|run|try|pull|pack|repack|re-save|download|upgrade|bump|write|remove|publish|set|"
    r"merge|is this|the hub|the bundle|the manifest|the file|the repository|a directory hub|published versions)\b", re.I)  # fmt: skip
LEFTOVER = re.compile(r"^\..*(\.partial-|\.old-)|^\.object\.|^\.tmp|\.tmp$|^tmp")


def has_hint(line: str) -> bool:
    m = HINT.search(line)
    return bool(m and VERBS.search(m.group(1)))


def tree_digest(path: Path) -> str | None:
    """None if absent; else a digest of every path and file content under it."""
    if not path.exists():
        return None
    if path.is_file():
        return hashlib.sha256(path.read_bytes()).hexdigest()
    h = hashlib.sha256()
    for p in sorted(path.rglob("*")):
        h.update(p.relative_to(path).as_posix().encode() + b"\0")
        if p.is_file():
            h.update(hashlib.sha256(p.read_bytes()).digest())
    return h.hexdigest()


def files_under(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}


def check_cache_entries(cache: Path, new: set[str]) -> None:
    """New cache files must form complete entries whose library matches its recorded sha256."""
    for rel in new:
        name = Path(rel).name
        assert not LEFTOVER.search(name), f"temporary file left in the cache: {rel}"
        if rel.startswith("compiled/") and rel.endswith(".json"):
            meta = json.loads((cache / rel).read_text())
            lib = cache / "compiled" / meta["lib"]
            assert hashlib.sha256(lib.read_bytes()).hexdigest() == meta["lib_sha256"], rel
        elif rel.startswith("compiled/"):
            assert any(
                n.startswith("compiled/")
                and n.endswith(".json")
                and json.loads((cache / n).read_text()).get("lib") == name
                for n in files_under(cache)
            ), rel


def leftovers(root: Path) -> list[str]:
    return sorted(
        p.relative_to(root).as_posix() for p in root.rglob("*") if LEFTOVER.search(p.name)
    )


@pytest.fixture
def world(tmp_path, example, packed, local_hub):
    hub, lock = local_hub
    case_dir = tmp_path / "case"
    case_dir.mkdir()
    return World(case_dir, example, packed, hub, lock)


@pytest.mark.parametrize("case", CASES, ids=lambda f: f.__name__)
def test_hostile_input(case, world, launcher, session_dirs, tmp_path):
    argv, code, expect = case(world)
    dests = {d: tree_digest(d) for d in destinations(argv)}
    cache = session_dirs["cache"]
    cache_before = files_under(cache)
    shared_before = {d: tree_digest(d) for d in (world.bundle, world.hub, world.lock)}
    tmpdir = tmp_path / "TMPDIR"
    tmpdir.mkdir()

    r = launcher.run(*argv, env={"TMPDIR": str(tmpdir)})

    assert "Traceback" not in r.err, r.err
    lines = [line for line in r.err.splitlines() if line.strip()]
    assert len(lines) == 1, f"expected one stderr line, got {r.err!r}"
    line = lines[0]
    assert expect in line, line
    if code == 0:  # only nan_weights: a warning, and a complete, valid bundle
        assert r.code == 0 and line.startswith("warning: "), (r.code, line)
        out = destinations(argv)[0]
        assert launcher.run("verify", out).code == 0
    else:
        assert r.code == code, (r.code, line)
        assert line.startswith("error: "), line
        assert has_hint(line), f"no hint (what to do) at the end of: {line}"
        for d, digest in dests.items():
            assert tree_digest(d) == digest, f"{d} was written or changed"
        assert not r.out.strip(), r.out
    check_cache_entries(cache, files_under(cache) - cache_before)
    assert leftovers(tmp_path) == []
    assert list(tmpdir.iterdir()) == []
    assert {d: tree_digest(d) for d in shared_before} == shared_before
    for marker in world.markers:
        assert not marker.exists(), f"{marker}: code ran from a checkpoint"


def test_corpus_is_big_and_distinct():
    names = [c.__name__ for c in CASES]
    assert len(names) == len(set(names)) >= 30


@pytest.mark.parametrize(
    "case",
    [corpus.verify_dotdot_path, corpus.resolve_lock_bad_sha, corpus.ckpt_runs_code],
    ids=lambda f: f.__name__,
)
def test_launcher_matches_a_plain_subprocess(case, world, launcher, session_dirs):
    """The pre-loaded launcher answers exactly as `python -m packer` does."""
    argv, code, _ = case(world)
    env = {"SDPACK_CACHE": str(session_dirs["cache"]), "HF_HOME": str(session_dirs["hf-home"])}
    plain = packer(*map(str, argv), env=env)
    launched = launcher.run(*argv)
    assert (plain.code, plain.out, plain.err) == (launched.code, launched.out, launched.err)
    assert plain.code == code
    for marker in world.markers:
        assert not marker.exists()
