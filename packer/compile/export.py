"""torch → Relax for one component, with params detached and named by their state-dict keys.

Each component is wrapped in a small ``nn.Module`` that runs only what the browser and native
runtimes call (the CLIP text tower, one UNet step, the VAE decoder), so ``torch.export`` lifts
only the weights that step needs. The import recipe:

* UNet and VAE keep ``scaled_dot_product_attention`` out of the decomposition table, so every
  attention stays one ``relax.nn.attention`` that the backends can schedule as a whole.
* CLIP runs with eager attention and the default decomposition (the kept-SDPA path asserts on
  its boolean causal mask), and gets int32 position ids from an ``arange`` inside the graph:
  WebGPU has no 64-bit integers, so no i64 tensor may reach the compiled module.

The result is always float32; :mod:`packer.compile.pipeline` lowers it to float16 when asked.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from torch import nn

from ..errors import CompileError
from ..support.spec import TEXT_MAX_LENGTH

TEXT_LENGTH = TEXT_MAX_LENGTH
"""Tokens per prompt: fixed by SD1.5's CLIP tokenizer, shared by the text encoder and UNet."""

UNET_BATCH = 2
"""UNet batch: unconditional and conditional halves of classifier-free guidance."""


class _TextEncoder(nn.Module):
    """CLIPTextModel → last_hidden_state, with int32 ids (clamped to the vocabulary) and int32
    position ids."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        # The embedding lookup is unchecked gather: out-of-range ids would read out of bounds.
        input_ids = input_ids.clamp(0, self.model.config.vocab_size - 1)
        position_ids = torch.arange(input_ids.shape[1], dtype=torch.int32).unsqueeze(0)
        return self.model(input_ids=input_ids, position_ids=position_ids, return_dict=False)[0]


class _UNet(nn.Module):
    """One denoising step: (sample, timestep[B], encoder_hidden_states) → noise prediction."""

    def __init__(self, unet: nn.Module):
        super().__init__()
        self.unet = unet

    def forward(self, sample, timestep, encoder_hidden_states):
        return self.unet(
            sample, timestep, encoder_hidden_states=encoder_hidden_states, return_dict=False
        )[0]


class _VaeDecoder(nn.Module):
    """``post_quant_conv`` + ``decoder`` only; registered under the AutoencoderKL's own names."""

    def __init__(self, vae: nn.Module):
        super().__init__()
        post_quant_conv = getattr(vae, "post_quant_conv", None)
        self.post_quant_conv = nn.Identity() if post_quant_conv is None else post_quant_conv
        self.decoder = vae.decoder

    def forward(self, latents: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.post_quant_conv(latents))


@dataclass(frozen=True)
class _Spec:
    """How one component is wrapped, fed and named."""

    param_source: str  # which diffusers component's state dict holds the weights
    wrap: Callable[[nn.Module], nn.Module]
    prefix: str  # the wrapper's attribute prefix, stripped to get state-dict keys
    inputs: Callable[[nn.Module, tuple[int, int]], list[tuple[str, tuple[int, ...], str]]]
    output: str
    keep_sdpa: bool


def _text_inputs(module, _hw):
    return [("input_ids", (1, TEXT_LENGTH), "int32")]


def _unet_inputs(module, hw):
    cfg = module.config
    return [
        ("sample", (UNET_BATCH, cfg.in_channels, *hw), "float32"),
        ("timestep", (UNET_BATCH,), "float32"),
        ("encoder_hidden_states", (UNET_BATCH, TEXT_LENGTH, cfg.cross_attention_dim), "float32"),
    ]


def _vae_inputs(module, hw):
    return [("latents", (1, module.config.latent_channels, *hw), "float32")]


SPECS: dict[str, _Spec] = {
    "text_encoder": _Spec(
        "text_encoder", _TextEncoder, "model.", _text_inputs, "last_hidden_state", keep_sdpa=False
    ),
    "unet": _Spec("unet", _UNet, "unet.", _unet_inputs, "noise_pred", keep_sdpa=True),
    "vae_decoder": _Spec("vae", _VaeDecoder, "", _vae_inputs, "image", keep_sdpa=True),
}


