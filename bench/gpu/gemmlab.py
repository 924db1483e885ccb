"""The hand-written tensor-core GEMM vs dlight vs cuDNN / cuBLAS, on the lent GPU.

Each shape is one float16 Relax function compiled twice for cuda-sm90: ``mma`` through
:class:`packer.compile.passes.tensor_core_gemm.TensorCoreGemm` (pipeline step 1c) and
``dlight`` through the passes without it (``Conv2dImplicitGemm`` / ``FuseTransposeMatmul`` and
dlight's tensor-core Matmul rule). Convolutions are NHWC with OHWI weights plus a bias add
(what ``ConvertLayout`` leaves), linear layers ``x @ Wᵀ + b``. On the GPU both are checked
against torch in float32 on the same random inputs (relative L2) and timed against torch
float16 (cuDNN channels-last convolution, cuBLAS linear).

    here:  python -m bench.gpu.gemmlab build --out .device/gemmlab
    there: run("bash bench/gpu/run.sh gemmlab", carry=[".device"])
"""

from __future__ import annotations

import json
from pathlib import Path

from .lab import Gpu, build_library, main, rel_l2

CONVS = {  # name: (batch, in channels, height = width, out channels, kernel, stride)
    "unet64": (2, 320, 64, 320, 3, 1),
    "unet64_cat": (2, 640, 64, 320, 3, 1),
    "unet64_down": (2, 320, 64, 320, 3, 2),
    "unet64_1x1": (2, 640, 64, 320, 1, 1),
    "unet32": (2, 640, 32, 640, 3, 1),
    "unet16": (2, 1280, 16, 1280, 3, 1),
    "unet8": (2, 1280, 8, 1280, 3, 1),
    "unet8_cat": (2, 2560, 8, 1280, 3, 1),
    "vae512": (1, 128, 512, 128, 3, 1),
    "vae256": (1, 256, 256, 256, 3, 1),
}
LINEARS = {  # name: (rows, in features, out features)
    "proj64": (8192, 320, 320),
    "geglu64": (8192, 320, 2560),
    "ff64": (8192, 1280, 320),
    "kv77": (154, 768, 320),
    "geglu32": (2048, 640, 5120),
    "geglu16": (512, 1280, 10240),
    "ff16": (512, 5120, 1280),
    "proj8": (128, 1280, 1280),
}
TILES = {  # variant: the tiles tried in order (packer.compile.passes.tensor_core_gemm.Tiles)
    "mma": None,  # the shipped TILES
    "bk64": ((128, 128, 2, 4, 3, 64), (128, 64, 2, 2, 4, 64)),  # 64-wide k-tiles, 96 KiB
    "bk64_s2": ((128, 128, 2, 4, 2, 64), (128, 64, 2, 2, 2, 64)),  # two stages: 2-3 CTAs/SM
    "w4_64x64": ((128, 128, 2, 2, 4), (256, 64, 4, 1, 4)),  # warps of 64×64
}
VARIANTS = (*TILES, "dlight")


