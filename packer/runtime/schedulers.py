"""The five schedulers a bundle can run, as diffusers' own scheduler classes.

The bundle's ``scheduler.config`` is the model's diffusers scheduler config (betas, timesteps,
prediction type); each name picks the class that interprets it. DPM++ is DPMSolverMultistep with
``algorithm_type="dpmsolver++"`` and second order, as in the seed project and web UIs.
"""

from __future__ import annotations

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
