"""How much do q4f16 / q8f16 cost in fidelity, and how big are the bundles?

    python -m bench.quant [--schemes q4f16,q8f16] [--weights random,trained-like] [--outputs]
                          [--image] [--device cpu|cuda] [--steps 20] [--latent 64] [--seed 0]

Full-size SD1.5 components (bench/sd15.py configs) with seeded weights, two kinds:

* ``random``: the models as diffusers/transformers initialise them under ``torch.manual_seed``
  (what bench/pack.py packs): light-tailed, every input channel alike.
* ``trained-like``: every weight the schemes quantize is redrawn from a Student-t with 3 degrees
  of freedom (heavy tails: kurtosis far above a Gaussian's), rescaled to the layer's initial
  standard deviation, and 1 % of its input channels (columns of the ``[O, K]`` view, chosen per
  layer with the seed) multiplied by 20 — the outlier features trained transformers and UNets
  show. A group that holds an outlier column gets a scale 20× too coarse for its other values:
  the hard case for group quantization.

Reported per scheme and kind (all numpy/torch, the numpy reference quantizer of
packer.bundle.quantize, which writes the bundle bytes; the compiled kernels reproduce it to 1e-6,
tests/compile/test_quantize.py):

* weight error per component: ``‖Ŵ − W‖ / ‖W‖`` over all quantized weights (W the float16 weights
  an unquantized bundle stores), and the worst single layer;
* ``--outputs``: component output error vs the float16 weights, ``‖y_q − y‖ / ‖y‖``, on seeded
  inputs (text encoder on 77 token ids, UNet on a batch of 2 at ``--latent`` and t = 500);
* ``--image``: the whole pipeline (DPM++ ``--steps`` steps, guidance 7.5, same seed and latents)
  with quantized vs float16 weights, PSNR of the 8-bit images;
* stored weight bytes of the bundle (shards as ``packer pack`` writes them: shuffle + zstd 3)
  for the three components, quantized vs float16; compiled libraries and the tokenizer come on top
  (a few MiB per variant).

The forward passes run in torch on ``--device`` (a full image on 2 CPU cores takes many minutes:
use ``--device cuda`` on the lent GPU, or fewer ``--steps`` and a smaller ``--latent``).
"""

from __future__ import annotations

import argparse
import math
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from packer.bundle import BundleWriter
from packer.bundle import quantize as qz
from packer.compile.quantize import quantizable
from packer.ingest import architecture

from .sd15 import CLIP_L, UNET, VAE

COMPONENTS = {"text_encoder": ("text_encoder", CLIP_L), "unet": ("unet", UNET), "vae": ("vae", VAE)}
OUTLIER_FRACTION, OUTLIER_GAIN, T_DOF = 0.01, 20.0, 3


def build(seed: int) -> dict[str, torch.nn.Module]:
    torch.manual_seed(seed)
    return {
        name: architecture.construct(kind, cfg, device="cpu").eval()
        for name, (kind, cfg) in COMPONENTS.items()
    }


def trained_like(models: dict, scheme: qz.Scheme, seed: int) -> None:
    """Redraw the weights the scheme quantizes (see the module doc), in place."""
    rng = np.random.default_rng(seed)
    with torch.no_grad():
        for component in ("text_encoder", "unet"):
            for name, p in models[component].named_parameters():
                if not quantizable(component, name, p.shape, scheme):
                    continue
                std = float(p.float().std()) or 1e-3
                w = rng.standard_t(T_DOF, size=p.shape).astype(np.float32)
                w *= std / w.std()
                view = w.reshape(p.shape[0], -1)
                cols = rng.choice(
                    view.shape[1], max(1, int(view.shape[1] * OUTLIER_FRACTION)), replace=False
                )
                view[:, cols] *= OUTLIER_GAIN
                p.copy_(torch.from_numpy(view.reshape(p.shape)))


def quantized_state(models: dict, scheme: qz.Scheme, keep_dequantized: bool):
    """Per component: float16 state, quantized weights ``{name: (dequantized float32 or None,
    packed, scales)}``, per-layer squared errors and norms."""
    out = {}
    for component, model in models.items():
        fp16, deq, errors = {}, {}, {}
        for name, p in model.state_dict().items():
            if not p.is_floating_point():
                continue
            w16 = p.detach().numpy().astype(np.float16)
            fp16[name] = w16
            if component != "vae" and quantizable(component, name, w16.shape, scheme):
                packed, scales = qz.quantize(w16, scheme)
                back = qz.dequantize(packed, scales, w16.shape, scheme)
                w32 = w16.astype(np.float32)
                errors[name] = (float(np.sum((back - w32) ** 2)), float(np.sum(w32**2)))
                deq[name] = (back if keep_dequantized else None, packed, scales)
        out[component] = (fp16, deq, errors)
    return out


def weight_error(errors: dict) -> tuple[float, float, str]:
    total = math.sqrt(sum(e for e, _ in errors.values()) / sum(n for _, n in errors.values()))
    worst = max(errors, key=lambda k: errors[k][0] / max(errors[k][1], 1e-30))
    return total, math.sqrt(errors[worst][0] / errors[worst][1]), worst


def stored_bytes(states: dict, quantized: bool) -> dict[str, int]:
    """Weight bytes as ``packer pack`` stores them (what each library takes: VAE decoder half only)."""
    sizes = {}
    with tempfile.TemporaryDirectory() as tmp:
        writer = BundleWriter(Path(tmp) / "b")
        with writer:
            for component, (fp16, deq, _) in states.items():
                keep = (
                    (lambda k: k.startswith(("decoder.", "post_quant_conv.")))
                    if component == "vae"
                    else (lambda k: True)
                )
                params = []
                for name, w in fp16.items():
                    if not keep(name):
                        continue
                    if quantized and name in deq:
                        _, packed, scales = deq[name]
                        params += list(zip(qz.stored_names(name), (packed, scales)))
                    else:
                        params.append((name, w))
                before = sum(e["size"] for e in writer._entries.values())
                writer.add_weights(component, params)
                sizes[component] = sum(e["size"] for e in writer._entries.values()) - before
    return sizes


