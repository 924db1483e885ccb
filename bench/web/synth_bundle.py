"""A full-size bundle with random weights, made where a checkpoint cannot travel (the lent GPU machine).

    python -m bench.web.synth_bundle skeleton BUNDLE DIR     # here: BUNDLE without its shards (a few MB)
    python -m bench.web.synth_bundle make DIR OUT [--seed 0] [--model-id ID]  # there: random weights

``skeleton`` keeps a bundle's manifest, tensor indexes and every file outside weights/ (tokenizer,
libraries). ``make`` writes, through packer's own ``BundleWriter`` (sharding, byte shuffle, zstd
level 3, sha256 of every file, manifest validated), a bundle with the same components, tensor
names, shapes and dtypes and the same other files, whose weights are drawn from a seeded generator
the way PyTorch initialises the layers (uniform ±1/√fan_in; norms 1 and 0), so the shards compress
about as much as those of a freshly initialised checkpoint. In a quantized bundle each quantized
weight is drawn the same way at its own shape and stored as packer stores it (its packed codes and
scales from ``packer.bundle.quantize``), so codes and scales have what packing a random
checkpoint gives them. Only the weights' bytes, their hashes and `model.id` differ from the
skeleton's bundle.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
from pathlib import Path

import numpy as np

from packer.bundle import BundleWriter
from packer.bundle import quantize as qz


def skeleton(bundle: Path, out: Path) -> None:
    doc = json.loads((bundle / "manifest.json").read_text())
    out.mkdir(parents=True)
    shutil.copy(bundle / "manifest.json", out / "manifest.json")
    for entry in doc["files"]:
        path = entry["path"]
        if path.startswith("weights/") and not path.endswith(".json"):
            continue
        (out / path).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(bundle / path, out / path)


def random_param(rng: np.random.Generator, name: str, shape: list[int], dtype: str) -> np.ndarray:
    if len(shape) == 1 and "norm" in name:
        value = 1.0 if name.endswith("weight") else 0.0
        return np.full(shape, value, dtype)
    fan_in = math.prod(shape[1:]) if len(shape) > 1 else shape[0]
    bound = 1.0 / math.sqrt(fan_in)
    return rng.uniform(-bound, bound, size=shape).astype(np.float32).astype(dtype)


def _params(rng: np.random.Generator, records: list[dict], quantization: dict | None, component):
    """``(name, array)`` for every record of a component's tensor index, in its order."""
    packed_of: dict[str, dict] = {}
    if quantization:
        packed_of = {t["packed"]: t for t in quantization["tensors"].get(component, [])}
    pending: dict[str, np.ndarray] = {}  # a quantized weight's scales, made with its codes
    for r in records:
        if r["name"] in pending:
            yield r["name"], pending.pop(r["name"])
        elif r["name"] in packed_of:
            t = packed_of[r["name"]]
            weight = random_param(rng, t["name"], t["shape"], "float16")
            codes, scales = qz.quantize(weight, qz.get_scheme(quantization["scheme"]))
            pending[t["scales"]] = scales
            yield r["name"], codes
        else:
            yield r["name"], random_param(rng, r["name"], r["shape"], r["dtype"])
    if pending:
        sys.exit(f"{component}: scales stored before their codes: {sorted(pending)}")


def make(skel: Path, out: Path, seed: int, model_id: str | None = None) -> dict:
    """The bundle; ``model.id`` is ``model_id``, default ``bench/synthetic-seed<seed>``. Weights
    are drawn in the skeleton's tensor order, one draw per weight (a quantized one at its own
    shape), so a float and a quantized skeleton of one model get the same weights from one seed."""
    doc = json.loads((skel / "manifest.json").read_text())
    rng = np.random.default_rng(seed)
    fields = {k: v for k, v in doc.items() if k not in ("files", "format", "format_version")}
    fields["model"] = {**fields["model"], "id": model_id or f"bench/synthetic-seed{seed}"}
    zstd = doc["generator"].get("zstd_level", 3)
    with BundleWriter(out, zstd_level=zstd, overwrite=True) as writer:
        for entry in doc["files"]:
            if not entry["path"].startswith("weights/"):
                writer.add_file(entry["path"], skel / entry["path"])
        for name, comp in doc["components"].items():
            index = json.loads((skel / comp["weights"]).read_text())
            records = [r for shard in index["records"] for r in shard["records"]]
            params = _params(rng, records, doc.get("quantization"), name)
            path, names = writer.add_weights(name, params, index.get("metadata") or {})
            if path != comp["weights"] or names != comp["params"]:
                sys.exit(f"{name}: the skeleton's tensor index does not list the manifest's params")
        return writer.commit(fields)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("skeleton")
    s.add_argument("bundle", type=Path)
    s.add_argument("out", type=Path)
    m = sub.add_parser("make")
    m.add_argument("skeleton", type=Path)
    m.add_argument("out", type=Path)
    m.add_argument("--seed", type=int, default=0)
    m.add_argument("--model-id", help="default bench/synthetic-seed<SEED>")
    args = ap.parse_args()
    if args.cmd == "skeleton":
        skeleton(args.bundle, args.out)
    else:
        doc = make(args.skeleton, args.out, args.seed, args.model_id)
        weights = [f for f in doc["files"] if f["path"].startswith("weights/")]
        print(
            f"{args.out}: {len(weights)} weight files, {sum(f['size'] for f in weights) / 1e6:.1f} MB stored, "
            f"{sum(f.get('encoding', {}).get('raw_size', 0) for f in weights) / 1e6:.1f} MB raw"
        )


if __name__ == "__main__":
    main()
