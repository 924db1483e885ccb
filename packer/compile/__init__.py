"""The compile stage: each SD1.5 component → one TVM library per target and dtype.

Flow: :mod:`.export` (torch → float32 Relax, params detached) → :mod:`.pipeline` (the fixed,
versioned pass list) → :mod:`.targets` (what differs per backend) → :mod:`.cache` (libraries
by architecture signature, so checkpoints sharing an architecture share libraries).
:mod:`.variants` says which (target, dtype) variants a pack builds by default and the dtype
its weights are stored in. :mod:`.tuning` supplies MetaSchedule databases when shipped;
:mod:`.cuda_stub` lets a machine without a GPU embed CUDA machine code.

Calling convention
==================
Every library has one Relax VM function, ``main(*inputs, *params)``; it returns one tensor.
``params`` are the component's weights, passed at every call in the order of
:attr:`CompiledComponent.params`, whose entries are keys of ``state_dict()`` of the component
object that was compiled, i.e. the diffusers pipeline's ``text_encoder`` (a transformers
``CLIPTextModel``), ``unet`` or ``vae`` (the full ``AutoencoderKL``; :attr:`param_source`
names which). The tensors are the state-dict tensors unchanged (no transposes, no fusion),
cast to the variant's param dtype.

A library built with ``quantize`` (a scheme of :mod:`packer.bundle.quantize`) takes each
quantized weight ``NAME`` as two params in its place, ``NAME.packed`` (uint32 codes) then
``NAME.scales`` (in F, see below); :attr:`CompiledComponent.quantized` lists those weights
(formats/README.md, "Quantized weights"; :mod:`.quantize`).

A library may also have ``main_transform_params(params: tuple) -> tuple``: then ``params`` go
through it once (after upload) and ``main`` takes its outputs instead
(:func:`packer.runtime.module.bind_params`). CUDA libraries have it: their convolutions run on
NHWC activations and OHWI weights (pipeline step 6b).

=============  ===========================================  ==================================
component      inputs                                       output
=============  ===========================================  ==================================
text_encoder   ``input_ids`` int32 [1, 77]                  ``last_hidden_state`` F [1, 77, H]
unet           ``sample`` F [2, 4, h, w],                   ``noise_pred`` F [2, 4, h, w]
               ``timestep`` float32 [2],
               ``encoder_hidden_states`` F [2, 77, C]
vae_decoder    ``latents`` F [1, 4, h, w]                   ``image`` F [1, 3, 8h, 8w]
=============  ===========================================  ==================================

* F is float32 in the ``float32`` variant and float16 in the ``float16`` variant; params are F
  too. ``input_ids`` is int32 and ``timestep`` float32 in both (an fp16 timestep embedding
  loses precision at t≈999). Position ids are generated inside the text encoder as int32: no
  library takes or computes i64 tensors at run time (WebGPU has none).
* The UNet batch of 2 is classifier-free guidance: index 0 unconditional, 1 conditional (the
  caller's choice; the library does not care). ``h, w`` is the latent size given at compile
  time (64×64 for 512×512 images).
* The VAE decoder is ``post_quant_conv`` + ``decoder``: the caller divides latents by
  ``vae.config.scaling_factor`` first and maps the image from [-1, 1] itself.
* The float16 variant runs matmuls and convolutions entirely in float16 and keeps ops that need
  range (embedding lookups, norms, softmax) in float32 internally where TVM's
  ``ToMixedPrecision`` decides so. Expected deviation from the float32 torch model: a few 1e-3
  relative on the tiny test models (tests/compile, tolerance 3e-2 relative to the output's max).
"""

from __future__ import annotations

from .component import (
    COMPONENTS,
    DTYPES,
    CompiledComponent,
    architecture_signature,
    compile_all,
    compile_component,
)
from .pipeline import PIPELINE_VERSION
from .targets import TARGETS, TargetSpec, get_target
from .variants import Plan, Variant, plan

__all__ = [
    "COMPONENTS",
    "DTYPES",
    "PIPELINE_VERSION",
    "TARGETS",
    "CompiledComponent",
    "Plan",
    "TargetSpec",
    "Variant",
    "architecture_signature",
    "compile_all",
    "compile_component",
    "get_target",
    "plan",
]
