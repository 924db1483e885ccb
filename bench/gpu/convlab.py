"""Convolution layouts under dlight, timed against cuDNN on the lent GPU.

Which formulation of SD1.5's convolutions lets dlight's tensor-core Matmul rule run near matmul
speed? Each variant is one Relax function (conv + bias add) in a single CUDA library:

  topi_nchw   TOPI conv2d_nchw (what LegalizeOps lowers an NCHW R.nn.conv2d to)
  gemm_nhwc   NHWC activations, OHWI weights (what the pipeline runs): out[(b,h,w), o] = col[(b,h,w), (r,s,c)] · W[o, (r,s,c)]
  gemm_nhwc_oihw  the same with the OIHW weight read in place (strided along c)

    here:  python -m bench.gpu.convlab build --out .device/convlab      (stub driver + nvcc)
    there: run("bash bench/gpu/run.sh convlab", carry=[".device"])       (times each, and cuDNN)
"""

from __future__ import annotations

import json
from pathlib import Path

from .lab import Gpu, build_library, main, rel_l2

SHAPES = {  # name: (batch, in channels, height = width, out channels, kernel, stride)
    "unet64": (2, 320, 64, 320, 3, 1),
    "unet32": (2, 640, 32, 640, 3, 1),
    "unet16": (2, 1280, 16, 1280, 3, 1),
    "unet8": (2, 1280, 8, 1280, 3, 1),
    "unet64_1x1": (2, 640, 64, 320, 1, 1),
    "vae256": (1, 256, 256, 256, 3, 1),
}
VARIANTS = ("topi_nchw", "gemm_nhwc", "gemm_nhwc_oihw")


def flops(shape) -> float:
    b, c, hw, o, k, s = shape
    return 2.0 * b * o * (hw // s) ** 2 * c * k * k


def _nhwc_gemm(x, w, kernel, stride, pad, weight_layout):
    from tvm import te, topi

    b, h, wd, c = (int(v) for v in x.shape)
    o = int(w.shape[0])
    oh = (h + 2 * pad - kernel) // stride + 1
    ow = (wd + 2 * pad - kernel) // stride + 1
    if pad:
        x = topi.nn.pad(x, [0, pad, pad, 0], [0, pad, pad, 0], name="pad")
    kk = kernel * kernel * c

    def gather(m, k):
        tap, ch = k // c, k % c
        return x[
            m // (oh * ow),
            (m % (oh * ow)) // ow * stride + tap // kernel,
            (m % ow) * stride + tap % kernel,
            ch,
        ]

    def flat(n, k):
        tap, ch = k // c, k % c
        if weight_layout == "OHWI":
            return w[n, tap // kernel, tap % kernel, ch]
        return w[n, ch, tap // kernel, tap % kernel]

    col = te.compute((b * oh * ow, kk), gather, name="im2col")
    w2 = te.compute((o, kk), flat, name="weight_2d")
    r = te.reduce_axis((0, kk), "k")
    gemm = te.compute(
        (b * oh * ow, o), lambda m, n: te.sum(col[m, r] * w2[n, r], axis=r), name="gemm"
    )
    return te.compute(
        (b, oh, ow, o), lambda i, y, z, n: gemm[i * oh * ow + y * ow + z, n], name="out"
    )


def build_module():
    from tvm import relax, topi

    bb = relax.BlockBuilder()
    for name, (b, c, hw, o, k, s) in SHAPES.items():
        pad = k // 2
        for variant in VARIANTS:
            nhwc = variant.startswith("gemm_nhwc")
            x_shape = (b, hw, hw, c) if nhwc else (b, c, hw, hw)
            w_shape = (o, k, k, c) if variant == "gemm_nhwc" else (o, c, k, k)
            x = relax.Var("x", relax.TensorType(x_shape, "float16"))
            w = relax.Var("w", relax.TensorType(w_shape, "float16"))
            bias = relax.Var(
                "bias", relax.TensorType((1, 1, 1, o) if nhwc else (1, o, 1, 1), "float16")
            )
            with bb.function(f"{variant}__{name}", [x, w, bias]):
                with bb.dataflow():
                    if variant == "topi_nchw":
                        y = bb.emit_te(
                            topi.nn.conv2d_nchw,
                            x,
                            w,
                            s,
                            pad,
                            1,
                            "float16",
                            primfunc_name_hint="conv",
                        )
                    else:
                        y = bb.emit_te(
                            _nhwc_gemm,
                            x,
                            w,
                            k,
                            s,
                            pad,
                            "OHWI" if variant == "gemm_nhwc" else "OIHW",
                            primfunc_name_hint="conv",
                        )
                    out = bb.emit_output(relax.op.add(y, bias))
                bb.emit_func_output(out)
    return bb.get()


def cmd_build(out: Path) -> None:
    build_library(build_module(), out / "convlab.so")
    (out / "index.json").write_text(json.dumps({"shapes": SHAPES, "variants": VARIANTS}))


def cmd_run(lib: Path) -> None:
    import torch

    from .native import back_to_back_s

    gpu = Gpu()
    vm = gpu.load(lib / "convlab.so")
    print(
        f"{'shape':12s} {'GFLOP':>7s} "
        + " ".join(f"{v:>16s}" for v in (*VARIANTS, "cudnn_nchw", "cudnn_nhwc"))
    )
    for name, shape in SHAPES.items():
        b, c, hw, o, k, s = shape
        x = torch.randn(b, c, hw, hw, device="cuda", dtype=torch.float16)
        w = torch.randn(o, c, k, k, device="cuda", dtype=torch.float16) * (c * k * k) ** -0.5
        bias = torch.randn(o, device="cuda", dtype=torch.float16)
        want = torch.nn.functional.conv2d(x, w, bias, stride=s, padding=k // 2)
        cells = []
        for variant in VARIANTS:
            nhwc = variant.startswith("gemm_nhwc")
            xs = x.permute(0, 2, 3, 1).contiguous() if nhwc else x
            ws = w.permute(0, 2, 3, 1).contiguous() if variant == "gemm_nhwc" else w
            bs = bias.reshape(1, 1, 1, o) if nhwc else bias.reshape(1, o, 1, 1)
            args = gpu.arrays(xs, ws, bs)
            fname = f"{variant}__{name}"
            got = torch.from_dlpack(vm[fname](*args))
            if nhwc:
                got = got.permute(0, 3, 1, 2)
            err = rel_l2(got, want)
            sec = gpu.seconds(vm, fname, args)
            cells.append(
                f"{sec * 1e6:7.0f}us {flops(shape) / sec / 1e12:4.0f}T"
                + ("" if err < 2e-2 else f" ERR{err:.2f}")
            )
        for fmt in (torch.contiguous_format, torch.channels_last):
            xs, ws = x.contiguous(memory_format=fmt), w.contiguous(memory_format=fmt)
            sec = back_to_back_s(
                lambda: torch.nn.functional.conv2d(xs, ws, bias, stride=s, padding=k // 2)
            )
            cells.append(f"{sec * 1e6:7.0f}us {flops(shape) / sec / 1e12:4.0f}T")
        print(
            f"{name:12s} {flops(shape) / 1e9:7.1f} " + " ".join(f"{c:>16s}" for c in cells),
            flush=True,
        )


if __name__ == "__main__":
    main("convlab", cmd_build, cmd_run)
