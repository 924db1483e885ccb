"""sdpack's OpenCL runtime plugin: compiled once per TVM version and machine, loaded on demand.

The apache-tvm wheel compiles OpenCL kernels but cannot run them (no ``device_api.opencl``, no
loader for its ``opencl`` modules). ``opencl/sdpack_opencl.cc`` provides both against the
headers the wheel ships; :func:`load` compiles it with the system C++ compiler against the
system OpenCL ICD loader (Debian: ``g++ ocl-icd-opencl-dev opencl-headers``), caches the result
under ``<cache root>/opencl_runtime/<key>/`` (the key hashes the source, the TVM and tvm-ffi
versions and the machine), and loads it into the process with ``RTLD_GLOBAL`` so TVM finds the
two globals it registers. An OpenCL driver (an ICD: Mali's, pocl, a desktop GPU's) does the rest.

The same source builds for aarch64 (the RK3588 board: ``packer generate --device opencl`` there
builds it with the board's own g++); :func:`compile_command` with ``cxx`` set to a cross
compiler and ``objects_only`` checks that here without an aarch64 TVM to link against.
"""

from __future__ import annotations

import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
from pathlib import Path

from ..compile.cache import cache_root
from ..errors import SdpackError

SOURCE = Path(__file__).with_name("opencl") / "sdpack_opencl.cc"
LIBRARY_NAME = "libsdpack_opencl.so"
CL_TARGET_VERSION = 120  # OpenCL 1.2: what Mali, pocl and desktop drivers all offer
INSTALL_HINT = (
    "install a C++ compiler and the OpenCL headers and ICD loader "
    "(Debian/Ubuntu: apt-get install g++ ocl-icd-opencl-dev opencl-headers)"
)

_loaded: Path | None = None


def _wheel_dirs() -> tuple[Path, Path]:
    """The installed ``tvm`` and ``tvm_ffi`` package directories (headers and libraries)."""
    import tvm
    import tvm_ffi

    return Path(tvm.__file__).parent, Path(tvm_ffi.__file__).parent


def cache_key() -> str:
    """What the compiled plugin depends on: its source, the TVM/tvm-ffi builds, the machine."""
    import tvm
    import tvm_ffi

    h = hashlib.sha256(SOURCE.read_bytes())
    h.update(f"{tvm.__version__}|{tvm_ffi.__version__}|{platform.machine()}".encode())
    return h.hexdigest()[:16]


def library_path(cache_dir: Path | str | None = None) -> Path:
    """Where this machine's compiled plugin lives (it may not exist yet)."""
    return cache_root(cache_dir) / "opencl_runtime" / cache_key() / LIBRARY_NAME


def compile_command(out: Path, cxx: str = "g++", objects_only: bool = False) -> list[str]:
    """The compiler call that builds the plugin (``objects_only``: compile, do not link)."""
    tvm_dir, ffi_dir = _wheel_dirs()
    cmd = [
        cxx,
        "-std=c++17",
        "-O2",
        "-fPIC",
        f"-DCL_TARGET_OPENCL_VERSION={CL_TARGET_VERSION}",
        f"-I{tvm_dir / 'include'}",
        f"-I{ffi_dir / 'include'}",
        str(SOURCE),
        "-o",
        str(out),
    ]
    if objects_only:
        return [*cmd, "-c"]
    libs = [tvm_dir / "lib", ffi_dir / "lib"]
    return [
        *cmd,
        "-shared",
        *(f"-L{d}" for d in libs),
        f"-Wl,-rpath,{':'.join(map(str, libs))}",
        "-ltvm_runtime",
        "-ltvm_ffi",
        "-lOpenCL",
    ]


def build(cache_dir: Path | str | None = None) -> Path:
    """The compiled plugin, compiling it first if this machine has none for this TVM."""
    path = library_path(cache_dir)
    if path.is_file():
        return path
    cxx = os.environ.get("CXX", "g++")
    if shutil.which(cxx) is None:
        raise SdpackError(
            f"the OpenCL runtime must be compiled here and {cxx} is not installed", INSTALL_HINT
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".build-", suffix=".so")
    os.close(fd)
    try:
        done = subprocess.run(compile_command(Path(tmp), cxx), capture_output=True, text=True)
        if done.returncode != 0:
            first = next(
                (line for line in done.stderr.splitlines() if "error" in line),
                done.stderr.strip()[:300],
            )
            raise SdpackError(
                f"compiling sdpack's OpenCL runtime failed: {first.strip()}", INSTALL_HINT
            )
        os.replace(tmp, path)  # atomic: a concurrent or interrupted build never leaves half a file
    finally:
        Path(tmp).unlink(missing_ok=True)
    return path


def load(cache_dir: Path | str | None = None) -> Path:
    """Build if needed and load the plugin into this process (once); its path."""
    global _loaded
    if _loaded is not None:
        return _loaded
    import ctypes

    import tvm  # noqa: F401  (its runtime libraries first: the plugin links against them)

    path = build(cache_dir)
    try:
        ctypes.CDLL(str(path), mode=ctypes.RTLD_GLOBAL)
    except OSError as exc:
        raise SdpackError(
            f"cannot load sdpack's OpenCL runtime {path}: {exc}",
            "install the OpenCL ICD loader (apt-get install ocl-icd-libopencl1) "
            "and a driver for your GPU",
        ) from exc
    _loaded = path
    return path


def device():
    """``tvm.opencl(0)``, the plugin loaded; an SdpackError if no OpenCL device is there."""
    import tvm

    load()
    dev = tvm.opencl(0)
    if not dev.exist:
        raise SdpackError(
            "no OpenCL device available",
            "install your GPU's OpenCL driver (an ICD; pocl-opencl-icd for a CPU), "
            "check it with clinfo -l, or use --device cpu",
        )
    return dev


def device_extensions() -> set[str]:
    """The OpenCL extensions of :func:`device` (``cl_khr_fp16``, ...)."""
    import tvm_ffi

    device()
    return set(str(tvm_ffi.get_global_func("sdpack.opencl.device_extensions")(0)).split())
