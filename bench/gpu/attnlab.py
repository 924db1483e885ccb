"""Fused (WMMA flash) vs split attention vs torch SDPA, on the lent GPU.

Each shape is one float16 ``R.nn.attention(q, k, v)`` ((B, S, H, D) layout) compiled twice for
cuda-sm90: ``fused`` through :class:`packer.compile.passes.fused_attention.FusedAttention`
(pipeline step 2a), ``split`` through ``SplitAttention`` alone (the form without it). On the GPU
both are checked against float32 SDPA on the same random inputs (relative L2) and timed against
``torch.nn.functional.scaled_dot_product_attention`` in float16.

    here:  python -m bench.gpu.attnlab build --out .device/attnlab
    there: run("bash bench/gpu/run.sh attnlab", carry=[".device"])
"""

from __future__ import annotations

import json
from pathlib import Path

from .lab import Gpu, build_library, main, rel_l2

SHAPES = {  # name: (batch, query length, key length, heads, head dim)
    "self64": (2, 4096, 4096, 8, 40),  # SD1.5 UNet, 64² latents, classifier-free guidance
    "cross64": (2, 4096, 77, 8, 40),
    "self32": (2, 1024, 1024, 8, 80),
    "cross32": (2, 1024, 77, 8, 80),
    "self16": (2, 256, 256, 8, 160),
    "cross16": (2, 256, 77, 8, 160),
    "self8": (2, 64, 64, 8, 160),
    "ragged": (1, 100, 77, 3, 40),  # partial query and key tiles
    "d24": (1, 130, 200, 2, 24),  # head dim padded to 32, two partial tiles
}
VARIANTS = ("fused", "fused_w8", "fused_w4k32", "split")
CONFIGS = {"fused_w8": (8, 64), "fused_w4k32": (4, 32)}  # (warps, kv_tile) instead of tile_config


def flops(shape) -> float:
    b, sq, sk, h, d = shape
    return 4.0 * b * h * sq * sk * d


def build_module():
    from tvm import relax

    bb = relax.BlockBuilder()
    for name, (b, sq, sk, h, d) in SHAPES.items():
        q = relax.Var("q", relax.TensorType((b, sq, h, d), "float16"))
        k = relax.Var("k", relax.TensorType((b, sk, h, d), "float16"))
        v = relax.Var("v", relax.TensorType((b, sk, h, d), "float16"))
        with bb.function(name, [q, k, v]):
            with bb.dataflow():
                out = bb.emit_output(relax.op.nn.attention(q, k, v))
            bb.emit_func_output(out)
    return bb.get()


def cmd_build(out: Path) -> None:
    import tvm
    from tvm import relax

    from packer.compile.passes import fused_attention
    from packer.compile.passes.fused_attention import FusedAttention
    from packer.compile.passes.split_attention import SplitAttention

    out.mkdir(parents=True, exist_ok=True)
    default_config = fused_attention.tile_config
    for variant in VARIANTS:
        fixed = CONFIGS.get(variant)
        fused_attention.tile_config = (
            default_config
            if not fixed
            else (
                lambda d, fixed=fixed: (
                    fixed
                    if fused_attention.shared_bytes(d, *fixed) <= fused_attention.SHARED_BYTES
                    else default_config(d)
                )
            )
        )
        passes = ([FusedAttention] if variant.startswith("fused") else []) + [SplitAttention]
        mod = tvm.transform.Sequential([*passes, relax.transform.DeadCodeElimination()])(
            build_module()
        )
        build_library(mod, out / f"{variant}.so")
    fused_attention.tile_config = default_config
    (out / "index.json").write_text(json.dumps({"shapes": SHAPES, "variants": VARIANTS}))


def cmd_run(lib: Path) -> None:
    import torch

    from .native import back_to_back_s

    gpu = Gpu()
    vms = {v: gpu.load(lib / f"{v}.so") for v in VARIANTS}
    print(f"{'shape':8s} {'GFLOP':>6s} " + " ".join(f"{v:>25s}" for v in (*VARIANTS, "torch_sdpa")))
    torch.manual_seed(0)
    for name, shape in SHAPES.items():
        b, sq, sk, h, d = shape
        q, k, v = (
            torch.randn(b, s, h, d, device="cuda", dtype=torch.float16) for s in (sq, sk, sk)
        )
        qt, kt, vt = (x.permute(0, 2, 1, 3) for x in (q, k, v))
        want = torch.nn.functional.scaled_dot_product_attention(
            qt.float(), kt.float(), vt.float()
        ).permute(0, 2, 1, 3)
        args = gpu.arrays(q, k, v)
        cells = []
        for _variant, vm in vms.items():
            err = rel_l2(torch.from_dlpack(vm[name](*args)), want)
            sec = gpu.seconds(vm, name, args)
            cells.append(f"{sec * 1e6:8.1f}us {flops(shape) / sec / 1e12:5.1f}T L2 {err:.1e}")
        sdpa = torch.nn.functional.scaled_dot_product_attention
        sec = back_to_back_s(lambda: sdpa(qt, kt, vt))
        err = rel_l2(sdpa(qt, kt, vt).permute(0, 2, 1, 3), want)
        cells.append(f"{sec * 1e6:8.1f}us {flops(shape) / sec / 1e12:5.1f}T L2 {err:.1e}")
        print(
            f"{name:8s} {flops(shape) / 1e9:6.2f} " + " ".join(f"{c:>25s}" for c in cells),
            flush=True,
        )


if __name__ == "__main__":
    main("attnlab", cmd_build, cmd_run)
