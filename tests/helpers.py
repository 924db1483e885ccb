"""Helpers shared by the test suites: running the real CLI, copying bundles."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from packer.support import canonical

REPO = Path(__file__).resolve().parents[1]
GOLDEN = REPO / "formats" / "testdata"


@dataclass
class Result:
    code: int
    out: str
    err: str

    @property
    def error_line(self) -> str:
        """The single stderr line of a failed run (asserts there is exactly one, no traceback)."""
        lines = [line for line in self.err.splitlines() if line.strip()]
        assert "Traceback" not in self.err, self.err
        assert len(lines) == 1, f"expected one error line, got: {self.err!r}"
        return lines[0]


def packer(
    *args: str, env: dict | None = None, cwd: Path | None = None, timeout: float = 600
) -> Result:
    """Run the real `packer` CLI in a subprocess (as a user would)."""
    full_env = {**os.environ, "SDPACK_NO_PROGRESS": "1", **(env or {})}
    proc = subprocess.run(
        [sys.executable, "-m", "packer", *args],
        capture_output=True,
        text=True,
        env=full_env,
        cwd=cwd,
        timeout=timeout,
    )
    return Result(proc.returncode, proc.stdout, proc.stderr)


def cli_json(result: Result, verb: str) -> dict:
    """The JSON object a successful ``packer VERB --json`` printed, checked against
    formats/cli-output.schema.json (the verb's definition, and the top-level oneOf)."""
    import jsonschema

    from packer.support.schemas import schema

    assert result.code == 0, result.err
    doc = json.loads(result.out)
    full = schema("cli-output.schema.json")
    jsonschema.Draft202012Validator(full).validate(doc)
    jsonschema.Draft202012Validator({"$ref": f"#/$defs/{verb}", "$defs": full["$defs"]}).validate(
        doc
    )
    assert doc["command"] == verb
    return doc


# -- forging bundles: change a file, then make the manifest agree (an attacker who knows the format)
def read_manifest(root: Path) -> dict:
    return json.loads((root / "manifest.json").read_text())


def write_manifest(root: Path, doc: dict) -> None:
    (root / "manifest.json").write_bytes(canonical.dumps(doc))


def rehash(root: Path, rel: str) -> None:
    """Update the manifest entry of ``rel`` so its size and sha256 match the file's new bytes."""
    doc = read_manifest(root)
    data = (root / rel).read_bytes()
    for entry in doc["files"]:
        if entry["path"] == rel:
            entry["size"], entry["sha256"] = len(data), canonical.sha256_bytes(data)
    write_manifest(root, doc)


def file_entry(doc: dict, rel: str) -> dict:
    return next(e for e in doc["files"] if e["path"] == rel)
