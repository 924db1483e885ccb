"""The generation parameters a PNG carries (formats/README.md, "Image metadata").

One ``iTXt`` chunk per key (UTF-8, uncompressed, empty language tag and translated keyword),
all before the first ``IDAT``, plus ``parameters`` in the text form A1111 and ComfyUI users'
tools read. runtime-web writes the same chunks for the same request, so an image says how to
make it again wherever it was made.

>>> meta = ImageMetadata("a castle", "", 42, 20, 7.5, "dpm++", "org/name@1.0.0", None, 512, 512,
...                      "llvm-float32", "sdpack 0.1.0")
>>> meta.parameters().splitlines()[2]
'Steps: 20, Sampler: dpm++, CFG scale: 7.5, Seed: 42, Size: 512x512, Model: org/name@1.0.0'
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

KEYS = (
    "prompt",
    "negative_prompt",
    "seed",
    "steps",
    "guidance",
    "scheduler",
    "model",
    "commit",
    "width",
    "height",
    "variant",
    "Software",
    "parameters",
)
"""Every key written, in the order written; ``commit`` only when known."""


def number_text(value: float) -> str:
    """``value`` as JavaScript's ``String(number)`` writes it: the shortest decimal that reads
    back as the same float64, without a trailing ``.0`` (``7.5``, ``7``, ``0.1``, ``1e-7``,
    ``1e+21``). Both runtimes then write the same bytes for the same guidance."""
    value = float(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "Infinity" if value > 0 else "-Infinity"
    if value == 0:
        return "0"
    if 1e-6 <= abs(value) < 1e21:
        return np.format_float_positional(value, unique=True, trim="-")
    return np.format_float_scientific(value, unique=True, trim="-", exp_digits=1)


@dataclass(frozen=True)
class ImageMetadata:
    """What made an image: the request as it ran (defaults resolved) and the model it ran on."""

    prompt: str
    negative_prompt: str
    seed: int
    steps: int
    guidance: float
    scheduler: str  # the CLI's name: dpm++, euler, euler-a, ddim, pndm
    model: str  # ORG/NAME@VERSION
    commit: str | None  # the Hub commit the bundle was pinned to; None when unknown
    width: int
    height: int
    variant: str  # the manifest target key that ran, e.g. llvm-float32
    software: str  # "sdpack <version>"

    def parameters(self) -> str:
        """The A1111/ComfyUI form: prompt, ``Negative prompt:`` line, then ``Key: value`` pairs."""
        return (
            f"{self.prompt}\nNegative prompt: {self.negative_prompt}\n"
            f"Steps: {self.steps}, Sampler: {self.scheduler}, CFG scale: {number_text(self.guidance)}, "
            f"Seed: {self.seed}, Size: {self.width}x{self.height}, Model: {self.model}"
        )

    def text(self) -> list[tuple[str, str]]:
        """``(key, value)`` for every chunk, in :data:`KEYS` order."""
        values = {
            "prompt": self.prompt,
            "negative_prompt": self.negative_prompt,
            "seed": str(int(self.seed)),
            "steps": str(int(self.steps)),
            "guidance": number_text(self.guidance),
            "scheduler": self.scheduler,
            "model": self.model,
            "commit": self.commit,
            "width": str(int(self.width)),
            "height": str(int(self.height)),
            "variant": self.variant,
            "Software": self.software,
            "parameters": self.parameters(),
        }
        return [(key, values[key]) for key in KEYS if values[key] is not None]

    def png_info(self):
        """A Pillow ``PngInfo`` holding the chunks (Pillow writes them before the image data)."""
        from PIL.PngImagePlugin import PngInfo

        info = PngInfo()
        for key, value in self.text():
            info.add_itxt(key, value, lang="", tkey="", zip=False)
        return info
