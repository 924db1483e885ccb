"""Run one compiled component natively (CPU, CUDA or OpenCL) through the TVM runtime.

A library built by :mod:`packer.compile` exposes ``main(*inputs, *params)`` (calling
convention: ``packer/compile/__init__.py``). :class:`ComponentRunner` uploads the params to the
device once and appends them to every call, so the caller only passes the per-step inputs.
Only the TVM *runtime* is used here: no compiler, no torch. OpenCL runs through sdpack's own
runtime plugin (:mod:`packer.runtime.opencl_runtime`), loaded before the first OpenCL device.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..errors import SdpackError
from .cuda_graph import CapturedCall, CudaGraphError

DEVICES = ("cpu", "cuda", "opencl")


class ComponentRunner:
    """``ComponentRunner(lib, params, device)(*inputs) -> first output`` as a numpy array.

    ``params`` are numpy arrays in :attr:`CompiledComponent.params` order and already in the
    library's param dtype (float16 for the fp16 variant); they are copied to the device here.

    >>> runner = ComponentRunner(cc.lib_path, [sd[k].numpy() for k in cc.params])  # doctest: +SKIP
    >>> hidden = runner(ids.astype(np.int32))  # doctest: +SKIP
    """

    def __init__(
        self,
        lib_path: Path | str,
        params: Sequence[np.ndarray],
        device: str = "cpu",
        cuda_graph: bool = False,
    ):
        import tvm
        from tvm.runtime.vm import VirtualMachine  # not tvm.relax: it needs the compiler library

        self._device = _device(device)
        try:
            # dlopen caches by path: a path is loaded once per process, so a library file must
            # never be replaced in place while a process may have loaded it (the cache never does).
            library = tvm.runtime.load_module(str(lib_path))
            vm = VirtualMachine(library, self._device)
            self._main = vm["main"]
        except Exception as exc:  # TVM raises its own error types
            raise SdpackError(
                f"cannot load compiled library {lib_path}: {exc}",
                "rebuild it; the library may be for another target",
            ) from exc
        self._params = bind_params(vm, [self._upload(p) for p in params])
        # With cuda_graph, each input signature (shapes, dtypes) is captured once as a CUDA graph
        # (packer.runtime.cuda_graph) and replayed from then on.
        self.cuda_graph = cuda_graph and device == "cuda"
        self._graphs: dict[tuple, object] = {}

    def __call__(self, *inputs: np.ndarray) -> np.ndarray:
        try:
            if self.cuda_graph:
                out = self._replay(inputs)
            else:
                out = self._main(*[self._upload(x) for x in inputs], *self._params)
        except CudaGraphError as exc:
            raise SdpackError(
                f"replaying the component as a CUDA graph failed: {exc}",
                "run without CUDA graphs (packer generate --no-cuda-graph)",
            ) from exc
        except (TypeError, ValueError, RuntimeError) as exc:
            raise SdpackError(
                f"calling the compiled component failed: {exc}",
                "check input/param count, shapes and dtypes against the calling convention",
            ) from exc
        if not hasattr(out, "numpy"):  # a tuple result: the first output is the one we want
            out = out[0]
        return out.numpy()

    def _replay(self, inputs: Sequence[np.ndarray]):
        """The call through the CUDA graph of this input signature, captured on first use."""
        arrays = [np.ascontiguousarray(x) for x in inputs]
        key = tuple((a.shape, a.dtype.str) for a in arrays)
        call = self._graphs.get(key)
        if call is None:
            uploaded = [self._upload(a) for a in arrays]
            call = self._graphs[key] = CapturedCall(
                self._main, uploaded, self._device, tail=self._params
            )
        else:
            for buf, a in zip(call.inputs, arrays, strict=True):
                buf.copyfrom(a)
        return call.replay()

    def _upload(self, array: np.ndarray):
        import tvm

        return tvm.runtime.tensor(np.ascontiguousarray(array), device=self._device)


TRANSFORM_PARAMS = "main_transform_params"
"""The optional second VM function of a library (calling convention, packer/compile)."""


def bind_params(vm, params: list) -> list:
    """What ``main`` takes after the inputs: ``params`` (device tensors in the library's
    param order), or ``main_transform_params(params)`` for a library that has that function.

    Each param tensor that only the transform reads is dropped by the caller's reference going
    away: keep nothing but the returned list."""
    try:
        transform = vm[TRANSFORM_PARAMS]
    except (AttributeError, KeyError, ValueError, RuntimeError):
        return params
    return list(transform(params))


def _device(name: str):
    import tvm

    if name not in DEVICES:
        raise SdpackError(f"unknown device {name!r}", f"one of: {', '.join(DEVICES)}")
    if name == "opencl":
        from . import opencl_runtime

        return opencl_runtime.device()
    device = tvm.cpu(0) if name == "cpu" else tvm.cuda(0)
    if not device.exist:
        raise SdpackError(f"no {name} device available", "run on a machine with a GPU or use cpu")
    return device
