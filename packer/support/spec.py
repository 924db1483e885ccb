"""The format facts of formats/ as Python names, each read from where the spec says it: the
manifest schema for what a schema field fixes, formats/constants.json for the rest."""

from __future__ import annotations

import re

from packer.support.schemas import schema, spec_file

_MANIFEST = schema()
_CONSTANTS = spec_file("constants.json")

FORMAT = _MANIFEST["properties"]["format"]["const"]  # "sdpack.bundle"
FORMAT_VERSION = _MANIFEST["properties"]["format_version"]["const"]
MANIFEST_NAME = _CONSTANTS["manifest_name"]  # "manifest.json", at the bundle's root

COMPONENTS: tuple[str, ...] = tuple(_CONSTANTS["components"]["names"])  # in pipeline order
WEIGHT_DTYPES: tuple[str, ...] = tuple(_MANIFEST["properties"]["dtype"]["enum"])  # stored weights
# tensor-cache record dtypes and their element sizes in bytes
TENSOR_DTYPE_SIZES: dict[str, int] = dict(_CONSTANTS["tensor_dtypes"]["sizes"])
TEXT_MAX_LENGTH: int = _CONSTANTS["text_max_length"]["value"]  # token ids per prompt
ARCHITECTURE_FAMILY = _MANIFEST["properties"]["architecture"]["properties"]["family"]["const"]
PREDICTION_TYPES: tuple[str, ...] = tuple(
    _MANIFEST["properties"]["architecture"]["properties"]["prediction_type"]["enum"]
)

NOISE_GENERATOR = _MANIFEST["properties"]["noise"]["properties"]["generator"]["const"]
NOISE_VERSION = _MANIFEST["properties"]["noise"]["properties"]["version"]["const"]

REPO_ID = re.compile(_MANIFEST["$defs"]["repo_id"]["pattern"])
SEMVER = re.compile(_MANIFEST["$defs"]["semver"]["pattern"])


def vae_scale(vae_block_out_channels: list[int]) -> int:
    """Pixels per latent along each side (manifest ``architecture.latent.vae_scale``): the VAE
    halves the resolution once between consecutive blocks, 8 for SD1.5's four."""
    return 2 ** (len(vae_block_out_channels) - 1)
