"""TVM's WebAssembly runtime objects, built once per TVM version, and the ``.wasm`` export.

Every WebGPU library is a standalone ``.wasm`` linked by emscripten from the model's host code
(LLVM ``wasm32`` object) plus three runtime objects that ``tvm.contrib.tvmjs.create_tvmjs_wasm``
looks up with ``find_wasm_lib`` under ``$TVM_HOME/web/dist/wasm``: ``wasm_runtime.bc`` (the TVM
runtime and Relax VM), ``tvmjs_support.bc`` and ``webgpu_runtime.bc``. The wheel ships their
sources (``tvm/web/emcc/*.cc``, ``tvm/src/runtime``; tvm-ffi's from the ``tvm_ffi`` package) but
not the objects, and nine headers the sources include are missing:

* ``tvm/support/{io,serializer}.h`` and ``src/support/bytes_io.h`` are taken at build time from
  the PyPI wheel ``apache-tvm-tirx==0.1.0a4`` (downloaded with ``pip download --no-deps``, only
  the three headers unzipped into the build directory; nothing of it is stored in this repo);
* the other six are ours (``include/``, written for sdpack from how the runtime uses them).

The build mirrors TVM's source layout in a temporary directory (relative ``#include``\\ s need
it), compiles each source with ``emcc -O3 -std=c++17 -c`` into a wasm *object* (named ``.bc``
because ``find_wasm_lib`` wants that name; wasm-ld reads the format from the content), and
renames the finished directory into the cache: ``<cache>/webgpu-runtime/<key>/web/dist/wasm``,
``<key>`` naming the apache-tvm and tvm-ffi versions and hashing our headers, the flags and the
emcc version. An interrupted build leaves only a ``.tmp-*`` directory; a finished one is reused.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path

from ...errors import CompileError
from ...support import progress
from ..cache import cache_root

SOURCES = ("wasm_runtime", "tvmjs_support", "webgpu_runtime")
"""``tvm/web/emcc/<name>.cc`` → ``<name>.bc``, what ``create_tvmjs_wasm`` links."""

CFLAGS = ("-O3", "-std=c++17", "-Wno-ignored-attributes")

LINK_OPTIONS: tuple[str, ...] = ("-O1",)
"""Appended to ``create_tvmjs_wasm``'s own ``emcc -O3 …`` link line (the last -O wins).

-O3's time goes into Binaryen's wasm-opt over TVM's runtime, which is the same in every library;
the kernels run on the GPU as WGSL and the host code only drives the Relax VM, so the ~0.2 MB
-O3 saves per library is not worth its minutes per build (docs/design.md, "WebGPU libraries link
at -O1").
"""

TIRX_REQUIREMENT = "apache-tvm-tirx==0.1.0a4"
TIRX_HEADERS = {
    "tvm_tirx/include/tvm/support/io.h": "include/tvm/support/io.h",
    "tvm_tirx/include/tvm/support/serializer.h": "include/tvm/support/serializer.h",
    "tvm_tirx/include/tvm/support/bytes_io.h": "src/support/bytes_io.h",
}
"""Headers taken from the tirx wheel at build time: wheel path → place in the build tree."""

OUR_HEADERS = {
    "nvtx.h": "include/tvm/support/cuda/nvtx.h",
    "utils.h": "src/support/utils.h",
    "arena.h": "src/support/arena.h",
    "ring_buffer.h": "src/support/ring_buffer.h",
    "base64.h": "src/support/base64.h",
    "builtin_fp16.h": "3rdparty/compiler-rt/builtin_fp16.h",
}
"""``packer/compile/webgpu/include/<name>`` → place in the build tree."""

INCLUDE_DIR = Path(__file__).parent / "include"
_EMCC_HINT = "install Debian's emscripten: apt-get install emscripten"


def emcc() -> str:
    """Path of emscripten's ``emcc``, or a CompileError saying how to get it."""
    path = shutil.which("emcc")
    if path is None:
        raise CompileError(
            "the webgpu target needs emscripten's emcc, which is not installed",
            "install it (Debian: apt-get install emscripten), or build without "
            "WebGPU: --targets llvm",
        )
    return path


def _emcc_version() -> str:
    try:
        proc = subprocess.run([emcc(), "--version"], capture_output=True, text=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise CompileError(f"emcc does not run: {exc}", _EMCC_HINT) from exc
    if proc.returncode != 0 or not proc.stdout:
        raise CompileError(f"emcc does not run: {proc.stderr.strip()[-300:]}", _EMCC_HINT)
    return proc.stdout.splitlines()[0].strip()


def runtime_key() -> str:
    """``tvm<ver>-ffi<ver>-<hash>``: what the three objects were built from."""
    digest = hashlib.sha256()
    for name in sorted(OUR_HEADERS):
        digest.update(name.encode() + b"\0" + (INCLUDE_DIR / name).read_bytes() + b"\0")
    digest.update(json.dumps([CFLAGS, TIRX_REQUIREMENT, _emcc_version()]).encode())
    return (
        f"tvm{metadata.version('apache-tvm')}-ffi{metadata.version('apache-tvm-ffi')}-"
        f"{digest.hexdigest()[:12]}"
    )


def runtime_home(cache_dir: Path | str | None = None) -> Path:
    """A ``TVM_HOME`` whose ``web/dist/wasm`` holds the three objects; builds them if missing.

    The cache root is ``cache_dir``, else ``$SDPACK_WEBGPU_RUNTIME_CACHE``, else the library
    cache root (``$SDPACK_CACHE``, else ``$XDG_CACHE_HOME/sdpack`` or ``~/.cache/sdpack``).
    """
    if cache_dir is None:
        cache_dir = os.environ.get("SDPACK_WEBGPU_RUNTIME_CACHE") or None
    base = cache_root(cache_dir) / "webgpu-runtime"
    home = base / runtime_key()
    if _complete(home):
        return home
    base.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=base, prefix=".tmp-"))
    try:
        _build(tmp, cache_root(cache_dir))
        try:
            os.rename(tmp, home)
        except OSError:
            if not _complete(home):  # not a concurrent build that won the race: a real error
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return home


