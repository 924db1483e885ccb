"""The webgpu target: TVM's wasm runtime objects, a tiny component as .wasm, its imports against
tvmjs, and its numbers on a real WebGPU implementation (Deno's wgpu; Mesa lavapipe on CI).

Needs Debian's ``emscripten`` (``scripts/setup`` installs it); the Deno run also needs
``mesa-vulkan-drivers`` and ``npm ci`` in ``runtime-web/`` (tvmjs) and in
``tests/compile/webgpu_harness/`` (the ``deno`` binary). The runtime objects take ~90 s to build
on one core the first time; set ``SDPACK_WEBGPU_RUNTIME_CACHE`` to a directory to keep them
between runs (otherwise they are built into this session's temporary directory).
"""

from __future__ import annotations

import gzip
import re
import shutil
import time

import numpy as np
import pytest

from packer.compile import compile_component, get_target
from packer.compile.webgpu import runtime

from .deno_webgpu import TVMJS, needs_deno_webgpu, run_in_deno
from .tiny import MODULES, example_inputs, signature_configs, torch_reference

pytestmark = pytest.mark.slow


if shutil.which("emcc") is None:
    pytest.skip(
        "emcc is missing (Debian's emscripten; scripts/setup installs it for .ci/run)",
        allow_module_level=True,
    )


@pytest.fixture(scope="module")
def text_encoder_wasm(tmp_path_factory):
    """The tiny CLIP built for webgpu float32, with its torch module."""
    module = MODULES["text_encoder"]()
    compiled = compile_component(
        "text_encoder",
        module,
        configs=signature_configs("text_encoder", module),
        latent_hw=(8, 8),
        target="webgpu",
        dtype="float32",
        cache_dir=tmp_path_factory.mktemp("lib-cache"),
    )
    return compiled, module


def test_runtime_objects_build_once_and_are_reused():
    home = runtime.runtime_home()  # tests/conftest.py's session directory
    objects = [home / "web" / "dist" / "wasm" / f"{name}.bc" for name in runtime.SOURCES]
    for path in objects:
        assert path.read_bytes()[:4] == b"\0asm", f"{path.name} is not a wasm object"
    stamps = [p.stat().st_mtime_ns for p in objects]
    start = time.monotonic()
    assert runtime.runtime_home() == home  # a cache hit: nothing rebuilt
    assert time.monotonic() - start < 10
    assert [p.stat().st_mtime_ns for p in objects] == stamps
    assert home.name.startswith("tvm0.27.0.post1-ffi0.1.14.post1-")
    assert not [p for p in home.parent.iterdir() if p.name.startswith(".tmp-")]


def test_missing_emcc_is_a_one_line_compile_error(monkeypatch):
    from packer.errors import CompileError

    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(CompileError) as info:
        runtime.emcc()
    assert "apt-get install emscripten" in info.value.one_line()


def test_webgpu_target_entry():
    spec = get_target("webgpu")
    target = spec.target_json()
    assert target["kind"] == "webgpu" and target["host"]["mtriple"] == "wasm32-unknown-unknown-wasm"
    assert spec.lib_suffix == ".wasm" and spec.schedule_rules()  # dlight GPU rules apply
    assert spec.requirements_for("float16") == {"features": ["shader-f16"]}
    assert spec.requirements_for("float32") == {"features": []}


def test_text_encoder_builds_to_wasm(text_encoder_wasm):
    compiled, _ = text_encoder_wasm
    data = compiled.lib_path.read_bytes()
    assert compiled.lib_path.suffix == ".wasm" and data[:4] == b"\0asm"
    assert compiled.requirements["features"] == []
    # the largest buffer of the tiny CLIP: attention scores, 4 heads × 77 × 77 float32
    assert compiled.requirements["max_buffer_bytes"] == 4 * 77 * 77 * 4
    assert len(gzip.compress(data, 6)) < 2 << 20


# --- imports: what the .wasm needs vs what tvmjs gives it ------------------------------------


def wasm_imports(data: bytes) -> list[tuple[str, str, int]]:
    """``(module, name, kind)`` of every import (kind 0 = function) of a wasm binary."""
    assert data[:8] == b"\0asm\x01\0\0\0", "not a wasm v1 binary"

    def leb(pos: int) -> tuple[int, int]:
        value = shift = 0
        while True:
            byte = data[pos]
            pos += 1
            value |= (byte & 0x7F) << shift
            shift += 7
            if byte < 0x80:
                return value, pos

    def name(pos: int) -> tuple[str, int]:
        size, pos = leb(pos)
        return data[pos : pos + size].decode(), pos + size

    pos, imports = 8, []
    while pos < len(data):
        section, size, start = data[pos], *leb(pos + 1)
        if section == 2:  # the import section
            count, p = leb(start)
            for _ in range(count):
                module, p = name(p)
                field, p = name(p)
                kind = data[p]
                p += 1
                if kind == 0:  # function: type index
                    _, p = leb(p)
                elif kind == 1:  # table: reftype + limits
                    p += 1
                    flags, p = leb(p)
                    _, p = leb(p)
                    if flags & 1:
                        _, p = leb(p)
                elif kind == 2:  # memory: limits
                    flags, p = leb(p)
                    _, p = leb(p)
                    if flags & 1:
                        _, p = leb(p)
                else:  # global: valtype + mutability
                    p += 2
                imports.append((module, field, kind))
        pos = start + size
    return imports


