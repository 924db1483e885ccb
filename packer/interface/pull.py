"""`packer pull ORG/NAME@VERSION|LOCKFILE --out DIR [--hub hf|URL|DIR]`.

Downloads the exact commit a pin names and verifies every file before the bundle appears at DIR.
From a Hub the files go through the Hugging Face cache: a cut-off pull resumes, a repeated one
downloads nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from packer.hub import resolve as resolving
from packer.hub.resolve import Pulled


@dataclass
class PullArgs:
    """What to pull (a pin or a lock file), where to put it, and from which hub (None: the lock
    file's, else the Hugging Face Hub)."""

    spec: str
    out: Path
    endpoint: str | None = None

    def __post_init__(self) -> None:
        self.spec, self.out = str(self.spec), Path(self.out)

    def display(self) -> str:
        return f"pull {self.spec} into {self.out}" + (
            f" from {self.endpoint}" if self.endpoint else ""
        )


@dataclass
class PullResult:
    pulled: Pulled

    def display(self) -> str:
        p, r = self.pulled, self.pulled.resolved
        cached = f", {p.reused} from the cache" if p.reused else ""
        return (
            f"ok: pulled {r.repo} {r.version} (commit {r.commit}) into {p.out}: "
            f"{p.files} files, {p.bytes / 2**20:.1f} MiB verified ({p.downloaded / 2**20:.1f} MiB transferred{cached})"
        )

    def as_json(self) -> dict:
        p, r = self.pulled, self.pulled.resolved
        return {
            "command": "pull",
            "repo": r.repo,
            "version": r.version,
            "commit": r.commit,
            "manifest_sha256": r.manifest_sha256,
            "hub": r.endpoint,
            "out": str(p.out),
            "files": p.files,
            "bytes": p.bytes,
            "downloaded_bytes": p.downloaded,
            "cached_files": p.reused,
            "repaired": sorted(p.repaired),
        }


def pull(args: PullArgs) -> PullResult:
    """Download the pinned bundle into ``args.out``, every file verified before it appears."""
    return PullResult(resolving.pull(args.spec, args.out, args.endpoint))