def _complete(home: Path) -> bool:
    return all((home / "web" / "dist" / "wasm" / f"{name}.bc").is_file() for name in SOURCES)


def _build(home: Path, root: Path) -> None:
    """Compile the three objects into ``home/web/dist/wasm``."""
    import tvm
    import tvm_ffi

    cc = emcc()
    tvm_dir = Path(tvm.__file__).parent
    ffi_dir = Path(tvm_ffi.__file__).parent
    for need in (tvm_dir / "web" / "emcc", tvm_dir / "src" / "runtime", ffi_dir / "src" / "ffi"):
        if not need.is_dir():
            raise CompileError(
                f"{need} is missing from the installed TVM packages",
                "reinstall apache-tvm==0.27.0.post1 and apache-tvm-ffi==0.1.14.post1",
            )
    out = home / "web" / "dist" / "wasm"
    out.mkdir(parents=True)
    with tempfile.TemporaryDirectory(prefix="sdpack-wasm-runtime-") as scratch:
        tree = Path(scratch)
        _source_tree(tree, tvm_dir, ffi_dir, _tirx_wheel(root))
        includes = [
            tree,
            tree / "include",
            tree / "3rdparty" / "tvm-ffi" / "include",
            tree / "3rdparty" / "tvm-ffi" / "3rdparty" / "dlpack" / "include",
            tree / "3rdparty" / "compiler-rt",
        ]
        flags = [*CFLAGS, *(f"-I{path}" for path in includes)]
        progress.status("building TVM's wasm runtime objects (once per TVM version, ~1-2 min)")
        start = time.monotonic()
        _compile_all(cc, flags, tree / "web" / "emcc", out)
        progress.status(f"wasm runtime built in {time.monotonic() - start:.0f} s")
    (home / "build.json").write_text(
        json.dumps(
            {
                "sources": list(SOURCES),
                "cflags": list(CFLAGS),
                "emcc": _emcc_version(),
                "apache-tvm": metadata.version("apache-tvm"),
                "apache-tvm-ffi": metadata.version("apache-tvm-ffi"),
                "tirx_headers": TIRX_REQUIREMENT,
            },
            indent=1,
        )
        + "\n"
    )


def _source_tree(tree: Path, tvm_dir: Path, ffi_dir: Path, tirx_wheel: Path) -> None:
    """TVM's source layout, so the sources' relative includes (``../../src/support/…``) resolve."""
    shutil.copytree(tvm_dir / "src" / "runtime", tree / "src" / "runtime")
    shutil.copytree(tvm_dir / "include", tree / "include")
    (tree / "web" / "emcc").mkdir(parents=True)
    for name in SOURCES:
        shutil.copy2(tvm_dir / "web" / "emcc" / f"{name}.cc", tree / "web" / "emcc")
    (tree / "3rdparty").mkdir()
    os.symlink(ffi_dir, tree / "3rdparty" / "tvm-ffi", target_is_directory=True)
    for name, dest in OUR_HEADERS.items():
        (tree / dest).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(INCLUDE_DIR / name, tree / dest)
    with zipfile.ZipFile(tirx_wheel) as wheel:
        for member, dest in TIRX_HEADERS.items():
            (tree / dest).parent.mkdir(parents=True, exist_ok=True)
            try:
                (tree / dest).write_bytes(wheel.read(member))
            except KeyError as exc:
                raise CompileError(
                    f"{tirx_wheel.name} has no {member}", f"use the wheel of {TIRX_REQUIREMENT}"
                ) from exc


