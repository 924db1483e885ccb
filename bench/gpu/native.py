"""SD1.5 on one CUDA GPU: the bundle's TVM libraries against diffusers eager and torch.compile.

Runs ON THE GPU MACHINE (see bench/gpu/run.sh for the lent-GPU setup):

    python -m bench.gpu.native --bundle .device/bundle --out $OUT     # the full benchmark
    python -m bench.gpu.native --bundle .device/bundle --mode ncu    # one TVM UNet step, for ncu

What it does, in one process on one GPU:

* builds full-size SD1.5 modules with random weights from ``--seed`` directly on the GPU
  (CLIP ViT-L, UNet 320/640/1280/1280, VAE 128/256/512/512: the configs the bundle's manifest
  records, so they are exactly the architecture the libraries were compiled for), cast to fp16;
* loads the bundle's TVM libraries with the TVM *runtime* only and hands them the very same
  torch weights without copies (``tvm.runtime.from_dlpack``), in the param order that
  ``manifest["components"][c]["params"]`` (state-dict keys) gives;
* times CLIP, one UNet step (CFG batch 2, 64×64 latent, 77 tokens), the VAE decode and whole
  512² images (DPM++ at 20 and 50 steps) for TVM, diffusers eager fp16 and diffusers with
  ``torch.compile`` (CUDA events, warm-up, median of N);
* checks fidelity: TVM outputs vs torch fp16 on the same inputs (and both vs a torch fp32
  reference for the UNet), PSNR of the 20-step image TVM vs diffusers with the same latents;
* profiles a few TVM UNet steps (and torch eager ones) with the CUDA profiler behind
  ``torch.profiler`` (CUPTI sees every kernel in the process, TVM's too) and writes the
  top kernels by time.

The whole-image loop is the same Python for every backend (the DPM++ scheduler is diffusers'
own, running on torch tensors); only the three model calls differ.
"""

from __future__ import annotations

import argparse
import ctypes
import glob
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch

# Fallback configs; the manifest's own configs are used when present.
from ..sd15 import CLIP_L, UNET, VAE

SCHEDULER = {
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "num_train_timesteps": 1000,
    "steps_offset": 1,
    "prediction_type": "epsilon",
}
SD_UNET_TFLOP = 1.68  # one CFG UNet step at 512² (batch 2, 64² latents), in TFLOP

LOG: list[str] = []


def say(*parts) -> None:
    line = " ".join(str(p) for p in parts)
    print(line, flush=True)
    LOG.append(line)


# ------------------------------------------------------------------------------------------------
# TVM runtime only
# ------------------------------------------------------------------------------------------------
def load_tvm(device: str):
    """Import TVM in runtime-only mode, with the CUDA runtime library that torch already uses."""
    os.environ.setdefault("TVM_USE_RUNTIME_LIB", "1")
    if device == "cuda":
        torch.cuda.init()
        torch.empty(1, device="cuda")
        cudart = _loaded("libcudart.so") or _first(
            [
                "/usr/local/cuda-13.0/lib64/libcudart.so.13",
                "/usr/local/cuda/lib64/libcudart.so.13",
                *glob.glob("/usr/local/cuda*/lib64/libcudart.so.13"),
            ]
        )
        ctypes.CDLL(cudart, mode=ctypes.RTLD_GLOBAL)
    import tvm_ffi

    ffi_lib = Path(tvm_ffi.__file__).parent / "lib" / "libtvm_ffi.so"
    ctypes.CDLL(str(ffi_lib), mode=ctypes.RTLD_GLOBAL)
    import tvm

    if device == "cuda":  # runtime-only mode does not load the CUDA runtime module by itself
        ctypes.CDLL(
            str(Path(tvm.__file__).parent / "lib" / "libtvm_runtime_cuda.so"),
            mode=ctypes.RTLD_GLOBAL,
        )
    say(
        f"tvm {tvm.__version__} from {Path(tvm.__file__).parent} runtime_only="
        f"{tvm.base._RUNTIME_ONLY} libs={sorted(tvm.base._LOADED_LIBS)} cudart={cudart if device == 'cuda' else '-'}"
    )
    return tvm


def _loaded(prefix: str) -> str | None:
    with open("/proc/self/maps") as f:
        for line in f:
            path = line.split()[-1]
            if os.path.basename(path).startswith(prefix):
                return path
    return None


def _first(paths):
    for p in paths:
        if os.path.exists(p):
            return p
    raise FileNotFoundError("no libcudart.so.13 found")


