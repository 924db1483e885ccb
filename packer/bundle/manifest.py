"""manifest.json: built from what was packed, checked against the JSON Schema
(formats/manifest.schema.json) and the rules the schema cannot say, parsed back."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import jsonschema

from packer.errors import BundleError
from packer.support import canonical, spec
from packer.support.schemas import schema
from packer.support.spec import FORMAT, FORMAT_VERSION, MANIFEST_NAME

MAX_MANIFEST_BYTES = 16 << 20
DAMAGED = "the manifest is forged or damaged; pull or pack the bundle again"
DEFAULT_LICENSE = "creativeml-openrail-m"  # SD1.5's license, which SD1.5 derivatives carry on
DEFAULT_BASE_MODEL = (
    "stable-diffusion-v1-5/stable-diffusion-v1-5"  # where SD1.5 lives on the Hub now
)
VAE_SCALING_FACTOR = 0.18215  # SD1.5's latent scale, for VAE configs that do not say theirs
SCHEDULER_DEFAULTS = {"default": "dpm++", "steps": 20, "guidance": 7.5}
QUANTIZATION_SCHEMES = {"q4f16": (4, 32), "q8f16": (8, 64)}
"""The weight quantization schemes this sdpack reads: name → (bits, group size)."""


def check_path(path: Any, where: str) -> str:
    """A bundle-relative path must be POSIX, relative, and free of '.'/'..' segments."""
    if not isinstance(path, str) or not path:
        raise BundleError(f"{where}: path must be a non-empty string", DAMAGED)
    if "\\" in path:
        raise BundleError(f"{where}: path {path!r} contains a backslash", "bundle paths use '/'")
    if path.startswith("/") or (len(path) > 1 and path[1] == ":"):
        raise BundleError(
            f"{where}: path {path!r} is absolute", "bundle paths are relative to the bundle root"
        )
    if any(seg in ("", ".", "..") for seg in path.split("/")):
        raise BundleError(
            f"{where}: path {path!r} has an empty, '.' or '..' segment",
            "the manifest is forged or damaged",
        )
    return path


def _describe(error: jsonschema.ValidationError) -> str:
    where = "/".join(str(p) for p in error.absolute_path) or "(root)"
    message = error.message if len(error.message) <= 160 else error.message[:157] + "..."
    return f"{where}: {message}"


def validate(
    doc: Any, *, where: str = MANIFEST_NAME, schema_name: str = "manifest.schema.json"
) -> dict:
    """Check ``doc`` against the schema and the rules the schema cannot say; return it."""
    if not isinstance(doc, dict):
        raise BundleError(f"{where}: not a JSON object", DAMAGED)
    if schema_name == "manifest.schema.json":
        if doc.get("format") != FORMAT:
            raise BundleError(
                f"{where}: not an sdpack bundle manifest (format={doc.get('format')!r})",
                "is this an sdpack bundle?",
            )
        version = doc.get("format_version")
        if version != FORMAT_VERSION:
            raise BundleError(
                f"{where}: unknown format_version {version!r} (this sdpack reads {FORMAT_VERSION})",
                "upgrade sdpack or repack the model",
            )
        _check_scheme(doc, where)
        for i, entry in enumerate(doc.get("files") or []):
            if isinstance(entry, dict):
                check_path(entry.get("path"), f"{where}: files[{i}]")
    validator = jsonschema.Draft202012Validator(schema(schema_name))
    error = jsonschema.exceptions.best_match(validator.iter_errors(doc))
    if error is not None:
        raise BundleError(f"{where}: schema violation at {_describe(error)}", DAMAGED)
    if schema_name == "manifest.schema.json":
        _check_references(doc, where)
        _check_quantization(doc, where)
    return doc


def _check_scheme(doc: dict, where: str) -> None:
    """A quantization scheme this sdpack does not know is refused by name, before the schema
    (whose enum would only say the value is not allowed)."""
    quant = doc.get("quantization")
    if not isinstance(quant, dict):
        return
    scheme = quant.get("scheme")
    if scheme not in QUANTIZATION_SCHEMES:
        raise BundleError(
            f"{where}: weights are quantized with scheme {scheme!r}, which this sdpack does not read "
            f"(it reads {', '.join(QUANTIZATION_SCHEMES)})",
            "upgrade sdpack, or use an unquantized bundle of the model",
        )


def _check_quantization(doc: dict, where: str) -> None:
    """The scheme's numbers are its own, and every quantized weight's two stored tensors are
    params of its component, next to each other."""
    quant = doc.get("quantization")
    if quant is None:
        return
    if (quant["bits"], quant["group_size"]) != QUANTIZATION_SCHEMES[quant["scheme"]]:
        raise BundleError(
            f"{where}: quantization bits/group_size do not match scheme {quant['scheme']}", DAMAGED
        )
    for component, tensors in quant["tensors"].items():
        comp = doc["components"].get(component)
        if comp is None:
            raise BundleError(
                f"{where}: quantization lists component {component!r}, which the bundle lacks",
                DAMAGED,
            )
        position = {name: i for i, name in enumerate(comp["params"])}
        for t in tensors:
            i = position.get(t["packed"])
            if i is None or position.get(t["scales"]) != i + 1:
                raise BundleError(
                    f"{where}: quantized weight {t['name']!r} of {component}: its packed and "
                    "scales tensors are not consecutive params",
                    DAMAGED,
                )


def _check_references(doc: dict, where: str) -> None:
    paths = [f["path"] for f in doc["files"]]
    if len(set(paths)) != len(paths):
        raise BundleError(f"{where}: a file is listed twice", DAMAGED)
    if MANIFEST_NAME in paths:
        raise BundleError(f"{where}: manifest.json must not list itself", DAMAGED)
    listed = set(paths)
    refs = [c["weights"] for c in doc["components"].values()]
    refs += [p for t in doc["targets"].values() for p in t["libs"].values()]
    refs += doc["tokenizer"]["files"]
    for ref in refs:
        if ref not in listed:
            raise BundleError(f"{where}: {ref} is referenced but not listed in files", DAMAGED)


def parse(data: bytes, where: str = MANIFEST_NAME) -> dict:
    """Parse and validate manifest bytes."""
    if len(data) > MAX_MANIFEST_BYTES:
        raise BundleError(f"{where}: {len(data)} bytes is too large for a manifest", DAMAGED)
    try:
        doc = json.loads(data)
    except (
        UnicodeDecodeError,
        json.JSONDecodeError,
        RecursionError,
    ) as exc:  # RecursionError: nesting bomb
        raise BundleError(f"{where}: not valid JSON ({exc})", DAMAGED) from None
    return validate(doc, where=where)


# -- building ---------------------------------------------------------------------------------
# ``ckpt`` below is a packer.ingest Checkpoint and ``compiled`` a packer.compile CompiledComponent;
# only their fields are read.


def default_model_id(checkpoint: str) -> str:
    """``local/<file or folder name>`` for a checkpoint packed without ``--model-id``."""
    stem = Path(checkpoint.split("@")[0]).name
    stem = re.sub(r"\.(safetensors|ckpt|pt|pth)$", "", stem)
    return "local/" + (re.sub(r"[^A-Za-z0-9._-]+", "-", stem).strip("-.") or "model")


def model_fields(
    ckpt,
    *,
    checkpoint: str,
    version: str,
    model_id: str | None = None,
    license: str | None = None,
    base_model: str | None = None,
) -> dict:
    """The manifest's ``model``: what the user said, else what the source says, else the defaults.

    ``base_model`` is the one given, else the Hub id the checkpoint came from (the bundle is that
    model), else :data:`DEFAULT_BASE_MODEL`; ``license`` is the one given, else the source's model
    card's, else :data:`DEFAULT_LICENSE`.
    """
    hub_id = ckpt.source["name"] if ckpt.source.get("format") == "hub" else None
    return {
        "id": model_id or default_model_id(checkpoint),
        "version": version,
        "license": license or ckpt.license or DEFAULT_LICENSE,
        "base_model": base_model or hub_id or DEFAULT_BASE_MODEL,
    }


def component_entry(weights: str, params: list[str], compiled) -> dict:
    """A ``components`` entry: its tensor-cache index, parameter order and call signature."""
    return {
        "weights": weights,
        "params": params,
        "inputs": compiled.inputs,
        "outputs": compiled.outputs,
    }


def add_library(
    targets: dict, variant_key: str, dtype: str, component: str, path: str, compiled
) -> None:
    """Record ``compiled``'s library at bundle path ``path`` under ``targets[variant_key]``,
    creating that variant's entry from the first library and widening its requirements."""
    entry = targets.setdefault(
        variant_key,
        {
            "kind": compiled.target_json["kind"],
            "dtype": dtype,
            "target": compiled.target_json,
            "libs": {},
            "tuning_db_sha256": compiled.tuning_db_sha256,
            "requirements": dict(compiled.requirements),
            # static shapes, no host synchronisation inside a call: each call may be captured
            **({"cuda_graph": True} if compiled.target_json["kind"] == "cuda" else {}),
        },
    )
    entry["libs"][component] = path
    merge_requirements(entry["requirements"], compiled.requirements)


