"""The browser generation bench's image, made natively: packer's own runtime on the same bundle.

    python -m bench.web.native_gen add BUNDLE [--variants cuda-float16,cuda-float32]   # here
    python -m bench.web.native_gen run --bundle DIR --gen-json gen_bench.json --images DIR \\
        [--device cuda|cpu] [--variants auto|cuda-float16,...] [--out DIR] [--diffusers auto|on|off]  # there

``add`` compiles native libraries for a packed bundle and adds them as manifest variants, the way
bench/web/variants.py adds WebGPU ones: each ``TARGET-DTYPE`` (``cuda-float16``, ``cuda-float32``,
``llvm-float32``, …; TARGET any packer target) is built by packer's own compiler (its library
cache, so an architecture built before costs nothing; CUDA through the driver stub, in a
subprocess, as ``packer pack`` does) for the three components, from modules constructed from the
manifest's architecture configs (the weights do not enter a library: no checkpoint needed), and
lands in ``libs/TARGET-DTYPE/`` pinned by size and sha256. A variant's dtype may differ from the
bundle's stored weights (``run`` casts them, as the browser runtime does).

``run`` (on the lent GPU: runtime-only TVM, set up by bench/web/gen_device.sh) takes the prompt,
negative prompt, seed, steps, guidance and scheduler from gen_bench.py's JSON, so the request is the
browser's, and generates with ``packer.runtime.generate.Pipeline`` — the code behind ``packer
generate`` — for each native variant: ``--repeat`` images (the first cold), every component call
timed with the device synchronised. It writes ``native.<variant>.png``, ``native_gen.json`` and
prints the timings and the PSNR of every browser PNG against every native one (same dtype marked).
The seed maps one to one: both runtimes draw the initial latents from the spec's Philox noise
(formats/README.md, "Seeded noise") keyed by the same 64-bit seed, and DPM++ adds no noise.

With ``--diffusers`` (default: on for cuda), the same weights also go into diffusers/transformers
modules in fp16 on the GPU: one UNet step timed by CUDA events (diffusers eager vs the TVM library
fed the same torch tensors, outputs compared), and a whole image with the same latents, scheduler
and guidance (bench/gpu/native.py's loop), PSNR against the native and browser images.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import zlib
from pathlib import Path

import numpy as np

COMPONENT_CONFIG = {"text_encoder": "text_encoder", "unet": "unet", "vae_decoder": "vae"}


# ------------------------------------------------------------------------------------------------
# add: native libraries for a packed bundle (here, with the compiler)
# ------------------------------------------------------------------------------------------------
def add(bundle: Path, names: list[str], cache: Path | None) -> None:
    from packer.bundle import Bundle
    from packer.bundle.manifest import merge_requirements
    from packer.compile.cache import cache_root
    from packer.compile.component import COMPONENTS, Compiler, _component_configs
    from packer.compile.targets import get_target
    from packer.ingest import architecture
    from packer.support.canonical import dumps, sha256_file

    manifest_path = bundle / "manifest.json"
    doc = json.loads(manifest_path.read_text())
    configs = doc["architecture"]["configs"]
    sig = architecture.signature_configs(configs)
    lat = doc["architecture"]["latent"]
    hw = (lat["height"], lat["width"])
    compiler = Compiler(cache_root(cache))
    files = {f["path"]: f for f in doc["files"]}
    built: dict = {}

    def loader(component):
        def load():
            if component not in built:
                import torch

                torch.manual_seed(0)
                built.clear()  # one full-size module in memory at a time
                key = COMPONENT_CONFIG[component]
                built[component] = architecture.construct(key, configs[key], device="cpu").eval()
            return built[component]

        return load

    for name in names:
        target, _, dtype = name.rpartition("-")
        if dtype not in ("float32", "float16") or not target:
            sys.exit(
                f"{name}: give TARGET-float16 or TARGET-float32 (TARGET: a packer target, e.g. cuda)"
            )
        spec = get_target(target)
        entry = None
        for component in COMPONENTS:
            t0 = time.perf_counter()
            cc = compiler.compile(
                component, loader(component), _component_configs(sig, component), hw, spec, dtype
            )
            if cc.params != doc["components"][component]["params"]:
                sys.exit(
                    f"{name} {component}: the library's params differ from the manifest's (order or names)"
                )
            rel = f"libs/{name}/{component}{cc.lib_path.suffix}"
            (bundle / rel).parent.mkdir(parents=True, exist_ok=True)
            (bundle / rel).write_bytes(cc.lib_path.read_bytes())
            files[rel] = {
                "path": rel,
                "size": (bundle / rel).stat().st_size,
                "sha256": sha256_file(bundle / rel),
            }
            if entry is None:
                entry = {
                    "kind": cc.target_json["kind"],
                    "dtype": dtype,
                    "target": cc.target_json,
                    "libs": {},
                    "tuning_db_sha256": cc.tuning_db_sha256,
                    "requirements": dict(cc.requirements),
                }
            entry["libs"][component] = rel
            merge_requirements(entry["requirements"], cc.requirements)
            print(
                json.dumps(
                    {
                        "variant": name,
                        "component": component,
                        "reused": cc.reused,
                        "s": round(time.perf_counter() - t0, 1),
                        "bytes": files[rel]["size"],
                    }
                ),
                flush=True,
            )
        doc["targets"][name] = entry
    doc["files"] = sorted(files.values(), key=lambda f: f["path"])
    manifest_path.write_bytes(dumps(doc))
    Bundle.open(bundle)  # the manifest still validates
    print(f"{bundle}: targets now {', '.join(sorted(doc['targets']))}")


# ------------------------------------------------------------------------------------------------
# run: the browser's request through packer's native runtime (there, runtime-only TVM)
# ------------------------------------------------------------------------------------------------
def read_png(path: Path) -> np.ndarray:
    """An 8-bit RGB(A) PNG as uint8 [H, W, 3]: PIL where present, else the filter-0 PNGs gen_bench writes."""
    try:
        from PIL import Image

        return np.asarray(Image.open(path).convert("RGB"))
    except ImportError:
        pass
    data = path.read_bytes()
    pos, idat, width = 8, b"", 0
    while pos < len(data):
        n = int.from_bytes(data[pos : pos + 4], "big")
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + n]
        if kind == b"IHDR":
            width, height, depth, color = (
                int.from_bytes(body[:4], "big"),
                int.from_bytes(body[4:8], "big"),
                body[8],
                body[9],
            )
            if depth != 8 or color not in (2, 6):
                raise ValueError(f"{path}: only 8-bit RGB/RGBA")
            channels = 4 if color == 6 else 3
        elif kind == b"IDAT":
            idat += body
        pos += 12 + n
    rows = np.frombuffer(zlib.decompress(idat), np.uint8).reshape(height, 1 + width * channels)
    if rows[:, 0].any():
        raise ValueError(f"{path}: filtered rows need Pillow")
    return rows[:, 1:].reshape(height, width, channels)[..., :3]


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    if a.shape != b.shape:
        return float("nan")
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


class CastBundle:
    """A Bundle whose float params come in ``dtype``: a variant's dtype may differ from the stored
    weights' (fp32 libraries on an fp16 bundle), and ComponentRunner wants the library's dtype;
    the browser runtime converts the same way while uploading."""

    def __init__(self, bundle, dtype: str):
        self._b, self._dtype = bundle, np.dtype(dtype)

    def __getattr__(self, name):
        return getattr(self._b, name)

    def load_params(self, component: str):
        return {
            k: (v.astype(self._dtype) if v.dtype.kind == "f" and v.dtype != self._dtype else v)
            for k, v in self._b.load_params(component).items()
        }


class Timed:
    """A component runner whose calls are timed (ms), the device synchronised before the clock stops."""

    def __init__(self, runner, sync):
        self.runner, self.sync, self.ms = runner, sync, []

    def __call__(self, *inputs):
        t0 = time.perf_counter()
        out = self.runner(*inputs)  # returns a numpy array: already a device round trip
        self.sync()
        self.ms.append((time.perf_counter() - t0) * 1e3)
        return out


def gpu_module():
    """bench/gpu/native.py, for load_tvm, bench, TvmComponent and generate (imported when needed:
    it imports torch)."""
    from ..gpu import native

    return native


def request_of(gen: dict) -> dict:
    a = gen["args"]
    return {
        "prompt": a["prompt"],
        "negative_prompt": a.get("negative_prompt", ""),
        "seed": int(a["seed"]),
        "steps": a["steps"],
        "guidance": a["guidance"],
        "scheduler": a["scheduler"],
    }


def browser_images(gen: dict, images: Path, manifest: dict) -> list[dict]:
    out = []
    for run in gen["runs"]:
        names = [n for n in run.get("images", []) if (images / n).is_file()]
        if not names:
            continue
        variant = run["variant"]
        dtype = (manifest["targets"].get(variant) or {}).get("dtype") or variant.rsplit("-", 1)[-1]
        pix = [read_png(images / n) for n in names]
        out.append(
            {
                "variant": variant,
                "flags": run["flagSet"],
                "dtype": dtype,
                "png": names[0],
                "same_in_run": all(np.array_equal(pix[0], p) for p in pix[1:]),
                "pixels": pix[0],
            }
        )
    return out


def native_variants(manifest: dict, device: str, wanted: str) -> list[str]:
    from packer.runtime.generate import DEVICE_KINDS

    kind = DEVICE_KINDS[device]
    have = sorted(
        (k for k, t in manifest["targets"].items() if t["kind"] == kind),
        key=lambda k: (manifest["targets"][k]["dtype"] != "float16", k),
    )
    if wanted == "auto":
        return have
    names = [v for v in wanted.split(",") if v]
    missing = [v for v in names if v not in have]
    if missing:
        sys.exit(f"no {kind} variant {missing} in the bundle (it has {have})")
    return names


def run_native(
    bundle, name: str, device: str, req: dict, repeat: int, sync
) -> tuple[dict, np.ndarray, object]:
    from packer.runtime.generate import Pipeline, Request, to_uint8

    variant = bundle.manifest["targets"][name]
    t0 = time.perf_counter()
    pipe = Pipeline(CastBundle(bundle, variant["dtype"]), device=device, dtype=variant["dtype"])
    if pipe.variant is not variant:  # Pipeline picks by kind and dtype: make it this variant
        pipe = None
        raise SystemExit(
            f"{name}: two {variant['kind']} variants of dtype {variant['dtype']}; pass --variants"
        )
    load_s = time.perf_counter() - t0
    for comp in list(pipe.runners):
        pipe.runners[comp] = Timed(pipe.runners[comp], sync)
    images, pixels = [], None
    for i in range(repeat):
        for r in pipe.runners.values():
            r.ms.clear()
        marks = []
        t0 = time.perf_counter()
        image = pipe(
            Request(
                req["prompt"],
                req["negative_prompt"],
                req["seed"],
                req["steps"],
                req["guidance"],
                req["scheduler"],
            ),
            on_step=lambda i, n: marks.append(time.perf_counter()),
        )
        sync()
        wall = time.perf_counter() - t0
        px = to_uint8(image)
        steps_ms = [(b - a) * 1e3 for a, b in zip(marks, marks[1:])]
        images.append(
            {
                "wall_s": wall,
                "text_encoder_ms": sum(pipe.runners["text_encoder"].ms),
                "unet_call_ms_median": statistics.median(pipe.runners["unet"].ms),
                "step_ms_median": statistics.median(steps_ms) if steps_ms else float("nan"),
                "vae_ms": sum(pipe.runners["vae_decoder"].ms),
                "steps": len(pipe.runners["unet"].ms),
                "same_as_first": pixels is None or bool(np.array_equal(px, pixels)),
            }
        )
        pixels = px if pixels is None else pixels
        print(f"  {name} image {i} ({'cold' if i == 0 else 'warm'}): {wall:.3f} s", flush=True)
    return (
        {"variant": name, "dtype": variant["dtype"], "load_s": load_s, "images": images},
        pixels,
        pipe,
    )


def diffusers_reference(bundle, req: dict, gpu, tvm, pipe16) -> tuple[dict, np.ndarray | None]:
    """diffusers/transformers fp16 modules with the bundle's weights: one UNet step (vs the TVM
    library on the same torch tensors), and a whole image with bench/gpu/native.py's loop."""
    import torch

    from packer.runtime import noise

    m = bundle.manifest
    dev = torch.device("cuda")
    models = gpu.build_models(m, 0, "cuda", torch.float16)
    tensors = {}
    for comp, key in (("text_encoder", "clip"), ("unet", "unet"), ("vae_decoder", "vae")):
        params = bundle.load_params(comp)
        names = m["components"][comp]["params"]
        module = models[key].half()
        sd = module.state_dict()
        found, ordered = {}, []
        for n in names:
            cand = next(
                (c for c in (n, "text_model." + n, n.removeprefix("text_model.")) if c in sd), None
            )
            if cand is None:
                raise KeyError(f"{comp}: param {n} not in {type(module).__name__}")
            t = torch.from_numpy(params[n]).to(dev)
            found[cand] = t.half() if t.is_floating_point() else t
            ordered.append(gpu._aligned(found[cand]))
        skip = (
            ("encoder.", "quant_conv.") if comp == "vae_decoder" else ()
        )  # the bundle has the decoder only
        missing = [k for k in sd if k not in found and not k.startswith(skip)]
        module.load_state_dict(found, strict=False)
        if missing:
            print(
                f"  diffusers {comp}: {len(missing)} state-dict entries not in the bundle (kept): {missing[:3]}"
            )
        tensors[comp] = ordered
    lat = m["architecture"]["latent"]
    ids = torch.from_numpy(
        np.concatenate([pipe16.token_ids(req["negative_prompt"]), pipe16.token_ids(req["prompt"])])
    ).to(dev)
    latents0 = torch.from_numpy(
        noise.latents(req["seed"], (1, lat["channels"], lat["height"], lat["width"]))
    ).to(dev)
    res: dict = {}
    with torch.inference_mode():
        torch_b = gpu.torch_backend(models["clip"], models["unet"], models["vae"])
        emb = torch.cat([torch_b["clip"](ids[0:1]), torch_b["clip"](ids[1:2])]).half()
        x = torch.cat([latents0, latents0]).half()
        t = torch.full((2,), 999.0, device=dev)
        res["unet_step_diffusers_ms"] = gpu.bench(lambda: torch_b["unet"](x, t, emb), reps=20)
        variant = next(
            t for t in m["targets"].values() if t["kind"] == "cuda" and t["dtype"] == "float16"
        )
        tunet = gpu.TvmComponent(
            tvm, bundle.root / variant["libs"]["unet"], tensors["unet"], tvm.cuda(0)
        )
        res["unet_step_tvm_device_resident_ms"] = gpu.bench(lambda: tunet(x, t, emb), reps=20)  # noqa: F821
        res["unet_tvm_vs_diffusers"] = gpu.diff(
            tunet(x, t, emb).float(), torch_b["unet"](x, t, emb).float()
        )
        del tunet
        if req["scheduler"] != "dpm++":
            res["image"] = (
                f"skipped: bench/gpu/native.py's loop is DPM++ only, the request is {req['scheduler']}"
            )
            return res, None
        sched_cfg = m["scheduler"]["config"]
        gen = lambda: gpu.generate(
            torch_b,
            ids,
            latents0.half(),
            req["steps"],
            sched_cfg,
            lat["scaling_factor"],  # noqa: E731
            req["guidance"],
        )
        img = gen()
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        img = gen()
        torch.cuda.synchronize()
        res["image_s"] = time.perf_counter() - t0
    image = (
        ((img[0].float() / 2 + 0.5).clamp(0, 1).permute(1, 2, 0).cpu().numpy() * 255)
        .round()
        .astype(np.uint8)
    )
    del models
    torch.cuda.empty_cache()
    return res, image


