"""What a Relax function calls, for the tests of sdpack's own passes."""

from __future__ import annotations


def calls(mod, func: str) -> list[tuple[str, str | None]]:
    """(op name, the called PrimFunc's name for ``call_tir`` else None) of every call in
    ``mod[func]``, in post order."""
    from tvm import relax

    found = []

    def visit(expr):
        if isinstance(expr, relax.Call) and hasattr(expr.op, "name"):
            target = expr.args[0].name_hint if expr.op.name == "relax.call_tir" else None
            found.append((expr.op.name, target))

    relax.analysis.post_order_visit(mod[func].body, visit)
    return found
