"""Quantized weights in the compiled model: packed codes and scales in, dequantized inside the
kernel that consumes the weight.

The layout (bits, groups along the flattened reduction axis, offset-binary codes, little-end-first
packing into uint32 words) is the bundle format's (formats/README.md, "Quantized weights"); the
``scheme`` passed in describes it (``bits``, ``group_size``, ``offset``, ``per_word``,
``stored_names(name)``: :class:`packer.bundle.quantize.Scheme`).

Three steps:

* :func:`decode_weights` (end of ``prepare``): each quantized weight param ``W`` of ``main`` is
  replaced by two params (packed uint32 codes, scales in the variant's float type) and ``W``
  becomes the result of a ``call_tir`` to an injective decode PrimFunc (``decode_q…``).
* ``FuseDecode`` (lowering, after ``AnnotateTIROpPattern``): each decode call and the one
  kernel that reads its output (the legalized matmul or convolution) become one primitive
  function, which ``FuseTIR`` turns into a single PrimFunc — TVM's ``FuseOps`` does not fuse an
  injective producer into a matmul or convolution, so this is done here.
  The decode PrimFuncs left uncalled are then dropped (``DropUnusedDecode``).
* ``InlineDecode`` (targets without schedule rules, i.e. llvm): the decode block inside each
  fused PrimFunc is inlined into the reduction that reads it, so the weight is decoded element by
  element as it is multiplied and never written out whole. On GPU targets dlight's Matmul rule
  does this itself (the decode lands in the shared-memory load of each weight tile).
  The hand-written GEMMs (CUDA's ``TensorCoreGemm`` in float16, WebGPU's ``WorkgroupGemm``)
  take the codes and scales in place of the decoded weight (:func:`decode_source`) and decode
  each element as they load a weight tile; those decode calls are then dead and removed.

No full-precision copy of a quantized weight exists at run time: no buffer of the weight's shape
is allocated in ``main`` nor in any kernel's global memory (tests/compile/test_quantize.py).
"""

from __future__ import annotations

import numpy as np

DECODE_PREFIX = "decode_q"
DECODE_ATTR = "sdpack.decode"
"""A decode PrimFunc's attribute: the weight's own ``shape`` and the ``layout`` it writes."""
FUSED_PREFIX = "fused_" + DECODE_PREFIX
QUANTIZED_COMPONENTS = ("text_encoder", "unet")
"""The VAE decoder stays in full precision: small (49 M params) and closest to the pixels."""


def quantizable(component: str, name: str, shape, scheme) -> bool:
    """Whether a param is quantized: a linear or convolution weight of the text encoder or the
    UNet whose reduction is a whole number of groups. Embedding tables (gathered, not multiplied),
    norms and biases stay as they are."""
    if component not in QUANTIZED_COMPONENTS or not name.endswith(".weight"):
        return False
    if component == "text_encoder" and ".embeddings." in f".{name}":
        return False
    return scheme.applies_to(tuple(int(d) for d in shape))


