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
    quantization: dict | None = None  # quantization_summary() of a quantized bundle

    def display(self) -> str:
        text = f"ok: {self.files} files, {self.bytes / 2**20:.1f} MiB verified"
        if self.quantization:
            text += f"; weights quantized {quantization_text(self.quantization)}"
        return text

    def as_json(self) -> dict:
        out = {
            "command": "verify",
            "bundle": str(self.bundle),
            "ok": True,
            "files": self.files,
            "bytes": self.bytes,
        }
        if self.quantization:
            out["quantization"] = self.quantization
        return out


def quantization_summary(manifest: dict) -> dict | None:
    """Scheme, bits, group size and the count of quantized weights per component, or None."""
    quant = manifest.get("quantization")
    if quant is None:
        return None
    return {
        "scheme": quant["scheme"],
        "bits": quant["bits"],
        "group_size": quant["group_size"],
        "tensors": {c: len(t) for c, t in sorted(quant["tensors"].items())},
    }


def quantization_text(summary: dict) -> str:
    counts = ", ".join(f"{n} {c}" for c, n in summary["tensors"].items())
    return f"{summary['scheme']} ({summary['bits']}-bit, groups of {summary['group_size']}, float16 scales; {counts} weights)"


def verify(args: VerifyArgs) -> VerifyResult:
    """Raise :class:`BundleError` naming the first bad file; otherwise count what was checked."""
    bundle = Bundle.open(args.bundle)
    total = sum(f["size"] for f in bundle.manifest["files"])
    with progress.task("verify", total, bytes_=True) as bar:
        bundle.verify(on_file=lambda entry: bar.advance(entry["size"]))
    return VerifyResult(
        Path(args.bundle),
        files=len(bundle.files),
        bytes=total,
        quantization=quantization_summary(bundle.manifest),
    )
