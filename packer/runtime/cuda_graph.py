"""Replay one compiled component call as a captured CUDA graph.

A UNet step is about a thousand kernel launches; launched one by one from the TVM VM, the host
work between launches costs more than many of the kernels. :class:`CapturedCall` runs the call
once to warm up (modules loaded, the VM's pooled allocator filled), then runs it again while
the CUDA driver records every launch on a private stream (stream capture), and from then on
replays that recording with one ``cuGraphLaunch``.

A replay uses the very device addresses of the captured run. So:

* the inputs are *static*: the caller copies each call's inputs into the buffers given at
  capture time (:meth:`CapturedCall.inputs`), then calls :meth:`CapturedCall.replay`;
* the output is the tensor the captured run returned, kept alive here and overwritten by every
  replay: read (or copy) it before the next replay;
* the VM's scratch buffers went back to TVM's pool after the captured run, and the graph writes
  them again on each replay. That is safe while no tensor allocated from that pool after the
  capture is alive across a replay: :class:`packer.runtime.module.ComponentRunner` keeps it so
  by copying inputs in from and outputs out to the host.

The kernels, their order and their arguments are the captured run's, so a replay computes the
same bits as an ordinary call. Only the CUDA *driver* API is used (``libcuda.so.1``, present
wherever the NVIDIA driver is), through ctypes: no CUDA toolkit, no torch.
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable, Sequence

_CAPTURE_MODE_RELAXED = 2  # CU_STREAM_CAPTURE_MODE_RELAXED: cuMemAlloc by a pool miss stays legal


class CudaGraphError(RuntimeError):
    """A CUDA driver call of the capture or replay failed."""


def _driver() -> ctypes.CDLL:
    try:
        lib = ctypes.CDLL("libcuda.so.1")
    except OSError as exc:
        raise CudaGraphError(f"the CUDA driver library is not loadable: {exc}") from exc
    vp, p = ctypes.c_void_p, ctypes.POINTER(ctypes.c_void_p)
    sigs = {
        "cuStreamBeginCapture_v2": [vp, ctypes.c_int],
        "cuStreamEndCapture": [vp, p],
        "cuGraphInstantiateWithFlags": [p, vp, ctypes.c_ulonglong],
        "cuGraphLaunch": [vp, vp],
        "cuStreamSynchronize": [vp],
        "cuGraphExecDestroy": [vp],
        "cuGraphDestroy": [vp],
        "cuGetErrorName": [ctypes.c_int, ctypes.POINTER(ctypes.c_char_p)],
    }
    for name, args in sigs.items():
        fn = getattr(lib, name)
        fn.argtypes, fn.restype = args, ctypes.c_int
    return lib


def _address(handle) -> int:
    """A stream handle as an integer address (TVM may give an int or a ctypes pointer)."""
    if isinstance(handle, ctypes.c_void_p):
        return handle.value or 0
    return int(handle)


def _check(lib: ctypes.CDLL, rc: int, what: str) -> None:
    if rc != 0:
        name = ctypes.c_char_p()
        lib.cuGetErrorName(rc, ctypes.byref(name))
        raise CudaGraphError(f"{what} failed: {(name.value or b'CUDA error').decode()} ({rc})")


class CapturedCall:
    """``fn(*inputs)`` captured once as a CUDA graph on ``device`` (a ``tvm.cuda(i)``).

    >>> call = CapturedCall(vm_main, [x_dev, t_dev, ctx_dev], device, tail=params)  # doctest: +SKIP
    >>> call.inputs[0].copyfrom(next_x)  # doctest: +SKIP
    >>> out = call.replay()  # the output tensor, rewritten by every replay  # doctest: +SKIP

    ``tail`` are extra arguments passed after the inputs on every call (the weights), never copied.
    """

    def __init__(self, fn: Callable, inputs: Sequence, device, tail: Sequence = ()):
        import tvm_ffi

        self._lib = _driver()
        self._device = device
        self.inputs = list(inputs)
        self._raw = device.create_raw_stream()  # as TVM returns it (freed with TVM)
        self._stream = _address(self._raw)
        args = [*self.inputs, *tail]
        self._graph = ctypes.c_void_p()
        self._exec = ctypes.c_void_p()
        stream = ctypes.c_void_p(self._stream)
        with tvm_ffi.use_raw_stream(device, self._stream):
            fn(*args)  # warm-up: lazily loaded kernels and pooled buffers exist before capture
            _check(self._lib, self._lib.cuStreamSynchronize(stream), "synchronizing the warm-up")
            _check(
                self._lib,
                self._lib.cuStreamBeginCapture_v2(stream, _CAPTURE_MODE_RELAXED),
                "beginning stream capture",
            )
            try:
                self.output = fn(*args)
            finally:  # always end the capture, else the stream stays unusable
                end = self._lib.cuStreamEndCapture(stream, ctypes.byref(self._graph))
            _check(self._lib, end, "capturing the call (a synchronising call inside it?)")
        _check(
            self._lib,
            self._lib.cuGraphInstantiateWithFlags(ctypes.byref(self._exec), self._graph, 0),
            "instantiating the graph",
        )

    def replay(self):
        """Run the recorded launches on the current inputs; the device is synchronised on return."""
        stream = ctypes.c_void_p(self._stream)
        _check(self._lib, self._lib.cuGraphLaunch(self._exec, stream), "launching the graph")
        _check(self._lib, self._lib.cuStreamSynchronize(stream), "synchronizing the graph")
        return self.output

    def close(self) -> None:
        """Free the graph and the stream (the output tensor stays valid until dropped)."""
        if self._exec:
            self._lib.cuGraphExecDestroy(self._exec)
            self._exec = ctypes.c_void_p()
        if self._graph:
            self._lib.cuGraphDestroy(self._graph)
            self._graph = ctypes.c_void_p()
        if self._stream:
            self._device.free_raw_stream(self._raw)
            self._stream = 0

    def __del__(self):
        try:
            self.close()
        except Exception:  # interpreter shutdown: the driver may be gone already
            pass
