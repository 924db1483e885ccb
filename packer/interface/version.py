"""`packer version` / `packer --version`: sdpack's version and the compiler versions it pins."""

from __future__ import annotations

from dataclasses import dataclass
from importlib.metadata import version as installed

from packer import __version__


@dataclass
class VersionArgs:
    """`packer version` takes no arguments; the empty object keeps every verb's shape."""


@dataclass
class VersionResult:
    sdpack: str
    apache_tvm: str
    tvm_ffi: str

    def display(self) -> str:
        return f"sdpack {self.sdpack} (apache-tvm {self.apache_tvm}, apache-tvm-ffi {self.tvm_ffi})"

    def as_json(self) -> dict:
        return {
            "command": "version",
            "sdpack": self.sdpack,
            "apache_tvm": self.apache_tvm,
            "tvm_ffi": self.tvm_ffi,
        }


def version(args: VersionArgs) -> VersionResult:
    """sdpack's version and the installed compiler versions it pins."""
    return VersionResult(__version__, installed("apache-tvm"), installed("apache-tvm-ffi"))
