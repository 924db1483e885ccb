"""Browser generation bench: the product's loadModel + generate in headless Chromium, by pinned URL.

    python -m bench.web.gen_bench (--bundle DIR | --hub DIR --repo ORG/NAME [--rev v1.0.0])
        [--variants webgpu-float32,webgpu-float16] [--flag-sets default,norobust,f16] [--flag NAME=FLAGS]
        [--adapter nvidia|swiftshader|none] [--profile] [--steps 20] [--size 512] [--images 2]
        [--prompt TEXT] [--seed 42] [--scheduler dpm++] [--out DIR] [--json FILE]
        [--chromium PATH] [--page DIR | --build-page DIR] [--timeout 300]

The model is served as a directory hub by packer's own `packer serve` handler (packer/hub/serve.py,
subclassed here to add the page under /app/ and the page's /__config, /__progress, /__image and
/__result) and loaded by its pinned Hub-style URL `…/<org>/<name>/resolve/<commit>/manifest.json`.
`--bundle DIR` publishes the bundle into a directory hub first (packer's publish verb, which
verifies it; the commit id is derived there), under the id and version its manifest names.

For each variant × flag set a fresh Chromium runs bench/web/gen_page.js (`?auto`; see there):
load, `--images` images (the first cold), and with `--profile` one more image whose compute passes
carry GPU timestamps, aggregated per kernel. Flag sets (on top of the adapter's flags):
  default   nothing more
  norobust  --enable-dawn-features=disable_robustness
  f16       --enable-dawn-features=vulkan_enable_f16_on_nvidia   (does shader-f16 appear?)
  --flag NAME="--a --b"   a set of your own (repeatable)
Adapters: `nvidia` — the lent machine's GPU through Vulkan (--use-angle=vulkan
--enable-features=Vulkan --disable-vulkan-surface; the Vulkan driver env comes from the caller,
bench/web/gen_device.sh); `swiftshader` — software WebGPU (this VM; rehearsal only).

Writes under --out: gen_bench.json (every run's result), <variant>.<flags>.<image>.png, chromium
logs; prints a table, and the profile tables with --profile. The image size is fixed by the
bundle's compiled libraries: --size only checks it.

The page is bundled by esbuild from a fresh tsc build of runtime-web/src (as bench/web/loader.py
does for the loader bench); `--build-page DIR` builds it (here, where node is) and exits, `--page
DIR` runs with one built earlier (the lent machine has no node).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import struct
import sys
import tempfile
import threading
import time
import zlib
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from . import loader as web_loader  # Session, run_browser, the common Chromium flags

ROOT = Path(__file__).resolve().parents[2]
HERE = ROOT / "bench" / "web"
WEB = ROOT / "runtime-web"

ADAPTERS = {
    "swiftshader": web_loader.ADAPTER_FLAGS["swiftshader"],
    # what reaches the NVIDIA adapter on the lent machine (docs/design.md)
    "nvidia": ["--use-angle=vulkan", "--enable-features=Vulkan", "--disable-vulkan-surface"],
    "none": [],
}
FLAG_SETS = {
    "default": [],
    "norobust": ["--enable-dawn-features=disable_robustness"],
    "f16": ["--enable-dawn-features=vulkan_enable_f16_on_nvidia"],
}
PROMPT = "a photo of an astronaut riding a horse on the moon, highly detailed"


def build_page(out: Path) -> Path:
    """tsc runtime-web/src → out/rt; esbuild gen_page.js (+ tvmjs) → out/page/gen.js, decodeWorker.js; returns out/page."""
    return web_loader.build_page(out, HERE / "gen_page.js", "gen.js", "sdpack generation bench")


def write_png(path: Path, rgba: bytes, width: int, height: int) -> None:
    """8-bit RGBA PNG, no dependencies (the lent machine may lack Pillow)."""
    if len(rgba) != width * height * 4:
        raise ValueError(f"{path.name}: {len(rgba)} bytes for {width}x{height} RGBA")
    stride = width * 4
    raw = b"".join(b"\x00" + rgba[y * stride : (y + 1) * stride] for y in range(height))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data))
            + kind
            + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
        )

    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 6, 0, 0, 0))
        + chunk(b"IDAT", zlib.compress(raw, 6))
        + chunk(b"IEND", b"")
    )


def publish(bundle: Path, hub: Path) -> tuple[str, str, str]:
    """Publish `bundle` into the directory hub `hub` (packer's publish verb): (repo, version, commit)."""
    from packer.interface.publish import PublishArgs
    from packer.interface.publish import publish as publish_verb

    model = json.loads((bundle / "manifest.json").read_text())["model"]
    t0 = time.monotonic()
    res = publish_verb(PublishArgs(bundle, model["id"], model["version"], to=hub))
    print(
        f"published {bundle} as {model['id']} {model['version']} into {hub}: commit {res.published.commit} "
        f"({time.monotonic() - t0:.1f} s)",
        file=sys.stderr,
    )
    return model["id"], model["version"], res.published.commit


def make_server(hub: Path, page: Path, state: dict):
    """packer serve's hub server (the resolve URLs), plus the page under /app/ and the bench's endpoints."""
    from packer.hub import serve as hub_serve

    server = hub_serve.make_server(hub, port=0, app=page)
    base = server.RequestHandlerClass

    class Handler(base):
        def _json(self, doc) -> None:
            body = json.dumps(doc).encode()
            self._answer(
                200, {"Content-Type": "application/json", "Cache-Control": "no-store"}, len(body)
            )
            self.wfile.write(body)

        def do_GET(self):  # noqa: N802
            if urlsplit(self.path).path == "/__config":
                return self._json(state["session"].config)
            super().do_GET()

        def do_POST(self):  # noqa: N802
            url = urlsplit(self.path)
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            session = state.get("session")
            if session is None:
                return self._answer(404, {})
            if url.path == "/__progress":
                session.progress(body.decode(errors="replace"))
            elif url.path == "/__image":
                q = {k: v[0] for k, v in parse_qs(url.query).items()}
                name = f"{state['prefix']}.{q['name']}.png"
                try:
                    write_png(state["out"] / name, body, int(q["w"]), int(q["h"]))
                    state["images"].append(name)
                except ValueError as exc:
                    session.progress(f"image not written: {exc}")
            elif url.path == "/__result":
                session.finish(json.loads(body))
            else:
                return self._answer(404, {})
            self._json({})

    server.RequestHandlerClass = Handler
    return server


def med(xs):
    return statistics.median(xs) if xs else float("nan")


def summarize(run: dict) -> dict:
    """One table row from a page result."""
    r = run["result"]
    row = {
        "variant": run["variant"],
        "flags": run["flagSet"],
        "status": "ok" if "fatal" not in r else "FAIL",
    }
    ad = r.get("adapter") or {}
    row["adapter"] = f"{ad.get('vendor', '?')}/{ad.get('architecture', '?')}"
    row["adapter_f16"] = "shader-f16" in ad.get("features", [])
    row["device_f16"] = "shader-f16" in (r.get("device") or {}).get("features", [])
    if "fatal" in r:
        row["error"] = r["fatal"].splitlines()[0][:160]
        return row
    load = r["load"]
    row.update(
        load_s=load["ms"] / 1000,
        load_mb=(load.get("totalBytes") or 0) / 1e6,
        download_s=load["downloadEndMs"] / 1000,
    )
    imgs = r["images"]
    cold, warm = imgs[0], (imgs[1] if len(imgs) > 1 else None)
    use = warm or cold
    t = use["timings"]
    row.update(
        clip_ms=t["textEncoderMs"],
        step_ms=t["medianStepMs"],
        vae_ms=t["vaeMs"],
        steps=t["steps"],
        unet_call_ms=use["calls"]["medianUnetCallMs"],
        cold_s=cold["wallMs"] / 1000,
        warm_s=(warm["wallMs"] / 1000) if warm else float("nan"),
        size=f"{use['width']}x{use['height']}",
        same_image=len(
            {i["rgbaSha256"] for i in [*imgs, (r.get("profile") or {}).get("image") or imgs[0]]}
        )
        == 1,
    )
    prof = r.get("profile") or {}
    unet = (prof.get("components") or {}).get("unet")
    if unet:
        row.update(
            prof_dispatches=unet["dispatchesPerCall"],
            prof_gpu_ms=unet["gpuMsPerCall"],
            prof_span_ms=unet["spanMsPerCall"],
        )
    return row


def print_table(rows: list[dict]) -> None:
    head = (
        f"{'variant':16} {'flags':9} {'adapter':22} {'f16 a/d':7} {'load s':>7} {'MB':>7} {'CLIP ms':>8} "
        f"{'step ms':>8} {'VAE ms':>8} {'cold s':>7} {'warm s':>7}  size    same  prof: disp  gpu ms span ms"
    )
    print(head)
    print("-" * len(head))
    for r in rows:
        f16 = f"{'y' if r['adapter_f16'] else 'n'}/{'y' if r['device_f16'] else 'n'}"
        if r["status"] != "ok":
            print(
                f"{r['variant']:16} {r['flags']:9} {r['adapter']:22} {f16:7} FAIL: {r.get('error', '')}"
            )
            continue
        prof = (
            f"{r['prof_dispatches']:10.0f} {r['prof_gpu_ms']:7.1f} {r['prof_span_ms']:7.1f}"
            if "prof_dispatches" in r
            else ""
        )
        print(
            f"{r['variant']:16} {r['flags']:9} {r['adapter']:22} {f16:7} {r['load_s']:7.2f} {r['load_mb']:7.1f} "
            f"{r['clip_ms']:8.1f} {r['step_ms']:8.1f} {r['vae_ms']:8.1f} {r['cold_s']:7.2f} {r['warm_s']:7.2f}  "
            f"{r['size']:7} {'y' if r['same_image'] else 'NO':4} {prof}"
        )


def print_profile(run: dict, top: int) -> None:
    prof = run["result"].get("profile")
    if not prof:
        return
    print(
        f"\n== GPU profile: {run['variant']} {run['flagSet']}"
        + (
            f" — {prof['error']}"
            if "error" in prof
            else f" ({prof['dispatchesTimed']} passes timed, {prof['dropped']} dropped)"
        )
    )
    if "error" in prof:
        return
    for comp, c in prof["components"].items():
        print(
            f"{comp}: {c['calls']} calls; per call {c['dispatchesPerCall']:.0f} dispatches, {c['gpuMsPerCall']:.2f} ms in "
            f"passes, {c['spanMsPerCall']:.2f} ms GPU span"
        )
    step = prof.get("unetStep")
    tables = [("UNet, per step (mean over the steps)", prof["components"].get("unet"))]
    if step:
        tables.append(
            (
                f"UNet step {step['step']} alone ({step['dispatches']} dispatches, {step['gpuMs']:.2f} ms in passes, "
                f"{step['spanMs']:.2f} ms span)",
                step,
            )
        )
    tables += [
        (f"{c} (per call)", prof["components"][c])
        for c in ("text_encoder", "vae_decoder")
        if c in prof["components"]
    ]
    for title, t in tables:
        if not t:
            continue
        print(f"-- {title}")
        print(f"{'kernel':60} {'count':>6} {'ms':>8} {'share':>6} {'mean us':>8}  grids")
        for k in t["kernels"][:top]:
            print(
                f"{k['name'][:60]:60} {k['count']:6.0f} {k['ms']:8.3f} {100 * k['share']:5.1f}% {k['meanUs']:8.1f}  "
                f"{' '.join(k['grids'][:2])}"
            )
        rest = t["kernels"][top:]
        if rest:
            print(
                f"{'(' + str(len(rest)) + ' more kernels)':60} {sum(k['count'] for k in rest):6.0f} "
                f"{sum(k['ms'] for k in rest):8.3f} {100 * sum(k['share'] for k in rest):5.1f}%"
            )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    src = ap.add_mutually_exclusive_group()
    src.add_argument(
        "--bundle",
        type=Path,
        help="a packed bundle: published into a directory hub (--hub, default OUT/hub) first",
    )
    ap.add_argument("--hub", type=Path, help="a directory hub (with --repo: serve it as is)")
    ap.add_argument("--repo", help="ORG/NAME in --hub")
    ap.add_argument(
        "--rev",
        default="main",
        help="tag or commit in --hub (default main); the page gets the commit",
    )
    ap.add_argument(
        "--variants",
        default="webgpu-float32,webgpu-float16",
        help="comma list; 'auto' = the runtime's own pick",
    )
    ap.add_argument(
        "--flag-sets",
        default="default",
        help=f"comma list of {', '.join(FLAG_SETS)} or names given with --flag",
    )
    ap.add_argument(
        "--flag",
        action="append",
        default=[],
        metavar="NAME=FLAGS",
        help="a flag set of your own (repeatable)",
    )
    ap.add_argument("--adapter", choices=sorted(ADAPTERS), default="swiftshader")
    ap.add_argument(
        "--profile", action="store_true", help="one more image with per-dispatch GPU timestamps"
    )
    ap.add_argument(
        "--profile-step", type=int, help="UNet step (0-based) shown alone (default: the middle one)"
    )
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--size", type=int, help="expected image size (checked against the bundle)")
    ap.add_argument("--images", type=int, default=2, help="images per run (the first is cold)")
    ap.add_argument("--prompt", default=PROMPT)
    ap.add_argument("--negative-prompt", default="")
    ap.add_argument("--seed", default="42")
    ap.add_argument("--guidance", type=float, default=7.5)
    ap.add_argument("--scheduler", default="dpm++")
    ap.add_argument(
        "--verify", choices=["stored", "full"], help="the loader's checks (default: the runtime's)"
    )
    ap.add_argument(
        "--out", type=Path, default=Path(os.environ.get("OUT", "/tmp/sdpack-gen-bench"))
    )
    ap.add_argument("--json", type=Path, help="default OUT/gen_bench.json")
    ap.add_argument("--chromium", default=os.environ.get("SDPACK_CHROMIUM", "/usr/bin/chromium"))
    ap.add_argument(
        "--chromium-flag", action="append", default=[], help="one more Chromium flag for every run"
    )
    ap.add_argument(
        "--page", type=Path, help="a page built earlier with --build-page (then node is not needed)"
    )
    ap.add_argument(
        "--build-page",
        type=Path,
        metavar="DIR",
        help="only build the page into DIR/page, then exit",
    )
    ap.add_argument(
        "--timeout", type=int, default=300, help="seconds the page may go without a word"
    )
    ap.add_argument("--top", type=int, default=25, help="kernels shown per profile table")
    ap.add_argument(
        "--deadline",
        type=float,
        default=0,
        help="start no run past this many seconds (0: no limit)",
    )
    args = ap.parse_args()

    if args.build_page:
        print(build_page(args.build_page))
        return
    flag_sets = dict(FLAG_SETS)
    for spec in args.flag:
        name, _, flags = spec.partition("=")
        flag_sets[name] = shlex.split(flags)
    names = [s for s in args.flag_sets.split(",") if s]
    for n in names:
        if n not in flag_sets:
            sys.exit(f"unknown flag set {n} (known: {', '.join(flag_sets)})")
    args.out.mkdir(parents=True, exist_ok=True)

    if args.bundle:
        hub = args.hub or args.out / "hub"
        repo, _version, commit = publish(args.bundle, hub)
    else:
        if not (args.hub and args.repo):
            sys.exit("give --bundle DIR, or --hub DIR --repo ORG/NAME")
        from packer.hub.local import LocalHub

        hub, repo = args.hub, args.repo
        commit = LocalHub(hub).commit_for(repo, args.rev)
        if not commit:
            sys.exit(f"{repo}: no revision {args.rev} in {hub}")
    manifest = json.loads(
        __import__("packer.hub.local", fromlist=["LocalHub"])
        .LocalHub(hub)
        .read(repo, commit, "manifest.json")
    )
    latent = manifest["architecture"]["latent"]
    image_size = [manifest["architecture"].get("image_size"), latent["height"], latent["width"]]
    if args.size and args.size not in (image_size[0], latent["height"] * 8):
        sys.exit(
            f"the bundle makes {latent['height'] * 8}x{latent['width'] * 8} images (its libraries are compiled for "
            f"that size), not {args.size}"
        )
    targets = {
        k: v.get("dtype") for k, v in manifest["targets"].items() if v.get("kind") == "webgpu"
    }
    print(
        f"model {repo} @ {commit}: webgpu variants {targets}; latent {latent['height']}x{latent['width']}",
        file=sys.stderr,
    )

    tmp = tempfile.TemporaryDirectory(prefix="sdpack-gen-bench-")
    page = args.page or build_page(Path(tmp.name))
    if not (page / "gen.js").is_file():
        sys.exit(f"{page}: no gen.js (build it with --build-page)")
    state: dict = {"out": args.out, "images": []}
    server = make_server(hub, page, state)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port = server.server_address[1]
    model_url = f"http://127.0.0.1:{port}/{repo}/resolve/{commit}/manifest.json"
    print(f"pinned URL: {model_url}", file=sys.stderr)

    runs = []
    variants = [v for v in args.variants.split(",") if v]
    t_all = time.monotonic()
    for fs in names:
        for variant in variants:
            if args.deadline and time.monotonic() - t_all > args.deadline:
                print(
                    f"== {variant} / {fs}: skipped (past --deadline {args.deadline:.0f} s)",
                    file=sys.stderr,
                )
                runs.append(
                    {
                        "variant": variant,
                        "flagSet": fs,
                        "flags": [],
                        "images": [],
                        "result": {"fatal": "skipped: past --deadline"},
                    }
                )
                continue
            config = {
                "modelUrl": model_url,
                "variant": "" if variant == "auto" else variant,
                "prompt": args.prompt,
                "negativePrompt": args.negative_prompt,
                "seed": args.seed,
                "steps": args.steps,
                "guidance": args.guidance,
                "scheduler": args.scheduler,
                "images": args.images,
                "profile": args.profile,
                "profileStep": args.profile_step,
                "verify": args.verify,
            }
            flags = [
                *web_loader.COMMON_FLAGS,
                *ADAPTERS[args.adapter],
                *flag_sets[fs],
                *args.chromium_flag,
            ]
            if args.profile:  # full-resolution timestamps (else quantized to 100 µs)
                flags.append("--enable-webgpu-developer-features")
            state["session"] = web_loader.Session(config)
            state["prefix"] = f"{variant}.{fs}"
            state["images"] = []
            print(
                f"== {variant} / {fs}: {' '.join(flag_sets[fs]) or '(no extra flags)'}",
                file=sys.stderr,
            )
            t0 = time.monotonic()
            result, sampler = web_loader.run_browser(
                args.chromium,
                flags,
                f"http://127.0.0.1:{port}/app/index.html?auto",
                state["session"],
                args.timeout,
                log=args.out / f"chromium.{variant}.{fs}.log",
            )
            start, end = sampler.samples[0][0] if sampler.samples else 0, time.time() * 1000
            run = {
                "variant": variant,
                "flagSet": fs,
                "flags": flags,
                "wallS": time.monotonic() - t0,
                "images": list(state["images"]),
                "peakRssGB": sampler.peaks(start, end),
                "result": result,
            }
            runs.append(run)
            if "fatal" in result:
                print(f"   FAILED: {result['fatal'][:600]}", file=sys.stderr)
    server.shutdown()

    rows = [summarize(r) for r in runs]
    print(
        f"\n{len(runs)} runs in {time.monotonic() - t_all:.0f} s; model {repo} @ {commit[:12]}, {args.steps} steps "
        f"{args.scheduler}, seed {args.seed}, adapter flags: {args.adapter}"
    )
    print_table(rows)
    for r in runs:
        print_profile(r, args.top)
    doc = {
        "model": {
            "repo": repo,
            "commit": commit,
            "url": model_url,
            "targets": targets,
            "latent": latent,
        },
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "rows": rows,
        "runs": runs,
    }
    out_json = args.json or args.out / "gen_bench.json"
    out_json.write_text(json.dumps(doc, indent=1))
    print(f"\nwrote {out_json} and {sum(len(r['images']) for r in runs)} PNGs under {args.out}")


if __name__ == "__main__":
    main()
