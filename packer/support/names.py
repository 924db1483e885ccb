"""Repo ids, versions and pins: ``ORG/NAME@1.2.0``, ``ORG/NAME@v1.2.0``, ``ORG/NAME@<40-hex sha>``.

Checked before any network call so that a typo is a UsageError, not a confusing Hub 404.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from packer.errors import UsageError
from packer.support.spec import REPO_ID, SEMVER

COMMIT = re.compile(r"^[0-9a-f]{40}$")


def check_repo_id(repo_id: str) -> str:
    """``ORG/NAME`` as the Hub accepts it (no ``--`` or ``..``, which the Hub refuses)."""
    if (
        not isinstance(repo_id, str)
        or not REPO_ID.match(repo_id)
        or "--" in repo_id
        or ".." in repo_id
    ):
        raise UsageError(
            f"invalid repo id {repo_id!r}",
            "use ORG/NAME with letters, digits, '.', '_' or '-' (no '--' or '..', at most 96 characters each)",
        )
    return repo_id


def check_version(version: str) -> str:
    """A semantic version, returned without the optional leading ``v``."""
    bare = version[1:] if isinstance(version, str) and version[:1] in ("v", "V") else version
    if not isinstance(bare, str) or not SEMVER.match(bare):
        raise UsageError(
            f"invalid version {version!r}", "use a semantic version such as 1.0.0 or 1.2.0-rc.1"
        )
    return bare


def tag_name(version: str) -> str:
    """The git tag a version is published under."""
    return f"v{check_version(version)}"


@dataclass(frozen=True)
class Pin:
    """What the user asked for: a version (resolved through its tag) or a commit (already exact)."""

    repo: str
    version: str | None = None
    commit: str | None = None

    def __str__(self) -> str:
        return f"{self.repo}@{self.version or self.commit}"


def parse_pin(spec: str) -> Pin:
    """``ORG/NAME@VERSION`` or ``ORG/NAME@<commit sha>`` -> :class:`Pin`.

    >>> parse_pin("sdpack/tiny-sd@v1.0.0")
    Pin(repo='sdpack/tiny-sd', version='1.0.0', commit=None)
    """
    repo, sep, ref = (spec or "").partition("@")
    if not sep or not ref:
        raise UsageError(
            f"{spec!r} does not say which version",
            "write ORG/NAME@VERSION (e.g. @1.0.0) or ORG/NAME@<commit sha>",
        )
    check_repo_id(repo)
    if COMMIT.match(ref):
        return Pin(repo, commit=ref)
    return Pin(repo, version=check_version(ref))


def semver_key(version: str) -> tuple:
    """A sort key giving semantic-version precedence: 1.0.0-rc.1 < 1.0.0 < 1.0.1 < 1.10.0."""
    core, _, pre = check_version(version).split("+")[0].partition("-")
    numbers = tuple(int(n) for n in core.split("."))
    if not pre:
        return (numbers, 1, ())
    parts = tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in pre.split("."))
    return (numbers, 0, parts)
