"""The tensor-core GEMM reading quantized weights, against the same kernel on float16 weights.

Each SD1.5 convolution and linear shape of :mod:`bench.gpu.gemmlab` is built for cuda-sm90 in
three forms: ``f16`` (the float16 weight, what an unquantized bundle runs), ``q4`` and ``q8``
(the weight as a q4f16 / q8f16 bundle stores it, codes and scales, read by the same kernel
through :class:`packer.compile.passes.tensor_core_gemm.TensorCoreGemm`; the decode is written
channels-last exactly as ``ChannelsLastDecode`` leaves it in the pipeline). On the GPU, a random
weight is quantized in torch by the format's rules (formats/README.md, "Quantized weights"),
written out independently here, and each kernel's output is compared with torch float32 on the
weight the codes decode to (relative L2), then timed; the ``f16`` kernel runs on that same
decoded weight, so the three differ only in how the weight is read.

    here:  python -m bench.gpu.quantlab build --out .device/quantlab
    there: run("bash bench/gpu/run.sh quantlab", carry=[".device/whl", ".device/site",
               ".device/quantlab"])
"""

from __future__ import annotations

import json
from pathlib import Path

from .gemmlab import CONVS, LINEARS, conv_flops, linear_flops
from .lab import Gpu, build_library, main, rel_l2

SCHEMES = {"q4": (4, 32), "q8": (8, 64)}  # formats/README.md: q4f16, q8f16
VARIANTS = ("f16", *SCHEMES)


