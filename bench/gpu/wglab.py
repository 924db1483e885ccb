"""The WebGPU convolution kernels, compiled for CUDA, timed on the lent GPU: a proxy for the browser.

Each of SD1.5's convolution shapes (conv + bias add, NCHW, float16 and float32) in two kernels,
both scheduled under the webgpu target's limits (256 invocations, 32 KiB of workgroup memory, no
tensor cores) and then compiled for CUDA:

  dlight      dlight's webgpu rules (what the shipped webgpu variants run)
  workgroup   the tiled GEMM of packer.compile.passes.workgroup_gemm (gemm=workgroup)

The same TIR reaches the GPU through CUDA C here and through WGSL (Tint, SPIR-V, the Vulkan driver)
in Chromium, so the ratio between the two kernels, not their absolute time, is what this says
about the browser; bench/web/gen_device.sh measures the browser itself.

    here:  python -m bench.gpu.wglab build --out .device/wglab      (stub driver + nvcc)
    there: run("bash bench/gpu/run.sh wglab", carry=[".device/whl", ".device/site", ".device/wglab"])
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from . import convlab
from .convlab import flops
from .lab import Gpu, build_library, main, rel_l2

SHAPES = {  # convlab's shapes, a strided downsampling and the VAE's 512-channel layer besides
    **convlab.SHAPES,
    "down64": (2, 320, 64, 320, 3, 2),
    "vae64": (1, 512, 64, 512, 3, 1),
}
VARIANTS = ("dlight", "workgroup")
DTYPES = ("float16", "float32")


def _conv(shape, dtype: str):
    from tvm import relax

    b, c, hw, o, k, s = shape
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((b, c, hw, hw), dtype))
    w = relax.Var("w", relax.TensorType((o, c, k, k), dtype))
    bias = relax.Var("bias", relax.TensorType((1, o, 1, 1), dtype))
    with bb.function("main", [x, w, bias]):
        with bb.dataflow():
            y = bb.emit(relax.op.nn.conv2d(x, w, strides=s, padding=k // 2))
            out = bb.emit_output(relax.op.add(y, bias))
        bb.emit_func_output(out)
    return bb.get()


def scheduled(shape, dtype: str, variant: str):
    """The module of one kernel, prepared and scheduled as the webgpu target would, every PrimFunc
    marked scheduled (the CUDA build then lowers it as it is)."""
    import tvm
    from tvm.s_tir import dlight as dl

    from packer.compile import pipeline
    from packer.compile.targets import get_target

    web = dataclasses.replace(get_target("webgpu"), workgroup_gemm=variant == "workgroup")
    mod = pipeline.prepare_for(_conv(shape, dtype), dtype, web)
    with web.tvm_target():
        mod = tvm.transform.Sequential(
            [*pipeline.fusion_passes(), dl.ApplyDefaultSchedule(*web.schedule_rules())]
        )(mod)
    for gv, func in list(mod.functions.items()):
        if isinstance(func, tvm.tirx.PrimFunc):
            mod[gv] = func.with_attr("tirx.is_scheduled", True)
    return mod


def cmd_build(out: Path) -> None:
    for name, shape in SHAPES.items():
        for dtype in DTYPES:
            for variant in VARIANTS:
                build_library(
                    scheduled(shape, dtype, variant), out / f"{variant}-{dtype}-{name}.so"
                )
    (out / "index.json").write_text(
        json.dumps({"shapes": SHAPES, "variants": VARIANTS, "dtypes": DTYPES})
    )


def cmd_run(lib: Path) -> None:
    import torch

    from .native import back_to_back_s

    gpu = Gpu()
    print("WebGPU-scheduled convolutions compiled for CUDA (conv + bias, NCHW); time, TFLOP/s")
    header = " ".join(f"{v:>16s}" for v in (*VARIANTS, "cudnn"))
    print(f"{'shape':12s} {'dtype':8s} {'GFLOP':>7s} {header} {'dlight/wg':>9s}")
    for name, shape in SHAPES.items():
        b, c, hw, o, k, s = shape
        for dtype in DTYPES:
            tdt = getattr(torch, dtype)
            x = torch.randn(b, c, hw, hw, device="cuda", dtype=tdt)
            w = torch.randn(o, c, k, k, device="cuda", dtype=tdt) * (c * k * k) ** -0.5
            bias = torch.randn(o, device="cuda", dtype=tdt)
            want = torch.nn.functional.conv2d(
                x.double(), w.double(), bias.double(), stride=s, padding=k // 2
            )
            cells, secs = [], []
            args = gpu.arrays(x, w, bias.reshape(1, o, 1, 1))
            for variant in VARIANTS:
                vm = gpu.load(lib / f"{variant}-{dtype}-{name}.so")
                got = torch.from_dlpack(vm["main"](*args))
                err = rel_l2(got, want)
                sec = gpu.seconds(vm, "main", args)
                secs.append(sec)
                cells.append(
                    f"{sec * 1e6:7.0f}us {flops(shape) / sec / 1e12:5.1f}T"
                    + ("" if err < 2e-2 else f" ERR{err:.2f}")
                )
            sec = back_to_back_s(
                lambda x=x, w=w, bias=bias: torch.nn.functional.conv2d(
                    x, w, bias, stride=s, padding=k // 2
                )
            )
            cells.append(f"{sec * 1e6:7.0f}us {flops(shape) / sec / 1e12:5.1f}T")
            print(
                f"{name:12s} {dtype:8s} {flops(shape) / 1e9:7.1f} "
                + " ".join(f"{c:>16s}" for c in cells)
                + f" {secs[0] / secs[1]:8.2f}x",
                flush=True,
            )


if __name__ == "__main__":
    main("wglab", cmd_build, cmd_run)
