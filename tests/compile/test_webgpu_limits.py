"""A full-size SD1.5 fits WebGPU's default limits: every buffer of the webgpu libraries at 512 px
(64² latents) is at most 128 MiB in float16 (the default ``maxStorageBufferBindingSize``) and
256 MiB in float32 (the default ``maxBufferSize``), measured on the static memory plan of the real
components (real configs, random weights) as the packer records ``max_buffer_bytes``.

Split attention (what other targets build) would materialise the UNet's 64² self-attention
scores: 512 MiB in float16, 1 GiB in float32.
"""

from __future__ import annotations

import pytest
import torch

from bench.full_size import full_size
from packer.compile import pipeline
from packer.compile.export import export_component
from packer.compile.targets import get_target

pytestmark = pytest.mark.slow

MiB = 1 << 20
LIMITS = {"float16": 128 * MiB, "float32": 256 * MiB}


@pytest.mark.parametrize("component", ["unet", "vae_decoder", "text_encoder"])
def test_full_size_webgpu_buffers_fit_the_default_limits(component):
    web = get_target("webgpu")
    torch.manual_seed(0)
    exported = export_component(component, full_size(component), (64, 64))
    for dtype, limit in LIMITS.items():
        planned = pipeline.plan(pipeline.prepare_for(exported.mod, dtype, web), web)
        largest = pipeline.max_buffer_bytes(planned)
        assert largest <= limit, f"{component} {dtype}: {largest / MiB:.1f} MiB"
