"""`packer verify BUNDLE`: the schema and every hash, or the first failing file."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from packer.bundle import Bundle
from packer.support import progress


@dataclass
class VerifyArgs:
    """The bundle folder to check."""

    bundle: Path


@dataclass
class VerifyResult:
    bundle: Path
    files: int
    bytes: int

    def display(self) -> str:
        return f"ok: {self.files} files, {self.bytes / 2**20:.1f} MiB verified"

    def as_json(self) -> dict:
        return {"command": "verify", "bundle": str(self.bundle), "ok": True, "files": self.files, "bytes": self.bytes}


def verify(args: VerifyArgs) -> VerifyResult:
    """Raise :class:`BundleError` naming the first bad file; otherwise count what was checked."""
    bundle = Bundle.open(args.bundle)
    total = sum(f["size"] for f in bundle.manifest["files"])
    with progress.task("verify", total, bytes_=True) as bar:
        bundle.verify(on_file=lambda entry: bar.advance(entry["size"]))
    return VerifyResult(Path(args.bundle), files=len(bundle.files), bytes=total)
