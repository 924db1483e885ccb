"""The model card: Hub metadata read back with huggingface_hub, validated by the (test) Hub, a
runnable snippet pinned to the version, the bundle's files explained."""

from __future__ import annotations

import copy

import pytest

from packer.bundle import Bundle
from packer.errors import HubError
from packer.hub import card
from packer.interface.publish import PublishArgs, publish
from tests.hub.conftest import ALICE_TOKEN, make_bundle

REPO = "sdpack/tiny-sd"
SD15 = "stable-diffusion-v1-5/stable-diffusion-v1-5"
WEB_TARGETS = {
    "webgpu-float16": {"kind": "webgpu", "dtype": "float16", "target": {}, "libs": {}, "requirements": {"features": ["shader-f16"]}},
    "webgpu-float32": {"kind": "webgpu", "dtype": "float32", "target": {}, "libs": {}, "requirements": {"features": []}},
    "llvm-float32": {"kind": "llvm", "dtype": "float32", "target": {}, "libs": {}, "requirements": {"arch": "x86-64-v3"}},
}  # fmt: skip


def metadata(text: str):
    from huggingface_hub import ModelCard

    return ModelCard(text).data


@pytest.fixture
def manifest(bundles):
    return Bundle.open(
        bundles.v1
    ).manifest  # weights only, float16, from a local file, base model SD1.5


def with_targets(manifest, targets=WEB_TARGETS, **source):
    m = copy.deepcopy(manifest)
    m["targets"] = copy.deepcopy(targets)
    m["source"].update(source)
    return m


def test_front_matter_is_hub_metadata(manifest):
    data = metadata(card.render(with_targets(manifest), "https://huggingface.co/").decode())
    assert (data.license, data.library_name, data.pipeline_tag) == (
        "creativeml-openrail-m",
        "sdpack",
        "text-to-image",
    )
    assert data.base_model == SD15
    assert data.base_model_relation == "finetune"  # a local checkpoint built on SD1.5
    assert data.tags == ["text-to-image", "stable-diffusion", "sdpack", "tvm", "webgpu"]


def test_tags_follow_the_targets_built(manifest):
    assert "webgpu" not in metadata(card.render(manifest, "https://huggingface.co").decode()).tags
    only_cpu = {"llvm-float32": WEB_TARGETS["llvm-float32"]}
    assert metadata(
        card.render(with_targets(manifest, only_cpu), "https://huggingface.co").decode()
    ).tags == list(card.BASE_TAGS)
    cuda = {"cuda-float16": {**WEB_TARGETS["llvm-float32"], "kind": "cuda", "dtype": "float16"}}
    assert (
        metadata(card.render(with_targets(manifest, cuda), "https://huggingface.co").decode()).tags[
            -1
        ]
        == "cuda"
    )


@pytest.mark.parametrize("dtype, relation", [("float16", "quantized"), ("float32", None)])
def test_relation_to_a_hub_source_that_is_the_base_model(manifest, dtype, relation):
    m = with_targets(manifest, name=SD15, format="hub")
    m["dtype"] = dtype
    data = metadata(card.render(m, "https://huggingface.co").decode())
    assert data.base_model == SD15 and getattr(data, "base_model_relation", None) == relation


def test_body_runs_the_version_in_javascript_and_explains_the_files(manifest):
    text = card.render(with_targets(manifest), "https://huggingface.co/").decode()
    body = text.split("---\n", 2)[2]
    assert 'import { loadModel } from "@sdpack/runtime-web";' in body
    assert f'await loadModel("{REPO}@1.0.0");' in body
    assert f"https://huggingface.co/{REPO}/resolve/v1.0.0/manifest.json" in body
    assert (
        "await model.generate({" in body
        and "putImageData(new ImageData(rgba, width, height), 0, 0)" in body
    )
    assert (
        f"packer pull {REPO}@1.0.0 --out tiny-sd" in body
        and "packer generate tiny-sd --prompt" in body
    )
    for part in (
        "`manifest.json`",
        "`weights/<component>/tensor-cache.json`",
        ".bin.zst",
        "`libs/<variant>/",
        "`tokenizer/`",
    ):
        assert part in body
    for key in WEB_TARGETS:
        assert f"| `{key}` |" in body
    assert (
        card.render(with_targets(manifest), "https://huggingface.co") == text.encode()
    )  # deterministic


