"""`packer generate BUNDLE --prompt ...`: one image from a bundle with the native TVM runtime."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from packer.errors import UsageError
from packer.support import progress


@dataclass
class GenerateArgs:
    bundle: Path
    prompt: str
    out: Path
    negative_prompt: str = ""
    seed: int = 0
    steps: int | None = None
    guidance: float | None = None
    scheduler: str | None = None
    device: str = "cpu"
    latents: Path | None = None
    cuda_graph: bool = True


@dataclass
class GenerateResult:
    out: Path
    seconds: float
    size: tuple[int, int]
    variant: str

    def display(self) -> str:
        return f"wrote {self.out} ({self.size[1]}x{self.size[0]}, {self.variant}, {self.seconds:.1f} s)"

    def as_json(self) -> dict:
        return {
            "command": "generate",
            "out": str(self.out),
            "width": int(self.size[1]),
            "height": int(self.size[0]),
            "variant": self.variant,
            "seconds": round(self.seconds, 3),
        }


def generate(args: GenerateArgs) -> GenerateResult:
    """One image, written with its generation parameters (:mod:`packer.runtime.image_metadata`)."""
    from packer import __version__
    from packer.bundle import Bundle
    from packer.runtime import schedulers
    from packer.runtime.generate import Pipeline, Request, save_png
    from packer.runtime.image_metadata import ImageMetadata

    if args.scheduler is not None and args.scheduler not in schedulers.NAMES:
        raise UsageError(
            f"unknown scheduler {args.scheduler!r}", f"choose one of {', '.join(schedulers.NAMES)}"
        )
    if not 0 <= args.seed < 2**64:
        raise UsageError(f"--seed {args.seed} is out of range", "use a seed between 0 and 2^64-1")
    if args.steps is not None and not 1 <= args.steps <= 1000:
        raise UsageError(f"--steps {args.steps} is out of range", "use between 1 and 1000 steps")
    latents = None
    if args.latents is not None:
        try:
            latents = np.load(args.latents, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise UsageError(
                f"cannot read --latents {args.latents}: {exc}", "pass a .npy float32 array"
            ) from None
    start = time.perf_counter()
    pipe = Pipeline(Bundle.open(args.bundle), device=args.device, cuda_graph=args.cuda_graph)
    m = pipe.bundle.manifest
    sched = m["scheduler"]
    req = Request(
        args.prompt,
        args.negative_prompt,
        args.seed,
        args.steps or sched["steps"],
        sched["guidance"] if args.guidance is None else args.guidance,
        args.scheduler or sched["default"],
        latents,
    )
    with progress.task("denoise", req.steps) as bar:
        image = pipe(req, on_step=lambda i, n: bar.advance())
    metadata = ImageMetadata(
        req.prompt,
        req.negative_prompt,
        req.seed,
        req.steps,
        req.guidance,
        req.scheduler,
        f"{m['model']['id']}@{m['model']['version']}",
        pinned_commit(pipe.bundle),
        image.shape[1],
        image.shape[0],
        pipe.variant_key,
        f"sdpack {__version__}",
    )
    save_png(image, args.out, metadata)
    return GenerateResult(args.out, time.perf_counter() - start, image.shape[:2], pipe.variant_key)


def pinned_commit(bundle) -> str | None:
    """The Hub commit ``bundle`` was pulled from: the lock record ``packer pull`` leaves in the
    folder, if it pins this very manifest (its sha256 and model id and version); else None."""
    from packer.errors import SdpackError
    from packer.hub import lock
    from packer.support import canonical

    path = bundle.root / lock.BUNDLE_LOCK
    if not path.is_file():
        return None
    try:
        record = lock.read(path)
    except SdpackError:
        return None
    model = bundle.manifest["model"]
    pinned = (record["manifest_sha256"], record["repo"], record["version"])
    here = (canonical.sha256_file(bundle.root / "manifest.json"), model["id"], model["version"])
    return record["commit"] if pinned == here else None