def _tirx_wheel(root: Path) -> Path:
    """The tirx wheel: ``$SDPACK_TIRX_WHEEL``, else one downloaded before, else pip download."""
    given = os.environ.get("SDPACK_TIRX_WHEEL")
    if given:
        if not Path(given).is_file():
            raise CompileError(
                f"SDPACK_TIRX_WHEEL={given} is not a file",
                f"point it at the wheel of {TIRX_REQUIREMENT}",
            )
        return Path(given)
    downloads = root / "downloads"
    pattern = "apache_tvm_tirx-" + TIRX_REQUIREMENT.split("==")[1] + "-*.whl"
    found = sorted(downloads.glob(pattern))
    if found:
        return found[0]
    downloads.mkdir(parents=True, exist_ok=True)
    progress.status(f"downloading {TIRX_REQUIREMENT} (3 headers of the wasm runtime come from it)")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "-q",
            "--disable-pip-version-check",
            TIRX_REQUIREMENT,
            "-d",
            str(downloads),
        ],
        capture_output=True,
        text=True,
    )
    found = sorted(downloads.glob(pattern))
    if proc.returncode != 0 or not found:
        raise CompileError(
            f"pip could not download {TIRX_REQUIREMENT}: {proc.stderr.strip()[-300:]}",
            "download it yourself and set SDPACK_TIRX_WHEEL to the .whl file",
        )
    return found[0]


def _compile_all(cc: str, flags: list[str], src_dir: Path, out: Path) -> None:
    """``emcc -c`` the sources, at most ``$SDPACK_JOBS`` (default 2) at a time."""
    jobs = max(1, int(os.environ.get("SDPACK_JOBS", "2")))
    pending = list(SOURCES)
    running: list[tuple[str, subprocess.Popen, Path]] = []
    try:
        while pending or running:
            while pending and len(running) < jobs:
                name = pending.pop(0)
                log = out.parent / f"{name}.log"
                with open(log, "wb") as sink:
                    proc = subprocess.Popen(
                        [
                            cc,
                            *flags,
                            "-c",
                            str(src_dir / f"{name}.cc"),
                            "-o",
                            str(out / f"{name}.bc"),
                        ],
                        stdout=sink,
                        stderr=subprocess.STDOUT,
                    )
                running.append((name, proc, log))
            name, proc, log = running.pop(0)
            if proc.wait() != 0:
                text = log.read_text(errors="replace")
                errors = [line for line in text.splitlines() if "error" in line] or [text[-500:]]
                raise CompileError(
                    f"emcc failed on tvm/web/emcc/{name}.cc: {errors[0][-500:]}",
                    f"the runtime sources need packer/compile/webgpu/include; full log: {log}",
                )
            log.unlink()
    finally:
        for _, proc, _ in running:
            proc.kill()
            proc.wait()


@contextlib.contextmanager
def _tvm_home(home: Path) -> Iterator[None]:
    """Point ``find_wasm_lib`` (it reads ``$TVM_HOME`` at call time) at ``home``."""
    before = os.environ.get("TVM_HOME")
    os.environ["TVM_HOME"] = str(home)
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("TVM_HOME", None)
        else:
            os.environ["TVM_HOME"] = before


def export_wasm(
    executable,
    path: Path,
    cache_dir: Path | str | None = None,
    link_options: tuple[str, ...] = LINK_OPTIONS,
) -> None:
    """Link a Relax VM executable built for the webgpu target into a standalone ``.wasm``.

    The host module is written as a wasm object (``object_format = "o"``): TVM's default, LLVM
    bitcode, comes from LLVM 22 and Debian's wasm-ld 14 cannot read it ("Opaque pointers are
    only supported…").
    """
    from tvm.contrib import tvmjs

    home = runtime_home(cache_dir)

    def fcompile(output, objects, options=None, **kwargs):
        with _tvm_home(home):
            tvmjs.create_tvmjs_wasm(
                output, objects, options=[*(options or []), *link_options], **kwargs
            )

    fcompile.object_format = "o"
    try:
        executable.export_library(str(path), fcompile=fcompile)
    except RuntimeError as exc:
        raise CompileError(
            f"linking {Path(path).name} with emcc failed: {str(exc)[-800:]}",
            "see emcc's message; the runtime objects are in " + str(home),
        ) from exc
