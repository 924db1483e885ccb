"""`packer inspect BUNDLE`: a human summary of a bundle's manifest (no hashing)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from packer.bundle import Bundle
from packer.interface.verify import quantization_summary, quantization_text


def _mib(n: int) -> str:
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} B"


@dataclass
class InspectArgs:
    """The bundle folder to describe."""

    bundle: Path


@dataclass
class InspectResult:
    bundle: Path
    manifest: dict

    def display(self) -> str:
        return _text(self.manifest)

    def as_json(self) -> dict:
        m = self.manifest
        files = m["files"]
        sizes = {f["path"]: f["size"] for f in files}
        components = {}
        for name, comp in m["components"].items():
            prefix = comp["weights"].rsplit("/", 1)[0] + "/"
            mine = [f for f in files if f["path"].startswith(prefix)]
            components[name] = {
                "params": len(comp["params"]),
                "stored_bytes": sum(f["size"] for f in mine),
                "raw_bytes": sum(f.get("encoding", {}).get("raw_size", f["size"]) for f in mine),
            }
        targets = {
            key: {
                "kind": t["kind"],
                "dtype": t["dtype"],
                "libs": len(t["libs"]),
                "lib_bytes": sum(sizes[p] for p in t["libs"].values()),
                "requirements": t["requirements"],
            }
            for key, t in sorted(m["targets"].items())
        }
        return {
            "command": "inspect",
            "bundle": str(self.bundle),
            "repo": m["model"]["id"],
            "version": m["model"]["version"],
            "license": m["model"]["license"],
            "dtype": m["dtype"],
            "source": {k: m["source"][k] for k in ("name", "format", "sha256")},
            "architecture": {
                k: m["architecture"][k] for k in ("family", "signature", "prediction_type")
            },
            "scheduler": {k: m["scheduler"][k] for k in ("default", "steps", "guidance")},
            "generator": m["generator"],
            "components": components,
            "targets": targets,
            "files": len(files),
            "bytes": sum(f["size"] for f in files),
            **({"quantization": quant} if (quant := quantization_summary(m)) else {}),
        }


def inspect(args: InspectArgs) -> InspectResult:
    """The manifest of the bundle at ``args.bundle`` (checked against the schema, no hashing)."""
    return InspectResult(Path(args.bundle), Bundle.open(args.bundle).manifest)


def _text(m: dict) -> str:
    files = m["files"]
    lines = [
        f"model      {m['model']['id']} {m['model']['version']}  (license {m['model']['license']})",
        f"source     {m['source']['name']} [{m['source']['format']}] sha256 {m['source']['sha256'][:16]}…",
        f"arch       {m['architecture']['family']} signature {m['architecture']['signature'][:16]}…"
        f"  prediction {m['architecture']['prediction_type']}",
        f"weights    {m['dtype']} (each variant converts them to its own dtype when loading)",
        *([f"quantized  {quantization_text(q)}"] if (q := quantization_summary(m)) else []),
        f"scheduler  {m['scheduler']['default']}, {m['scheduler']['steps']} steps, guidance {m['scheduler']['guidance']}",
        f"generator  sdpack {m['generator']['sdpack']}, apache-tvm {m['generator']['apache_tvm']},"
        f" tvm-ffi {m['generator']['tvm_ffi']}, pipeline {m['generator']['pipeline_version']}",
        "components:",
    ]
    for name, comp in m["components"].items():
        prefix = comp["weights"].rsplit("/", 1)[0] + "/"
        stored = sum(f["size"] for f in files if f["path"].startswith(prefix))
        raw = sum(
            f.get("encoding", {}).get("raw_size", f["size"])
            for f in files
            if f["path"].startswith(prefix)
        )
        inputs = ", ".join(f"{i['name']}{i['shape']}:{i['dtype']}" for i in comp["inputs"])
        lines.append(
            f"  {name:<13} {len(comp['params'])} params, {_mib(raw)} raw, {_mib(stored)} stored; inputs {inputs}"
        )
    lines.append("targets:" if m["targets"] else "targets:   none (weights only)")
    for key, t in sorted(m["targets"].items()):
        sizes = {f["path"]: f["size"] for f in files}
        libs = sum(sizes[p] for p in t["libs"].values())
        req = t["requirements"]
        extra = ", ".join(f"{k}={v}" for k, v in sorted(req.items()) if v)
        lines.append(
            f"  {key:<16} {len(t['libs'])} libs, {_mib(libs)}" + (f"; {extra}" if extra else "")
        )
    total = sum(f["size"] for f in files)
    lines.append(f"files      {len(files)} + manifest.json, {_mib(total)}")
    return "\n".join(lines)