class TvmComponent:
    """One bundle library: ``main(*inputs, *params)``; params are the torch tensors, not copies."""

    def __init__(self, tvm, lib: Path, params: list[torch.Tensor], device):
        from tvm.runtime.vm import VirtualMachine

        self._tvm = tvm
        self.device = device
        self.vm = VirtualMachine(tvm.runtime.load_module(str(lib)), device)
        self._main = self.vm["main"]
        self._keep = params  # the tvm views do not own the memory
        self._params = [tvm.runtime.from_dlpack(p) for p in params]
        try:  # calling convention (packer/compile/__init__.py): params go through it once
            transform = self.vm["main_transform_params"]
        except AttributeError:
            transform = None
        if transform is not None:
            self._params = list(transform(self._params))

    def __call__(self, *inputs: torch.Tensor) -> torch.Tensor:
        out = self._main(
            *[self._tvm.runtime.from_dlpack(_aligned(x)) for x in inputs], *self._params
        )
        if not hasattr(out, "__dlpack__"):
            out = out[0]
        return torch.from_dlpack(out)


def _aligned(x: torch.Tensor) -> torch.Tensor:
    """TVM's DLPack import wants 64-byte aligned data: copy views that start mid-allocation."""
    x = x.contiguous()
    return x if x.data_ptr() % 64 == 0 else x.clone()


class TvmGraphed:
    """A :class:`TvmComponent` replayed as one CUDA graph through packer's own capture
    (``packer.runtime.cuda_graph``, what ``packer generate`` uses): the inputs are copied into
    static buffers, the output is cloned out of the graph's static one."""

    def __init__(self, comp: TvmComponent, example: list[torch.Tensor]):
        from packer.runtime.cuda_graph import CapturedCall

        self._static = [_aligned(x).clone() for x in example]
        views = [comp._tvm.runtime.from_dlpack(s) for s in self._static]
        self._call = CapturedCall(comp._main, views, comp.device, tail=comp._params)

    def __call__(self, *inputs: torch.Tensor) -> torch.Tensor:
        for s, x in zip(self._static, inputs, strict=True):
            s.copy_(x)
        out = self._call.replay()
        if not hasattr(out, "__dlpack__"):
            out = out[0]
        return torch.from_dlpack(out).clone()


class TorchGraphed:
    """``fn(*inputs)`` of torch eager captured with ``torch.cuda.graph`` (static inputs copied in,
    the output cloned out), as a user replays an eager model under CUDA graphs."""

    def __init__(self, fn, example: list[torch.Tensor]):
        self._static = [x.clone() for x in example]
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(3):
                fn(*self._static)
        torch.cuda.current_stream().wait_stream(side)
        self._graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self._graph):
            self._out = fn(*self._static)

    def __call__(self, *inputs: torch.Tensor) -> torch.Tensor:
        for s, x in zip(self._static, inputs, strict=True):
            s.copy_(x)
        self._graph.replay()
        return self._out.clone()


def _steps_tensor(t, x: torch.Tensor) -> torch.Tensor:
    """A timestep as the batch-sized float tensor a captured UNet call takes."""
    return torch.as_tensor(t, device=x.device).float().reshape(-1).expand(x.shape[0]).contiguous()


def state_tensors(module: torch.nn.Module, keys: list[str]) -> list[torch.Tensor]:
    """The module's tensors for the manifest's param keys (tolerating a ``text_model.`` prefix
    difference between transformers versions)."""
    sd = module.state_dict(keep_vars=False)
    out = []
    for key in keys:
        for cand in (key, "text_model." + key, key.removeprefix("text_model.")):
            if cand in sd:
                out.append(_aligned(sd[cand]))
                break
        else:
            raise KeyError(f"param {key!r} not in {type(module).__name__}.state_dict()")
    return out


def packed_tensors(module: torch.nn.Module, keys: list[str], quant: dict) -> list[torch.Tensor]:
    """:func:`state_tensors` for a quantized bundle's param keys: ``NAME.packed`` / ``NAME.scales``
    are ``NAME``'s weight quantized by the manifest's scheme (codes as uint32 through numpy)."""
    from .quantlab import quantize

    base = [k.removesuffix(".packed").removesuffix(".scales") for k in keys]
    plain = state_tensors(module, base)
    out, done = [], {}
    for key, b, tensor in zip(keys, base, plain, strict=True):
        if key == b:
            out.append(tensor)
            continue
        if b not in done:
            words, scales, _ = quantize(tensor, quant["bits"], quant["group_size"])
            done[b] = (_uint32(words), scales.contiguous())
        out.append(done[b][0] if key.endswith(".packed") else done[b][1])
    return out


def _uint32(words: torch.Tensor) -> torch.Tensor:
    """int64 values 0 … 2³²−1 as a uint32 tensor (two's-complement int32 bits, viewed)."""
    signed = torch.where(words >= 2**31, words - 2**32, words).to(torch.int32)
    return signed.view(torch.uint32).contiguous()


def decoded_module(module: torch.nn.Module, quant: dict) -> torch.nn.Module:
    """A copy of ``module`` whose quantized weights are what their codes decode to."""
    import copy

    from .quantlab import quantize

    names = {t["name"] for t in quant["tensors"].get("unet", [])}
    out = copy.deepcopy(module)
    with torch.no_grad():
        for name, p in out.named_parameters():
            if name in names:
                p.copy_(quantize(p, quant["bits"], quant["group_size"])[2])
    return out


