"""The library cache: reuse across checkpoints of one architecture, and damage never used."""

from __future__ import annotations

import json

import numpy as np
import pytest

from packer.compile import architecture_signature, compile_all, compile_component, pipeline
from packer.compile import component as component_mod
from packer.errors import CompileError

from .tiny import (
    LATENT_HW,
    example_inputs,
    run_compiled,
    signature_configs,
    tiny_clip,
    tiny_unet,
    tiny_vae,
    torch_reference,
)


class FakeCheckpoint:
    """What ingest hands the compile stage, recording which components were loaded."""

    def __init__(self, seed: int):
        self.models = {
            "text_encoder": tiny_clip(seed),
            "unet": tiny_unet(seed),
            "vae": tiny_vae(seed),
        }
        self.loaded: list[str] = []
        self.configs = {"unet": dict(self.models["unet"].config)}

    def _load(self, name):
        self.loaded.append(name)
        return self.models[name]

    def text_encoder(self):
        return self._load("text_encoder")

    def unet(self):
        return self._load("unet")

    def vae(self):
        return self._load("vae")

    def signature_configs(self) -> dict:
        return {
            "text_encoder": signature_configs("text_encoder", self.models["text_encoder"]),
            "unet": dict(self.models["unet"].config),
            "vae": dict(self.models["vae"].config),
        }


def _forbid_builds(monkeypatch):
    def fail(*_args, **_kwargs):
        raise AssertionError("the cache should have answered without export or build")

    monkeypatch.setattr(component_mod, "export_component", fail)
    monkeypatch.setattr(component_mod, "build_in_subprocess", fail)
    monkeypatch.setattr(pipeline, "build", fail)


def test_second_checkpoint_reuses_libraries(shared_cache, monkeypatch):
    first = compile_all(FakeCheckpoint(1), variants=[("llvm", "float32")], cache_dir=shared_cache)
    _forbid_builds(monkeypatch)
    other = FakeCheckpoint(2)  # same architecture, different weights
    second = compile_all(other, variants=[("llvm", "float32")], cache_dir=shared_cache)

    assert set(second) == {(c, "llvm", "float32") for c in ("text_encoder", "unet", "vae_decoder")}
    assert other.loaded == []  # not even loaded: the signature needs configs only
    for key, compiled in second.items():
        assert compiled.lib_path == first[key].lib_path
        assert compiled.signature == first[key].signature
        assert compiled.params == first[key].params and compiled.inputs == first[key].inputs
    # The shared library computes the second checkpoint's function from its own weights.
    for component, source in (("text_encoder", "text_encoder"), ("vae_decoder", "vae")):
        module = other.models[source]
        inputs = example_inputs(component, seed=3)
        got = run_compiled(second[(component, "llvm", "float32")], module, inputs)
        np.testing.assert_allclose(got, torch_reference(component, module, inputs), atol=1e-4)


def _compile_clip(cache, module=None):
    module = module or tiny_clip(0)
    return compile_component(
        "text_encoder",
        module,
        configs=signature_configs("text_encoder", module),
        latent_hw=LATENT_HW,
        target="llvm",
        dtype="float32",
        cache_dir=cache,
    )


def _count_exports(monkeypatch) -> list:
    calls = []
    real = component_mod.export_component

    def counting(*args, **kwargs):
        calls.append(args[0])
        return real(*args, **kwargs)

    monkeypatch.setattr(component_mod, "export_component", counting)
    return calls


