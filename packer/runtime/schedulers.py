"""The five schedulers a bundle can run, as diffusers' own scheduler classes.

The bundle's ``scheduler.config`` is the model's diffusers scheduler config (betas, timesteps,
prediction type); each name picks the class that interprets it. DPM++ is DPMSolverMultistep with
``algorithm_type="dpmsolver++"`` and second order, as in the seed project and web UIs.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from packer.errors import UsageError

NAMES = ("dpm++", "euler", "euler-a", "ddim", "pndm")


def make(name: str, config: dict):
    """A fresh diffusers scheduler named ``name`` configured from the bundle's config."""
    import diffusers

    config = {k: v for k, v in config.items() if not k.startswith("_")}
    if name == "dpm++":
        return diffusers.DPMSolverMultistepScheduler.from_config(
            config, algorithm_type="dpmsolver++", solver_order=2
        )
    classes = {
        "euler": diffusers.EulerDiscreteScheduler,
        "euler-a": diffusers.EulerAncestralDiscreteScheduler,
        "ddim": diffusers.DDIMScheduler,
        "pndm": diffusers.PNDMScheduler,
    }
    if name not in classes:
        raise UsageError(f"unknown scheduler {name!r}", f"choose one of {', '.join(NAMES)}")
    return classes[name].from_config(config)


@contextlib.contextmanager
def spec_step_noise(scheduler, seed: int) -> Iterator[None]:
    """Make Euler ancestral draw the noise it adds at step ``i`` from the spec's noise stream
    ``i + 1`` (formats/README.md, "Seeded noise") instead of torch's generator, so native and
    browser runtimes add the same noise. diffusers draws it with ``randn_tensor`` in the
    euler-ancestral module; that name is patched for the length of the block."""
    from unittest import mock

    import torch
    from diffusers.schedulers import scheduling_euler_ancestral_discrete as euler_a

    from packer.runtime import noise

    def step_noise(shape, **_kwargs):
        return torch.from_numpy(noise.latents(seed, tuple(shape), stream=scheduler.step_index + 1))

    with mock.patch.object(euler_a, "randn_tensor", step_noise):
        yield