def merge_requirements(into: dict, more: dict) -> None:
    """A target's requirements cover all its libraries: union of features, largest buffer."""
    for key, value in more.items():
        if key == "features":
            into["features"] = list(dict.fromkeys([*into.get("features", []), *value]))
        elif key in ("max_buffer_bytes", "estimated_memory_bytes"):
            into[key] = max(int(into.get(key, 0)), int(value))
        else:
            into.setdefault(key, value)


def generator_info(pipeline_version: str) -> dict:
    """The manifest's ``generator`` block (the writer adds the zstd level and version it used)."""
    from importlib.metadata import version

    from packer import __version__

    return {
        "sdpack": __version__,
        "apache_tvm": version("apache-tvm"),
        "tvm_ffi": version("apache-tvm-ffi"),
        "pipeline_version": pipeline_version,
    }


def _clean(config: dict) -> dict:
    """A config without private keys (``_name_or_path`` and the like would leak machine paths)."""
    return {k: v for k, v in sorted(config.items()) if not k.startswith("_")}


def _tokenizer_fields(tokenizer_dir: Path, files: list[str]) -> dict:
    """``tokenizer``: its files, the prompt length and the special token ids CLIP's vocab has."""
    from tokenizers import Tokenizer

    vocab = Tokenizer.from_file(str(tokenizer_dir / "tokenizer.json")).get_vocab()
    eos = vocab.get("<|endoftext|>")
    bos = vocab.get("<|startoftext|>")
    fields = {"files": files, "max_length": spec.TEXT_MAX_LENGTH}
    fields.update(
        {
            k: v
            for k, v in (("bos_token_id", bos), ("eos_token_id", eos), ("pad_token_id", eos))
            if v is not None
        }
    )
    return fields


