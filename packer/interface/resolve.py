"""`packer resolve ORG/NAME@VERSION|LOCKFILE [--hub hf|URL|DIR] [--lock-out FILE]`.

Prints, as JSON, the commit a version pins and the manifest URL and sha256 a web page or a
script should fetch; ``--lock-out`` writes the same as a lock record for `packer pull`. For a
directory hub the URL is where `packer serve` answers, and ``serve`` says how to start it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from packer.hub import lock
from packer.hub import resolve as resolving
from packer.hub.resolve import Resolved


@dataclass
class ResolveArgs:
    """What to resolve (a pin or a lock file), at which hub, and where to write a lock record."""

    spec: str
    endpoint: str | None = None
    lock_out: Path | None = None

    def __post_init__(self) -> None:
        self.lock_out = Path(self.lock_out) if self.lock_out else None

    def display(self) -> str:
        return f"resolve {self.spec}" + (f" at {self.endpoint}" if self.endpoint else "")


@dataclass
class ResolveResult:
    resolved: Resolved
    lock_file: Path | None = None

    def as_json(self) -> dict:
        doc = {"command": "resolve", **self.resolved.as_dict()}
        if self.lock_file is not None:
            doc["lock_file"] = str(self.lock_file)
        return doc

    def display(self) -> str:
        return json.dumps(self.as_json(), indent=2, sort_keys=True)


def resolve(args: ResolveArgs) -> ResolveResult:
    """Resolve ``args.spec`` (a pin or a lock file); write a lock record to ``args.lock_out`` if given."""
    resolved = resolving.resolve(args.spec, args.endpoint)
    written = lock.write(args.lock_out, resolved.lock()) if args.lock_out else None
    return ResolveResult(resolved, written)
