"""Run the lowering half of the pipeline in a fresh process (``python -m packer.compile.worker``).

Used for CUDA targets when this process has no CUDA driver: TVM decides at import time
whether its CUDA runtime loads, and the loader reads ``LD_LIBRARY_PATH`` only at process start,
so the driver stub (:mod:`packer.compile.cuda_stub`) can only take effect in a new process.
The prepared Relax module travels as TVM JSON; the library is written straight to the path the
cache handed out (a temporary file it renames on success).
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

from ..errors import CompileError


def build_in_subprocess(
    mod, target_key: str, tuning_dir: Path | None, out: Path, env: dict[str, str]
) -> None:
    """Lower ``mod`` for ``target_key`` in a child process with ``env``; write ``out``."""
    import tvm

    with tempfile.TemporaryDirectory(prefix="sdpack-build-") as tmp:
        request = Path(tmp) / "request.json"
        (Path(tmp) / "mod.json").write_text(tvm.ir.save_json(mod))
        request.write_text(
            json.dumps(
                {
                    "mod": str(Path(tmp) / "mod.json"),
                    "target": target_key,
                    "out": str(out),
                    "tuning_dir": str(tuning_dir) if tuning_dir else None,
                }
            )
        )
        proc = subprocess.run(
            [sys.executable, "-m", __name__, str(request)], env=env, capture_output=True, text=True
        )
    if proc.returncode != 0:
        raise CompileError(
            f"{target_key} build failed: {proc.stderr.strip()[-2000:]}",
            "see the TVM error above; the pass list is packer/compile/pipeline.py",
        )


def main(request_path: str) -> None:
    """Child side: load the module, lower it, export the library."""
    import tvm

    from . import pipeline
    from .targets import get_target
    from .tuning import TuningDatabase

    request = json.loads(Path(request_path).read_text())
    spec = get_target(request["target"])
    mod = tvm.ir.load_json(Path(request["mod"]).read_text())
    database = None
    if request["tuning_dir"]:
        database = TuningDatabase(Path(request["tuning_dir"]), "").open()
    executable = pipeline.build(mod, spec, database)
    spec.export(executable, Path(request["out"]))


if __name__ == "__main__":
    main(sys.argv[1])