def test_a_directory_hub_card_names_its_endpoint(manifest):
    body = card.render(with_targets(manifest), "http://127.0.0.1:8000").decode()
    assert f'loadModel("{REPO}@1.0.0", {{ endpoint: "http://127.0.0.1:8000" }})' in body
    assert f"packer pull {REPO}@1.0.0 --out tiny-sd --endpoint http://127.0.0.1:8000" in body


BAD_CARDS = [
    ("---\nlicense: mit\n", "not closed"),
    ("---\nlicense: [mit\n---\n", "YAML"),
    ("---\n- a\n- b\n---\n", "mapping"),
    ("---\nlicense: 3\n---\n", "license"),
    ("---\ntags: {a: 1}\n---\n", "tags"),
    ("---\nbase_model: not a model id\n---\n", "base_model"),
    ("---\nbase_model: a/b\nbase_model_relation: copy\n---\n", "base_model_relation"),
    ("---\nbase_model_relation: finetune\n---\n", "base_model_relation"),
]


@pytest.mark.parametrize("text, why", BAD_CARDS)
def test_bad_cards_are_refused_by_the_hub_and_locally(
    hub_server, hf_env, monkeypatch, tmp_path, text, why
):
    with pytest.raises(HubError, match=why):
        card.check(text)
    bundle = make_bundle(tmp_path / "b")
    (bundle / "README.md").write_text(text + "mine\n")
    with pytest.raises(HubError):  # a directory hub: nothing written
        publish(PublishArgs(bundle, REPO, "1.0.0", to=tmp_path / "hub"))
    assert not (tmp_path / "hub").exists()
    monkeypatch.setenv("HF_TOKEN", ALICE_TOKEN)
    with pytest.raises(HubError) as err:  # the Hub: refused before the repo exists
        publish(PublishArgs(bundle, REPO, "1.0.0", endpoint=hub_server.url))
    assert "refused the model card's metadata" in err.value.one_line()
    assert hub_server.counters["validate_yaml"] == 1 and not hub_server.repo(REPO).exists


def test_generated_card_passes_the_hubs_validation(hub_server, hf_env, monkeypatch, bundles):
    from huggingface_hub import ModelCard, constants

    monkeypatch.setattr(constants, "ENDPOINT", hub_server.url)  # where ModelCard.validate posts
    for base in ("https://huggingface.co", "http://127.0.0.1:8000"):
        ModelCard(
            card.render(with_targets(Bundle.open(bundles.v1).manifest), base).decode()
        ).validate()
    with pytest.raises(ValueError, match="license"):  # the server does check
        ModelCard("---\nlicense: 3\n---\n", ignore_metadata_errors=True).validate()
    hub_server.reset_counters()
    monkeypatch.setenv("HF_TOKEN", ALICE_TOKEN)
    publish(PublishArgs(bundles.v1, REPO, "1.0.0", endpoint=hub_server.url))
    assert hub_server.counters["validate_yaml"] >= 1
    view = hub_server.repo(REPO)
    assert metadata(view.read("v1.0.0", "README.md").decode()).base_model == SD15


def test_published_card_is_the_bundles_own_if_it_has_one(bundles, tmp_path):
    (bundles.v1 / "README.md").write_text("---\nlicense: mit\n---\nmine\n")
    publish(PublishArgs(bundles.v1, "sdpack/tiny-sd", "1.0.0", to=tmp_path / "hub"))
    from packer.hub.local import LocalHub

    hub = LocalHub(tmp_path / "hub")
    assert (
        hub.read("sdpack/tiny-sd", hub.tags("sdpack/tiny-sd")["v1.0.0"], "README.md")
        == b"---\nlicense: mit\n---\nmine\n"
    )