def tvmjs_provided_imports(index_js: str) -> dict[str, set[str]]:
    """The functions tvmjs hands ``WebAssembly.instantiate``, read from its lib/index.js.

    ``createPolyfillWASI()`` bundles an emscripten JS glue whose ``var wasmImports={k:v,...}``
    object is passed as both ``env`` and ``wasi_snapshot_preview1``; tvmjs's ``Environment``
    then adds its own ``env`` entries (the ``defaultEnv`` and ``newEnv`` object literals in
    ``environment()``).
    """
    polyfill = re.search(r"var wasmImports=\{([^}]*)\}", index_js)
    assert polyfill, "tvmjs no longer bundles emscripten's wasmImports: update this parser"
    glue = set(re.findall(r"(\w+):", polyfill.group(1)))
    env_fn = re.search(r"environment\(initEnv\) \{(.*?)return Object\.assign", index_js, re.S)
    assert env_fn, "tvmjs Environment.environment() changed: update this parser"
    extra = set(re.findall(r'"(\w+)":', env_fn.group(1)))
    return {"env": glue | extra, "wasi_snapshot_preview1": glue}


@pytest.mark.skipif(not TVMJS.is_file(), reason="run `npm ci` in runtime-web/ (tvmjs)")
def test_wasm_imports_are_all_provided_by_tvmjs(text_encoder_wasm):
    compiled, _ = text_encoder_wasm
    provided = tvmjs_provided_imports(TVMJS.read_text())
    assert (
        "TVMFFIWasmSafeCall" in provided["env"] and "fd_write" in provided["wasi_snapshot_preview1"]
    )
    imports = wasm_imports(compiled.lib_path.read_bytes())
    assert imports, "a tvmjs wasm imports at least the WASI and packed-call functions"
    missing = [f"{m}.{n}" for m, n, kind in imports if kind != 0 or n not in provided.get(m, set())]
    assert not missing, f"imports tvmjs does not provide (version mismatch?): {missing}"


# --- numbers on a WebGPU implementation -------------------------------------------------------


@needs_deno_webgpu
def test_text_encoder_wasm_matches_torch_on_webgpu(text_encoder_wasm, tmp_path):
    compiled, module = text_encoder_wasm
    inputs = example_inputs("text_encoder")
    state = module.state_dict()
    params = [state[key].numpy().astype(np.float32) for key in compiled.params]
    got = run_in_deno(compiled.lib_path, inputs + params, tmp_path, len(inputs))
    expected = torch_reference("text_encoder", module, inputs)
    assert got.shape == expected.shape
    scale = float(np.abs(expected).max())
    assert np.abs(got - expected).max() <= 1e-4 * scale, np.abs(got - expected).max()


@needs_deno_webgpu
def test_float16_text_encoder_runs_on_webgpu(tmp_path):
    """shader-f16 kernels; odd-sized fp16 params (37 wide) need the harness's CPU staging."""
    module = MODULES["text_encoder"]()
    compiled = compile_component(
        "text_encoder",
        module,
        configs=signature_configs("text_encoder", module),
        latent_hw=(8, 8),
        target="webgpu",
        dtype="float16",
        cache_dir=tmp_path / "cache",
    )
    assert compiled.requirements["features"] == ["shader-f16"]
    inputs = example_inputs("text_encoder")
    state = module.state_dict()
    params = [state[key].numpy().astype(np.float16) for key in compiled.params]
    got = run_in_deno(compiled.lib_path, inputs + params, tmp_path, len(inputs))
    expected = torch_reference("text_encoder", module, inputs)
    assert np.abs(got - expected).max() <= 3e-2 * float(np.abs(expected).max())


@needs_deno_webgpu
@pytest.mark.parametrize("component", ["text_encoder", "unet"])
def test_quantized_component_matches_the_numpy_reference_on_webgpu(component, tmp_path):
    """q4f16 weights uploaded packed (uint32 codes, scales widened to float32) and decoded inside
    the kernels that read them (the workgroup GEMM's weight-tile loads; dlight's GEMV for the
    time embedding) give what torch gives with the reference's weights."""
    import torch

    from packer.bundle import quantize as qz

    scheme = qz.SCHEMES["q4f16"]
    module = MODULES[component]()
    compiled = compile_component(
        component,
        module,
        configs=signature_configs(component, module),
        latent_hw=(8, 8),
        target="webgpu",
        dtype="float32",
        cache_dir=tmp_path / "cache",
        quantize=scheme,
    )
    assert compiled.quantized
    state = {k: v.numpy().astype(np.float16) for k, v in module.state_dict().items()}
    stored = dict(qz.quantize_params(state.items(), set(compiled.quantized), scheme))
    params = [
        stored[k] if stored[k].dtype == np.uint32 else stored[k].astype(np.float32)
        for k in compiled.params
    ]
    inputs = example_inputs(component)
    got = run_in_deno(compiled.lib_path, inputs + params, tmp_path, len(inputs))
    with torch.no_grad():
        for key, value in module.state_dict().items():
            if key in compiled.quantized:
                packed, scales = (stored[n] for n in qz.stored_names(key))
                value.copy_(torch.from_numpy(qz.dequantize(packed, scales, value.shape, scheme)))
            elif value.is_floating_point():
                value.copy_(torch.from_numpy(stored[key].astype(np.float32)))
    expected = torch_reference(component, module, inputs)
    scale = max(1.0, float(np.abs(expected).max()))
    assert np.abs(got - expected).max() <= 1e-4 * scale, np.abs(got - expected).max()
