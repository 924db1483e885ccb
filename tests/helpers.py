"""Helpers shared by the test suites: running the real CLI, copying bundles."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

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
        lines = [l for l in self.err.splitlines() if l.strip()]
        assert "Traceback" not in self.err, self.err
        assert len(lines) == 1, f"expected one error line, got: {self.err!r}"
        return lines[0]


def packer(*args: str, env: dict | None = None, cwd: Path | None = None, timeout: float = 600) -> Result:
    """Run the real `packer` CLI in a subprocess (as a user would)."""
    full_env = {**os.environ, "SDPACK_NO_PROGRESS": "1", **(env or {})}
    proc = subprocess.run(
        [sys.executable, "-m", "packer", *args], capture_output=True, text=True, env=full_env, cwd=cwd, timeout=timeout
    )
    return Result(proc.returncode, proc.stdout, proc.stderr)
