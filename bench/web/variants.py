"""Add WebGPU variants built with other pipeline choices to a packed bundle, to time them side by side.

    python -m bench.web.variants BUNDLE --checkpoint CKPT --tokenizer TOK \\
        --add webgpuvviii-float32:attention=split,layout=NCHW,matmul=dlight \\
        --add webgpunhwc-float32:layout=NHWC

Each ``--add NAME:CHOICES`` builds the three components for ``webgpu`` in NAME's dtype with the
target's own choices except those given, links them (``webgpu.export_wasm``), and adds them to
BUNDLE as the manifest variant NAME (``<letters>-float32|float16``; ``kind`` webgpu, so
``loadModel(url, {variant: NAME})`` runs it), each file pinned by size and sha256 like the
packer's own. The weights are shared: every choice here keeps the parameters as the bundle
stores them (NHWC libraries permute their convolution weights in ``main_transform_params``).

Choices: ``attention`` = workgroup (the fused kernel) | split (scores materialised);
``layout`` = NCHW | NHWC (convolutions as implicit GEMMs); ``matmul`` = one of
:data:`packer.compile.targets.WEBGPU_MATMUL_CONFIGS` or ``dlight`` (dlight's own default);
``gemm`` = workgroup (convolutions and linears as the tiled GEMM of
:mod:`packer.compile.passes.workgroup_gemm`, the shipped default) | dlight (dlight's Matmul rule);
``splits`` = auto (the tiled GEMM's planner splits long reductions, the default) | 1 (never);
``norm`` = workgroup (a group norm's moments from one workgroup kernel, the default) | rows
(dlight's row sums, one per moment, as pipelines before v13 built them).
The bundle's other files are untouched; run ``packer verify BUNDLE`` after.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import time
from pathlib import Path

from packer.bundle.manifest import merge_requirements
from packer.compile import pipeline, targets
from packer.compile.component import COMPONENTS
from packer.compile.export import export_component
from packer.compile.passes import workgroup_gemm
from packer.compile.webgpu.runtime import export_wasm
from packer.support.canonical import dumps, sha256_file


def parse(spec: str) -> tuple[str, str, dict]:
    name, _, rest = spec.partition(":")
    dtype = name.rsplit("-", 1)[-1]
    if dtype not in ("float32", "float16"):
        raise SystemExit(f"variant {name!r}: the name must end in -float32 or -float16")
    choices = dict(item.split("=", 1) for item in rest.split(",") if item)
    unknown = set(choices) - {"attention", "layout", "matmul", "gemm", "splits", "norm"}
    if unknown:
        raise SystemExit(f"variant {name!r}: unknown choices {sorted(unknown)}")
    return name, dtype, choices


def build(exported, dtype: str, choices: dict, path: Path) -> dict:
    base = targets.get_target("webgpu")
    matmul = choices.get("matmul", targets.WEBGPU_MATMUL)
    spec = dataclasses.replace(
        base,
        conv_layout=choices.get("layout", base.conv_layout),
        schedule_rules=lambda: targets.webgpu_rules(matmul),
        workgroup_attention=choices.get(
            "attention", "workgroup" if base.workgroup_attention else "split"
        )
        == "workgroup",
        workgroup_gemm=choices.get("gemm", "workgroup" if base.workgroup_gemm else "dlight")
        == "workgroup",
        workgroup_norm=choices.get("norm", "workgroup" if base.workgroup_norm else "rows")
        == "workgroup",
    )
    start = time.perf_counter()
    most = choices.get("splits", "auto")
    most = workgroup_gemm.MAX_SPLITS if most == "auto" else int(most)
    with workgroup_gemm.planned_by(lambda m, n, k: workgroup_gemm.plan(m, n, k, most)):
        mod = pipeline.prepare_for(exported.mod, dtype, spec)
    stats: dict = {}
    executable = pipeline.build(mod, spec, None, stats)
    export_wasm(executable, path)
    return {
        "build_s": round(time.perf_counter() - start, 1),
        "max_buffer_bytes": stats["max_buffer_bytes"],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("bundle", type=Path)
    ap.add_argument("--checkpoint", type=Path, required=True)
    ap.add_argument("--tokenizer", type=Path)
    ap.add_argument("--add", action="append", default=[], metavar="NAME:CHOICES", required=True)
    ap.add_argument("--components", default=",".join(COMPONENTS))
    args = ap.parse_args()
    from packer.ingest import ingest

    variants = [parse(s) for s in args.add]
    manifest_path = args.bundle / "manifest.json"
    doc = json.loads(manifest_path.read_text())
    base = next(t for t in doc["targets"].values() if t["kind"] == "webgpu")
    ckpt = ingest(args.checkpoint, tokenizer=args.tokenizer)
    hw = (ckpt.configs["unet"]["sample_size"],) * 2
    loaders = {"text_encoder": ckpt.text_encoder, "unet": ckpt.unet, "vae_decoder": ckpt.vae}
    files = {f["path"]: f for f in doc["files"]}
    web = targets.get_target("webgpu")
    for name, dtype, _ in variants:
        doc["targets"][name] = {
            "kind": "webgpu",
            "dtype": dtype,
            "target": base["target"],
            "libs": {},
            "tuning_db_sha256": None,
            "requirements": web.requirements_for(dtype),
        }
    for component in args.components.split(","):
        exported = export_component(component, loaders[component](), hw)
        for name, dtype, choices in variants:
            rel = f"libs/{name}/{component}.wasm"
            path = args.bundle / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            row = build(exported, dtype, choices, path)
            entry = doc["targets"][name]
            entry["libs"][component] = rel
            merge_requirements(entry["requirements"], {"max_buffer_bytes": row["max_buffer_bytes"]})
            files[rel] = {"path": rel, "size": path.stat().st_size, "sha256": sha256_file(path)}
            print(json.dumps({"variant": name, "component": component, **row}), flush=True)
            gc.collect()
        del exported
        gc.collect()
    doc["files"] = sorted(files.values(), key=lambda f: f["path"])
    manifest_path.write_bytes(dumps(doc))


if __name__ == "__main__":
    main()
