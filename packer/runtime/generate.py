"""Generate an image from a bundle natively with the TVM runtime (no torch model involved).

The loop is the one ``diffusers.StableDiffusionPipeline`` runs — tokenize, encode prompt and
negative prompt, denoise a batch of two (unconditional, conditional) with classifier-free
guidance, decode with the VAE — but every network call goes to the bundle's compiled libraries
and the initial latents come from the bundle spec's seeded noise generator.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from packer.bundle import Bundle
from packer.errors import UsageError
from packer.runtime import noise, schedulers

DEVICE_KINDS = {"cpu": "llvm", "cuda": "cuda", "opencl": "opencl"}

MACHINE_ARCHS = {"aarch64": "aarch64", "arm64": "aarch64", "x86_64": "x86-64", "amd64": "x86-64"}
"""``platform.machine()`` → the prefix a variant's ``requirements.arch`` starts with when its
host code is for that machine (``x86-64-v3``, ``aarch64``)."""


@dataclass
class Request:
    prompt: str
    negative_prompt: str = ""
    seed: int = 0
    steps: int | None = None
    guidance: float | None = None
    scheduler: str | None = None
    latents: np.ndarray | None = None


class Pipeline:
    """A loaded bundle: tokenizer, three compiled components with their weights on ``device``."""

    def __init__(
        self, bundle: Bundle, device: str = "cpu", dtype: str | None = None, cuda_graph: bool = True
    ):
        from tokenizers import Tokenizer

        from packer.runtime.module import ComponentRunner

        self.bundle = bundle
        m = bundle.manifest
        self.variant_key, self.variant = self._pick_variant(m, device, dtype)
        self.float = np.dtype(self.variant["dtype"])
        tok = m["tokenizer"]
        self.tokenizer = Tokenizer.from_str(bundle.read(tok["files"][0]).decode())
        self.max_length = tok["max_length"]
        self.pad_id = tok.get("pad_token_id", tok.get("eos_token_id", 0))
        # On cuda, a variant that allows it runs each component call as a replayed CUDA graph.
        self.cuda_graph = bool(cuda_graph and device == "cuda" and self.variant.get("cuda_graph"))
        self.runners = {}
        for comp, rel in self.variant["libs"].items():
            bundle.read(rel)  # verify before loading
            params = bundle.load_params(comp)
            order = m["components"][comp]["params"]
            self.runners[comp] = ComponentRunner(
                bundle.root / rel,
                [param_for(params.pop(n), self.float) for n in order],
                device,
                cuda_graph=self.cuda_graph,
            )

    @staticmethod
    def _pick_variant(m: dict, device: str, dtype: str | None) -> tuple[str, dict]:
        """``(manifest key, target entry)`` of the library set to run: the device's kind, in
        ``dtype`` if given, preferring the dtype the weights are stored in."""
        kind = DEVICE_KINDS.get(device)
        if kind is None:
            raise UsageError(f"unknown device {device!r}", f"use one of: {', '.join(DEVICE_KINDS)}")
        found = [
            (k, t)
            for k, t in m["targets"].items()
            if t["kind"] == kind and (dtype is None or t["dtype"] == dtype) and runs_here(t)
        ]
        if kind == "opencl" and found:
            found = _with_device_features(found)
        if not found:
            have = ", ".join(sorted(m["targets"])) or "none"
            here = " for this machine" if kind == "opencl" else ""
            raise UsageError(
                f"bundle has no {kind} library{here}{' for ' + dtype if dtype else ''} (it has: {have})",
                "repack with --targets including "
                + (
                    "opencl (x86-64 hosts) or opencl-mali (aarch64 boards)"
                    if kind == "opencl"
                    else kind
                ),
            )
        return sorted(found, key=lambda kt: (kt[1]["dtype"] != m["dtype"], kt[0]))[0]

    def token_ids(self, text: str) -> np.ndarray:
        """CLIP ids as diffusers makes them: truncated to max_length (keeping the end token), padded."""
        ids = self.tokenizer.encode(text).ids
        if len(ids) > self.max_length:
            ids = ids[: self.max_length - 1] + ids[-1:]
        ids = ids + [self.pad_id] * (self.max_length - len(ids))
        return np.asarray(ids, dtype=np.int32)[None]

    def encode_prompt(self, text: str) -> np.ndarray:
        return self.runners["text_encoder"](self.token_ids(text))

    def __call__(
        self, req: Request, on_step: Callable[[int, int], None] | None = None
    ) -> np.ndarray:
        """The decoded image as float32 [H, W, 3] in [0, 1]."""
        m = self.bundle.manifest
        lat = m["architecture"]["latent"]
        sched_cfg = m["scheduler"]
        scheduler = schedulers.make(req.scheduler or sched_cfg["default"], sched_cfg["config"])
        steps = req.steps or sched_cfg["steps"]
        guidance = sched_cfg["guidance"] if req.guidance is None else req.guidance
        shape = (1, lat["channels"], lat["height"], lat["width"])
        latents = (
            noise.latents(req.seed, shape)
            if req.latents is None
            else np.asarray(req.latents, np.float32)
        )
        if latents.shape != shape:
            raise UsageError(
                f"--latents has shape {list(latents.shape)}, the bundle needs {list(shape)}"
            )
        import torch

        hidden = np.concatenate(
            [self.encode_prompt(req.negative_prompt), self.encode_prompt(req.prompt)]
        )
        scheduler.set_timesteps(steps)
        x = torch.from_numpy(latents) * scheduler.init_noise_sigma
        with schedulers.spec_step_noise(scheduler, req.seed):  # ancestral noise from the spec
            for i, t in enumerate(scheduler.timesteps):
                x_in = scheduler.scale_model_input(torch.cat([x, x]), t)
                ts = np.full((2,), float(t), dtype=np.float32)
                pred = self.runners["unet"](
                    x_in.numpy().astype(self.float), ts, hidden.astype(self.float)
                )
                uncond, cond = torch.from_numpy(pred.astype(np.float32)).chunk(2)
                guided = uncond + guidance * (cond - uncond)
                x = scheduler.step(guided, t, x, return_dict=False)[0]
                if on_step:
                    on_step(i + 1, len(scheduler.timesteps))
        z = (x.numpy() / lat["scaling_factor"]).astype(self.float)
        image = self.runners["vae_decoder"](z).astype(np.float32)[0]
        return np.clip(image / 2 + 0.5, 0, 1).transpose(1, 2, 0)


def _with_device_features(found: list[tuple[str, dict]]) -> list[tuple[str, dict]]:
    """The OpenCL variants whose ``requirements.features`` (``cl_khr_fp16``) the device has."""
    from packer.runtime.opencl_runtime import device_extensions

    have = device_extensions()
    usable = [(k, t) for k, t in found if set(t["requirements"].get("features", [])) <= have]
    if not usable:
        need = sorted({f for _, t in found for f in t["requirements"].get("features", [])} - have)
        raise UsageError(
            f"this OpenCL device lacks {', '.join(need)}, which every opencl library "
            f"of the bundle needs ({', '.join(k for k, _ in found)})",
            "repack with an fp32 opencl variant (packer pack --targets opencl makes "
            "both), or run on a device that has it",
        )
    return usable


def runs_here(target: dict) -> bool:
    """Whether a variant's host code is for this machine: its ``requirements.arch`` names a CPU
    architecture (``x86-64-v3``, ``aarch64``) this machine has, or none (a GPU arch, or none)."""
    import platform

    arch = target.get("requirements", {}).get("arch", "")
    known = set(MACHINE_ARCHS.values())
    if not any(arch.startswith(a) for a in known):
        return True
    here = MACHINE_ARCHS.get(platform.machine().lower())
    return here is not None and arch.startswith(here)


def param_for(array: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """A stored parameter as the variant's ``main`` takes it: floating-point tensors in the
    variant's dtype (float16 weights widen exactly for a float32 variant), others as stored."""
    if array.dtype.kind == "f" and array.dtype != dtype:
        return array.astype(dtype)
    return array


def to_uint8(image: np.ndarray) -> np.ndarray:
    """diffusers' conversion of a [0, 1] float image to 8-bit."""
    return (image * 255).round().astype(np.uint8)


def save_png(image: np.ndarray, path: Path, metadata=None) -> Path:
    """Write ``image`` as an 8-bit RGB PNG, with ``metadata``'s text chunks when given
    (:class:`packer.runtime.image_metadata.ImageMetadata`)."""
    from PIL import Image

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    pnginfo = metadata.png_info() if metadata is not None else None
    Image.fromarray(to_uint8(image)).save(path, format="PNG", pnginfo=pnginfo)
    return path
