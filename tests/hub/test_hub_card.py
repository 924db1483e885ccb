"""The model card: Hub front matter and a usage snippet pinned to the version."""

from __future__ import annotations

from packer.bundle import Bundle
from packer.hub import card
from packer.interface.publish import publish_bundle


def test_card_front_matter_and_pinned_urls(bundles):
    manifest = Bundle.open(bundles.v1).manifest
    text = card.render(manifest, "https://huggingface.co/").decode()
    front, body = text.split("---\n")[1], text.split("---\n", 2)[2]
    assert 'license: "creativeml-openrail-m"' in front
    assert "library_name: sdpack" in front and "pipeline_tag: text-to-image" in front
    assert 'base_model: "stable-diffusion-v1-5/stable-diffusion-v1-5"' in front
    for tag in ("text-to-image", "webgpu", "sdpack"):
        assert f"- {tag}\n" in front
    assert "https://huggingface.co/sdpack/tiny-sd/resolve/v1.0.0/manifest.json" in body
    assert "packer pull sdpack/tiny-sd@1.0.0 --out tiny-sd" in body
    assert "packer generate tiny-sd --prompt" in body
    assert card.render(manifest, "https://huggingface.co") == text.encode()  # deterministic


def test_published_card_is_the_bundles_own_if_it_has_one(bundles, tmp_path):
    (bundles.v1 / "README.md").write_text("---\nlicense: mit\n---\nmine\n")
    publish_bundle(bundles.v1, "sdpack/tiny-sd", "1.0.0", to=tmp_path / "hub")
    from packer.hub.local import LocalHub

    hub = LocalHub(tmp_path / "hub")
    assert hub.read("sdpack/tiny-sd", hub.tags("sdpack/tiny-sd")["v1.0.0"], "README.md") == b"---\nlicense: mit\n---\nmine\n"
