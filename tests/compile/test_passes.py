"""Pipeline passes checked on their own (the fidelity tests check them inside whole models)."""

from __future__ import annotations

import numpy as np

from packer.compile import pipeline
from packer.compile.export import export_component
from packer.compile.passes.gather_before_cast import GatherBeforeCast

from .tiny import tiny_clip


def _gather_module():
    import tvm
    from tvm import relax

    bb = relax.BlockBuilder()
    table = relax.Var("table", relax.TensorType((50, 8), "float16"))
    ids = relax.Var("ids", relax.TensorType((5,), "int32"))
    with bb.function("main", [table, ids]):
        with bb.dataflow():
            wide = bb.emit(relax.op.astype(table, "float32"))
            rows = bb.emit(relax.op.take(wide, ids, axis=0))
            out = bb.emit_output(relax.op.multiply(rows, relax.const(2.0, "float32")))
        bb.emit_func_output(out)
    return bb.get()


def _ops(mod) -> list[tuple[str, tuple]]:
    """(op name, argument shapes) of every call in ``main``, in order."""
    from tvm import relax

    found = []

    def visit(expr):
        if isinstance(expr, relax.Call) and hasattr(expr.op, "name"):
            shapes = tuple(tuple(int(v) for v in a.ty.shape.values)
                           if isinstance(a.ty, relax.TensorType) and a.ty.shape is not None
                           else None for a in expr.args)
            found.append((expr.op.name, shapes))

    relax.analysis.post_order_visit(mod["main"].body, visit)
    return found


def test_gather_before_cast_casts_rows_not_the_table():
    import tvm
    from tvm import relax

    mod = _gather_module()
    rewritten = tvm.transform.Sequential([GatherBeforeCast,
                                          relax.transform.DeadCodeElimination()])(mod)
    ops = _ops(rewritten)
    assert ("relax.astype", ((50, 8),)) not in ops, "the whole table is still cast"
    assert ("relax.astype", ((5, 8),)) in ops

    rng = np.random.default_rng(0)
    table = rng.standard_normal((50, 8)).astype(np.float16)
    ids = np.array([3, 0, 49, 7, 3], dtype=np.int32)
    results = []
    for m in (mod, rewritten):
        exe = relax.build(m, "llvm")
        vm = relax.VirtualMachine(exe, tvm.cpu())
        results.append(vm["main"](tvm.runtime.tensor(table), tvm.runtime.tensor(ids)).numpy())
    assert results[0].dtype == results[1].dtype == np.float32
    assert np.array_equal(results[0], results[1])  # bit-identical


def test_float16_text_encoder_no_longer_casts_its_embedding_tables():
    module = tiny_clip(0)
    mod = pipeline.prepare(export_component("text_encoder", module, (8, 8)).mod, "float16")
    vocab, dim = module.get_input_embeddings().weight.shape
    ops = _ops(mod)
    assert ("relax.astype", ((vocab, dim),)) not in ops
    assert any(name == "relax.take" for name, _ in ops)
