"""Summarise `ncu --section SpeedOfLight --csv --page details` output of TVM UNet steps.

    python -m bench.gpu.ncu_summary ncu_unet.csv [--top 25] [--steps 1]

One row per kernel name (launches summed): total duration, share, launches, grid/block of the
longest launch, and duration-weighted SM (compute) and memory throughput in % of peak — low on
both means the kernel neither computes nor streams: too little parallelism or a serial loop.
"""

from __future__ import annotations

import argparse
import csv
from collections import defaultdict


def _num(text: str) -> float:
    return float(text.replace(",", ""))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("csv")
    ap.add_argument("--top", type=int, default=25)
    ap.add_argument("--steps", type=int, default=1)
    args = ap.parse_args()
    with open(args.csv, newline="") as f:
        lines = [line for line in f if line.startswith('"')]
    launches: dict[str, dict] = defaultdict(dict)
    for row in csv.DictReader(lines):
        launch = launches[row["ID"]]
        launch.update(name=row["Kernel Name"], grid=row["Grid Size"], block=row["Block Size"])
        unit, value = row["Metric Unit"], row["Metric Value"]
        if row["Metric Name"] == "Duration":
            scale = {
                "ns": 1e-3,
                "us": 1.0,
                "usecond": 1.0,
                "nsecond": 1e-3,
                "ms": 1e3,
                "msecond": 1e3,
            }
            launch["us"] = _num(value) * scale.get(unit, 1.0)
        elif row["Metric Name"] in (
            "Compute (SM) Throughput",
            "Memory Throughput",
            "DRAM Throughput",
        ):
            launch[row["Metric Name"]] = _num(value)
    kernels: dict[str, dict] = {}
    for launch in launches.values():
        k = kernels.setdefault(
            launch["name"],
            {
                "us": 0.0,
                "n": 0,
                "sm": 0.0,
                "mem": 0.0,
                "dram": 0.0,
                "longest": 0.0,
                "grid": "",
                "block": "",
            },
        )
        us = launch.get("us", 0.0)
        k["us"] += us
        k["n"] += 1
        k["sm"] += us * launch.get("Compute (SM) Throughput", 0.0)
        k["mem"] += us * launch.get("Memory Throughput", 0.0)
        k["dram"] += us * launch.get("DRAM Throughput", 0.0)
        if us > k["longest"]:
            k.update(longest=us, grid=launch["grid"], block=launch["block"])
    total = sum(k["us"] for k in kernels.values())
    print(
        f"ncu SpeedOfLight: {len(launches)} launches, {total / 1e3 / args.steps:.1f} ms/step of "
        f"kernel time (profiled serially, clocks uncontrolled)"
    )
    print(
        f"{'%':>6} {'ms':>8} {'n':>4} {'SM%':>5} {'mem%':>5} {'dram%':>5}  {'grid (longest)':18s} {'block':14s} kernel"
    )
    for name, k in sorted(kernels.items(), key=lambda kv: -kv[1]["us"])[: args.top]:
        us = k["us"] or 1.0
        print(
            f"{100 * k['us'] / total:6.2f} {k['us'] / 1e3 / args.steps:8.2f} {k['n']:4d} "
            f"{k['sm'] / us:5.1f} {k['mem'] / us:5.1f} {k['dram'] / us:5.1f}  "
            f"{k['grid']:18s} {k['block']:14s} {name[:90]}"
        )


if __name__ == "__main__":
    main()