def build_module(variant: str):
    """One Relax function per shape; ``variant`` q4/q8 takes (x, codes, scales, bias)."""
    from tvm import relax

    from packer.compile.quantize import _decode_func, _Layout

    bb = relax.BlockBuilder()
    scheme = _Layout(*SCHEMES[variant]) if variant in SCHEMES else None

    def weight(shape, layout, o, k):
        """The weight as the function's params (a float16 tensor, or codes and scales) and the
        expression of it that the convolution or matmul reads."""
        if scheme is None:
            w = relax.Var("w", relax.TensorType(shape, "float16"))
            return [w], w
        codes = relax.Var("codes", relax.TensorType((o, k * scheme.bits // 32), "uint32"))
        scales = relax.Var("scales", relax.TensorType((o, k // scheme.group_size), "float16"))
        own = list(shape) if layout == "OIHW" else [shape[0], shape[3], shape[1], shape[2]]
        decode = bb.add_func(
            _decode_func(own, "float16", scheme, layout),
            f"decode_q{scheme.bits}_{'x'.join(map(str, own))}_{layout}",
        )
        return [codes, scales], relax.call_tir(
            decode, [codes, scales], relax.TensorType(shape, "float16")
        )

    for name, (b, c, hw, o, k, s) in CONVS.items():
        x = relax.Var("x", relax.TensorType((b, hw, hw, c), "float16"))
        bias = relax.Var("bias", relax.TensorType((1, 1, 1, o), "float16"))
        params, w = weight((o, k, k, c), "OHWI", o, k * k * c)
        with bb.function(name, [x, *params, bias]):
            with bb.dataflow():
                wv = bb.emit(w)
                y = bb.emit(
                    relax.op.nn.conv2d(
                        x,
                        wv,
                        [s, s],
                        [k // 2] * 4,
                        data_layout="NHWC",
                        kernel_layout="OHWI",
                        out_dtype="float16",
                    )
                )
                out = bb.emit_output(relax.op.add(y, bias))
            bb.emit_func_output(out)
    for name, (m, k, n) in LINEARS.items():
        x = relax.Var("x", relax.TensorType((2, m // 2, k) if m % 2 == 0 else (m, k), "float16"))
        bias = relax.Var("bias", relax.TensorType((n,), "float16"))
        params, w = weight((n, k), "OIHW", n, k)
        with bb.function(name, [x, *params, bias]):
            with bb.dataflow():
                wv = bb.emit(w)
                y = bb.emit(relax.op.matmul(x, relax.op.permute_dims(wv)))
                out = bb.emit_output(relax.op.add(y, bias))
            bb.emit_func_output(out)
    return bb.get()


def cmd_build(out: Path) -> None:
    import tvm
    from tvm import relax

    from packer.compile.passes.conv2d_implicit_gemm import Conv2dImplicitGemm
    from packer.compile.passes.tensor_core_gemm import TensorCoreGemm

    out.mkdir(parents=True, exist_ok=True)
    for variant in VARIANTS:
        passes = [
            TensorCoreGemm,
            Conv2dImplicitGemm,
            relax.transform.FuseTransposeMatmul(),
            relax.transform.DeadCodeElimination(),
        ]
        mod = tvm.transform.Sequential(passes)(build_module(variant))
        kernels = [
            gv.name_hint for gv in mod.get_global_vars() if "tensor_core_gemm" in gv.name_hint
        ]
        print(f"{variant}: {len(kernels)} tensor-core GEMM kernels")
        build_library(mod, out / f"{variant}.so")
    (out / "index.json").write_text(json.dumps({"convs": CONVS, "linears": LINEARS}))


def quantize(w, bits: int, group: int):
    """The format's quantization in torch: ``w`` float16 ``[O, I]`` or ``[O, I, kh, kw]`` →
    (uint32 codes as int64 ``[O, K·bits/32]``, float16 scales ``[O, K/G]``, the decoded weight
    in float16, same shape as ``w``)."""
    import torch

    qmax, offset, per_word = (1 << (bits - 1)) - 1, 1 << (bits - 1), 32 // bits
    rows = (w.permute(0, 2, 3, 1) if w.dim() == 4 else w).reshape(w.shape[0], -1)
    g = rows.float().reshape(rows.shape[0], -1, group)
    scales = (g.abs().amax(-1, keepdim=True) / qmax).half()
    s32 = scales.float()
    q = torch.where(s32 > 0, torch.round(g / torch.where(s32 > 0, s32, 1.0)), 0.0)
    q = q.clamp(-qmax, qmax)
    codes = (q + offset).long().reshape(rows.shape[0], -1)
    shifts = torch.arange(per_word, device=w.device) * bits
    words = (codes.reshape(rows.shape[0], -1, per_word) << shifts).sum(-1)
    decoded = (q * s32).half().reshape(rows.shape)
    if w.dim() == 4:
        o, i, kh, kw = w.shape
        decoded = decoded.reshape(o, kh, kw, i).permute(0, 3, 1, 2)
    return words, scales.reshape(rows.shape[0], -1), decoded.contiguous()


def cmd_run(lib: Path) -> None:
    import numpy as np
    import torch

    gpu = Gpu()
    vms = {v: gpu.load(lib / f"{v}.so") for v in VARIANTS}

    def u32(words):
        return gpu.tvm.runtime.tensor(words.cpu().numpy().astype(np.uint32), device=gpu.dev)

    print(f"{'shape':12s} {'GFLOP':>6s} {'scheme':>6s} " + " ".join(f"{v:>24s}" for v in VARIANTS))
    torch.manual_seed(0)
    totals = {(q, v): 0.0 for q in SCHEMES for v in VARIANTS}
    for name, shape, is_conv in [(n, s, True) for n, s in CONVS.items()] + [
        (n, s, False) for n, s in LINEARS.items()
    ]:
        if is_conv:
            b, c, hw, o, k, s = shape
            x = torch.randn(b, c, hw, hw, device="cuda", dtype=torch.float16)
            w = torch.randn(o, c, k, k, device="cuda", dtype=torch.float16) * (c * k * k) ** -0.5
            bias = torch.randn(o, device="cuda", dtype=torch.float16)
            flop = conv_flops(shape)
        else:
            m, k, n = shape
            x = torch.randn(*((2, m // 2) if m % 2 == 0 else (m,)), k, device="cuda").half()
            w = torch.randn(n, k, device="cuda", dtype=torch.float16) * k**-0.5
            bias = torch.randn(n, device="cuda", dtype=torch.float16)
            flop = linear_flops(shape)
        for scheme, (bits, group) in SCHEMES.items():
            words, scales, decoded = quantize(w, bits, group)
            if is_conv:
                want = torch.nn.functional.conv2d(
                    x.float(), decoded.float(), bias.float(), stride=s, padding=k // 2
                ).permute(0, 2, 3, 1)
                xa, wa, ba = (
                    x.permute(0, 2, 3, 1),
                    decoded.permute(0, 2, 3, 1),
                    bias.reshape(1, 1, 1, -1),
                )
            else:
                want = torch.nn.functional.linear(x.float(), decoded.float(), bias.float())
                xa, wa, ba = x, decoded, bias
            cells = []
            for variant, vm in vms.items():
                if variant == "f16":
                    args = gpu.arrays(xa, wa, ba)
                elif variant == scheme:
                    xt, bt = gpu.arrays(xa, ba)
                    args = [xt, u32(words), *gpu.arrays(scales), bt]
                else:
                    cells.append("-")
                    continue
                err = rel_l2(torch.from_dlpack(vm[name](*args)), want)
                sec = gpu.seconds(vm, name, args)
                totals[(scheme, variant)] += sec
                cells.append(f"{sec * 1e6:7.1f}us {flop / sec / 1e12:4.0f}T L2 {err:.1e}")
            print(
                f"{name:12s} {flop / 1e9:6.1f} {scheme:>6s} "
                + " ".join(f"{c:>24s}" for c in cells),
                flush=True,
            )
    for scheme in SCHEMES:
        f16, q = totals[(scheme, "f16")], totals[(scheme, scheme)]
        print(f"total {scheme}: f16 {f16 * 1e6:.0f} us, {scheme} {q * 1e6:.0f} us ({q / f16:.2f}x)")


if __name__ == "__main__":
    main("quantlab", cmd_build, cmd_run)