def run(args) -> None:
    from packer.bundle import Bundle

    from .gen_bench import write_png

    device = args.device
    if device == "cuda":
        gpu = gpu_module()
        tvm = gpu.load_tvm("cuda")
        sync = tvm.cuda(0).sync
    else:
        gpu, sync = None, (lambda: None)
        import tvm

        print(
            f"tvm {tvm.__version__} from {Path(tvm.__file__).parent} runtime_only={tvm.base._RUNTIME_ONLY}"
        )
    gen = json.loads(args.gen_json.read_text())
    req = request_of(gen)
    bundle = Bundle.open(args.bundle)
    m = bundle.manifest
    browser = browser_images(gen, args.images, m)
    names = native_variants(m, device, args.variants)
    print(f"request (from {args.gen_json.name}): {json.dumps(req)}")
    print(
        f"bundle {m['model']['id']}: weights {m['dtype']}, native {device} variants {names}; "
        f"{len(browser)} browser PNGs"
    )
    args.out.mkdir(parents=True, exist_ok=True)
    doc = {"request": req, "device": device, "native": [], "psnr": [], "diffusers": None}
    natives, pipe16 = {}, None
    for name in names:
        row, pixels, pipe = run_native(bundle, name, device, req, args.repeat, sync)
        png = f"native.{name}.png"
        write_png(
            args.out / png,
            np.concatenate([pixels, np.full(pixels.shape[:2] + (1,), 255, np.uint8)], -1).tobytes(),
            pixels.shape[1],
            pixels.shape[0],
        )
        row["png"] = png
        doc["native"].append(row)
        natives[name] = (row["dtype"], pixels)
        if row["dtype"] == "float16" and pipe16 is None:
            pipe16 = pipe
        else:
            del pipe
    ref = None
    if gpu is not None and args.diffusers != "off" and pipe16 is not None:
        try:
            doc["diffusers"], ref = diffusers_reference(bundle, req, gpu, tvm, pipe16)
        except Exception as exc:  # a reference is a bonus: report and go on
            doc["diffusers"] = {"error": f"{type(exc).__name__}: {exc}"}
            if args.diffusers == "on":
                raise
    others = [(f"native {n}", d, p) for n, (d, p) in natives.items()]
    if ref is not None:
        write_png(
            args.out / "diffusers.float16.png",
            np.concatenate([ref, np.full(ref.shape[:2] + (1,), 255, np.uint8)], -1).tobytes(),
            ref.shape[1],
            ref.shape[0],
        )
        others.append(("diffusers fp16", "float16", ref))
    sources = [
        (f"browser {b['variant']}/{b['flags']}", b["dtype"], b["pixels"], b) for b in browser
    ]
    sources += [(label, d, p, None) for label, d, p in others]
    for label, dtype, px, b in sources:
        for olabel, odtype, opx in others:
            if olabel == label:
                continue
            doc["psnr"].append(
                {
                    "a": label,
                    "b": olabel,
                    "same_dtype": dtype == odtype,
                    "psnr_db": psnr(px, opx),
                    **({"png": b["png"], "same_in_run": b["same_in_run"]} if b else {}),
                }
            )
    print_report(doc)
    (args.out / "native_gen.json").write_text(json.dumps(doc, indent=1, default=float))
    print(f"wrote {args.out / 'native_gen.json'} and the native PNGs")