# ------------------------------------------------------------------------------------------------
# models
# ------------------------------------------------------------------------------------------------
def build_models(
    manifest: dict, seed: int, device: str, dtype: torch.dtype, need=("clip", "unet", "vae")
):
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    configs = manifest.get("architecture", {}).get("configs", {})
    models = {}
    torch.manual_seed(seed)
    with torch.device(device):
        if "clip" in need:
            cfg = {k: v for k, v in configs.get("text_encoder", CLIP_L).items()}
            models["clip"] = CLIPTextModel(CLIPTextConfig(**cfg))
        torch.manual_seed(seed + 1)
        if "unet" in need:
            models["unet"] = UNet2DConditionModel.from_config(configs.get("unet", UNET))
        torch.manual_seed(seed + 2)
        if "vae" in need:
            models["vae"] = AutoencoderKL.from_config(configs.get("vae", VAE))
    for m in models.values():
        m.eval().requires_grad_(False)
    return models


# ------------------------------------------------------------------------------------------------
# timing
# ------------------------------------------------------------------------------------------------
def bench(fn, *, reps: int, warmup: int = 2, budget_s: float = 30.0, min_reps: int = 2) -> dict:
    """Median/min/max ms of ``fn`` by CUDA events; stops early once ``budget_s`` is spent."""
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    start = time.perf_counter()
    for _ in range(reps):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        b.synchronize()
        times.append(a.elapsed_time(b))
        if len(times) >= min_reps and time.perf_counter() - start > budget_s:
            break
    return {
        "median": statistics.median(times),
        "min": min(times),
        "max": max(times),
        "n": len(times),
    }


def back_to_back_s(fn, reps: int = 20, warmup: int = 3) -> float:
    """Mean seconds of ``fn`` over ``reps`` calls queued back to back between two CUDA events
    (throughput of a short kernel, without :func:`bench`'s per-call synchronisation)."""
    for _ in range(warmup):
        fn()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(reps):
        fn()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) / reps / 1e3


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """PSNR of two images in [-1, 1] after mapping to [0, 1] (as the pipeline's output)."""
    x = (a.float() / 2 + 0.5).clamp(0, 1)
    y = (b.float() / 2 + 0.5).clamp(0, 1)
    mse = torch.mean((x - y) ** 2).item()
    return float("inf") if mse == 0 else 10 * torch.log10(torch.tensor(1.0 / mse)).item()


def psnr_unclamped(a: torch.Tensor, b: torch.Tensor) -> float:
    """PSNR of the raw decoder outputs (no clamp: random weights saturate the clamped image),
    the peak being the reference's value range."""
    x, y = a.double(), b.double()
    mse = torch.mean((x - y) ** 2).item()
    peak = (y.max() - y.min()).item()
    return float("inf") if mse == 0 else 10 * torch.log10(torch.tensor(peak * peak / mse)).item()


def diff(out: torch.Tensor, ref: torch.Tensor) -> dict:
    o, r = out.double(), ref.double()
    return {
        "max_abs": (o - r).abs().max().item(),
        "ref_max_abs": r.abs().max().item(),
        "rel_l2": ((o - r).norm() / r.norm()).item(),
        "finite": bool(torch.isfinite(o).all()),
    }


# ------------------------------------------------------------------------------------------------
# pipeline (identical Python for every backend)
# ------------------------------------------------------------------------------------------------
def make_scheduler(cfg: dict):
    from diffusers import DPMSolverMultistepScheduler

    cfg = {**SCHEDULER, **cfg, "algorithm_type": "dpmsolver++", "solver_order": 2}
    cfg.pop("_class_name", None)
    return DPMSolverMultistepScheduler.from_config(cfg)


def generate(
    backend: dict,
    ids: torch.Tensor,
    latents0: torch.Tensor,
    steps: int,
    sched_cfg: dict,
    scaling: float,
    guidance: float = 7.5,
) -> torch.Tensor:
    """``backend``: ``{"clip": ids[1,77] → [1,77,768], "unet": (x, t, e) → eps, "vae": z → img}``."""
    sched = make_scheduler(sched_cfg)
    sched.set_timesteps(steps, device=latents0.device)
    emb = torch.cat([backend["clip"](ids[0:1]), backend["clip"](ids[1:2])])
    lat = latents0 * sched.init_noise_sigma
    for t in sched.timesteps:
        x = sched.scale_model_input(torch.cat([lat, lat]), t)
        eps = backend["unet"](x, t, emb)
        u, c = eps.chunk(2)
        lat = sched.step(u + guidance * (c - u), t, lat).prev_sample
    return backend["vae"](lat / scaling)


def torch_backend(clip, unet, vae) -> dict:
    return {
        "clip": lambda ids: clip(input_ids=ids.long(), return_dict=False)[0],
        "unet": lambda x, t, e: unet(x, t, encoder_hidden_states=e, return_dict=False)[0],
        "vae": lambda z: vae.decode(z, return_dict=False)[0],
    }


