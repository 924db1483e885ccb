"""The tool that makes shipped tuning databases (packer.compile.tuning.tasks), end to end on llvm:
extract the tiny example's kernels, tune one for real (MetaSchedule builds and runs it), export
the database, and check that a build applies it and computes the same thing."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest

from examples.make_example import make_example
from packer.compile import compile_component, get_target, tuning
from packer.compile.tuning import TuningDatabaseWarning
from packer.compile.tuning import tasks as tuning_tasks
from packer.ingest import ingest

from .tiny import run_compiled

pytestmark = pytest.mark.slow
COMPONENT = "vae_decoder"


@pytest.fixture(scope="module")
def tuned(tmp_path_factory):
    """``(example checkpoint, tasks.json, exported database dir)`` with one task tuned on llvm."""
    root = tmp_path_factory.mktemp("tuning-tool")
    example = make_example(root / "example", seed=0)
    ranked = tuning_tasks.extract(
        str(example["diffusers"]), "llvm", "float32", [COMPONENT], root / "tasks"
    )
    # three kernels asked for, but a budget that only lets the first one start: every kernel
    # that ran is committed, and none is started that would overrun
    tuning_tasks.tune(
        root / "tasks" / "tasks.json",
        root / "work",
        first=0,
        count=3,
        trials=2,
        builders=1,
        seconds=1e-3,
    )
    count = tuning_tasks.export([root / "work"], "llvm", root / "db" / "llvm")
    return example, root / "tasks" / "tasks.json", root / "db", ranked, count


def test_extract_ranks_unique_kernels(tuned):
    _, tasks_path, _, ranked, _ = tuned
    doc = json.loads(tasks_path.read_text())
    assert doc["target"] == "llvm" and doc["target_json"] == get_target("llvm").target_json()
    assert [t["name"] for t in doc["tasks"]] == [t["name"] for t in ranked]
    costs = [t["flops"] * t["weight"] for t in ranked]
    assert costs == sorted(costs, reverse=True) and costs[0] > 0
    assert all(t["components"] == {COMPONENT: t["weight"]} for t in ranked)
    assert any(t["name"].startswith("fused_conv2d") for t in ranked[:3])


def test_tuning_stops_between_kernels_and_keeps_what_ran(tuned):
    _, _, db_root, _, count = tuned
    assert count == 1  # one kernel tuned (of three asked), its best record exported


def test_export_keeps_one_record_for_this_target(tuned):
    _, _, db_root, _, count = tuned
    found = tuning.find_database("llvm", get_target("llvm").target_json(), root=db_root)
    assert found is not None and len(found.sha256) == 64
    with pytest.warns(TuningDatabaseWarning, match="another target"):
        assert (
            tuning.find_database("llvm", get_target("cuda-sm90").target_json(), root=db_root)
            is None
        )


def test_build_applies_the_record_and_computes_the_same(tuned, tmp_path, monkeypatch):
    import tvm
    import tvm_ffi
    from tvm import relax

    example, tasks_path, db_root, _, _ = tuned
    module = ingest(str(example["diffusers"])).vae()
    spec = get_target("llvm")
    database = tuning.find_database("llvm", spec.target_json(), root=db_root)
    kernel = tvm.ir.load_json(json.loads(tasks_path.read_text())["tasks"][0]["mod"])["main"]

    fused = tuning_tasks.fused_module(COMPONENT, module, spec, "float32", (8, 8))
    with spec.tvm_target(), database.open():
        applied = relax.transform.MetaScheduleApplyDatabase(enable_warning=False)(fused)
    scheduled = [
        name
        for name, f in applied.functions.items()
        if isinstance(f, tvm.tirx.PrimFunc) and f.attrs and f.attrs.get("tirx.is_scheduled")
    ]
    assert len(scheduled) >= 1, "no kernel took the tuned schedule"
    assert any(
        tvm_ffi.structural_equal(fused[name].with_attr("global_symbol", "main"), kernel)
        for name in scheduled
    )

    def build(root):
        monkeypatch.setattr(tuning, "ROOT", root)
        return compile_component(
            COMPONENT,
            module,
            configs={"tiny": True},
            latent_hw=(8, 8),
            target="llvm",
            dtype="float32",
            cache_dir=tmp_path / "cache",
        )

    untuned = build(tmp_path / "no-databases")
    with warnings.catch_warnings():
        warnings.simplefilter("error", TuningDatabaseWarning)
        with_db = build(db_root)
    assert with_db.tuning_db_sha256 == database.sha256 != untuned.tuning_db_sha256
    assert with_db.lib_path.read_bytes() != untuned.lib_path.read_bytes()
    latents = np.random.default_rng(0).standard_normal((1, 4, 8, 8)).astype(np.float32)
    a = run_compiled(untuned, module, [latents])
    b = run_compiled(with_db, module, [latents])
    assert np.abs(a - b).max() <= 1e-5 * max(1.0, float(np.abs(a).max()))