def fields(
    ckpt,
    *,
    model: dict,
    components: dict,
    targets: dict,
    tokenizer_files: list[str],
    dtype: str,
    pipeline_version: str,
) -> dict:
    """Everything of manifest.json but what :meth:`BundleWriter.commit` adds (format, the file list,
    the zstd settings): the architecture and its signature, components, targets, tokenizer,
    scheduler defaults, generator and noise."""
    unet, vae = ckpt.configs["unet"], ckpt.configs["vae"]
    sample = unet["sample_size"]
    latent = {
        "channels": unet["in_channels"],
        "height": sample,
        "width": sample,
        "scaling_factor": vae.get("scaling_factor", VAE_SCALING_FACTOR),
        "vae_scale": spec.vae_scale(vae["block_out_channels"]),
    }
    signature = canonical.sha256_bytes(
        canonical.dumps({"configs": ckpt.signature_configs(), "latent": latent, "dtype": dtype})
    )
    return {
        "model": model,
        "source": ckpt.source,
        "architecture": {
            "family": spec.ARCHITECTURE_FAMILY,
            "signature": signature,
            "prediction_type": ckpt.prediction_type,
            "configs": {k: _clean(v) for k, v in ckpt.configs.items()},
            "latent": latent,
        },
        "dtype": dtype,
        "components": components,
        "targets": targets,
        "tokenizer": _tokenizer_fields(ckpt.tokenizer_dir, tokenizer_files),
        "scheduler": {
            **SCHEDULER_DEFAULTS,
            "config": {**ckpt.scheduler_config, "prediction_type": ckpt.prediction_type},
        },
        "generator": generator_info(pipeline_version),
        "noise": {"generator": spec.NOISE_GENERATOR, "version": spec.NOISE_VERSION},
    }
