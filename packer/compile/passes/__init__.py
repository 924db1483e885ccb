"""sdpack's own Relax rewrites, each a module pass named for what it does (pipeline v2 on).

Each pass is a ``PyExprMutator`` over calls plus the module-pass wrapper
:func:`rewrite_functions`; :func:`static_shape` is the shape check they share.
"""

from __future__ import annotations


def static_shape(ty) -> list[int] | None:
    """The shape of a Relax tensor type as ints, or None when it is unknown or symbolic."""
    import tvm

    values = getattr(getattr(ty, "shape", None), "values", None)
    if values is None or not all(isinstance(v, tvm.tirx.IntImm) for v in values):
        return None
    return [int(v) for v in values]


def rewrite_functions(rewriter, mod):
    """Every Relax function of ``mod`` through ``rewriter`` (a ``PyExprMutator`` made on
    ``mod``); the module its builder holds afterwards."""
    from tvm import relax

    for gvar, func in list(mod.functions.items()):
        if isinstance(func, relax.Function):
            rewriter.builder_.update_func(gvar, rewriter.visit_expr(func))
    return rewriter.builder_.get()
