"""What ingest hands to compile: one SD1.x checkpoint in diffusers layout, fp32, validated."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from packer.errors import CheckpointError
from packer.ingest import architecture
from packer.support import spec


@dataclass
class Checkpoint:
    """An ingested checkpoint.

    ``source``: ``{"name", "format", "sha256", "revision"?}`` (never a full local path);
    ``configs`` / ``state_dicts``: diffusers configs and weights for ``text_encoder``, ``unet``
    and ``vae`` (floating tensors in float16 or float32, as the source stores them; other float
    dtypes become float32); ``license``: what the source's model card declares (None when the
    source has no card or the card no license). The model constructors build float32 modules that
    *share* the storage of float32 weights (no copy of a 3 GB UNet) and widen float16 ones, so do
    not modify parameters in place.

    >>> ckpt = ingest("model.safetensors", tokenizer=Path("tok"))   # doctest: +SKIP
    >>> ckpt.unet()(sample, t, text_embeddings, return_dict=False)  # doctest: +SKIP
    """

    source: dict
    configs: dict[str, dict]
    state_dicts: dict[str, dict[str, torch.Tensor]] = field(repr=False)
    tokenizer_dir: Path
    prediction_type: str
    scheduler_config: dict
    license: str | None = (
        None  # from the source's model card (README.md front matter), when it has one
    )

    def _model(self, component: str) -> torch.nn.Module:
        # Text encoder on CPU: it has non-persistent buffers (position_ids) a meta build would lose.
        device = "cpu" if component == "text_encoder" else "meta"
        model = architecture.construct(component, self.configs[component], device=device)
        # float32 modules whatever the stored dtype: a float16 checkpoint is widened here, one
        # component at a time, only when a module is built
        state = {
            k: v.to(torch.float32) if v.is_floating_point() and v.dtype != torch.float32 else v
            for k, v in self.state_dicts[component].items()
        }
        model.load_state_dict(state, strict=True, assign=True)
        left = [n for n, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
        if left:  # a buffer the state dict does not carry: build this component on the CPU instead
            raise RuntimeError(f"{component}: {left[0]} was not loaded")
        return model.eval()

    def text_encoder(self):
        """``transformers.CLIPTextModel`` in eval mode, fp32."""
        return self._model("text_encoder")

    def unet(self):
        """``diffusers.UNet2DConditionModel`` in eval mode, fp32."""
        return self._model("unet")

    def vae(self):
        """``diffusers.AutoencoderKL`` in eval mode, fp32."""
        return self._model("vae")

    def signature_configs(self) -> dict:
        """The configs reduced to what determines compiled code; canonical and JSON-serialisable."""
        return architecture.signature_configs(self.configs)


def finish(
    source: dict,
    configs: dict[str, dict],
    state_dicts: dict[str, dict[str, torch.Tensor]],
    *,
    name: str,
    tokenizer: Path | None,
    tokenizer_default: Path | None,
    prediction_type: str | None,
    scheduler_config: dict | None,
) -> Checkpoint:
    """Checks shared by every layout, then the :class:`Checkpoint`.

    Configs are completed and checked against every tensor; the tokenizer must fit the text
    encoder's vocabulary; ``prediction_type`` (argument, then scheduler config, then epsilon).
    """
    from packer.ingest import tokenizer as tokenizers
    from packer.ingest import weights

    for component in architecture.COMPONENTS:
        configs[component], state_dicts[component] = architecture.complete(
            component, configs[component], state_dicts[component], name
        )
    weights.warn_non_finite(state_dicts)
    if tokenizer is not None:
        tokenizer_dir = tokenizers.prepare(Path(tokenizer))
    elif tokenizer_default is not None:
        tokenizer_dir = tokenizers.prepare(tokenizer_default)
    else:
        tokenizer_dir = tokenizers.default()
    tokens, vocab = tokenizers.vocab_size(tokenizer_dir), configs["text_encoder"]["vocab_size"]
    if tokens > vocab:
        raise CheckpointError(
            f"{name}: the tokenizer has {tokens} tokens but the text encoder only {vocab}",
            tokenizers.HINT,
        )
    scheduler = dict(scheduler_config or architecture.sd15_scheduler_config())
    resolved = prediction_type or scheduler.get("prediction_type") or "epsilon"
    if resolved not in spec.PREDICTION_TYPES:
        raise CheckpointError(
            f"{name}: prediction_type {resolved!r} is not supported",
            "pass --prediction-type epsilon or v_prediction",
        )
    scheduler["prediction_type"] = resolved
    return Checkpoint(source, configs, state_dicts, Path(tokenizer_dir), resolved, scheduler)