@pytest.mark.parametrize("damage", ["truncate_lib", "delete_lib", "bad_json", "wrong_sha"])
def test_damaged_entry_is_rebuilt(tmp_path, monkeypatch, damage):
    compiled = _compile_clip(tmp_path)
    meta_path = compiled.lib_path.with_suffix(".json")
    if damage == "truncate_lib":
        data = compiled.lib_path.read_bytes()
        compiled.lib_path.write_bytes(data[: len(data) // 2])
    elif damage == "delete_lib":
        compiled.lib_path.unlink()
    elif damage == "bad_json":
        meta_path.write_text('{"format": 1, "signature": ')
    else:
        meta = json.loads(meta_path.read_text())
        meta_path.write_text(json.dumps({**meta, "lib_sha256": "0" * 64}))

    exports = _count_exports(monkeypatch)
    rebuilt = _compile_clip(tmp_path)
    assert exports == ["text_encoder"]
    assert rebuilt.lib_path == compiled.lib_path and rebuilt.signature == compiled.signature
    module = tiny_clip(0)
    inputs = example_inputs("text_encoder")
    # A fresh process would load the rebuilt file; this one may still map the first, so load
    # a copy under a new name.
    copy = tmp_path / f"copy-{damage}.so"
    copy.write_bytes(rebuilt.lib_path.read_bytes())
    rebuilt.lib_path = copy
    np.testing.assert_allclose(
        run_compiled(rebuilt, module, inputs),
        torch_reference("text_encoder", module, inputs),
        atol=1e-4,
    )


def test_interrupted_build_leaves_no_entry(tmp_path, monkeypatch):
    real = component_mod.Compiler._lower

    def crash(self, mod, spec, database, out):
        out.write_bytes(b"\x7fELF half a library")
        raise RuntimeError("killed mid-build")

    monkeypatch.setattr(component_mod.Compiler, "_lower", crash)
    with pytest.raises(CompileError, match="killed mid-build"):
        _compile_clip(tmp_path)
    assert list((tmp_path / "compiled").iterdir()) == []

    monkeypatch.setattr(component_mod.Compiler, "_lower", real)
    assert _compile_clip(tmp_path).lib_path.is_file()


def test_cache_dir_defaults_to_env(tmp_path, monkeypatch):
    monkeypatch.setenv("SDPACK_CACHE", str(tmp_path / "env-cache"))
    module = tiny_clip(0)
    compiled = compile_component(
        "text_encoder",
        module,
        configs=signature_configs("text_encoder", module),
        latent_hw=LATENT_HW,
        target="llvm",
        dtype="float32",
    )
    assert compiled.lib_path.parent == tmp_path / "env-cache" / "compiled"


def _sig(**overrides) -> str:
    args = {
        "component": "unet",
        "latent_hw": (64, 64),
        "dtype": "float16",
        "target_json": {"kind": "cuda", "arch": "sm_86"},
        "tuning_db_sha256": None,
    }
    configs = overrides.pop("configs", {"cross_attention_dim": 768, "sample_size": 64})
    return architecture_signature(configs, **{**args, **overrides})


def test_signature_covers_what_changes_code():
    base = _sig()
    assert len(base) == 64 and base == _sig()
    changed = [
        _sig(configs={"cross_attention_dim": 1024, "sample_size": 64}),
        _sig(component="vae_decoder"),
        _sig(latent_hw=(96, 64)),
        _sig(dtype="float32"),
        _sig(target_json={"kind": "cuda", "arch": "sm_90"}),
        _sig(tuning_db_sha256="ab" * 32),
    ]
    assert len({base, *changed}) == 1 + len(changed)
    # checkpoint identity is not architecture
    assert (
        _sig(
            configs={"cross_attention_dim": 768, "sample_size": 64, "_name_or_path": "someone/else"}
        )
        == base
    )


def test_signature_key_records_versions_and_pipeline():
    key = component_mod._signature_key({}, "unet", (8, 8), "float32", {"kind": "llvm"}, None)
    assert key["versions"] == {"apache-tvm": "0.27.0.post1", "apache-tvm-ffi": "0.1.14.post1"}
    assert key["pipeline"] == pipeline.PIPELINE_VERSION
    assert key["inputs"] == {"latent_hw": [8, 8], "text_length": 77, "unet_batch": 2}
