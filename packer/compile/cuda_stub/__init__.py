"""Build CUDA libraries with machine code on machines that have nvcc but no GPU.

TVM only compiles CUDA kernels at build time (to a fatbin, with ``TVM_CUDA_COMPILE_MODE=nvcc``)
when its CUDA runtime library loads, and that library links against the driver,
``libcuda.so.1``. Without it, TVM silently embeds CUDA *source* that every user's machine would
have to compile at load time. ``libcuda_stub.c`` (ours) provides the driver symbols TVM imports,
each answering "no device"; :func:`build_env` compiles it once into the cache and returns the
environment under which a separate build process (see :mod:`packer.compile.worker`) sees it.
The stub never reaches a bundle: only the build process loads it.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from ...errors import CompileError
from ...support.canonical import sha256_file

SOURCE = Path(__file__).with_name("libcuda_stub.c")
SONAME = "libcuda.so.1"


def find_nvcc() -> Path | None:
    """The real nvcc: a CUDA toolkit under /usr/local first (wrappers on PATH hide its root)."""
    for candidate in sorted(glob.glob("/usr/local/cuda*/bin/nvcc"), reverse=True):
        if os.access(candidate, os.X_OK):
            return Path(candidate)
    found = shutil.which("nvcc")
    return Path(found) if found else None


def stub_dir(cache_root: Path) -> Path:
    """A directory holding the compiled stub ``libcuda.so.1``, built once per source version."""
    target = cache_root / "cuda_stub" / sha256_file(SOURCE)[:16]
    if (target / SONAME).is_file():
        return target
    gcc = shutil.which("gcc") or shutil.which("cc")
    if gcc is None:
        raise CompileError(
            "cannot build the CUDA driver stub: no C compiler found",
            "install gcc, or build CUDA targets on a machine with a GPU driver",
        )
    target.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=target, suffix=".so", delete=False) as tmp:
        tmp_path = Path(tmp.name)
    try:
        subprocess.run(
            [
                gcc,
                "-shared",
                "-fPIC",
                "-O1",
                f"-Wl,-soname,{SONAME}",
                "-o",
                str(tmp_path),
                str(SOURCE),
            ],
            check=True,
            capture_output=True,
        )
        tmp_path.replace(target / SONAME)  # atomic: a half-written stub is never found
    except subprocess.CalledProcessError as exc:
        raise CompileError(
            f"cannot build the CUDA driver stub: {exc.stderr.decode()[-500:]}",
            "check that gcc works",
        ) from exc
    finally:
        tmp_path.unlink(missing_ok=True)
    return target


def build_env(cache_root: Path) -> dict[str, str]:
    """Environment for a CUDA build process: the stub first on the loader path, nvcc mode."""
    nvcc = find_nvcc()
    if nvcc is None:
        raise CompileError(
            "cannot build a CUDA target: nvcc not found",
            "install the CUDA toolkit (nvcc in /usr/local/cuda*/bin or on PATH)",
        )
    cuda_root = nvcc.parent.parent
    env = dict(os.environ)
    libs = [str(stub_dir(cache_root)), str(cuda_root / "lib64"), str(cuda_root / "lib")]
    if env.get("LD_LIBRARY_PATH"):
        libs.append(env["LD_LIBRARY_PATH"])
    env["LD_LIBRARY_PATH"] = os.pathsep.join(libs)
    env["PATH"] = os.pathsep.join([str(nvcc.parent), env.get("PATH", "")])
    env["CUDA_PATH"] = str(cuda_root)
    env["TVM_CUDA_COMPILE_MODE"] = "nvcc"
    return env
