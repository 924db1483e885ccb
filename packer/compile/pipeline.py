"""THE pass list: every compiled library sdpack ships went through exactly these passes.

The list is fixed and versioned so that a library can be named by what went into it: the
architecture signature (:func:`packer.compile.architecture_signature`) includes
``PIPELINE_VERSION``. Changing, adding or reordering a pass — anything that can change the
generated code for the same input module — must bump ``PIPELINE_VERSION``, which invalidates
every cached library.

In order:

``prepare`` (target independent; decides the calling convention's dtypes)
  1. float16 only: ``ToMixedPrecision(out_dtype="float16")`` with every param and every float
     user input except ``timestep`` listed as fp16 inputs (so weights and activations are fp16
     in memory and math, accumulation included), then a cast of the output to float16.
     ``timestep`` stays float32 because the sinusoidal embedding of t≈999 in fp16 loses the
     fraction bits (diffusers computes it in float32 too). It must run before step 5, whose
     fused functions it cannot type.
  1b. Targets whose ``conv_layout`` is NHWC (CUDA): ``ConvertLayout`` of every ``conv2d`` to
     NHWC activations and OHWI weights (the activations stay NHWC through the element-wise ops,
     group norms, concats and resizes between convolutions; the weights are permuted in the
     graph), then ``Conv2dImplicitGemm`` (:mod:`packer.compile.passes.conv2d_implicit_gemm`):
     each convolution becomes an NT matmul over an im2col view that dlight's tensor-core Matmul
     rule schedules with both operands contiguous along the reduction (faster than TOPI's NCHW
     convolution); where the output tiles would not fill the GPU (the 8² and 16²
     layers), the reduction is split into partial products added up by an elementwise kernel
     that takes the epilogue. The calling convention (NCHW inputs and outputs) is unchanged.
  1c. Targets with ``mma_kernels`` (CUDA), float16 only, before ``Conv2dImplicitGemm``:
     ``TensorCoreGemm`` (:mod:`packer.compile.passes.tensor_core_gemm`): every NHWC
     convolution whose sizes fit its tiles, and every linear layer (``matmul(x,
     permute_dims(W))``) with a reduction of 1024 or more or too few tiles to fill the GPU,
     becomes one hand-written GEMM kernel on ``mma.sync`` fed by a ``cp.async`` ring of
     shared-memory tiles (the convolution's im2col gathered on the fly, padding zero-filled;
     split along k into float32 partial sums where the tiles would not fill the GPU); the rest
     (4-channel ``conv_in``/``conv_out``, the 2-row time-embedding products, the short
     linears, which dlight runs faster with their bias fused) is left to the steps after it.
  1e. Targets with ``workgroup_gemm`` (WebGPU), both dtypes:
     ``WorkgroupGemm`` (:mod:`packer.compile.passes.workgroup_gemm`): every NCHW convolution
     and linear layer whose weight is a parameter, or a quantized weight's decode (then read
     packed), becomes one GEMM kernel in plain TIR, tiles of A and W in workgroup memory and a
     register micro-tile per invocation (the convolution's im2col gathered on the fly), instead
     of dlight's Matmul schedule; a long reduction over few output tiles is split along k into
     float32 partial sums, added by an injective kernel that fuses with the bias add after it.
  2a. Targets with ``mma_kernels`` (CUDA), float16 only: ``FusedAttention``
     (:mod:`packer.compile.passes.fused_attention`): each ``R.nn.attention`` whose head dim
     fits its tiles (D ≤ 160: every UNet attention) becomes one hand-written FlashAttention-2
     style kernel on ``mma.sync`` (online softmax, the scores never leave registers), marked
     scheduled; the rest (the VAE's 512-wide head) goes on to step 2.
  2b. Targets with ``workgroup_attention`` (WebGPU), both dtypes: ``WorkgroupAttention``
     (:mod:`packer.compile.passes.workgroup_attention`): each ``R.nn.attention`` whose tiles
     fit becomes one fused kernel in plain TIR (online softmax over 64-key tiles in workgroup
     memory, register micro-tiles, no warp intrinsics), so no (B, H, Sq, Sk) score matrix is
     ever allocated: the 64² self-attention's is 512 MiB in float16, above WebGPU's default
     128 MiB storage binding.
  2. ``SplitAttention`` (:mod:`packer.compile.passes.split_attention`): ``R.nn.attention``
     becomes permute_dims → matmul (scaled Q·Kᵀ) → softmax (float32 in the float16 variant) →
     matmul (P·V) → permute_dims, so that dlight's Matmul and reduction rules schedule it;
     legalized whole it is one kernel family no rule recognises (Fallback: one thread per score).
  3. ``GroupNormReduction`` (:mod:`packer.compile.passes.group_norm_reduction`):
     ``R.nn.group_norm`` (rank 4, and the VAE attention's rank 3) becomes per-channel float32
     sums of x and x² over H·W (N·C rows: dlight's reduction rules, one kernel per moment),
     per-group mean and rstd from them (one tiny opaque kernel) and one normalise + affine
     kernel, into which FuseOps fuses the SiLU that follows, instead of one kernel that runs one
     CTA per batch element. On targets with ``workgroup_norm`` (WebGPU) the statistics are one
     hand-scheduled kernel (a workgroup per group, both moments from one read).
  4. ``GatherBeforeCast`` (:mod:`packer.compile.passes.gather_before_cast`):
     ``take(astype(W), ids)`` → ``astype(take(W, ids))``, so the float16 text encoder casts the
     77 gathered embedding rows instead of the whole 49408-row table (a 145 MiB float32 buffer
     per call). Bit-identical values.
  5. ``FuseTransposeMatmul`` — torch's ``linear`` imports as ``permute_dims(W) @ x``; fusing
     reads the weight transposed in place instead of materialising ``W.T`` on every call (the
     params stay the untouched torch tensors, so no ``transform_params`` step exists).
  6. ``EliminateCommonSubexpr``, ``DeadCodeElimination``: the UNet's resnets each compute
     SiLU of the same time embedding; computed once, it is one dispatch instead of one per
     block.
  6b. NHWC targets only: ``LiftTransformParams``: what depends on params alone (the OHWI
     permutes of the conv weights and the NHWC reshapes of their biases) moves to a second VM
     function, ``main_transform_params(params) -> params'``, that a runner calls once after
     upload (:func:`packer.runtime.module.bind_params`); ``main`` then takes ``params'``, so the
     UNet's 1.2 GB of conv weights are permuted once, not on every step.

Why each step exists and what it was measured to give: docs/design.md, one section per step.

``lower`` (per target; see :mod:`packer.compile.targets`)
  7. ``LegalizeOps`` → ``AnnotateTIROpPattern`` → ``FuseDecode`` → ``FoldConstant`` →
     ``FuseOps`` → ``FuseTIR`` (FoldConstant also folds CLIP's causal mask, the only i64 in any
     graph, into a constant). ``FuseDecode`` (:mod:`packer.compile.quantize`) only acts on
     quantized modules: each weight's decode joins the matmul or convolution that reads it
     (``DropUnusedDecode`` after ``FuseTIR`` removes the standalone decode PrimFuncs).
  8. ``MetaScheduleApplyDatabase`` when the target ships a tuning database
     (:mod:`packer.compile.tuning`); its kernels are marked scheduled and skipped below.
  9. ``dlight.ApplyDefaultSchedule(<the target's rules>)`` on GPU targets; on the others
     (llvm) ``InlineDecode``: a quantized weight's decode is inlined into its consumer's
     reduction (a no-op on modules without quantized weights).
 10. VM lowering, as TVM's default backends do: ``RewriteDataflowReshape``, ``ToNonDataflow``,
     ``RemovePurityChecking``, ``CallTIRRewrite``, ``StaticPlanBlockMemory``,
     ``LowerAllocTensor``, ``KillAfterLastUse``, ``LowerRuntimeBuiltin``, ``ComputePrimValue``,
     ``VMShapeLower``, ``AttachGlobalSymbol``.
 11. TVM's ``"default"`` TIR pipeline and codegen (``relax.build``).
"""