def print_report(doc: dict) -> None:
    print(
        f"\n== native generation ({doc['device']}): {doc['request']['steps']} steps {doc['request']['scheduler']}, "
        f"seed {doc['request']['seed']}, guidance {doc['request']['guidance']}"
    )
    head = f"{'variant':16} {'load s':>7} {'image':>6} {'wall s':>7} {'CLIP ms':>8} {'UNet call':>9} {'step ms':>8} {'VAE ms':>8}  same"
    print(head + "\n" + "-" * len(head))
    for row in doc["native"]:
        for i, im in enumerate(row["images"]):
            load = f"{row['load_s']:7.2f}" if i == 0 else " " * 7
            print(
                f"{row['variant']:16} {load} {('cold' if i == 0 else 'warm'):>6} "
                f"{im['wall_s']:7.3f} {im['text_encoder_ms']:8.1f} {im['unet_call_ms_median']:9.2f} "
                f"{im['step_ms_median']:8.2f} {im['vae_ms']:8.1f}  {'y' if im['same_as_first'] else 'NO'}"
            )
    d = doc.get("diffusers")
    if d:
        print(
            "\n== diffusers fp16 eager, same weights, same GPU"
            + (f": {d['error']}" if "error" in d else "")
        )
        if "unet_step_diffusers_ms" in d:
            print(
                f"UNet step (batch 2, CUDA events, median): diffusers eager {d['unet_step_diffusers_ms']['median']:.2f} ms; "
                f"TVM cuda-float16 fed torch tensors {d['unet_step_tvm_device_resident_ms']['median']:.2f} ms; "
                f"TVM vs diffusers max abs {d['unet_tvm_vs_diffusers']['max_abs']:.4f} "
                f"(ref max {d['unet_tvm_vs_diffusers']['ref_max_abs']:.3f}, rel l2 {d['unet_tvm_vs_diffusers']['rel_l2']:.2e})"
            )
        if "image_s" in d:
            print(
                f"whole image, diffusers eager fp16 (bench/gpu/native.py's loop): {d['image_s']:.3f} s"
            )
    print("\n== PSNR (dB) of each image against the native ones (* = same dtype)")
    cols = sorted({p["b"] for p in doc["psnr"]}, key=lambda s: (not s.startswith("native"), s))
    rows = list(dict.fromkeys(p["a"] for p in doc["psnr"]))
    table = {(p["a"], p["b"]): p for p in doc["psnr"]}
    print(f"{'image':40}" + "".join(f" {c[:22]:>22}" for c in cols))
    for r in rows:
        cells = []
        for c in cols:
            p = table.get((r, c))
            cells.append(
                f" {'-':>22}"
                if p is None
                else f" {p['psnr_db']:21.2f}{'*' if p['same_dtype'] else ' '}"
            )
        print(f"{r[:40]:40}" + "".join(cells))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    a = sub.add_parser("add", help="compile native variants into a packed bundle (here)")
    a.add_argument("bundle", type=Path)
    a.add_argument(
        "--variants", default="cuda-float16,cuda-float32", help="comma list of TARGET-DTYPE"
    )
    a.add_argument(
        "--cache",
        type=Path,
        help="library cache root (default $SDPACK_CACHE, else ~/.cache/sdpack)",
    )
    r = sub.add_parser("run", help="generate natively with the browser bench's request (there)")
    r.add_argument("--bundle", type=Path, required=True)
    r.add_argument("--gen-json", type=Path, required=True, help="gen_bench.py's --json")
    r.add_argument(
        "--images", type=Path, required=True, help="gen_bench.py's --out (the browser PNGs)"
    )
    r.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    r.add_argument(
        "--variants",
        default="auto",
        help="native variants (default: every one of the device's kind)",
    )
    r.add_argument("--repeat", type=int, default=2, help="images per variant (the first cold)")
    r.add_argument("--diffusers", choices=["auto", "on", "off"], default="auto")
    r.add_argument("--out", type=Path, default=Path("/tmp/native-gen"))
    args = ap.parse_args()
    if args.cmd == "add":
        add(args.bundle, [v for v in args.variants.split(",") if v], args.cache)
    else:
        run(args)


if __name__ == "__main__":
    main()
