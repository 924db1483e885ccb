"""The model card (README.md) the Hub shows for a published bundle, generated from its manifest.

The YAML front matter is what the Hub indexes (license, library, pipeline, tags, base model);
the body tells a user how to run the exact version, pinned by its tag. Deterministic: the same
manifest gives the same card, so republishing an unchanged bundle changes nothing.
"""

from __future__ import annotations

import json

TAGS = ("text-to-image", "stable-diffusion", "webgpu", "sdpack")


def _yaml_str(value: str) -> str:
    return json.dumps(value)  # a JSON string is a valid YAML flow scalar


def front_matter(manifest: dict) -> str:
    model = manifest["model"]
    lines = ["---", f"license: {_yaml_str(model['license'])}", "library_name: sdpack", "pipeline_tag: text-to-image"]
    if model.get("base_model"):
        lines.append(f"base_model: {_yaml_str(model['base_model'])}")
    lines += ["tags:"] + [f"- {t}" for t in TAGS] + ["---"]
    return "\n".join(lines) + "\n"


def render(manifest: dict, base_url: str) -> bytes:
    """README.md for ``manifest`` as served from ``base_url`` (the Hub endpoint or `packer serve`).

    >>> render(manifest, "https://huggingface.co").startswith(b"---\\n")   # doctest: +SKIP
    """
    model = manifest["model"]
    repo, version = model["id"], model["version"]
    url = f"{base_url.rstrip('/')}/{repo}/resolve/v{version}/manifest.json"
    targets = ", ".join(sorted(manifest["targets"])) or "none (weights only)"
    body = [
        f"# {repo} {version}",
        "",
        model.get("description") or f"A Stable Diffusion 1.5-architecture model packed by sdpack from `{manifest['source']['name']}`.",
        "",
        f"- dtype: {manifest['dtype']}; compiled targets: {targets}",
        f"- scheduler: {manifest['scheduler']['default']}, {manifest['scheduler']['steps']} steps, guidance {manifest['scheduler']['guidance']}",
        f"- every file is pinned by sha256 in [`manifest.json`]({url})",
        "",
        "## In the browser (WebGPU)",
        "",
        "```js",
        f'const manifestUrl = "{url}";',
        "// hand manifestUrl to the sdpack web runtime: it fetches, verifies and caches every file",
        "```",
        "",
        "## From Python",
        "",
        "```sh",
        f"packer pull {repo}@{version} --out {repo.split('/')[1]}",
        f'packer generate {repo.split("/")[1]} --prompt "a lighthouse at dusk"',
        "```",
        "",
        f"Version `v{version}` is a git tag that never moves; `packer resolve {repo}@{version}` prints the commit it pins.",
        "",
    ]
    return (front_matter(manifest) + "\n".join(body)).encode()