from __future__ import annotations

import contextlib

PIPELINE_VERSION = "13"

FP32_INPUTS = ("timestep",)
"""Float user inputs that stay float32 in the float16 variant."""


def prepare_for(mod, dtype: str, spec, decode=None):
    """:func:`prepare` with the choices of target ``spec`` (a
    :class:`packer.compile.targets.TargetSpec`); ``decode`` as :func:`prepare` takes it."""
    return prepare(
        mod,
        dtype,
        spec.conv_layout,
        spec.mma_kernels,
        spec.workgroup_attention,
        decode,
        spec.workgroup_gemm,
        spec.workgroup_norm,
    )


def prepare(
    mod,
    dtype: str,
    conv_layout: str = "NCHW",
    mma_kernels: bool = False,
    workgroup_attention: bool = False,
    decode=None,
    workgroup_gemm: bool = False,
    workgroup_norm: bool = False,
):
    """Steps 1–6: the rewrite that fixes the module's dtypes, its convolutions' layout and its
    hand-written kernels (``conv_layout``, ``mma_kernels``, ``workgroup_attention``,
    ``workgroup_gemm``, ``workgroup_norm``: the target's, :attr:`packer.compile.targets.TargetSpec.conv_layout` and so on).

    ``decode`` (a quantized build): a function ``mod -> mod`` that takes the weights packed,
    :func:`packer.compile.quantize.decode_weights`, run right after step 1 so that every later
    step sees each quantized weight as a decode of its stored tensors (step 1d)."""
    import tvm
    from tvm import relax

    from .passes.conv2d_implicit_gemm import Conv2dImplicitGemm
    from .passes.fused_attention import FusedAttention
    from .passes.gather_before_cast import GatherBeforeCast
    from .passes.group_norm_reduction import group_norm_reduction
    from .passes.split_attention import SplitAttention
    from .passes.tensor_core_gemm import TensorCoreGemm
    from .passes.workgroup_attention import WorkgroupAttention
    from .passes.workgroup_gemm import WorkgroupGemm
    from .quantize import channels_last_decode_pass

    passes = []
    if dtype == "float16":
        passes.append(
            relax.transform.ToMixedPrecision(
                out_dtype="float16", fp16_input_names=_fp16_inputs(mod)
            )
        )
    if decode is not None:
        passes.append(tvm.transform.module_pass(lambda m, _ctx: decode(m), 0, "DecodeWeights"))
    if conv_layout == "NHWC":
        passes.append(relax.transform.ConvertLayout({"relax.nn.conv2d": ["NHWC", "OHWI"]}))
        if decode is not None:
            passes.append(channels_last_decode_pass())
    elif conv_layout != "NCHW":
        raise ValueError(f"unknown conv_layout {conv_layout!r}")
    if mma_kernels:
        passes.append(TensorCoreGemm)
    if conv_layout == "NHWC":
        passes.append(Conv2dImplicitGemm)
    if mma_kernels:
        passes.append(FusedAttention)
    if workgroup_gemm:
        passes.append(WorkgroupGemm)
    if workgroup_attention:
        passes.append(WorkgroupAttention)
    passes += [
        SplitAttention,
        group_norm_reduction(workgroup_norm),
        GatherBeforeCast,
        relax.transform.FuseTransposeMatmul(),
        relax.transform.EliminateCommonSubexpr(),
        relax.transform.DeadCodeElimination(),
    ]
    if conv_layout == "NHWC" and decode is None:  # after FuseTransposeMatmul: linear weights stay
        passes += [relax.transform.LiftTransformParams(), relax.transform.DeadCodeElimination()]
    mod = tvm.transform.Sequential(passes)(mod)
    return _cast_output(mod, dtype) if dtype == "float16" else mod


