"""The model card (README.md) the Hub shows for a published bundle, generated from its manifest.

Built with ``huggingface_hub``'s :class:`ModelCard` / :class:`ModelCardData`, so the front matter
is the metadata the Hub indexes, in the types it expects: license, library, pipeline, base model
and how this model relates to it, and tags for the targets the bundle actually has. The body
shows how to run the exact version (JavaScript and the CLI, pinned by its tag) and what the
bundle's files are. Deterministic: the same manifest gives the same bytes, so republishing an
unchanged bundle changes nothing.

:func:`check` is the validation a directory hub applies (the Hub's ``validate-yaml`` is the
authority for the Hub itself: :meth:`packer.hub.hf.HfRemote.publish`).
"""

from __future__ import annotations

import re

from packer.errors import HubError

BASE_TAGS = ("text-to-image", "stable-diffusion", "sdpack", "tvm")
KIND_TAGS = {
    "webgpu": "webgpu",
    "cuda": "cuda",
    "metal": "metal",
    "vulkan": "vulkan",
    "rocm": "rocm",
}
"""A tag for each library kind a user chooses hardware by (CPU libraries need no tag)."""

RUNS_ON = {"llvm": "CPU", "webgpu": "WebGPU", "cuda": "NVIDIA GPU (CUDA)"}

RELATIONS = ("adapter", "merge", "quantized", "finetune")
"""The Hub's ``base_model_relation`` values."""

_REPO_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*")
HINT = "fix the model card's YAML front matter (README.md), or remove README.md from the bundle to get a generated one"


def relation(manifest: dict) -> str | None:
    """How the bundle relates to ``model.base_model``, in the Hub's terms.

    * packed from the base model's own Hub repository: the same weights re-encoded for inference
      runtimes. Stored in float16, they are a reduced-precision copy, which the Hub's model tree
      lists under ``quantized`` (as it lists GGUF and MLC conversions); stored in float32 they are
      an exact format conversion, for which the Hub has no relation: none is given.
    * any other checkpoint: a model trained from the base (``finetune``; SD1.5-architecture
      checkpoints that are not SD1.5 itself are fine-tunes of it, occasionally merges).
    """
    base, source = manifest["model"].get("base_model"), manifest["source"]
    if not base:
        return None
    if source["format"] == "hub" and source["name"] == base:
        return "quantized" if manifest["dtype"] == "float16" else None
    return "finetune"


def tags(manifest: dict) -> list[str]:
    """:data:`BASE_TAGS` plus one per library kind present (``webgpu`` only with a webgpu variant)."""
    kinds = {t["kind"] for t in manifest["targets"].values()}
    return [*BASE_TAGS, *sorted(KIND_TAGS[k] for k in kinds if k in KIND_TAGS)]


def card_data(manifest: dict):
    """The front matter as a :class:`huggingface_hub.ModelCardData`."""
    from huggingface_hub import ModelCardData

    model = manifest["model"]
    extra = {}
    if model.get("base_model"):
        extra["base_model"] = model["base_model"]
        if (rel := relation(manifest)) is not None:
            extra["base_model_relation"] = rel
    return ModelCardData(
        license=model["license"],
        library_name="sdpack",
        pipeline_tag="text-to-image",
        tags=tags(manifest),
        **extra,
    )


def render(manifest: dict, base_url: str) -> bytes:
    """README.md for ``manifest`` as served from ``base_url`` (the Hub endpoint or `packer serve`).

    >>> render(manifest, "https://huggingface.co").startswith(b"---\\n")   # doctest: +SKIP
    """
    from huggingface_hub import ModelCard

    data = card_data(manifest)
    return str(ModelCard(f"---\n{data.to_yaml()}\n---\n{_body(manifest, base_url)}")).encode()


