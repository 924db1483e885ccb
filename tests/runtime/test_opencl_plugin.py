"""Building sdpack's OpenCL runtime plugin (its bad paths, its source on aarch64), and which
OpenCL variant a machine picks before any device is touched."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from packer.errors import SdpackError, UsageError
from packer.runtime import opencl_runtime
from packer.runtime.generate import Pipeline, runs_here


def test_missing_compiler_is_one_error_and_leaves_nothing(monkeypatch, tmp_path):
    monkeypatch.setenv("CXX", "no-such-cxx")
    with pytest.raises(SdpackError, match="no-such-cxx is not installed") as info:
        opencl_runtime.build(tmp_path)
    assert "ocl-icd-opencl-dev" in info.value.hint
    assert not any(p.is_file() for p in tmp_path.rglob("*"))


def test_failed_compile_names_the_error_and_leaves_nothing(monkeypatch, tmp_path):
    broken = tmp_path / "broken.cc"
    broken.write_text("#include <no/such/header.h>\n")
    monkeypatch.setattr(opencl_runtime, "SOURCE", broken)
    cache = tmp_path / "cache"
    with pytest.raises(SdpackError, match="compiling sdpack's OpenCL runtime failed: .*header"):
        opencl_runtime.build(cache)
    assert not any(p.is_file() for p in cache.rglob("*"))


def test_cache_key_follows_the_source(monkeypatch, tmp_path):
    key = opencl_runtime.cache_key()
    other = tmp_path / "other.cc"
    other.write_text(opencl_runtime.SOURCE.read_text() + "\n// changed\n")
    monkeypatch.setattr(opencl_runtime, "SOURCE", other)
    assert opencl_runtime.cache_key() != key


@pytest.mark.slow
def test_plugin_source_compiles_for_aarch64(tmp_path):
    """The board builds the same source with its own g++; here the cross compiler checks it."""
    cxx = "aarch64-linux-gnu-g++"
    if shutil.which(cxx) is None:
        pytest.skip("needs g++-aarch64-linux-gnu (scripts/setup installs it)")
    obj = tmp_path / "sdpack_opencl.o"
    subprocess.run(opencl_runtime.compile_command(obj, cxx=cxx, objects_only=True), check=True)
    header = subprocess.run(
        ["readelf", "-h", str(obj)], capture_output=True, text=True, check=True
    ).stdout
    assert "AArch64" in header and "REL (Relocatable file)" in header
    assert b"ffi.Module.load_from_bytes.opencl" in obj.read_bytes()
    assert b"device_api.opencl" in obj.read_bytes()


def _variant(arch: str) -> dict:
    return {
        "kind": "opencl",
        "dtype": "float32",
        "target": {},
        "libs": {},
        "requirements": {"arch": arch, "features": []},
    }


@pytest.mark.parametrize("machine", ["x86_64", "aarch64"])
def test_a_machine_runs_only_host_code_for_its_architecture(monkeypatch, machine):
    import platform

    monkeypatch.setattr(platform, "machine", lambda: machine)
    assert runs_here(_variant("x86-64-v3")) == (machine == "x86_64")
    assert runs_here(_variant("aarch64")) == (machine == "aarch64")
    assert runs_here({"requirements": {"arch": "sm_90"}}) and runs_here({"requirements": {}})


def test_a_bundle_with_only_another_machines_opencl_is_one_usage_error(monkeypatch):
    import platform

    monkeypatch.setattr(platform, "machine", lambda: "x86_64")
    manifest = {"dtype": "float16", "targets": {"openclmali-float32": _variant("aarch64")}}
    with pytest.raises(UsageError, match="no opencl library for this machine") as info:
        Pipeline._pick_variant(manifest, "opencl", None)
    assert "opencl-mali (aarch64 boards)" in info.value.hint
