"""Full-size SD1.5 components built for ``webgpu``: Relax build time, link time, wasm size.

    python -m bench.web.build_wasm [--checkpoint /tmp/sdpack-bench/sd15-a.safetensors]
        [--tokenizer /tmp/sdpack-bench/tokenizer] [--dtypes float16,float32] [--o3 unet:float16]
        [--out /tmp/sdpack-bench/wasm] [--json bench/web/wasm-results.jsonl]

Runs sdpack's own compile stage piecewise, so the two halves can be timed apart: the
checkpoint is ingested once, each component exported once (torch.export → Relax, fp32), then per
dtype ``pipeline.prepare`` + ``pipeline.build`` (steps 1–8 of the pass list, with the
``max_buffer_bytes`` measurement the packer records) and ``webgpu.export_wasm`` (emcc link with
the target's ``-O1``; ``--o3 unet:float16`` also links the fp16 UNet at emscripten's default ``-O3``).
Prints one JSON line per build and a table; sizes are the ``.wasm`` and its ``gzip -9``.
The library cache is not used (every build is measured); the wasm runtime objects are taken
from ``$SDPACK_WEBGPU_RUNTIME_CACHE`` (or built there once, ~90 s).
"""

from __future__ import annotations

import argparse
import gc
import gzip
import json
import time
from pathlib import Path

from packer.compile import pipeline
from packer.compile.component import COMPONENTS
from packer.compile.export import export_component
from packer.compile.targets import get_target
from packer.compile.webgpu.runtime import LINK_OPTIONS, export_wasm, runtime_home


def gzip9(path: Path) -> int:
    return len(gzip.compress(path.read_bytes(), compresslevel=9))


def link(executable, path: Path, options: tuple[str, ...]) -> dict:
    start = time.perf_counter()
    export_wasm(executable, path, link_options=options)
    return {
        "link_s": round(time.perf_counter() - start, 2),
        "wasm_bytes": path.stat().st_size,
        "gzip9_bytes": gzip9(path),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--checkpoint", type=Path, default=Path("/tmp/sdpack-bench/sd15-a.safetensors"))
    ap.add_argument("--tokenizer", type=Path, default=Path("/tmp/sdpack-bench/tokenizer"))
    ap.add_argument("--dtypes", default="float16,float32")
    ap.add_argument("--components", default=",".join(COMPONENTS))
    ap.add_argument(
        "--o3", default="unet:float16", help="COMPONENT:DTYPE,... also linked at -O3 ('' for none)"
    )
    ap.add_argument("--out", type=Path, default=Path("/tmp/sdpack-bench/wasm"))
    ap.add_argument("--json", type=Path, default=None, help="append each result as a JSON line")
    args = ap.parse_args()
    from packer.ingest import ingest

    args.out.mkdir(parents=True, exist_ok=True)
    runtime_home()  # build (or find) the runtime objects before timing anything
    spec = get_target("webgpu")
    start = time.perf_counter()
    ckpt = ingest(args.checkpoint, tokenizer=args.tokenizer)
    print(f"# ingest {time.perf_counter() - start:.1f} s", flush=True)
    hw = (ckpt.configs["unet"]["sample_size"],) * 2
    loaders = {"text_encoder": ckpt.text_encoder, "unet": ckpt.unet, "vae_decoder": ckpt.vae}
    o3 = {c for c in args.o3.split(",") if c}
    rows = []
    for component in args.components.split(","):
        start = time.perf_counter()
        exported = export_component(component, loaders[component](), hw)
        export_s = time.perf_counter() - start
        gc.collect()
        for dtype in args.dtypes.split(","):
            start = time.perf_counter()
            mod = pipeline.prepare_for(exported.mod, dtype, spec)
            stats: dict = {}
            executable = pipeline.build(mod, spec, None, stats)
            build_s = time.perf_counter() - start
            row = {
                "component": component,
                "dtype": dtype,
                "export_s": round(export_s, 1),
                "relax_build_s": round(build_s, 1),
                "max_buffer_bytes": stats.get("max_buffer_bytes"),
            }
            path = args.out / f"{component}-{dtype}.wasm"
            row["O1"] = link(executable, path, LINK_OPTIONS)
            print(json.dumps(row), flush=True)
            if f"{component}:{dtype}" in o3:
                row["O3"] = link(executable, args.out / f"{component}-{dtype}-O3.wasm", ())
                print(json.dumps(row), flush=True)
            rows.append(row)
            if args.json:
                with open(args.json, "a") as f:
                    f.write(json.dumps(row) + "\n")
            del executable, mod
            gc.collect()
        del exported
        gc.collect()
    mb = lambda n: f"{n / 1e6:7.2f}"  # noqa: E731
    print(
        f"\n{'component':13} {'dtype':8} {'export s':>8} {'build s':>8} {'link s':>7} {'wasm MB':>8} "
        f"{'gz9 MB':>7} {'max buffer MiB':>14}"
    )
    for r in rows:
        for level in ("O1", "O3"):
            if level in r:
                x = r[level]
                print(
                    f"{r['component']:13} {r['dtype']:8} {r['export_s']:8.1f} {r['relax_build_s']:8.1f} "
                    f"{x['link_s']:7.1f} {mb(x['wasm_bytes'])} {mb(x['gzip9_bytes'])} "
                    f"{r['max_buffer_bytes'] / 2**20:14.1f}  -{level}"
                )


if __name__ == "__main__":
    main()
