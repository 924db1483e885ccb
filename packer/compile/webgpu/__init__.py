"""The ``webgpu`` target's toolchain: TVM's wasm runtime objects and the ``.wasm`` link.

See :mod:`.runtime`; ``include/`` holds the six headers the runtime sources need that neither
the apache-tvm wheel nor any other package on PyPI ships (written for sdpack).
"""

from __future__ import annotations

from .runtime import emcc, export_wasm, runtime_home

__all__ = ["emcc", "export_wasm", "runtime_home"]