@dataclass
class ExportedComponent:
    """A float32 Relax module ``main(*inputs, *params)`` and what its params are."""

    component: str
    mod: object  # tvm.IRModule
    params: list[str]  # keys of the component's ``state_dict()``, in call order
    param_source: str
    input_names: list[str]
    output_name: str


def input_specs(component: str, module: nn.Module, latent_hw: tuple[int, int]):
    """``[(name, shape, dtype)]`` of the float32 graph's user inputs (no export needed)."""
    return SPECS[component].inputs(module, tuple(latent_hw))


def export_component(
    component: str, module: nn.Module, latent_hw: tuple[int, int]
) -> ExportedComponent:
    """Export ``module`` (the whole diffusers/transformers component) to Relax, float32."""
    spec = SPECS[component]
    wrapper = spec.wrap(module)
    args = tuple(_example(shape, dtype) for _, shape, dtype in spec.inputs(module, latent_hw))
    with warnings.catch_warnings():
        # torch 2.13 deprecation noise from its own pytree internals, not actionable here
        warnings.filterwarnings("ignore", message=".*LeafSpec.*", category=FutureWarning)
        with _inference(module), _eager_attention(module, not spec.keep_sdpa):
            try:
                ep = torch.export.export(wrapper, args)
            except Exception as exc:  # torch raises many unrelated types here
                raise CompileError(
                    f"torch.export failed for {component}: {type(exc).__name__}: {exc}",
                    "the component uses an operation outside the SD1.5 architecture",
                ) from exc
        mod = _to_relax(ep, spec.keep_sdpa)
    params = _param_keys(mod, ep, spec.prefix, module, component)
    names = [name for name, _, _ in spec.inputs(module, latent_hw)]
    return ExportedComponent(component, mod, params, spec.param_source, names, spec.output)


def _example(shape, dtype) -> torch.Tensor:
    if dtype == "int32":
        return torch.zeros(shape, dtype=torch.int32)
    return torch.randn(shape, dtype=torch.float32)


def _to_relax(ep, keep_sdpa: bool):
    from tvm import relax
    from tvm.relax.frontend.torch import from_exported_program

    if keep_sdpa:
        table = torch.export.default_decompositions()
        table.pop(torch.ops.aten.scaled_dot_product_attention.default, None)
        ep = ep.run_decompositions(table)
    mod = from_exported_program(
        ep,
        keep_params_as_input=True,
        unwrap_unit_return_tuple=True,
        run_ep_decomposition=not keep_sdpa,
    )
    mod, _ = relax.frontend.detach_params(mod)  # weights arrive at run time, not at build time
    return mod


def _param_keys(mod, ep, prefix: str, module: nn.Module, component: str) -> list[str]:
    """Map ``main``'s param vars back to keys of ``module.state_dict()`` via the graph signature."""
    from torch.export.graph_signature import InputKind

    main = mod["main"]
    by_arg = {
        s.arg.name: s.target
        for s in ep.graph_signature.input_specs
        if s.kind == InputKind.PARAMETER
    }
    state_keys = set(module.state_dict().keys())
    keys = []
    for var in main.params[int(main.attrs["num_input"]) :]:
        target = by_arg.get(var.name)
        key = target[len(prefix) :] if target and target.startswith(prefix) else None
        if key not in state_keys:
            raise CompileError(
                f"cannot map {component} parameter {var.name!r} to a state-dict key",
                "this is a bug in sdpack's exporter; please report it",
            )
        keys.append(key)
    return keys


@contextlib.contextmanager
def _inference(module: nn.Module) -> Iterator[None]:
    """eval() and no_grad for the export, restoring the caller's training flag afterwards."""
    was_training = module.training
    module.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        module.train(was_training)


@contextlib.contextmanager
def _eager_attention(module: nn.Module, enable: bool) -> Iterator[None]:
    """Switch a transformers model to eager attention for the export only."""
    config = getattr(module, "config", None)
    if not enable or not hasattr(config, "_attn_implementation"):
        yield
        return
    before = config._attn_implementation
    config._attn_implementation = "eager"
    try:
        yield
    finally:
        config._attn_implementation = before
