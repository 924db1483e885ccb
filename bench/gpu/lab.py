"""What the kernel labs (attnlab, convlab, gemmlab) share: each builds one Relax module per
variant into a CUDA library here (stub driver + nvcc), then, on the lent GPU, loads the libraries
with the TVM runtime only, checks every function against torch and times it.

    here:  python -m bench.gpu.LAB build [--out .device/LAB]
    there: run("bash bench/gpu/run.sh LAB", carry=[".device"])   (python -m bench.gpu.LAB run)
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path

TARGET = "cuda-sm90"  # the lent GPUs are H100 / H200


def build_library(mod, path: Path) -> None:
    """Compile ``mod`` into the CUDA library ``path`` (no GPU needed: the stub driver stands in)."""
    from packer.compile import cuda_stub
    from packer.compile.cache import cache_root
    from packer.compile.worker import build_in_subprocess

    path.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    build_in_subprocess(mod, TARGET, None, path, cuda_stub.build_env(cache_root()))
    print(f"built {path} in {time.time() - t0:.0f} s")


class Gpu:
    """The TVM runtime on CUDA device 0, beside the torch that makes the inputs."""

    def __init__(self):
        from .native import load_tvm

        self.tvm = load_tvm("cuda")
        self.dev = self.tvm.cuda(0)

    def load(self, path: Path):
        """A library's VirtualMachine."""
        from tvm.runtime.vm import VirtualMachine

        return VirtualMachine(self.tvm.runtime.load_module(str(path)), self.dev)

    def arrays(self, *tensors) -> list:
        """torch tensors as TVM arrays, without copies (contiguous first)."""
        return [self.tvm.runtime.from_dlpack(t.contiguous()) for t in tensors]

    def seconds(self, vm, name: str, args: list) -> float:
        """Median seconds of ``vm[name](*args)`` (20 calls, 3 repeats)."""
        return vm.time_evaluator(name, self.dev, number=20, repeat=3)(*args).median


def rel_l2(got, want) -> float:
    """Relative L2 error of ``got`` against ``want`` (both compared in float32)."""
    got, want = got.float(), want.float()
    return float((got - want).norm() / want.norm())


def main(name: str, build: Callable[[Path], None], run: Callable[[Path], None]) -> None:
    """The lab's command line: ``build --out DIR`` here, ``run --lib DIR`` on the GPU."""
    ap = argparse.ArgumentParser(prog=f"python -m bench.gpu.{name}")
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("build").add_argument("--out", type=Path, default=Path(f".device/{name}"))
    sub.add_parser("run").add_argument("--lib", type=Path, default=Path(f".device/{name}"))
    args = ap.parse_args()
    build(args.out) if args.cmd == "build" else run(args.lib)