def load(model: torch.nn.Module, state: dict, deq: dict | None, device: str) -> torch.nn.Module:
    weights = {
        k: torch.from_numpy(deq[k][0] if deq and k in deq else v.astype(np.float32))
        for k, v in state.items()
    }
    model.load_state_dict(weights, strict=False)
    return model.to(device)


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).norm() / b.float().norm())


@torch.no_grad()
def output_errors(models, states, device: str, latent: int, seed: int) -> dict[str, float]:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, CLIP_L["vocab_size"], (1, 77), generator=g)
    sample = torch.randn(2, 4, latent, latent, generator=g)
    ehs = torch.randn(2, 77, 768, generator=g)
    t = torch.tensor([500.0, 500.0])
    out = {}
    te, unet = models["text_encoder"], models["unet"]
    ys = [
        load(te, states["text_encoder"][0], deq, device)(ids.to(device)).last_hidden_state
        for deq in (None, states["text_encoder"][1])
    ]
    out["text_encoder"] = rel(ys[1], ys[0])
    ys = [
        load(unet, states["unet"][0], deq, device)(
            sample.to(device), t.to(device), ehs.to(device), return_dict=False
        )[0]
        for deq in (None, states["unet"][1])
    ]
    out["unet"] = rel(ys[1], ys[0])
    return out


@torch.no_grad()
def image(
    models, states, deq_on: bool, device: str, steps: int, latent: int, seed: int
) -> np.ndarray:
    from diffusers import DPMSolverMultistepScheduler

    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(
        0, CLIP_L["vocab_size"], (2, 77), generator=g
    )  # [uncond, cond] stand-in prompts
    x = torch.randn(1, 4, latent, latent, generator=g).to(device)
    te = load(
        models["text_encoder"],
        states["text_encoder"][0],
        states["text_encoder"][1] if deq_on else None,
        device,
    )
    unet = load(models["unet"], states["unet"][0], states["unet"][1] if deq_on else None, device)
    vae = load(models["vae"], states["vae"][0], None, device)
    hidden = te(ids.to(device)).last_hidden_state
    sched = DPMSolverMultistepScheduler(
        num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear"
    )
    sched.set_timesteps(steps)
    x = x * sched.init_noise_sigma
    for t in sched.timesteps:
        pred = unet(
            torch.cat([x, x]), torch.stack([t, t]).float().to(device), hidden, return_dict=False
        )[0]
        uncond, cond = pred.chunk(2)
        x = sched.step(uncond + 7.5 * (cond - uncond), t, x).prev_sample
    img = vae.decode(x / VAE["scaling_factor"]).sample
    return ((img[0].permute(1, 2, 0).float().cpu().numpy() + 1) * 127.5).clip(0, 255).round()


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a - b) ** 2))
    return float("inf") if mse == 0 else 10 * math.log10(255**2 / mse)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--schemes", default="q4f16,q8f16")
    ap.add_argument("--weights", default="random,trained-like")
    ap.add_argument(
        "--outputs", action="store_true", help="component output errors (torch forward passes)"
    )
    ap.add_argument("--image", action="store_true", help="whole-pipeline image PSNR vs float16")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--latent", type=int, default=64)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.set_grad_enabled(False)
    base = None
    for kind in args.weights.split(","):
        for name in args.schemes.split(","):
            scheme = qz.get_scheme(name)
            start = time.perf_counter()
            models = build(args.seed)
            if kind == "trained-like":
                trained_like(models, scheme, args.seed)
            forward = args.outputs or args.image
            states = quantized_state(models, scheme, keep_dequantized=forward)
            if not forward:
                models = None  # the float16 states are all the rest needs
            print(f"## {name}, {kind} weights (seed {args.seed})")
            for component in ("text_encoder", "unet"):
                total, worst, layer = weight_error(states[component][2])
                n = len(states[component][2])
                print(
                    f"  {component:<13} {n} weights quantized; weight rel. error {total:.4f} (worst {worst:.4f}: {layer})"
                )
            if kind == "random" and base is None:
                base = stored_bytes(states, quantized=False)
                print(f"  stored float16: {fmt(base)}")
            sizes = stored_bytes(states, quantized=True)
            print(f"  stored {name}: {fmt(sizes)}")
            if args.outputs:
                for component, err in output_errors(
                    models, states, args.device, args.latent, args.seed
                ).items():
                    print(f"  {component:<13} output rel. error vs float16 weights {err:.4f}")
            if args.image:
                ref = image(models, states, False, args.device, args.steps, args.latent, args.seed)
                got = image(models, states, True, args.device, args.steps, args.latent, args.seed)
                print(
                    f"  image PSNR vs float16 ({args.steps} steps, latent {args.latent}): {psnr(got, ref):.2f} dB"
                )
            print(f"  ({time.perf_counter() - start:.0f} s)")
            del models, states


def fmt(sizes: dict[str, int]) -> str:
    parts = ", ".join(f"{c} {s / 2**20:.0f} MiB" for c, s in sizes.items())
    total = sum(sizes.values())
    return f"{parts}; total {total / 1e9:.3f} GB ({total / 2**30:.3f} GiB)"


if __name__ == "__main__":
    main()
