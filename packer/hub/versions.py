"""The published versions of a repository: every ``vX.Y.Z`` tag with its commit, date, targets and size.

Targets and size come from the manifest at each tagged commit (read through the Hugging Face
cache, so listing again costs one refs call and one commit listing); the date is the commit's.

>>> [v.version for v in list_versions("sdpack/tiny-sd").versions]     # doctest: +SKIP
['1.1.0', '1.0.0']
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

from packer.bundle import manifest as manifest_mod
from packer.bundle.manifest import MANIFEST_NAME
from packer.errors import HubError, UsageError
from packer.hub.resolve import remote_for
from packer.support.names import check_repo_id, check_version, semver_key


@dataclass
class Version:
    version: str
    tag: str
    commit: str
    date: str | None  # ISO 8601, UTC; None where the hub does not say
    targets: list[str]  # the manifest's variants, e.g. llvm-float32, webgpu-float16
    size: int  # bytes a pull fetches: every file the manifest lists, and the manifest


@dataclass
class Versions:
    repo: str
    hub: str
    versions: list[Version]  # newest first

    def as_dict(self) -> dict:
        return {"repo": self.repo, "hub": self.hub, "versions": [asdict(v) for v in self.versions]}


def _version_of(tag: str) -> str | None:
    """``v1.2.0`` -> ``1.2.0``; None for tags that are not sdpack versions."""
    if not tag.startswith("v"):
        return None
    try:
        return check_version(tag)
    except UsageError:
        return None


def _when(date: str | None) -> datetime:
    try:
        return (
            datetime.fromisoformat(date.replace("Z", "+00:00"))
            if date
            else datetime.min.replace(tzinfo=UTC)
        )
    except ValueError:
        return datetime.min.replace(tzinfo=UTC)


def list_versions(repo: str, hub: str | Path | None = None) -> Versions:
    """Every published version of ``repo`` on ``hub`` (``hf``/None, a Hub URL, or a directory hub)."""
    check_repo_id(repo)
    remote = remote_for(hub)
    tagged = {
        tag: (version, commit)
        for tag, commit in remote.tags(repo).items()
        if (version := _version_of(tag))
    }
    dates = remote.commit_dates(repo, {commit for _, commit in tagged.values()})
    found = []
    for tag, (version, commit) in tagged.items():
        data = remote.read(repo, commit, MANIFEST_NAME)
        doc = manifest_mod.parse(data, where=f"{repo}@{tag} {MANIFEST_NAME}")
        if doc["model"]["version"] != version:
            raise HubError(
                f"{repo}@{tag} holds a manifest for version {doc['model']['version']}",
                "the repository does not hold what its tag says",
            )
        size = sum(f["size"] for f in doc["files"]) + len(data)
        found.append(Version(version, tag, commit, dates.get(commit), sorted(doc["targets"]), size))
    found.sort(key=lambda v: (_when(v.date), semver_key(v.version)), reverse=True)
    return Versions(repo, remote.location, found)