def _fp16_inputs(mod) -> list[str]:
    """Every float32 param of ``main`` except the few that must stay float32."""
    main = mod["main"]
    names = []
    for var in main.params:
        dtype = var.ty.dtype
        if dtype == "float32" and var.name not in FP32_INPUTS:
            names.append(var.name)
    return names


def _cast_output(mod, dtype: str):
    """Make ``main`` return ``dtype`` whatever precision its last op ran in."""
    from tvm import relax

    main = mod["main"]
    ret = main.ret_ty
    if ret.dtype == dtype:
        return mod
    out = relax.Var("output", relax.TensorType(ret.shape, dtype))
    cast = relax.BindingBlock([relax.VarBinding(out, relax.op.astype(main.body.body, dtype))])
    body = relax.SeqExpr([*main.body.blocks, cast], out)
    mod["main"] = relax.Function(main.params, body, out.ty, main.is_pure, main.attrs)
    return relax.transform.Normalize()(mod)


def fusion_passes() -> list:
    """Step 7: from a prepared module to the fused PrimFuncs that get scheduled (and tuned)."""
    from tvm import relax

    from .quantize import drop_unused_decode_pass, fuse_decode_pass

    t = relax.transform
    return [
        t.LegalizeOps(),
        t.AnnotateTIROpPattern(),
        fuse_decode_pass(),
        t.FoldConstant(),
        t.FuseOps(),
        t.FuseTIR(),
        drop_unused_decode_pass(),
    ]


def lower_passes(spec, database=None) -> list:
    """Steps 7–10 for one target."""
    from tvm import relax
    from tvm.s_tir import dlight as dl

    from .quantize import inline_decode_pass

    t = relax.transform
    passes = fusion_passes()
    if database is not None:
        passes.append(t.MetaScheduleApplyDatabase(enable_warning=False))
    rules = spec.schedule_rules()
    if rules:
        passes.append(dl.ApplyDefaultSchedule(*rules))
    else:
        passes.append(inline_decode_pass())
    passes += [
        t.RewriteDataflowReshape(),
        t.ToNonDataflow(),
        t.RemovePurityChecking(),
        t.CallTIRRewrite(),
        t.StaticPlanBlockMemory(),
        t.LowerAllocTensor(),
        t.KillAfterLastUse(),
        t.LowerRuntimeBuiltin(),
        t.ComputePrimValue(),
        t.VMShapeLower(),
        t.AttachGlobalSymbol(),
    ]
    return passes


