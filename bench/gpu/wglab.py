"""The WebGPU convolution kernels, compiled for CUDA, timed on the lent GPU: a proxy for the browser.

Each of SD1.5's convolution shapes (conv + bias add, NCHW, float16 and float32) built as the
webgpu target builds it (256 invocations, 32 KiB of workgroup memory, no tensor cores) and then
compiled for CUDA, in these variants:

  dlight       dlight's webgpu rules (the WebGPU libraries before the tiled GEMM)
  workgroup1   the tiled GEMM of packer.compile.passes.workgroup_gemm, reductions never split
  workgroup    the tiled GEMM as the pipeline plans it (tile, and split-K where k is long)
  t{bm}x{bn}s{S}  the tiled GEMM with that tile and S shares forced (float16 only: the sweep that
               the planner's thresholds are checked against)

The same TIR reaches the GPU through CUDA C here and through WGSL (Tint, SPIR-V, the Vulkan driver)
in Chromium, so the ratio between variants, not their absolute time, is what this says about the
browser; bench/web/gen_device.sh measures the browser itself.

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
VARIANTS = ("workgroup1", "workgroup")
DTYPES = ("float16", "float32")
SWEEP = [(128, 128, s) for s in (1, 2, 4, 8, 16)] + [(128, 64, s) for s in (2, 4, 8)]
SWEEP += [(64, 64, s) for s in (1, 4, 8, 16)]
"""(bm, bn, shares) forced in float16, for shapes with few 128 × 128 tiles and where the
reduction is long enough for them."""


def variants_of(shape, dtype: str) -> list[str]:
    from packer.compile.passes import workgroup_gemm as wg

    names = list(VARIANTS)
    (m, n), k = gemm_dims(shape)
    if dtype == "float16" and -(-m // 128) * -(-n // 128) < wg.SPLIT_WORKGROUPS:
        k_tiles = -(-k // wg.BK)
        names += [f"t{bm}x{bn}s{s}" for bm, bn, s in SWEEP if s == 1 or k_tiles // s >= 8]
    return names


def gemm_dims(shape) -> tuple[tuple[int, int], int]:
    b, c, hw, o, k, s = shape
    out = -(-hw // s)
    return (b * out * out, o), c * k * k


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
    from packer.compile.passes import workgroup_gemm as wg
    from packer.compile.targets import get_target

    web = dataclasses.replace(get_target("webgpu"), workgroup_gemm=variant != "dlight")
    planner = wg.plan
    if variant == "workgroup1":
        planner = lambda m, n, k: wg.plan(m, n, k, 1)
    elif variant.startswith("t"):
        bm, rest = variant[1:].split("x")
        bn, splits = rest.split("s")
        forced = (int(bm), int(bn), int(splits))
        planner = lambda m, n, k: forced
    with wg.planned_by(planner):
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
    from packer.compile.passes.workgroup_gemm import plan

    index = {}
    for name, shape in SHAPES.items():
        for dtype in DTYPES:
            index[f"{name}-{dtype}"] = variants_of(shape, dtype)
            for variant in index[f"{name}-{dtype}"]:
                build_library(
                    scheduled(shape, dtype, variant), out / f"{variant}-{dtype}-{name}.so"
                )
        (m, n), k = gemm_dims(shape)
        index[f"{name}-plan"] = list(plan(m, n, k))
    (out / "index.json").write_text(json.dumps({"shapes": SHAPES, "variants": index}))


def cmd_run(lib: Path) -> None:
    import torch

    from .native import back_to_back_s

    index = json.loads((lib / "index.json").read_text())["variants"]
    gpu = Gpu()
    print("WebGPU-built convolutions compiled for CUDA (conv + bias, NCHW); time, TFLOP/s")
    print(
        f"{'shape':12s} {'dtype':8s} {'GFLOP':>6s} {'variant':14s} {'time':>9s} {'TFLOP/s':>7s} "
        f"{'vs workgroup1':>13s}"
    )
    for name, shape in SHAPES.items():
        b, c, hw, o, k, s = shape
        print(
            f"-- {name} {shape}: GEMM m×n×k {gemm_dims(shape)}, planned (bm, bn, shares) "
            f"{tuple(index[f'{name}-plan'])}"
        )
        for dtype in DTYPES:
            tdt = getattr(torch, dtype)
            x = torch.randn(b, c, hw, hw, device="cuda", dtype=tdt)
            w = torch.randn(o, c, k, k, device="cuda", dtype=tdt) * (c * k * k) ** -0.5
            bias = torch.randn(o, device="cuda", dtype=tdt)
            want = torch.nn.functional.conv2d(
                x.double(), w.double(), bias.double(), stride=s, padding=k // 2
            )
            args = gpu.arrays(x, w, bias.reshape(1, o, 1, 1))
            base = None
            rows = []
            for variant in index[f"{name}-{dtype}"]:
                vm = gpu.load(lib / f"{variant}-{dtype}-{name}.so")
                got = torch.from_dlpack(vm["main"](*args))
                err = rel_l2(got, want)
                sec = gpu.seconds(vm, "main", args)
                base = base or sec
                rows.append((variant, sec, "" if err < 2e-2 else f" ERR{err:.2f}"))
            sec = back_to_back_s(
                lambda x=x, w=w, bias=bias: torch.nn.functional.conv2d(
                    x, w, bias, stride=s, padding=k // 2
                )
            )
            rows.append(("cudnn", sec, ""))
            best = min(r[1] for r in rows[:-1])
            for variant, sec, note in rows:
                mark = " <- best" if sec == best else ""
                print(
                    f"{name:12s} {dtype:8s} {flops(shape) / 1e9:6.1f} {variant:14s} "
                    f"{sec * 1e6:7.0f}us {flops(shape) / sec / 1e12:7.1f} {base / sec:12.2f}x"
                    f"{note}{mark}",
                    flush=True,
                )


if __name__ == "__main__":
    main("wglab", cmd_build, cmd_run)
