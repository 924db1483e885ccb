"""`packer pull ORG/NAME@VERSION|LOCKFILE --out DIR [--endpoint URL|DIR]`.

Downloads the exact commit a pin names and verifies every file before the bundle appears at DIR.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from packer.hub.resolve import Pulled, pull


@dataclass
class PullArgs:
    spec: str
    out: Path
    endpoint: str | None = None

    def display(self) -> str:
        return f"pull {self.spec} into {self.out}" + (f" from {self.endpoint}" if self.endpoint else "")


@dataclass
class PullResult:
    pulled: Pulled

    def display(self) -> str:
        p, r = self.pulled, self.pulled.resolved
        return (
            f"ok: pulled {r.repo} {r.version} (commit {r.commit}) into {p.out}: "
            f"{p.files} files, {p.bytes / 2**20:.1f} MiB verified"
        )


def pull_bundle(spec: str, out: Path, endpoint: str | None = None) -> PullResult:
    args = PullArgs(str(spec), Path(out), endpoint)
    return PullResult(pull(args.spec, args.out, args.endpoint))
