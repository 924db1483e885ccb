"""One UNet step (CFG batch 2) of a bundle's OpenCL libraries: what a Mali board owner runs.

    python -m bench.opencl_step BUNDLE [--dtype float16] [--reps 5]

Loads the bundle's ``opencl`` variant for this machine (``openclmali-*`` on an aarch64 board)
through sdpack's OpenCL runtime plugin, runs the text encoder once, then times ``--reps`` UNet
steps after one warm-up (the first step also builds every kernel in the driver) and the VAE
decode, and prints one JSON line: device, variant, load/first-step/median-step/VAE seconds and,
for a full-size bundle at 512² (64×64 latents), the UNet step's achieved GFLOP/s.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np

from packer.bundle import Bundle
from packer.runtime.generate import Pipeline

SD_UNET_TFLOP = 1.68  # one CFG step (batch 2) at a 64×64 latent (anchors.md)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("bundle", type=Path)
    ap.add_argument(
        "--dtype",
        choices=("float16", "float32"),
        default=None,
        help="the variant's dtype (default: float16 where the device has cl_khr_fp16)",
    )
    ap.add_argument("--reps", type=int, default=5)
    args = ap.parse_args()

    start = time.perf_counter()
    pipe = Pipeline(Bundle.open(args.bundle), "opencl", args.dtype)
    load_s = time.perf_counter() - start
    lat = pipe.bundle.manifest["architecture"]["latent"]
    f = pipe.float
    hidden = np.concatenate([pipe.encode_prompt(""), pipe.encode_prompt("an astronaut")]).astype(f)
    sample = (
        np.random.default_rng(0)
        .standard_normal((2, lat["channels"], lat["height"], lat["width"]))
        .astype(f)
    )
    ts = np.full((2,), 981.0, np.float32)

    def timed(call) -> float:
        t0 = time.perf_counter()
        call()
        return time.perf_counter() - t0

    first = timed(lambda: pipe.runners["unet"](sample, ts, hidden))
    steps = [timed(lambda: pipe.runners["unet"](sample, ts, hidden)) for _ in range(args.reps)]
    vae = timed(lambda: pipe.runners["vae_decoder"](sample[:1]))
    step = statistics.median(steps)
    unet = pipe.bundle.manifest["architecture"]["configs"]["unet"]
    full = (lat["height"], lat["width"]) == (64, 64) and list(
        unet.get("block_out_channels", [])
    ) == [320, 640, 1280, 1280]
    import tvm

    print(
        json.dumps(
            {
                "device": tvm.opencl(0).device_name,
                "variant": pipe.variant_key,
                "load_s": round(load_s, 2),
                "first_step_s": round(first, 2),
                "step_s": round(step, 3),
                "vae_s": round(vae, 2),
                "unet_gflops": round(SD_UNET_TFLOP * 1e3 / step, 1) if full else None,
            }
        )
    )


if __name__ == "__main__":
    main()
