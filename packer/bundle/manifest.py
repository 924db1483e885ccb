"""manifest.json: the JSON Schema (formats/manifest.schema.json) and the checks around it."""

from __future__ import annotations

import functools
import json
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema

from packer.errors import BundleError

FORMAT = "sdpack.bundle"
FORMAT_VERSION = 1
MANIFEST_NAME = "manifest.json"
MAX_MANIFEST_BYTES = 16 << 20
DAMAGED = "the manifest is forged or damaged; pull or pack the bundle again"
QUANTIZATION_SCHEMES = {"q4f16": (4, 32), "q8f16": (8, 64)}
"""The weight quantization schemes this sdpack reads: name → (bits, group size)."""


def _schema_text(name: str) -> str:
    packaged = resources.files("packer") / "_formats" / name
    if packaged.is_file():
        return packaged.read_text()
    repo = Path(__file__).resolve().parents[2]
    for folder in ("formats", "manifests"):
        if (repo / folder / name).is_file():
            return (repo / folder / name).read_text()
    raise FileNotFoundError(name)


@functools.cache
def schema(name: str = "manifest.schema.json") -> dict:
    """A JSON Schema shipped with sdpack (the formats/ or manifests/ copy)."""
    return json.loads(_schema_text(name))


def check_path(path: Any, where: str) -> str:
    """A bundle-relative path must be POSIX, relative, and free of '.'/'..' segments."""
    if not isinstance(path, str) or not path:
        raise BundleError(f"{where}: path must be a non-empty string", DAMAGED)
    if "\\" in path:
        raise BundleError(f"{where}: path {path!r} contains a backslash", "bundle paths use '/'")
    if path.startswith("/") or (len(path) > 1 and path[1] == ":"):
        raise BundleError(f"{where}: path {path!r} is absolute", "bundle paths are relative to the bundle root")
    if any(seg in ("", ".", "..") for seg in path.split("/")):
        raise BundleError(f"{where}: path {path!r} has an empty, '.' or '..' segment", "the manifest is forged or damaged")
    return path


def _describe(error: jsonschema.ValidationError) -> str:
    where = "/".join(str(p) for p in error.absolute_path) or "(root)"
    message = error.message if len(error.message) <= 160 else error.message[:157] + "..."
    return f"{where}: {message}"


def validate(doc: Any, *, where: str = MANIFEST_NAME, schema_name: str = "manifest.schema.json") -> dict:
    """Check ``doc`` against the schema and the rules the schema cannot say; return it."""
    if not isinstance(doc, dict):
        raise BundleError(f"{where}: not a JSON object", DAMAGED)
    if schema_name == "manifest.schema.json":
        if doc.get("format") != FORMAT:
            raise BundleError(f"{where}: not an sdpack bundle manifest (format={doc.get('format')!r})", "is this an sdpack bundle?")
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
        raise BundleError(f"{where}: quantization bits/group_size do not match scheme {quant['scheme']}", DAMAGED)
    for component, tensors in quant["tensors"].items():
        comp = doc["components"].get(component)
        if comp is None:
            raise BundleError(f"{where}: quantization lists component {component!r}, which the bundle lacks", DAMAGED)
        position = {name: i for i, name in enumerate(comp["params"])}
        for t in tensors:
            i = position.get(t["packed"])
            if i is None or position.get(t["scales"]) != i + 1:
                raise BundleError(f"{where}: quantized weight {t['name']!r} of {component}: its packed and "
                                  "scales tensors are not consecutive params", DAMAGED)


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
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:  # RecursionError: nesting bomb
        raise BundleError(f"{where}: not valid JSON ({exc})", DAMAGED) from None
    return validate(doc, where=where)