def conv_flops(shape) -> float:
    b, c, hw, o, k, s = shape
    return 2.0 * b * o * (hw // s) ** 2 * c * k * k


def linear_flops(shape) -> float:
    m, k, n = shape
    return 2.0 * m * k * n


def build_module():
    from tvm import relax

    bb = relax.BlockBuilder()
    for name, (b, c, hw, o, k, s) in CONVS.items():
        x = relax.Var("x", relax.TensorType((b, hw, hw, c), "float16"))
        w = relax.Var("w", relax.TensorType((o, k, k, c), "float16"))
        bias = relax.Var("bias", relax.TensorType((1, 1, 1, o), "float16"))
        with bb.function(name, [x, w, bias]):
            with bb.dataflow():
                y = bb.emit(
                    relax.op.nn.conv2d(
                        x,
                        w,
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
        w = relax.Var("w", relax.TensorType((n, k), "float16"))
        bias = relax.Var("bias", relax.TensorType((n,), "float16"))
        with bb.function(name, [x, w, bias]):
            with bb.dataflow():
                y = bb.emit(relax.op.matmul(x, relax.op.permute_dims(w)))
                out = bb.emit_output(relax.op.add(y, bias))
            bb.emit_func_output(out)
    return bb.get()


def cmd_build(out: Path) -> None:
    import tvm
    from tvm import relax

    from packer.compile.passes import tensor_core_gemm
    from packer.compile.passes.conv2d_implicit_gemm import Conv2dImplicitGemm
    from packer.compile.passes.tensor_core_gemm import TensorCoreGemm, Tiles

    out.mkdir(parents=True, exist_ok=True)
    shipped = tensor_core_gemm.TILES
    for variant in VARIANTS:
        tiles = TILES.get(variant)
        tensor_core_gemm.TILES = tuple(Tiles(*t) for t in tiles) if tiles else shipped
        passes = ([TensorCoreGemm] if variant in TILES else []) + [
            Conv2dImplicitGemm,
            relax.transform.FuseTransposeMatmul(),
            relax.transform.DeadCodeElimination(),
        ]
        mod = tvm.transform.Sequential(passes)(build_module())
        build_library(mod, out / f"{variant}.so")
    tensor_core_gemm.TILES = shipped
    (out / "index.json").write_text(json.dumps({"convs": CONVS, "linears": LINEARS}))


def cmd_run(lib: Path) -> None:
    import torch

    from .native import back_to_back_s

    gpu = Gpu()
    vms = {v: gpu.load(lib / f"{v}.so") for v in VARIANTS}
    print(
        f"{'shape':12s} {'GFLOP':>6s} " + " ".join(f"{v:>24s}" for v in (*VARIANTS, "torch")),
        flush=True,
    )
    torch.manual_seed(0)
    cases = [(name, shape, True) for name, shape in CONVS.items()] + [
        (name, shape, False) for name, shape in LINEARS.items()
    ]
    totals = dict.fromkeys((*VARIANTS, "torch"), 0.0)
    for name, shape, is_conv in cases:
        if is_conv:
            b, c, hw, o, k, s = shape
            x = torch.randn(b, c, hw, hw, device="cuda", dtype=torch.float16)
            w = torch.randn(o, c, k, k, device="cuda", dtype=torch.float16) * (c * k * k) ** -0.5
            bias = torch.randn(o, device="cuda", dtype=torch.float16)
            want = torch.nn.functional.conv2d(
                x.float(), w.float(), bias.float(), stride=s, padding=k // 2
            ).permute(0, 2, 3, 1)
            args = [x.permute(0, 2, 3, 1), w.permute(0, 2, 3, 1), bias.reshape(1, 1, 1, o)]
            xl, wl = (
                x.contiguous(memory_format=torch.channels_last),
                w.contiguous(memory_format=torch.channels_last),
            )
            peer = lambda: torch.nn.functional.conv2d(xl, wl, bias, stride=s, padding=k // 2)
            flop = conv_flops(shape)
        else:
            m, k, n = shape
            x = torch.randn(
                *((2, m // 2) if m % 2 == 0 else (m,)), k, device="cuda", dtype=torch.float16
            )
            w = torch.randn(n, k, device="cuda", dtype=torch.float16) * k**-0.5
            bias = torch.randn(n, device="cuda", dtype=torch.float16)
            want = torch.nn.functional.linear(x.float(), w.float(), bias.float())
            args = [x, w, bias]
            peer = lambda: torch.nn.functional.linear(x, w, bias)
            flop = linear_flops(shape)
        args = gpu.arrays(*args)
        cells = []
        for variant, vm in vms.items():
            err = rel_l2(torch.from_dlpack(vm[name](*args)), want)
            sec = gpu.seconds(vm, name, args)
            totals[variant] += sec
            cells.append(f"{sec * 1e6:7.1f}us {flop / sec / 1e12:4.0f}T L2 {err:.1e}")
        sec = back_to_back_s(peer)
        totals["torch"] += sec
        err = rel_l2(peer(), want.permute(0, 3, 1, 2) if is_conv else want)
        cells.append(f"{sec * 1e6:7.1f}us {flop / sec / 1e12:4.0f}T L2 {err:.1e}")
        print(f"{name:12s} {flop / 1e9:6.1f} " + " ".join(f"{c:>24s}" for c in cells), flush=True)
    print("total        " + " ".join(f"{totals[v] * 1e6:>22.0f}us" for v in totals))


if __name__ == "__main__":
    main("gemmlab", cmd_build, cmd_run)