def build(mod, spec, database=None, stats: dict | None = None):
    """Steps 7–11: lower a prepared module for ``spec`` and return the VM executable.

    With ``stats`` (a dict), the same passes run in two halves around the memory plan
    (:func:`plan`) and ``stats["max_buffer_bytes"]`` receives :func:`max_buffer_bytes` of the
    planned module; the generated code is the same either way.
    """
    import tvm
    from tvm import relax

    target = spec.tvm_target()
    with _lowering(spec, database):
        passes = lower_passes(spec, database)
        if stats is None:
            return relax.build(mod, target, relax_pipeline=tvm.transform.Sequential(passes))
        split = _plan_end(passes)
        planned = tvm.transform.Sequential(passes[:split])(mod)
        stats["max_buffer_bytes"] = max_buffer_bytes(planned)
        lowered = tvm.transform.Sequential(passes[split:])(planned)
        return relax.build(lowered, target, relax_pipeline=None)


def plan(mod, spec, database=None):
    """Steps 7–10 up to the static memory plan (no code generated): what
    :func:`max_buffer_bytes` measures, in seconds where a build takes a minute."""
    import tvm

    with _lowering(spec, database):
        passes = lower_passes(spec, database)
        return tvm.transform.Sequential(passes[: _plan_end(passes)])(mod)


def _plan_end(passes) -> int:
    return 1 + [p.info.name for p in passes].index("StaticPlanBlockMemory")


def _lowering(spec, database) -> contextlib.ExitStack:
    """The contexts lowering runs in: the target (dlight and nvcc read it) and the database."""
    stack = contextlib.ExitStack()
    stack.enter_context(spec.tvm_target())
    if database is not None:
        stack.enter_context(database)
    return stack


def max_buffer_bytes(mod) -> int:
    """The largest single device buffer a memory-planned module allocates, in bytes.

    Counts ``main``'s inputs and params, every storage of the static memory plan
    (``R.memory.alloc_storage``), every tensor allocated outside it (``R.builtin.alloc_tensor``,
    e.g. the output) and every global-scope buffer a kernel allocates for itself
    (``T.alloc_buffer`` that dlight left in global memory). Dynamic sizes are skipped: every
    sdpack module is static.
    """
    import tvm
    from tvm import relax, tirx

    sizes = [0]
    for func in mod.functions.values():
        if isinstance(func, relax.Function):
            sizes.extend(_tensor_bytes(p.ty) for p in func.params)

            def visit(expr):
                if isinstance(expr, relax.Call) and isinstance(expr.op, tvm.ir.Op):
                    if expr.op.name == "relax.memory.alloc_storage":
                        sizes.append(_shape_bytes(expr.args[0], "uint8"))
                    elif expr.op.name == "relax.builtin.alloc_tensor":
                        sizes.append(_tensor_bytes(expr.ty))

            relax.analysis.post_order_visit(func.body, visit)
        elif isinstance(func, tirx.PrimFunc):
            sizes.extend(_buffer_bytes(b) for b in _global_allocs(func.body))
    return max(sizes)


def _tensor_bytes(ty) -> int:
    from tvm import relax

    if not isinstance(ty, relax.TensorType) or ty.shape is None:
        return 0
    return _shape_bytes(ty.shape, str(ty.dtype))


def _shape_bytes(shape, dtype: str) -> int:
    import numpy as np
    from tvm import relax, tirx

    values = shape.values if isinstance(shape, relax.ShapeExpr) else getattr(shape, "values", None)
    if values is None or not all(isinstance(v, tirx.IntImm) for v in values):
        return 0
    bits = {"bool": 8}.get(dtype) or np.dtype(dtype).itemsize * 8
    return int(np.prod([int(v) for v in values], dtype=np.int64)) * bits // 8


def _buffer_bytes(buffer) -> int:
    from tvm import tirx

    if not all(isinstance(v, tirx.IntImm) for v in buffer.shape):
        return 0
    count = 1
    for v in buffer.shape:
        count *= int(v)
    return count * buffer.dtype.bits * buffer.dtype.lanes // 8


def _global_allocs(stmt) -> list:
    """Global-scope buffers allocated anywhere in a TIR body (blocks and AllocBuffer nodes)."""
    found = []
    stack = [stmt]
    while stack:
        node = stack.pop()
        if node is None:
            continue
        kind = type(node).__name__
        for buffer in getattr(node, "alloc_buffers", None) or ():
            if buffer.scope() == "global":
                found.append(buffer)
        if kind == "AllocBuffer" and node.buffer.scope() == "global":
            found.append(node.buffer)
        for child in ("body", "block", "then_case", "else_case", "init"):
            value = getattr(node, child, None)
            if value is not None and hasattr(value, "same_as"):
                stack.append(value)
        seq = getattr(node, "seq", None)
        if seq is not None:
            stack.extend(seq)
    return found
