"""Shipped tuning databases: applied when they fit the target, otherwise warned about and
skipped — a tuning log must never break a build."""

from __future__ import annotations

import warnings

import pytest

from packer.compile import compile_component, get_target, tuning
from packer.compile.tuning import TuningDatabaseWarning

from .tiny import LATENT_HW, signature_configs, tiny_clip

CUDA_SM90 = {
    "kind": "cuda",
    "arch": "sm_90",
    "max_threads_per_block": 1024,
    "max_shared_memory_per_block": 49152,
    "thread_warp_size": 32,
}


def _write_database(directory, target) -> None:
    """A real MetaSchedule database holding one record of a small kernel, tuned for ``target``."""
    import tvm
    from tvm import te
    from tvm.s_tir import Schedule
    from tvm.s_tir import meta_schedule as ms

    directory.mkdir(parents=True)
    a = te.placeholder((8,), "float32", name="a")
    func = te.create_prim_func([a, te.compute((8,), lambda i: a[i] + 1.0, name="b")])
    database = ms.database.JSONDatabase(work_dir=str(directory))
    workload = database.commit_workload(tvm.IRModule({"main": func}))
    trace = Schedule(tvm.IRModule({"main": func})).trace
    database.commit_tuning_record(
        ms.database.TuningRecord(
            trace,
            workload,
            [1e-5],
            tvm.target.Target(target),
            ms.arg_info.ArgInfo.from_prim_func(func),
        )
    )


def _compile(cache):
    module = tiny_clip(0)
    return compile_component(
        "text_encoder",
        module,
        configs=signature_configs("text_encoder", module),
        latent_hw=LATENT_HW,
        target="llvm",
        dtype="float32",
        cache_dir=cache,
    )


@pytest.fixture
def tuning_root(tmp_path, monkeypatch):
    root = tmp_path / "tuning"
    monkeypatch.setattr(tuning, "ROOT", root)
    return root


def test_foreign_database_is_ignored_with_a_warning(tmp_path, tuning_root):
    _write_database(tuning_root / "llvm", CUDA_SM90)  # records for another target
    with pytest.warns(TuningDatabaseWarning, match="tuned for another target"):
        compiled = _compile(tmp_path / "cache")
    assert compiled.tuning_db_sha256 is None
    assert compiled.lib_path.is_file()


@pytest.mark.parametrize("damage", ["garbage", "half_missing", "empty_records"])
def test_corrupt_database_is_ignored_with_a_warning(tmp_path, tuning_root, damage):
    directory = tuning_root / "llvm"
    _write_database(directory, get_target("llvm").target)
    if damage == "garbage":
        (directory / tuning.RECORDS).write_text("[0, [not json\n")
    elif damage == "half_missing":
        (directory / tuning.WORKLOAD).unlink()
    else:
        (directory / tuning.RECORDS).write_text("")
    with pytest.warns(TuningDatabaseWarning):
        compiled = _compile(tmp_path / "cache")
    assert compiled.tuning_db_sha256 is None


def test_matching_database_is_applied_and_keys_the_cache(tmp_path, tuning_root, monkeypatch):
    untuned = _compile(tmp_path / "cache")
    _write_database(tuning_root / "llvm", get_target("llvm").target)
    opened = []
    real_open = tuning.TuningDatabase.open
    monkeypatch.setattr(
        tuning.TuningDatabase, "open", lambda self: opened.append(self) or real_open(self)
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error", TuningDatabaseWarning)
        tuned = _compile(tmp_path / "cache")
    assert opened, "the database was not handed to the build"
    assert tuned.tuning_db_sha256 is not None and len(tuned.tuning_db_sha256) == 64
    assert tuned.signature != untuned.signature


def test_database_that_breaks_the_build_falls_back(tmp_path, tuning_root, monkeypatch):
    _write_database(tuning_root / "llvm", get_target("llvm").target)

    def broken(self):
        raise RuntimeError("records reference a schedule primitive this TVM lacks")

    monkeypatch.setattr(tuning.TuningDatabase, "open", broken)
    with pytest.warns(TuningDatabaseWarning, match="build failed with it"):
        compiled = _compile(tmp_path / "cache")
    assert compiled.tuning_db_sha256 is None and compiled.lib_path.is_file()


def test_no_database_is_silent(tmp_path, tuning_root):
    with warnings.catch_warnings():
        warnings.simplefilter("error", TuningDatabaseWarning)
        assert _compile(tmp_path / "cache").tuning_db_sha256 is None
