"""POST /api/validate-yaml: the Hub's check of a model card's metadata, as far as sdpack's cards go.

The front matter (between the leading ``---`` and the next ``---`` line) must parse as YAML into a
mapping, and the fields the Hub types must have its types: ``license``, ``library_name``,
``pipeline_tag`` and ``base_model_relation`` are strings, the last one of adapter / merge /
quantized / finetune and only beside a ``base_model``; ``tags``, ``datasets`` and ``language``
are lists of strings (or one string); ``base_model`` is one model id ``ORG/NAME`` or a list of
them. Errors answer 400 with ``{"errors": [{"message"}], "warnings": []}``; a card without
metadata is accepted with a warning, as the Hub does.
"""

from __future__ import annotations

import re

import yaml

RELATIONS = {"adapter", "merge", "quantized", "finetune"}
MODEL_ID = re.compile(r"^[\w.-]+/[\w.-]+$")


def front_matter(content: str) -> tuple[str | None, str | None]:
    """``(yaml text, error)``: the front matter, None if there is none, or why it is broken."""
    if not content.startswith("---"):
        return None, None
    lines = content.split("\n")
    for i, line in enumerate(lines[1:], start=1):
        if line.rstrip() == "---":
            return "\n".join(lines[1:i]), None
    return None, "unterminated YAML front matter"


def _strings(value) -> bool:
    return isinstance(value, str) or (
        isinstance(value, list) and all(isinstance(v, str) for v in value)
    )


def errors_and_warnings(content: str) -> tuple[list[str], list[str]]:
    text, broken = front_matter(content)
    if broken:
        return [broken], []
    if text is None:
        return [], ["empty or missing yaml metadata in repo card"]
    try:
        meta = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        return [f"invalid YAML: {exc}"], []
    if meta is None:
        return [], ["empty or missing yaml metadata in repo card"]
    if not isinstance(meta, dict):
        return ["metadata must be a YAML mapping"], []
    errors = [
        f'"{key}" must be a string'
        for key in ("license", "library_name", "pipeline_tag", "base_model_relation")
        if key in meta and not isinstance(meta[key], str)
    ]
    errors += [
        f'"{key}" must be a list of strings'
        for key in ("tags", "datasets", "language")
        if key in meta and not _strings(meta[key])
    ]
    base = meta.get("base_model")
    if base is not None:
        ids = [base] if isinstance(base, str) else base
        if not isinstance(ids, list) or not all(
            isinstance(i, str) and MODEL_ID.match(i) for i in ids
        ):
            errors.append('"base_model" must be a model id or a list of model ids')
    relation = meta.get("base_model_relation")
    if isinstance(relation, str):
        if relation not in RELATIONS:
            errors.append(f'"base_model_relation" must be one of {", ".join(sorted(RELATIONS))}')
        elif base is None:
            errors.append('"base_model_relation" needs "base_model"')
    return errors, []