def tvm_backend(tclip, tunet, tvae) -> dict:
    def unet(x, t, e):
        ts = torch.as_tensor(t, device=x.device).float().reshape(-1).expand(x.shape[0]).contiguous()
        return tunet(x, ts, e)

    return {"clip": lambda ids: tclip(ids.int()), "unet": unet, "vae": lambda z: tvae(z)}


def graphed_backend(make, clip, unet, vae, ids, x, t, ehs, z) -> dict:
    """Each component captured once by ``make(fn, example_inputs)`` (static shapes: one CLIP row,
    the CFG batch, one latent), the timestep passed as a float tensor."""
    gclip = make(clip, [ids[1:2].int()])
    gunet = make(unet, [x, _steps_tensor(t, x), ehs])
    gvae = make(vae, [z])
    return {
        "clip": lambda i: gclip(i.int()),
        "unet": lambda xx, tt, ee: gunet(xx, _steps_tensor(tt, xx), ee),
        "vae": gvae,
    }


# ------------------------------------------------------------------------------------------------
# profiling
# ------------------------------------------------------------------------------------------------
CATEGORIES = (
    ("attention", ("attention", "softmax", "flash")),
    ("conv2d", ("conv2d", "conv", "implicit", "winograd", "cudnn", "xmma_fprop", "sm90_xmma")),
    ("matmul", ("matmul", "dense", "gemm", "gemv", "cutlass", "nvjet")),
    ("group_norm", ("group_norm", "groupnorm")),
    ("layer_norm", ("layer_norm", "layernorm")),
    ("memcpy/memset", ("memcpy", "memset")),
)


def category(name: str) -> str:
    low = name.lower()
    for cat, keys in CATEGORIES:
        if any(k in low for k in keys):
            return cat
    return "other (elementwise/reduce)"


def profile_kernels(fn, steps: int, title: str, top: int = 25) -> tuple[str, dict]:
    from torch.profiler import ProfilerActivity, profile

    fn()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(steps):
            fn()
        torch.cuda.synchronize()
    rows = {}
    for ev in prof.key_averages():
        t = getattr(ev, "self_device_time_total", None)
        if t is None:
            t = getattr(ev, "self_cuda_time_total", 0)
        if t and t > 0:
            r = rows.setdefault(ev.key, [0.0, 0])
            r[0] += t
            r[1] += ev.count
    total = sum(r[0] for r in rows.values())
    lines = [
        f"## {title}: {steps} steps, GPU kernel time {total / 1e3 / steps:.2f} ms/step, "
        f"{sum(r[1] for r in rows.values()) / steps:.0f} launches/step, {len(rows)} distinct kernels",
        f"{'%':>6} {'ms/step':>9} {'calls/step':>10}  category        kernel",
    ]
    for name, (t, n) in sorted(rows.items(), key=lambda kv: -kv[1][0])[:top]:
        lines.append(
            f"{100 * t / total:6.2f} {t / 1e3 / steps:9.3f} {n / steps:10.1f}  "
            f"{category(name)[:15]:15s} {name[:140]}"
        )
    cats: dict[str, list] = {}
    for name, (t, n) in rows.items():
        c = cats.setdefault(category(name), [0.0, 0])
        c[0] += t
        c[1] += n
    lines.append("by category:")
    for c, (t, n) in sorted(cats.items(), key=lambda kv: -kv[1][0]):
        lines.append(
            f"{100 * t / total:6.2f} % {t / 1e3 / steps:9.3f} ms/step {n / steps:7.1f} launches/step  {c}"
        )
    summary = {
        "total_ms_per_step": total / 1e3 / steps,
        "kernels": [
            {"name": k, "us_total": v[0], "calls": v[1]}
            for k, v in sorted(rows.items(), key=lambda kv: -kv[1][0])
        ],
        "categories": {
            c: {
                "pct": 100 * t / total,
                "ms_per_step": t / 1e3 / steps,
                "launches_per_step": n / steps,
            }
            for c, (t, n) in cats.items()
        },
    }
    return "\n".join(lines), summary


