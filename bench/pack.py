"""Pack full-size SD1.5 twice: how long, how much memory, and does the second reuse the libraries?

    python -m bench.pack [--targets llvm,cuda] [--dtype fp16] [--work /tmp/sdpack-bench]

Makes two single-file LDM ``.safetensors`` checkpoints (fp16, as model sites ship them) with the
real SD1.5 configs and different random weights, then runs ``packer pack`` on each in a fresh
process with an empty library cache, measuring wall time and peak RSS (of the packer process and
its children). Goals: first ≤ 10 min, second ≤ 2 min, peak RSS ≤ 12 GB (second: ≤ 4 GB).
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

import psutil
import torch

from examples import make_example, tiny_tokenizer

from .full_size import full_size
from .sd15 import UNET, VAE


def make_checkpoint(path: Path, seed: int) -> None:
    torch.manual_seed(seed)
    models = {c: full_size(c) for c in ("text_encoder", "unet", "vae")}
    state = {c: m.state_dict() for c, m in models.items()}
    ldm = make_example.to_ldm(state, {"unet": UNET, "vae": VAE})
    del models, state
    make_example._save_safetensors(
        {k: v.half() for k, v in ldm.items()}, path, {"modelspec.resolution": "512x512"}
    )


def run_pack(
    ckpt: Path, out: Path, tokenizer: Path, cache: Path, targets: str, dtype: str
) -> tuple[float, float]:
    env = {**os.environ, "SDPACK_CACHE": str(cache), "SDPACK_NO_PROGRESS": "1"}
    cmd = [
        sys.executable,
        "-m",
        "packer",
        "pack",
        str(ckpt),
        "--out",
        str(out),
        "--targets",
        targets,
        "--dtype",
        dtype,
        "--tokenizer",
        str(tokenizer),
        "--version",
        "1.0.0",
        "--model-id",
        "bench/sd15",
    ]
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peak = 0
    while proc.poll() is None:  # sample the RSS of the process tree (compiler subprocesses too)
        try:
            root = psutil.Process(proc.pid)
            peak = max(
                peak, sum(p.memory_info().rss for p in [root, *root.children(recursive=True)])
            )
        except psutil.Error:
            pass
        time.sleep(0.2)
    wall = time.perf_counter() - start
    out, err = proc.communicate()
    if proc.returncode:
        sys.exit(f"pack failed ({proc.returncode}): {err.strip()[-2000:]}")
    print("   ", out.strip())
    return wall, peak / 2**30


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--targets", default="llvm,cuda")
    ap.add_argument("--dtype", default="fp16")
    ap.add_argument("--work", type=Path, default=Path("/tmp/sdpack-bench"))
    args = ap.parse_args()
    work = args.work
    shutil.rmtree(work / "cache", ignore_errors=True)
    for d in ("a", "b"):
        shutil.rmtree(work / f"bundle-{d}", ignore_errors=True)
    work.mkdir(parents=True, exist_ok=True)
    tok = tiny_tokenizer.save(work / "tokenizer")
    print(
        f"# {platform.node()} {os.cpu_count()} cores, python {platform.python_version()}; targets {args.targets} {args.dtype}"
    )
    for name, seed in (("a", 1), ("b", 2)):
        ckpt = work / f"sd15-{name}.safetensors"
        if not ckpt.exists():
            t = time.perf_counter()
            make_checkpoint(ckpt, seed)
            print(
                f"made {ckpt.name} ({ckpt.stat().st_size / 2**30:.2f} GiB) in {time.perf_counter() - t:.0f} s"
            )
    first = run_pack(
        work / "sd15-a.safetensors",
        work / "bundle-a",
        tok,
        work / "cache",
        args.targets,
        args.dtype,
    )
    print(
        f"first pack  (empty cache):       {first[0]:7.1f} s, peak RSS {first[1]:.2f} GiB   goal ≤ 600 s, ≤ 12 GiB"
    )
    second = run_pack(
        work / "sd15-b.safetensors",
        work / "bundle-b",
        tok,
        work / "cache",
        args.targets,
        args.dtype,
    )
    print(
        f"second pack (same architecture): {second[0]:7.1f} s, peak RSS {second[1]:.2f} GiB   goal ≤ 120 s, ≤ 4 GB (3.73 GiB)"
    )
    print(f"ratio second/first: {second[0] / first[0]:.2f}")


if __name__ == "__main__":
    main()