def decode_weights(mod, component: str, names: list[str], scheme):
    """Replace each quantizable weight param of ``main`` by (packed, scales) params decoded
    in-graph. Returns ``(mod, params, quantized)``: the new module, its param names after the
    inputs, and the names of the weights that were quantized."""
    import tvm
    from tvm import relax

    main = mod["main"]
    n_in = int(main.attrs["num_input"])
    params = list(main.params[:n_in])
    out_names: list[str] = []
    quantized: list[str] = []
    decodes = []
    decoders: dict[tuple, tvm.ir.GlobalVar] = {}
    builder = relax.BlockBuilder(mod)
    for var, name in zip(main.params[n_in:], names, strict=True):
        shape = [int(d) for d in var.ty.shape]
        if not quantizable(component, name, shape, scheme):
            params.append(var)
            out_names.append(name)
            continue
        dtype = str(var.ty.dtype)
        rows, k = shape[0], int(np.prod(shape[1:]))
        packed_name, scales_name = scheme.stored_names(name)
        packed = relax.Var(packed_name, relax.TensorType((rows, k // scheme.per_word), "uint32"))
        scales = relax.Var(scales_name, relax.TensorType((rows, k // scheme.group_size), dtype))
        key = (tuple(shape), dtype)
        if key not in decoders:
            func_name = f"{DECODE_PREFIX}{scheme.bits}_{'x'.join(map(str, shape))}_{dtype}"
            decoders[key] = builder.add_func(_decode_func(shape, dtype, scheme), func_name)
        decodes.append(
            relax.VarBinding(var, relax.call_tir(decoders[key], [packed, scales], var.ty))
        )
        params += [packed, scales]
        out_names += [packed_name, scales_name]
        quantized.append(name)
    if not quantized:
        return mod, out_names, quantized
    blocks = list(main.body.blocks)
    if blocks and isinstance(blocks[0], relax.DataflowBlock):
        blocks[0] = relax.DataflowBlock([*decodes, *blocks[0].bindings])
    else:
        blocks.insert(0, relax.BindingBlock(decodes))
    body = relax.SeqExpr(blocks, main.body.body)
    mod = builder.get()
    mod["main"] = relax.Function(params, body, main.ret_ty, main.is_pure, main.attrs)
    return relax.transform.Normalize()(mod), out_names, quantized


def _decode_func(shape: list[int], dtype: str, scheme, layout: str = "OIHW"):
    """The decode PrimFunc ``(packed, scales) -> W`` for one weight shape (injective). ``shape``
    is the weight's own; ``layout`` "OHWI" writes a convolution weight channels-last,
    ``[O, kh, kw, I]`` (what an NHWC convolution reads), instead of ``[O, I, kh, kw]``."""
    from tvm import te, tirx

    def i64(n):
        return tirx.IntImm("int64", int(n))

    rows, k_total = shape[0], int(np.prod(shape[1:]))
    out_shape = list(shape)
    if layout == "OHWI":
        out_shape = [shape[0], shape[2], shape[3], shape[1]]
    elif layout != "OIHW":
        raise ValueError(f"unknown decode layout {layout!r}")
    packed = te.placeholder((i64(rows), i64(k_total // scheme.per_word)), "uint32", name="packed")
    scales = te.placeholder((i64(rows), i64(k_total // scheme.group_size)), dtype, name="scales")
    bits = tirx.const(scheme.bits, "uint32")
    mask = tirx.const((1 << scheme.bits) - 1, "uint32")

    def element(o, *axes):
        if layout == "OHWI":  # (y, x, i) → the weight's own (i, y, x)
            axes = (axes[2], axes[0], axes[1])
        k = reduction_index(shape, axes, i64)
        word = packed[o, k // i64(scheme.per_word)]
        code = (word >> (bits * (k % i64(scheme.per_word)).astype("uint32"))) & mask
        value = code.astype(dtype) - tirx.const(scheme.offset, dtype)
        return value * scales[o, k // i64(scheme.group_size)]

    weight = te.compute(tuple(i64(d) for d in out_shape), element, name="decode")
    func = te.create_prim_func([packed, scales, weight])
    return func.with_attr(DECODE_ATTR, {"shape": [int(d) for d in shape], "layout": layout})


def reduction_index(shape, axes, const=int):
    """The format's ``k`` of element ``(o, *axes)`` of a weight of ``shape`` (formats/README.md,
    "Groups"): a linear's input index; a convolution ``[O, I, kh, kw]``'s ``(y·kw + x)·I + i``."""
    if len(shape) == 4:
        i, y, x = axes
        return (y * const(shape[3]) + x) * const(shape[1]) + i
    return axes[0]


def decode_source(mod, expr, lookup):
    """``(codes, scales, bits, group_size, layout)`` when ``expr`` is a Relax var bound (per
    ``lookup``, a mutator's ``lookup_binding``) to a decode call of ``mod``: the packed weight a
    kernel can read instead of the decoded one; None otherwise."""
    import tvm
    from tvm import relax

    from .passes import static_shape

    if not isinstance(expr, relax.Var):
        return None
    call = lookup(expr)
    if not (
        isinstance(call, relax.Call)
        and call.op.same_as(tvm.ir.Op.get("relax.call_tir"))
        and _is_decode(call.args[0])
    ):
        return None
    attrs = mod[call.args[0]].attrs
    if attrs is None or DECODE_ATTR not in attrs:
        return None
    info = attrs[DECODE_ATTR]
    codes, scales = call.args[1].fields
    shape = [int(d) for d in info["shape"]]
    k = int(np.prod(shape[1:]))
    code_cols, scale_cols = static_shape(codes.ty)[1], static_shape(scales.ty)[1]
    return codes, scales, 32 * code_cols // k, k // scale_cols, str(info["layout"])


def _channels_last(mod, _ctx):
    """``permute_dims(decode(codes, scales), [0, 2, 3, 1])`` → a decode that writes the weight
    channels-last itself (what ``ConvertLayout`` asks of a convolution weight for NHWC), so the
    convolution's weight stays one decode of the stored tensors that a kernel can read directly."""
    import tvm
    from tvm import relax
    from tvm.relax.expr_functor import PyExprMutator, mutator

    from .passes import rewrite_functions

    @mutator
    class Rewriter(PyExprMutator):
        def __init__(self, mod):
            super().__init__(mod)
            self.decoders = {}

        def visit_call_(self, call):
            call = super().visit_call_(call)
            if not (
                isinstance(call.op, tvm.ir.Op)
                and call.op.name == "relax.permute_dims"
                and call.attrs.axes is not None
                and [int(a) for a in call.attrs.axes] == [0, 2, 3, 1]
            ):
                return call
            source = decode_source(self.builder_.get(), call.args[0], self.lookup_binding)
            if source is None or source[4] != "OIHW":
                return call
            codes, scales, bits, group, _ = source
            decode = self.lookup_binding(call.args[0])
            info = self.builder_.get()[decode.args[0]].attrs[DECODE_ATTR]
            shape = [int(d) for d in info["shape"]]
            dtype = str(call.ty.dtype)
            key = (tuple(shape), dtype, bits)
            if key not in self.decoders:
                scheme = _Layout(bits, group)
                self.decoders[key] = self.builder_.add_func(
                    _decode_func(shape, dtype, scheme, "OHWI"),
                    f"{DECODE_PREFIX}{bits}_{'x'.join(map(str, shape))}_{dtype}_ohwi",
                )
            return relax.call_tir(self.decoders[key], [codes, scales], call.ty)

    return rewrite_functions(Rewriter(mod), mod)


class _Layout:
    """The numbers of a scheme that a decode function needs, read back from a decode call."""

    def __init__(self, bits: int, group_size: int):
        self.bits, self.group_size = bits, group_size
        self.per_word = 32 // bits
        self.offset = 1 << (bits - 1)


def _is_decode(gvar) -> bool:
    return gvar.name_hint.startswith(DECODE_PREFIX)


def _fuse_decode(mod, _ctx):
    """Group each decode call with the single call_tir that reads its output (see module doc),
    in every Relax function of ``mod``."""
    from tvm import relax

    for gvar, func in list(mod.functions.items()):
        attrs = {} if func.attrs is None else dict(func.attrs)
        if isinstance(func, relax.Function) and not attrs.get("Primitive"):
            mod = _fuse_decode_in(mod, gvar)
    return mod


def _fuse_decode_in(mod, gvar):
    import tvm
    from tvm import relax

    main = mod[gvar]
    call_tir = tvm.ir.Op.get("relax.call_tir")
    decoded: dict = {}  # var -> decode call
    uses: dict = {}
    for block in main.body.blocks:
        for binding in block.bindings:
            value = binding.value
            if (
                isinstance(value, relax.Call)
                and value.op.same_as(call_tir)
                and _is_decode(value.args[0])
            ):
                decoded[binding.var] = value
            for var in relax.analysis.free_vars(value):
                uses[var] = uses.get(var, 0) + 1
    if not decoded:
        return mod
    returned = set(relax.analysis.free_vars(main.body.body))
    fusable = {v for v in decoded if uses.get(v, 0) == 1 and v not in returned}
    builder = relax.BlockBuilder(mod)
    blocks = []
    for block in main.body.blocks:
        bindings = []
        for binding in block.bindings:
            value = binding.value
            if binding.var in fusable:
                continue  # emitted inside the consumer's fused function
            if isinstance(value, relax.Call) and value.op.same_as(call_tir):
                args = list(value.args[1].fields)
                mine = [a for a in args if a in fusable]
                if mine:
                    value = _fused_call(builder, value, args, {a: decoded[a] for a in mine})
                    fusable -= set(mine)
            elif any(v in fusable for v in relax.analysis.free_vars(value)):
                for v in relax.analysis.free_vars(
                    value
                ):  # not a kernel: keep its decode standalone
                    if v in fusable:
                        bindings.append(relax.VarBinding(v, decoded[v]))
                        fusable.discard(v)
            bindings.append(relax.VarBinding(binding.var, value))
        cls = relax.DataflowBlock if isinstance(block, relax.DataflowBlock) else relax.BindingBlock
        blocks.append(cls(bindings))
    mod = builder.get()
    mod[gvar] = relax.Function(
        main.params, relax.SeqExpr(blocks, main.body.body), main.ret_ty, main.is_pure, main.attrs
    )
    return relax.transform.Normalize()(mod)


def _fused_call(builder, consumer, args, decodes: dict):
    """A primitive Relax function running the decodes then ``consumer``; the call to it."""
    from tvm import relax

    outer_args, inner_params, mapping = [], [], {}

    def param_for(arg):
        if arg not in mapping:
            mapping[arg] = relax.Var(f"p{len(inner_params)}", arg.ty)
            inner_params.append(mapping[arg])
            outer_args.append(arg)
        return mapping[arg]

    bindings = []
    for var, call in decodes.items():
        inner = relax.DataflowVar(var.name, var.ty)
        bindings.append(
            relax.VarBinding(
                inner,
                relax.call_tir(call.args[0], [param_for(a) for a in call.args[1].fields], call.ty),
            )
        )
        mapping[var] = inner
    inner_args = [mapping[a] if a in decodes else param_for(a) for a in args]
    out = relax.Var("out", consumer.ty)
    bindings.append(
        relax.VarBinding(out, relax.call_tir(consumer.args[0], inner_args, consumer.ty))
    )
    func = relax.Function(
        inner_params, relax.SeqExpr([relax.DataflowBlock(bindings)], out), consumer.ty, is_pure=True
    ).with_attr("Primitive", True)
    gvar = builder.add_func(func, f"{FUSED_PREFIX}_{consumer.args[0].name_hint}")
    return relax.Call(gvar, outer_args)


def _inline_decode(mod, _ctx):
    """Inline every decode block of every fused PrimFunc into the block that reads it."""
    from tvm import s_tir, tirx

    for gvar, func in list(mod.functions.items()):
        if not isinstance(func, tirx.PrimFunc) or not gvar.name_hint.startswith(FUSED_PREFIX):
            continue
        sch = s_tir.Schedule(func)
        decodes = [
            b
            for b in sch.get_child_blocks(sch.get_sblock("root"))
            if sch.get(b).name_hint.startswith("decode")
        ]
        for block in decodes:
            sch.compute_inline(block)
        if decodes:
            mod[gvar] = sch.mod["main"]
    return mod


def _drop_unused_decode(mod, _ctx):
    """Remove the decode PrimFuncs no Relax function calls any more (FuseTIR copied them into
    the fused kernels), so no library ships them."""
    from tvm import relax

    called = set()

    def visit(expr):
        if isinstance(expr, relax.Call):
            for arg in [expr.op, *expr.args]:
                if isinstance(arg, relax.GlobalVar):
                    called.add(arg.name_hint)

    for func in mod.functions.values():
        if isinstance(func, relax.Function):
            relax.analysis.post_order_visit(func.body, visit)
    for gvar in list(mod.get_global_vars()):
        if gvar.name_hint.startswith(DECODE_PREFIX) and gvar.name_hint not in called:
            del mod[gvar]
    return mod


def _module_pass(func, name: str):
    import tvm

    return tvm.transform.module_pass(func, opt_level=0, name=name)


def channels_last_decode_pass():
    return _module_pass(_channels_last, "ChannelsLastDecode")


def fuse_decode_pass():
    return _module_pass(_fuse_decode, "FuseDecode")


def drop_unused_decode_pass():
    return _module_pass(_drop_unused_decode, "DropUnusedDecode")


def inline_decode_pass():
    return _module_pass(_inline_decode, "InlineDecode")