# ------------------------------------------------------------------------------------------------
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bundle", type=Path, required=True, help="dir with manifest.json and libs/")
    ap.add_argument("--target-key", default="cuda-float16", help="manifest targets key")
    ap.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "bench-gpu-out")))
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--mode", choices=("bench", "ncu"), default="bench")
    ap.add_argument("--steps", default="20,50")
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--image-reps", type=int, default=5)
    ap.add_argument("--tvm-budget-s", type=float, default=25.0, help="time cap per TVM measurement")
    ap.add_argument(
        "--compile-modes",
        default="default,reduce-overhead",
        help="torch.compile modes to measure, comma-separated (default, reduce-overhead, "
        "max-autotune); empty: none",
    )
    ap.add_argument(
        "--no-graphs", action="store_true", help="skip the CUDA-graph runs (TVM and eager)"
    )
    ap.add_argument(
        "--quantized",
        type=Path,
        nargs="*",
        default=[],
        help="quantized bundles (manifest.json + libs/): their text encoder and UNet run on the "
        "same weights, quantized here by the manifest's scheme (bench/gpu/quantlab.py's torch "
        "quantizer), against the float16 libraries",
    )
    ap.add_argument("--no-profile", action="store_true", help="skip the kernel profiles")
    ap.add_argument("--profile-steps", type=int, default=3)
    ap.add_argument("--ncu-steps", type=int, default=1)
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    manifest = json.loads((args.bundle / "manifest.json").read_text())
    target = manifest["targets"][args.target_key]
    libs = {c: args.bundle / rel for c, rel in target["libs"].items()}
    params = {c: manifest["components"][c]["params"] for c in libs}
    scaling = manifest.get("architecture", {}).get("latent", {}).get("scaling_factor", 0.18215)
    sched_cfg = manifest.get("scheduler", {}).get("config", {})
    results: dict = {"argv": sys.argv, "target": args.target_key}

    dev = args.device
    if dev == "cuda":
        props = torch.cuda.get_device_properties(0)
        say(
            f"# {props.name}, {props.multi_processor_count} SMs, {props.total_memory / 2**30:.0f} GiB; "
            f"torch {torch.__version__}, python {sys.version.split()[0]}"
        )
        results["gpu"] = props.name
    tvm = load_tvm(dev)
    tdev = tvm.cuda(0) if dev == "cuda" else tvm.cpu(0)
    import diffusers
    import transformers

    say(f"diffusers {diffusers.__version__}, transformers {transformers.__version__}")

    need = ("unet",) if args.mode == "ncu" else ("clip", "unet", "vae")
    t0 = time.perf_counter()
    models32 = build_models(manifest, args.seed, dev, torch.float32, need)
    unet32 = models32["unet"] if args.mode == "bench" else None
    import copy

    m16 = {
        k: (copy.deepcopy(v) if (k == "unet" and unet32 is not None) else v).half()
        for k, v in models32.items()
    }
    if args.mode != "bench":
        del models32
    say(
        f"random fp16 modules built on {dev} in {time.perf_counter() - t0:.1f} s (seed {args.seed})"
    )

    t0 = time.perf_counter()
    sources = {
        "text_encoder": m16.get("clip"),
        "unet": m16.get("unet"),
        "vae_decoder": m16.get("vae"),
    }
    tcomp = {
        c: TvmComponent(tvm, libs[c], state_tensors(sources[c], params[c]), tdev)
        for c in libs
        if sources.get(c) is not None
    }
    say(
        f"TVM libraries loaded ({', '.join(f'{c}: {len(params[c])} params' for c in tcomp)}) "
        f"in {time.perf_counter() - t0:.1f} s"
    )

    g = torch.Generator(device=dev).manual_seed(args.seed + 100)
    x = torch.randn(2, 4, 64, 64, generator=g, device=dev).half()
    ehs = torch.randn(2, 77, 768, generator=g, device=dev).half()
    t_step = torch.tensor(500.0, device=dev)
    ts = t_step.reshape(1).expand(2).contiguous()

    if args.mode == "ncu":
        f = lambda: tcomp["unet"](x, ts, ehs)  # noqa: E731
        f()
        torch.cuda.synchronize()
        torch.cuda.profiler.start()
        for _ in range(args.ncu_steps):
            f()
        torch.cuda.synchronize()
        torch.cuda.profiler.stop()
        say("ncu range done")
        return

    # ids: BOS, a few tokens, EOS padding (uncond = empty prompt)
    ids = torch.full((2, 77), 49407, dtype=torch.int32, device=dev)
    ids[:, 0] = 49406
    ids[1, 1:9] = torch.randint(300, 49000, (8,), generator=g, device=dev, dtype=torch.int32)
    tb = tvm_backend(tcomp["text_encoder"], tcomp["unet"], tcomp["vae_decoder"])
    eb = torch_backend(m16["clip"], m16["unet"], m16["vae"])

    # ---------------- fidelity ----------------
    with torch.no_grad():
        fid = {}
        e_t, e_e = tb["clip"](ids[1:2]), eb["clip"](ids[1:2])
        fid["clip_tvm_vs_torch16"] = diff(e_t, e_e)
        u_t = tb["unet"](x, t_step, ehs)
        u_e = eb["unet"](x, t_step, ehs)
        tf32 = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
        torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
        u_32 = unet32(x.float(), t_step, encoder_hidden_states=ehs.float(), return_dict=False)[0]
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = tf32
        fid["unet_tvm_vs_torch16"] = diff(u_t, u_e)
        fid["unet_tvm_vs_torch32"] = diff(u_t, u_32)
        fid["unet_torch16_vs_torch32"] = diff(u_e, u_32)
        del unet32, models32, u_32
        torch.cuda.empty_cache()
        z = torch.randn(1, 4, 64, 64, generator=g, device=dev).half()
        fid["vae_tvm_vs_torch16"] = diff(tb["vae"](z), eb["vae"](z))
        results["fidelity"] = fid
        for k, v in fid.items():
            say(
                f"fidelity {k:26s} max|d| {v['max_abs']:.4g} (ref max {v['ref_max_abs']:.3g}) "
                f"rel L2 {v['rel_l2']:.3g} finite {v['finite']}"
            )

        # ---------------- component timings ----------------
        timings: dict = {}
        steps = [int(s) for s in args.steps.split(",")]
        lat0 = torch.randn(1, 4, 64, 64, generator=g, device=dev).half()

        def components(name, be, budget):
            reps = args.reps
            timings[(name, "clip")] = bench(
                lambda: be["clip"](ids[1:2]), reps=reps, budget_s=budget
            )
            timings[(name, "unet")] = bench(
                lambda: be["unet"](x, t_step, ehs), reps=reps, budget_s=budget
            )
            timings[(name, "vae")] = bench(lambda: be["vae"](z), reps=reps, budget_s=budget)
            for k in ("clip", "unet", "vae"):
                say(
                    f"{name:9s} {k:5s} {timings[(name, k)]['median']:9.2f} ms (n={timings[(name, k)]['n']})"
                )

        def images(name, be, budget):
            out = {20: generate(be, ids, lat0, 20, sched_cfg, scaling)}  # also the warm-up
            for s in steps:
                fn = lambda s=s: generate(be, ids, lat0, s, sched_cfg, scaling)  # noqa: E731
                timings[(name, f"image{s}")] = bench(
                    fn, reps=args.image_reps, warmup=0 if name == "tvm" else 1, budget_s=budget
                )
                say(
                    f"{name:9s} image {s:2d} steps {timings[(name, f'image{s}')]['median']:9.1f} ms "
                    f"(n={timings[(name, f'image{s}')]['n']})"
                )
            return out

        components("eager", eb, 20)
        components("tvm", tb, args.tvm_budget_s)
        img_e = images("eager", eb, 20)
        img_t = images("tvm", tb, args.tvm_budget_s)
        fid["image20_psnr_tvm_vs_eager_db"] = psnr(img_t[20], img_e[20])
        fid["image20_psnr_unclamped_tvm_vs_eager_db"] = psnr_unclamped(img_t[20], img_e[20])
        say(
            f"fidelity image 20 steps PSNR tvm vs eager fp16: {fid['image20_psnr_tvm_vs_eager_db']:.2f} dB, "
            f"unclamped {fid['image20_psnr_unclamped_tvm_vs_eager_db']:.2f} dB "
            f"(image range {img_e[20].min().item():.2f}..{img_e[20].max().item():.2f})"
        )
        _write(args.out, results, timings)

        # ---------------- quantized bundles: same weights, packed, same kernels reading codes ----
        for qdir in args.quantized:
            qman = json.loads((qdir / "manifest.json").read_text())
            quant = qman["quantization"]
            qname = f"tvm-{quant['scheme']}"
            qtarget = next(
                t
                for t in qman["targets"].values()
                if t["kind"] == "cuda" and t["dtype"] == "float16"
            )
            t0 = time.perf_counter()
            qcomp = {
                c: TvmComponent(
                    tvm,
                    qdir / qtarget["libs"][c],
                    packed_tensors(sources[c], qman["components"][c]["params"], quant),
                    tdev,
                )
                for c in ("text_encoder", "unet")
            }
            say(f"{qname}: libraries loaded, weights quantized in {time.perf_counter() - t0:.1f} s")
            qb = tvm_backend(qcomp["text_encoder"], qcomp["unet"], tcomp["vae_decoder"])
            # the kernels against torch on the weights the codes decode to, and the quantization
            # error against the float16 library on the original weights
            unet_dq = decoded_module(m16["unet"], quant)
            u_q = qb["unet"](x, t_step, ehs)
            fid[f"unet_{qname}_vs_torch16_decoded"] = diff(
                u_q, unet_dq(x, t_step, encoder_hidden_states=ehs, return_dict=False)[0]
            )
            del unet_dq
            torch.cuda.empty_cache()
            fid[f"unet_{qname}_vs_tvm"] = diff(u_q, u_t)
            fid[f"clip_{qname}_vs_tvm"] = diff(qb["clip"](ids[1:2]), e_t)
            components(qname, qb, args.tvm_budget_s)
            img_q = images(qname, qb, args.tvm_budget_s)
            fid[f"image20_psnr_{qname}_vs_tvm_db"] = psnr(img_q[20], img_t[20])
            fid[f"image20_psnr_unclamped_{qname}_vs_tvm_db"] = psnr_unclamped(img_q[20], img_t[20])
            for k in (
                f"unet_{qname}_vs_torch16_decoded",
                f"unet_{qname}_vs_tvm",
                f"clip_{qname}_vs_tvm",
            ):
                say(f"fidelity {k:36s} rel L2 {fid[k]['rel_l2']:.3g} finite {fid[k]['finite']}")
            say(
                f"fidelity image 20 steps PSNR {qname} vs tvm float16: "
                f"{fid[f'image20_psnr_{qname}_vs_tvm_db']:.2f} dB "
                f"(unclamped {fid[f'image20_psnr_unclamped_{qname}_vs_tvm_db']:.2f} dB); "
                f"UNet step {timings[(qname, 'unet')]['median'] / timings[('tvm', 'unet')]['median']:.2f}x float16's"
            )
            del qcomp, qb
            torch.cuda.empty_cache()
            _write(args.out, results, timings)

        # ---------------- CUDA graphs: the bundle through packer's capture, torch eager captured ----
        if not args.no_graphs:
            ref = {
                "clip": tb["clip"](ids[1:2]).clone(),
                "unet": tb["unet"](x, t_step, ehs).clone(),
                "vae": tb["vae"](z).clone(),
            }
            t0 = time.perf_counter()
            tg = graphed_backend(
                lambda comp, ex: TvmGraphed(tcomp[comp], ex),
                "text_encoder",
                "unet",
                "vae_decoder",
                ids,
                x,
                t_step,
                ehs,
                z,
            )
            say(f"TVM components captured as CUDA graphs in {time.perf_counter() - t0:.1f} s")
            # The ungraphed call again: if TVM's own repeat differs, graphs cannot be bit-identical.
            again = {
                "clip": tb["clip"](ids[1:2]).clone(),
                "unet": tb["unet"](x, t_step, ehs).clone(),
                "vae": tb["vae"](z).clone(),
            }
            graphed = {
                "clip": tg["clip"](ids[1:2]),
                "unet": tg["unet"](x, t_step, ehs),
                "vae": tg["vae"](z),
            }
            fid["tvm_graph_bit_identical"] = {k: torch.equal(graphed[k], ref[k]) for k in ref}
            fid["tvm_repeat_bit_identical"] = {k: torch.equal(again[k], ref[k]) for k in ref}
            fid["tvm_graph_max_abs_diff"] = {
                k: float((graphed[k].float() - ref[k].float()).abs().max()) for k in ref
            }
            say(
                f"fidelity TVM under CUDA graphs vs TVM, bit-identical: {fid['tvm_graph_bit_identical']}"
                f" (max |d| {fid['tvm_graph_max_abs_diff']}); TVM called again vs TVM:"
                f" {fid['tvm_repeat_bit_identical']}"
            )
            components("tvm-graph", tg, args.tvm_budget_s)
            img_tg = images("tvm-graph", tg, args.tvm_budget_s)
            fid["image20_tvm_graph_equal_tvm"] = bool(torch.equal(img_tg[20], img_t[20]))
            say(f"fidelity image 20 steps TVM graph == TVM: {fid['image20_tvm_graph_equal_tvm']}")
            eager_fns = {
                "clip": lambda i: m16["clip"](input_ids=i.long(), return_dict=False)[0],
                "unet": lambda xx, tt, ee: m16["unet"](
                    xx, tt, encoder_hidden_states=ee, return_dict=False
                )[0],
                "vae": lambda zz: m16["vae"].decode(zz, return_dict=False)[0],
            }
            t0 = time.perf_counter()
            eg = graphed_backend(
                lambda comp, ex: TorchGraphed(eager_fns[comp], ex),
                "clip",
                "unet",
                "vae",
                ids,
                x,
                t_step,
                ehs,
                z,
            )
            say(
                f"torch eager components captured as CUDA graphs in {time.perf_counter() - t0:.1f} s"
            )
            components("eager-graph", eg, 20)
            img_eg = images("eager-graph", eg, 20)
            fid["image20_psnr_eager_graph_vs_eager_db"] = psnr(img_eg[20], img_e[20])
            _write(args.out, results, timings)
            say(_table(timings))

        # ---------------- profile (before torch.compile, so it survives a timeout) -------------
        if not args.no_profile:
            text_t, prof_t = profile_kernels(
                lambda: tb["unet"](x, t_step, ehs), args.profile_steps, "TVM UNet step"
            )
            text_e, prof_e = profile_kernels(
                lambda: eb["unet"](x, t_step, ehs), 10, "torch eager UNet step", top=15
            )
            text_v, prof_v = profile_kernels(lambda: tb["vae"](z), 1, "TVM VAE decode", top=12)
            (args.out / "profile_unet.txt").write_text("\n\n".join((text_t, text_e, text_v)) + "\n")
            (args.out / "profile_unet.json").write_text(
                json.dumps({"tvm_unet": prof_t, "eager_unet": prof_e, "tvm_vae": prof_v}, indent=1)
            )
            say(text_t)
            say(text_e)
            say(text_v)

        # ---------------- torch.compile, in each mode asked for ----------------
        for mode in [m for m in args.compile_modes.split(",") if m]:
            name = COMPILE_NAMES[mode]
            t0 = time.perf_counter()
            # channels_last copies for the CUDA-graph modes (what a user tuning for speed does);
            # the default mode compiles the eager modules as they are
            unet_m, vae_m = m16["unet"], m16["vae"]
            if mode != "default":
                unet_m = copy.deepcopy(unet_m).to(memory_format=torch.channels_last)
                vae_m = copy.deepcopy(vae_m).to(memory_format=torch.channels_last)
            unet_c = torch.compile(unet_m, mode=mode)
            vae_c = torch.compile(lambda zz, v=vae_m: v.decode(zz, return_dict=False)[0], mode=mode)
            cb = {
                "clip": eb["clip"],
                "unet": _step_marked(
                    lambda xx, tt, ee, u=unet_c: u(
                        xx, _steps_tensor(tt, xx), encoder_hidden_states=ee, return_dict=False
                    )[0]
                ),
                "vae": _step_marked(vae_c),
            }
            cb["unet"](x, t_step, ehs)
            cb["vae"](z)
            torch.cuda.synchronize()
            say(
                f"torch.compile mode={mode} warm-up (UNet + VAE decode) {time.perf_counter() - t0:.0f} s"
            )
            components(name, cb, 20)
            img_c = images(name, cb, 20)
            fid[f"image20_psnr_{name}_vs_eager_db"] = psnr(img_c[20], img_e[20])
            fid[f"image20_psnr_tvm_vs_{name}_db"] = psnr(img_t[20], img_c[20])
            fid[f"image20_psnr_unclamped_tvm_vs_{name}_db"] = psnr_unclamped(img_t[20], img_c[20])
            say(
                f"fidelity image 20 steps PSNR {name} vs eager: {fid[f'image20_psnr_{name}_vs_eager_db']:.2f} dB, "
                f"tvm vs {name}: {fid[f'image20_psnr_tvm_vs_{name}_db']:.2f} dB "
                f"(unclamped {fid[f'image20_psnr_unclamped_tvm_vs_{name}_db']:.2f} dB)"
            )
            _write(args.out, results, timings)
            say(_table(timings))
            del unet_c, vae_c, cb
            torch.cuda.empty_cache()

    _write(args.out, results, timings)
    say(_table(timings))