def _body(manifest: dict, base_url: str) -> str:
    model = manifest["model"]
    repo, version = model["id"], model["version"]
    base_url = base_url.rstrip("/")
    url = f"{base_url}/{repo}/resolve/v{version}/manifest.json"
    hub_default = base_url == "https://huggingface.co"
    endpoint = "" if hub_default else f', {{ endpoint: "{base_url}" }}'
    name = repo.split("/")[1]
    sched = manifest["scheduler"]
    lines = [
        f"# {repo} {version}",
        "",
        model.get("description")
        or f"A Stable Diffusion 1.5-architecture model packed by sdpack from `{manifest['source']['name']}`"
        + (
            f", derived from [{model['base_model']}](https://huggingface.co/{model['base_model']})."
            if model.get("base_model")
            else "."
        ),
        "",
        f"Weights stored in {manifest['dtype']}; scheduler {sched['default']}, {sched['steps']} steps, guidance {sched['guidance']}. "
        f"Every file is pinned by sha256 in [`manifest.json`]({url}).",
        "",
        *_variants_table(manifest),
        "## In the browser (WebGPU)",
        "",
        "```js",
        'import { loadModel } from "@sdpack/runtime-web";',
        "",
        f'const model = await loadModel("{repo}@{version}"{endpoint});  // the tag resolves to its commit; every file is verified',
        f'// or by URL: await loadModel("{url}")',
        'const { rgba, width, height } = await model.generate({ prompt: "a lighthouse at dusk", seed: 42 });',
        'const canvas = document.body.appendChild(document.createElement("canvas"));',
        "canvas.width = width;",
        "canvas.height = height;",
        'canvas.getContext("2d").putImageData(new ImageData(rgba, width, height), 0, 0);',
        "```",
        "",
        *_web_note(manifest),
        "## From Python",
        "",
        "```sh",
        f"packer pull {repo}@{version} --out {name}"
        + ("" if hub_default else f" --endpoint {base_url}"),
        f'packer generate {name} --prompt "a lighthouse at dusk" --seed 42 --out lighthouse.png',
        "```",
        "",
        "## Files",
        "",
        "| path | what |",
        "|---|---|",
        "| `manifest.json` | what everything else is: model, architecture, variants, and every file's size and sha256 |",
        "| `weights/<component>/tensor-cache.json` | TVM tensor-cache index of `text_encoder`, `unet` or `vae_decoder` weights |",
        "| `weights/<component>/params_shard_<i>.bin.zst` | the weights, byte-shuffled and zstd-compressed shards |",
        "| `libs/<variant>/<component>.wasm` or `.so` | compiled libraries, one folder per variant (table above) |",
        "| `tokenizer/` | the CLIP tokenizer (`tokenizer.json`, `tokenizer_config.json`) |",
        "",
        f"Version `v{version}` is a git tag that never moves; `packer resolve {repo}@{version}` prints the commit it pins. "
        "The format is specified in sdpack's `formats/README.md`.",
        "",
    ]
    return "\n".join(lines)


def _web_note(manifest: dict) -> list[str]:
    kinds = {(t["kind"], t["dtype"]) for t in manifest["targets"].values()}
    if ("webgpu", "float16") in kinds and ("webgpu", "float32") in kinds:
        return [
            "The runtime runs the float16 variant where the GPU has `shader-f16`, else the float32 one.",
            "",
        ]
    if not any(kind == "webgpu" for kind, _ in kinds):
        return [
            "This version has no WebGPU libraries: `loadModel` refuses it (pack it with the default targets).",
            "",
        ]
    return []


def _variants_table(manifest: dict) -> list[str]:
    if not manifest["targets"]:
        return ["No compiled libraries (weights only).", ""]
    rows = ["| variant | runs on | needs |", "|---|---|---|"]
    for key, t in sorted(manifest["targets"].items()):
        req = t["requirements"]
        needs = (
            ", ".join(
                [*req.get("features", []), *([f"arch {req['arch']}"] if req.get("arch") else [])]
            )
            or "—"
        )
        rows.append(f"| `{key}` | {RUNS_ON.get(t['kind'], t['kind'])}, {t['dtype']} | {needs} |")
    return [*rows, ""]


def check(text: str) -> None:
    """Raise :class:`HubError` unless ``text`` has a front matter the Hub would accept: closed,
    YAML, a mapping, and the fields sdpack writes in the Hub's types (strings; a list of strings
    for tags; base model ids as ORG/NAME; a known ``base_model_relation`` with a base model)."""
    import yaml

    if not text.startswith("---"):
        return  # no metadata: nothing to validate
    end = text.find("\n---", 3)
    if end < 0:
        raise HubError("the model card's YAML front matter is not closed by a --- line", HINT)
    try:
        data = yaml.safe_load(text[3:end])
    except yaml.YAMLError as exc:
        raise HubError(
            f"the model card's front matter is not YAML: {' '.join(str(exc).split())[:200]}", HINT
        ) from None
    if data is None:
        return
    if not isinstance(data, dict):
        raise HubError("the model card's front matter is not a mapping of keys to values", HINT)
    for key in ("license", "library_name", "pipeline_tag", "base_model_relation", "model_name"):
        if key in data and not isinstance(data[key], str):
            raise HubError(f"model card: {key} must be a string", HINT)
    for key in ("tags", "datasets", "language", "base_model"):
        value = data.get(key)
        if value is not None and not (
            isinstance(value, str)
            or (isinstance(value, list) and all(isinstance(v, str) for v in value))
        ):
            raise HubError(f"model card: {key} must be a string or a list of strings", HINT)
    bases = data.get("base_model") or []
    for base in [bases] if isinstance(bases, str) else bases:
        if not _REPO_ID.fullmatch(base):
            raise HubError(f"model card: base_model {base!r} is not a model id ORG/NAME", HINT)
    if "base_model_relation" in data:
        if data["base_model_relation"] not in RELATIONS:
            raise HubError(
                f"model card: base_model_relation must be one of {', '.join(RELATIONS)}", HINT
            )
        if not bases:
            raise HubError("model card: base_model_relation needs a base_model", HINT)
