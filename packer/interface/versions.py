"""`packer versions ORG/NAME [--hub hf|URL|DIR]`: every published version, newest first."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from packer.hub.versions import Versions, list_versions


def _size(n: int) -> str:
    return f"{n / 2**20:.1f} MiB" if n >= 2**20 else f"{n / 2**10:.1f} KiB"


@dataclass
class VersionsArgs:
    """Whose versions to list, at which hub (None: the Hugging Face Hub)."""

    repo: str
    hub: str | Path | None = None


@dataclass
class VersionsResult:
    listed: Versions

    def display(self) -> str:
        v = self.listed
        if not v.versions:
            return f"{v.repo} has no published versions at {v.hub}"
        rows = [("VERSION", "COMMIT", "DATE", "SIZE", "TARGETS")]
        rows += [
            (
                x.version,
                x.commit[:12],
                (x.date or "?")[:19].replace("T", " "),
                _size(x.size),
                ", ".join(x.targets) or "none (weights only)",
            )
            for x in v.versions
        ]
        widths = [max(len(r[i]) for r in rows) for i in range(4)]
        return "\n".join(
            "  ".join([*(c.ljust(w) for c, w in zip(r[:4], widths)), r[4]]) for r in rows
        )

    def as_json(self) -> dict:
        return {"command": "versions", **self.listed.as_dict()}


def versions(args: VersionsArgs) -> VersionsResult:
    """Every published version of ``args.repo``, newest first."""
    return VersionsResult(list_versions(args.repo, args.hub))