COMPILE_NAMES = {
    "default": "compiled",
    "reduce-overhead": "compiled-ro",
    "max-autotune": "compiled-ma",
}
BACKENDS = (
    "tvm",
    "tvm-graph",
    "tvm-q4f16",
    "tvm-q8f16",
    "eager",
    "eager-graph",
    "compiled",
    "compiled-ro",
    "compiled-ma",
)


def _step_marked(fn):
    """A torch.compile'd call whose CUDA-graph outputs are cloned before the next replay."""

    def call(*a):
        torch.compiler.cudagraph_mark_step_begin()
        return fn(*a).clone()

    return call


def _write(out: Path, results: dict, timings: dict) -> None:
    results["timings_ms"] = {f"{n}/{k}": v for (n, k), v in timings.items()}
    (out / "bench_gpu.json").write_text(json.dumps(results, indent=1))


def _table(t: dict) -> str:
    names = [n for n in BACKENDS if (n, "unet") in t]
    keys = [k for k in ("clip", "unet", "vae", "image20", "image50") if ("tvm", k) in t]
    label = {
        "clip": "CLIP (1×77)",
        "unet": "UNet step (2×4×64×64)",
        "vae": "VAE decode 512²",
        "image20": "image 512², 20 DPM++",
        "image50": "image 512², 50 DPM++",
    }
    lines = [f"{'median ms':24s}" + "".join(f"{n:>12s}" for n in names)]
    for k in keys:
        lines.append(
            f"{label[k]:24s}"
            + "".join(
                f"{t[(n, k)]['median']:12.2f}" if (n, k) in t else f"{'-':>12s}" for n in names
            )
        )
    peers = [n for n in names if not n.startswith("tvm")]
    for ours in [n for n in names if n.startswith("tvm")]:
        lines.append(f"{ours + ' / peer':24s}" + "".join(f"{n:>12s}" for n in peers))
        for k in keys:
            lines.append(
                f"{'  ' + label[k]:24s}"
                + "".join(
                    f"{t[(ours, k)]['median'] / t[(n, k)]['median']:11.2f}×"
                    if (n, k) in t and (ours, k) in t
                    else f"{'-':>12s}"
                    for n in peers
                )
            )
    for ours in [n for n in names if n.startswith("tvm")]:
        lines.append(
            f"{ours} UNet: {SD_UNET_TFLOP / (t[(ours, 'unet')]['median'] / 1e3):.1f} TFLOP/s "
            f"(of ~{SD_UNET_TFLOP} TFLOP per CFG step)"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
