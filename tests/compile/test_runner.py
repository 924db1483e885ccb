"""ComponentRunner: the native way to call a compiled component."""

from __future__ import annotations

import numpy as np
import pytest

from packer.compile import compile_component
from packer.errors import SdpackError
from packer.runtime.module import ComponentRunner

from .tiny import LATENT_HW, example_inputs, signature_configs, tiny_clip


@pytest.fixture(scope="module")
def clip_library(shared_cache):
    module = tiny_clip(0)
    compiled = compile_component(
        "text_encoder",
        module,
        configs=signature_configs("text_encoder", module),
        latent_hw=LATENT_HW,
        target="llvm",
        dtype="float32",
        cache_dir=shared_cache,
    )
    state = module.state_dict()
    return compiled, [state[k].numpy() for k in compiled.params]


def test_params_are_bound_once(clip_library):
    compiled, params = clip_library
    runner = ComponentRunner(compiled.lib_path, params)
    ids = example_inputs("text_encoder")[0]
    first, again = runner(ids), runner(ids)
    assert first.shape == (1, 77, 32) and first.dtype == np.float32
    np.testing.assert_array_equal(first, again)


def test_wrong_param_count_is_an_sdpack_error(clip_library):
    compiled, params = clip_library
    runner = ComponentRunner(compiled.lib_path, params[:-1])
    with pytest.raises(SdpackError):
        runner(example_inputs("text_encoder")[0])


def test_unknown_device(clip_library):
    compiled, params = clip_library
    with pytest.raises(SdpackError, match="unknown device"):
        ComponentRunner(compiled.lib_path, params, device="vulkan")


def test_unloadable_library(tmp_path):
    bad = tmp_path / "not-a-library.so"
    bad.write_bytes(b"nope")
    with pytest.raises(SdpackError, match="cannot load compiled library"):
        ComponentRunner(bad, [])


def test_cuda_graph_is_only_for_cuda(clip_library):
    compiled, params = clip_library
    runner = ComponentRunner(compiled.lib_path, params, device="cpu", cuda_graph=True)
    assert runner.cuda_graph is False  # a CPU call has no launches to capture
    ids = example_inputs("text_encoder")[0]
    np.testing.assert_array_equal(runner(ids), ComponentRunner(compiled.lib_path, params)(ids))


def _driver_present() -> bool:
    import ctypes

    try:
        ctypes.CDLL("libcuda.so.1")
    except OSError:
        return False
    return True


@pytest.mark.skipif(
    _driver_present(), reason="checks the error path of a machine without the CUDA driver"
)
def test_cuda_graph_without_a_driver_is_one_clear_error(clip_library):
    compiled, params = clip_library
    runner = ComponentRunner(compiled.lib_path, params)
    runner.cuda_graph = True  # as on a cuda device whose driver library went missing
    with pytest.raises(
        SdpackError, match="CUDA graph failed: the CUDA driver library is not loadable"
    ) as err:
        runner(example_inputs("text_encoder")[0])
    assert "--no-cuda-graph" in err.value.hint
