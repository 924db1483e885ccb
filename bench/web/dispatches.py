"""How many GPU dispatches one call of each full-size SD1.5 component makes on WebGPU (or another
target), by kind of kernel: counted on the module the pipeline builds (real configs, random weights, the static
memory plan: every kernel call ``main`` makes), so it runs on the dev VM without a GPU.

Each dispatch costs the browser a submission and a pass on top of its kernel time; the
browser bench's profile (bench/web/gen_bench.py) measures the cost on a real adapter.

    python -m bench.web.dispatches [--target webgpu] [--image-size 512] [--dtype float16 ...]
"""

from __future__ import annotations

import argparse
import collections
import re
import time

KINDS = (
    ("split-K sum", re.compile(r"workgroup_gemm_sum")),  # the shares' sum, with the epilogue
    ("split-K sum", re.compile(r"sum_splits")),
    ("gemm", re.compile(r"gemm|matmul|conv2d")),
    ("attention", re.compile(r"attention")),
    ("group norm", re.compile(r"group_norm")),
    ("layer norm", re.compile(r"layer_norm")),
)


def kind(name: str) -> str:
    """The kind of a kernel by its name: the first of :data:`KINDS` it mentions, else
    "element-wise" (adds, casts, activations, layout changes)."""
    for label, pattern in KINDS:
        if pattern.search(name):
            return label
    return "element-wise"


def kernel_calls(mod, func: str) -> list[str]:
    """The PrimFunc each kernel call of ``mod[func]`` runs, in order (after the memory plan,
    where ``call_tir`` has become a direct call)."""
    from tvm import relax, tirx

    names = []

    def visit(expr):
        call = isinstance(expr, relax.Call) and isinstance(expr.op, relax.GlobalVar)
        if call and isinstance(mod[expr.op], tirx.PrimFunc):
            names.append(expr.op.name_hint)

    relax.analysis.post_order_visit(mod[func].body, visit)
    return names


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--target", default="webgpu")
    parser.add_argument("--image-size", type=int, default=512)
    parser.add_argument("--dtype", action="append", choices=["float16", "float32"])
    parser.add_argument(
        "--component", action="append", choices=["text_encoder", "unet", "vae_decoder"]
    )
    args = parser.parse_args()

    import torch

    from bench.full_size import full_size
    from packer.compile import pipeline
    from packer.compile.export import export_component
    from packer.compile.targets import get_target

    spec = get_target(args.target)
    latent = (args.image_size // 8, args.image_size // 8)
    print(f"pipeline v{pipeline.PIPELINE_VERSION}, {spec.key}, {args.image_size} px")
    for component in args.component or ["text_encoder", "unet", "vae_decoder"]:
        torch.manual_seed(0)
        exported = export_component(component, full_size(component), latent)
        for dtype in args.dtype or ["float16", "float32"]:
            start = time.perf_counter()
            planned = pipeline.plan(pipeline.prepare_for(exported.mod, dtype, spec), spec)
            calls = kernel_calls(planned, "main")
            kinds = collections.Counter(kind(name) for name in calls)
            parts = ", ".join(f"{label} {count}" for label, count in kinds.most_common())
            seconds = time.perf_counter() - start
            print(f"{component} {dtype}: {len(calls)} dispatches ({parts}) [{seconds:.0f} s]")


if __name__ == "__main__":
    main()
