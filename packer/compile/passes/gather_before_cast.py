"""Gather rows first, cast them after: ``take(astype(W, t), i)`` → ``astype(take(W, i), t)``."""

from __future__ import annotations

import tvm
from tvm import relax
from tvm.relax.expr_functor import PyExprMutator, mutator

from . import rewrite_functions


@mutator
class _Rewriter(PyExprMutator):
    def __init__(self, mod):
        super().__init__(mod)
        self.take = tvm.ir.Op.get("relax.take")
        self.astype = tvm.ir.Op.get("relax.astype")

    def visit_call_(self, call):
        call = super().visit_call_(call)
        if not (isinstance(call.op, tvm.ir.Op) and call.op.same_as(self.take)):
            return call
        table = call.args[0]
        bound = self.lookup_binding(table) if isinstance(table, relax.Var) else None
        if not (
            isinstance(bound, relax.Call)
            and isinstance(bound.op, tvm.ir.Op)
            and bound.op.same_as(self.astype)
        ):
            return call
        gathered = self.builder_.emit(
            relax.Call(call.op, [bound.args[0], *call.args[1:]], call.attrs)
        )
        return relax.op.astype(gathered, bound.attrs.dtype)


@tvm.transform.module_pass(opt_level=0, name="GatherBeforeCast")
def GatherBeforeCast(mod, _ctx):  # noqa: N802  (TVM pass naming)
    """Rewrite every ``take`` of a freshly cast table in every Relax function of ``mod``.

    ``ToMixedPrecision`` keeps ``R.take`` in float32 and so casts the *whole* table it gathers
    from: in the float16 CLIP text encoder that is the 49408×768 token embedding, a 145 MiB float32
    copy made on every call just to read 77 rows of it (over WebGPU's default 128 MiB binding
    limit). A cast is elementwise, so gathering first and casting the gathered rows gives
    bit-identical values; the now unused whole-table cast is left to ``DeadCodeElimination``.
    """
    return rewrite_functions(_Rewriter(mod), mod)
