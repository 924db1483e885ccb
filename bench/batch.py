"""`packer publish-batch` throughput: jobs per hour once the libraries are cached.

    python -m bench.batch [--jobs 16] [--checkpoint F --tokenizer DIR] [--targets llvm] [--address RAY]
                          [--seed-cache DIR]

Publishes one job first (it compiles the libraries into a fresh cache), then ``--jobs`` more of the
same architecture to a fresh directory hub in one run: every library is a cache hit, so the rate
is what a catalogue costs per checkpoint. The default checkpoint is the tiny example; pass
bench/pack.py's full-size ``sd15-a.safetensors`` for full-size jobs. Every job packs the same file
under its own repo id (the bytes do not change the work). Prints the run's wall time, jobs/hour
and the per-job pack+publish times the workers measured. ``--seed-cache`` copies a compile cache
that already holds the libraries into the fresh one first (the warm-up then compiles nothing).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]  # the packer processes this starts import it from here


def run(jobs: list[dict], work: Path, name: str, extra: list[str]) -> tuple[float, dict]:
    path = work / f"{name}.jsonl"
    path.write_text("".join(json.dumps(j) + "\n" for j in jobs))
    env = {
        **os.environ,
        "SDPACK_CACHE": str(work / "cache"),
        "SDPACK_NO_PROGRESS": "1",
        "PYTHONPATH": str(REPO),
    }
    start = time.perf_counter()
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "packer",
            "publish-batch",
            str(path),
            "--hub",
            str(work / "hub"),
            "--json",
            *extra,
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
    )
    wall = time.perf_counter() - start
    if proc.returncode:
        sys.exit(f"publish-batch failed ({proc.returncode}): {proc.stderr.strip()[-2000:]}")
    return wall, json.loads(proc.stdout)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--jobs", type=int, default=16)
    ap.add_argument("--checkpoint", type=Path)
    ap.add_argument("--tokenizer", type=Path)
    ap.add_argument("--targets", default="llvm")
    ap.add_argument("--dtype", default="fp32")
    ap.add_argument("--address")
    ap.add_argument("--seed-cache", type=Path)
    ap.add_argument("--work", type=Path, default=Path("/tmp/sdpack-batch-bench"))
    args = ap.parse_args()
    work = args.work
    for sub in ("cache", "hub"):
        shutil.rmtree(work / sub, ignore_errors=True)
    work.mkdir(parents=True, exist_ok=True)
    if args.seed_cache:
        shutil.copytree(args.seed_cache, work / "cache")
    ckpt, tok = args.checkpoint, args.tokenizer
    options = {"targets": args.targets, "dtype": args.dtype}
    if ckpt is None:
        from examples.make_example import make_example

        example = make_example(work / "example")
        ckpt, tok = example["safetensors"], example["tokenizer"]
    if tok is None:
        from examples import tiny_tokenizer

        tok = tiny_tokenizer.save(work / "tokenizer")
    job = {"checkpoint": str(ckpt), "tokenizer": str(tok), "version": "1.0.0", **options}
    extra = ["--address", args.address] if args.address else []
    print(
        f"# {platform.node()} {os.cpu_count()} cores, python {platform.python_version()}; {ckpt.name} "
        f"({ckpt.stat().st_size / 2**20:.1f} MiB); targets {args.targets} {args.dtype}; ray {args.address or 'local'}"
    )
    wall, doc = run([{**job, "repo": "bench/warmup"}], work, "warmup", extra)
    print(f"warm-up: 1 job, {doc['libraries']['compiled']} libraries compiled, {wall:.1f} s")
    wall, doc = run(
        [{**job, "repo": f"bench/m{i:05d}"} for i in range(args.jobs)], work, "batch", extra
    )
    seconds = [r["seconds"] for r in doc["results"]]
    assert doc["published"] == args.jobs and doc["libraries"]["compiled"] == 0, doc
    print(
        f"batch: {args.jobs} jobs in {wall:.1f} s (Ray start and probes included) = {args.jobs / wall * 3600:.0f} jobs/hour; "
        f"per job on its worker: median {statistics.median(seconds):.2f} s, max {max(seconds):.2f} s; "
        f"{len({r['node'] for r in doc['results']})} node(s)"
    )


if __name__ == "__main__":
    main()
